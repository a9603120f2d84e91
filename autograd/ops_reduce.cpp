// Reductions: sum, mean, max (amax) over a list of dims, and sum_to for broadcast gradients.
#include <algorithm>

#include "autograd/node.h"
#include "autograd/ops.h"
#include "tensor/kernels.h"

namespace tl {

namespace {

using Grads = std::vector<Tensor>;

// Wrapped, sorted, unique dims; empty stays empty (all dims).
std::vector<int64_t> normalize_dims(const char* op, const std::vector<int64_t>& dims, int64_t ndim) {
  std::vector<int64_t> r;
  for (int64_t d : dims) r.push_back(wrap_dim(d, ndim, op));
  std::sort(r.begin(), r.end());
  if (std::adjacent_find(r.begin(), r.end()) != r.end())
    throw_op_error(op, "dim " + std::to_string(*std::adjacent_find(r.begin(), r.end())) + " appears more than once");
  return r;
}

// The reduced tensor `g` seen with the reduced dims kept as size 1, then broadcast back to `shape`.
Tensor expand_back(const Tensor& g, const Shape& shape, const std::vector<int64_t>& dims, bool keepdim) {
  Tensor k = g;
  if (!keepdim) {
    Shape kept = shape;
    if (dims.empty()) std::fill(kept.begin(), kept.end(), 1);
    for (int64_t d : dims) kept[static_cast<size_t>(d)] = 1;
    k = g.reshape(kept);
  }
  return k.expand(shape);
}

int64_t reduced_count(const Shape& shape, const std::vector<int64_t>& dims) {
  if (dims.empty()) return numel_of(shape);
  int64_t n = 1;
  for (int64_t d : dims) n *= shape[static_cast<size_t>(d)];
  return n;
}

void check_floating(const char* op, const Tensor& x) {
  if (!is_floating(x.dtype()))
    throw_op_error(op, std::string("expected a floating tensor, got ") + dtype_name(x.dtype()));
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims_in, bool keepdim) {
  check_floating("sum", x);
  auto dims = normalize_dims("sum", dims_in, x.dim());
  Tensor out = kernels::reduce(kernels::Reduce::Sum, x, dims, keepdim);
  return record("sum", out, {x}, [s = x.shape(), dims, keepdim](const Tensor& g, const std::vector<bool>&) {
    return Grads{expand_back(g, s, dims, keepdim)};
  });
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims_in, bool keepdim) {
  check_floating("mean", x);
  auto dims = normalize_dims("mean", dims_in, x.dim());
  Tensor out = kernels::reduce(kernels::Reduce::Mean, x, dims, keepdim);
  return record("mean", out, {x}, [s = x.shape(), dims, keepdim](const Tensor& g, const std::vector<bool>&) {
    return Grads{div(expand_back(g, s, dims, keepdim), static_cast<double>(reduced_count(s, dims)))};
  });
}

Tensor max(const Tensor& x, const std::vector<int64_t>& dims_in, bool keepdim) {
  check_floating("max", x);
  auto dims = normalize_dims("max", dims_in, x.dim());
  Tensor out = kernels::reduce(kernels::Reduce::Max, x, dims, keepdim);
  return record("max", out, {x}, [x = x.detach(), m = out.detach(), dims, keepdim](const Tensor& g,
                                                                                    const std::vector<bool>&) {
    // As torch.amax: the gradient goes to every element equal to the max, shared equally among ties.
    Tensor mask = kernels::binary(kernels::Binary::Eq, x, expand_back(m, x.shape(), dims, keepdim));
    Tensor count = kernels::reduce(kernels::Reduce::Sum, mask, dims, true);
    return Grads{mul(mask, div(expand_back(g, x.shape(), dims, keepdim), count))};
  });
}

Tensor sum_to(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  const int64_t lead = x.dim() - static_cast<int64_t>(shape.size());
  if (lead < 0) throw_op_error("sum_to", "cannot sum " + shape_str(x.shape()) + " to the larger " + shape_str(shape));
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < x.dim(); ++d) {
    if (d < lead) dims.push_back(d);
    else if (shape[static_cast<size_t>(d - lead)] == 1 && x.size(d) != 1) dims.push_back(d);
    else if (shape[static_cast<size_t>(d - lead)] != x.size(d))
      throw_op_error("sum_to", shape_str(x.shape()) + " is not a broadcast of " + shape_str(shape));
  }
  if (dims.empty()) return x.reshape(shape);
  return sum(x, dims, true).reshape(shape);
}

}  // namespace tl
