// max_pool2d: forward keeps the argmax of every window; backward scatters the gradient there.
#include <string>

#include "autograd/node.h"
#include "autograd/ops.h"
#include "tensor/kernels.h"

namespace tl {

namespace {

std::string pair_str(int64_t a, int64_t b) { return "(" + std::to_string(a) + "," + std::to_string(b) + ")"; }

}  // namespace

// x (N, C, H, W) -> (N, C, Ho, Wo), Ho = (H - kh) / sh + 1; no padding, stride 0 means the kernel size.
Tensor max_pool2d(const Tensor& x, Size2 kernel, Size2 stride) {
  if (x.dim() != 4) throw_op_error("max_pool2d", "expected a 4-D input (N, C, H, W), got " + shape_str(x.shape()));
  if (!is_floating(x.dtype()))
    throw_op_error("max_pool2d", std::string("expected a floating tensor (float32 or float64), got ") +
                                     dtype_name(x.dtype()));
  if (kernel.h < 1 || kernel.w < 1)
    throw_op_error("max_pool2d", "kernel size must be >= 1, got " + pair_str(kernel.h, kernel.w));
  if (stride.h < 0 || stride.w < 0)
    throw_op_error("max_pool2d", "stride must be >= 1 (or 0 for the kernel size), got " + pair_str(stride.h, stride.w));
  const int64_t sh = stride.h == 0 ? kernel.h : stride.h, sw = stride.w == 0 ? kernel.w : stride.w;
  if (x.size(2) < kernel.h || x.size(3) < kernel.w)
    throw_op_error("max_pool2d", "input " + shape_str(x.shape()) + " is smaller than the kernel " +
                                     pair_str(kernel.h, kernel.w));
  const kernels::Pool2dParams p{kernel.h, kernel.w, sh, sw};
  auto [out, indices] = kernels::max_pool2d(x, p);
  // indices (N, C, Ho, Wo) int64: where each output's value came from in its H*W plane
  return record("max_pool2d", out, {x},
                [indices = indices, shape = x.shape(), p](const Tensor& g, const std::vector<bool>&) {
                  return std::vector<Tensor>{kernels::max_pool2d_backward(g, indices, shape, p)};
                });
}

}  // namespace tl
