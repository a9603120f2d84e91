// matmul: 2-D and batched with broadcast batch dims, on the batched GEMM kernel.
#include "autograd/node.h"
#include "autograd/ops.h"
#include "tensor/kernels.h"

namespace tl {

Tensor matmul(const Tensor& a, const Tensor& b) {
  if (a.dim() < 2 || b.dim() < 2)
    throw_op_error("matmul", "expected 2-D or batched matrices, got " + shape_str(a.shape()) + " and " +
                                 shape_str(b.shape()));
  if (a.size(-1) != b.size(-2))
    throw_op_error("matmul", shape_str(a.shape()) + " @ " + shape_str(b.shape()) + ": inner dims differ (" +
                                 std::to_string(a.size(-1)) + " vs " + std::to_string(b.size(-2)) + ")");
  if (a.dtype() != b.dtype())
    throw_op_error("matmul", std::string("dtype mismatch: ") + dtype_name(a.dtype()) + " and " + dtype_name(b.dtype()));
  if (!is_floating(a.dtype())) throw_op_error("matmul", std::string("expected floating tensors, got ") + dtype_name(a.dtype()));
  const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  const Shape batch = broadcast_shapes(Shape(a.shape().begin(), a.shape().end() - 2),
                                       Shape(b.shape().begin(), b.shape().end() - 2), "matmul");
  const int64_t B = numel_of(batch);
  auto as_batched = [&](const Tensor& t, int64_t r, int64_t c) {
    Shape full = batch;
    full.push_back(r);
    full.push_back(c);
    return t.detach().expand(full).reshape({B, r, c});  // a view unless batch dims must merge
  };
  Shape out_shape = batch;
  out_shape.push_back(M);
  out_shape.push_back(N);
  Tensor out = kernels::bmm(as_batched(a, M, K), as_batched(b, K, N)).view(out_shape);
  return record("matmul", out, {a, b}, [a = a.detach(), b = b.detach()](const Tensor& g, const std::vector<bool>& n) {
    // dA = g b^T, dB = a^T g, summed over the batch dims that were broadcast
    return std::vector<Tensor>{n[0] ? sum_to(matmul(g, b.transpose(-1, -2)), a.shape()) : Tensor(),
                               n[1] ? sum_to(matmul(a.transpose(-1, -2), g), b.shape()) : Tensor()};
  });
}

}  // namespace tl
