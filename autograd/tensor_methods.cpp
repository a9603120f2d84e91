// The differentiable Tensor methods: views (which never copy), conversions, reductions and the
// autograd entry points. Each view's backward maps the gradient back onto the base's geometry.
#include <algorithm>
#include <numeric>
#include <optional>

#include "autograd/node.h"
#include "autograd/ops.h"
#include "tensor/kernels.h"

namespace tl {

namespace {

using Grads = std::vector<Tensor>;

// Strides that let `shape` view a tensor of (old_shape, old_strides) without copying, if any
// (the rule of torch's view: each group of merged dims must be contiguous among itself).
std::optional<Strides> view_strides(const Shape& old_shape, const Strides& old_strides, const Shape& shape) {
  if (numel_of(old_shape) <= 1 || old_shape.empty()) return contiguous_strides(shape);
  Strides st(shape.size());
  int64_t view_d = static_cast<int64_t>(shape.size()) - 1;
  int64_t chunk_base = old_strides.back(), tensor_numel = 1, view_numel = 1;
  for (int64_t d = static_cast<int64_t>(old_shape.size()) - 1; d >= 0; --d) {
    tensor_numel *= old_shape[d];
    if (d == 0 || (old_shape[d - 1] != 1 && old_strides[d - 1] != tensor_numel * chunk_base)) {
      while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
        st[view_d] = view_numel * chunk_base;
        view_numel *= shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return std::nullopt;
      if (d > 0) {
        chunk_base = old_strides[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return std::nullopt;
  return st;
}

// Replaces one -1 by the size that keeps numel; checks the element count.
Shape infer_shape(const char* op, const Shape& in, Shape shape) {
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      if (infer >= 0) throw_op_error(op, "only one dimension can be -1 in " + shape_str(shape));
      infer = static_cast<int64_t>(i);
    } else if (shape[i] < 0) {
      throw_op_error(op, "invalid size in " + shape_str(shape));
    } else {
      known *= shape[i];
    }
  }
  const int64_t n = numel_of(in);
  if (infer >= 0 && known != 0 && n % known == 0) shape[infer] = n / known;
  if (infer >= 0 && shape[infer] == -1) throw_op_error(op, "shape " + shape_str(shape) + " is invalid for input of shape " + shape_str(in));
  if (numel_of(shape) != n)
    throw_op_error(op, "shape " + shape_str(shape) + " is invalid for input of shape " + shape_str(in) + " (" +
                           std::to_string(n) + " elements)");
  return shape;
}

// A view of x with new geometry whose backward reshapes the gradient back to x's shape.
Tensor reshaping_view(const char* op, const Tensor& x, const Shape& shape, const Strides& strides) {
  Tensor out = make_view(x, shape, strides, x.offset());
  return record(op, out, {x}, [s = x.shape()](const Tensor& g, const std::vector<bool>&) {
    return Grads{g.reshape(s)};
  });
}

void check_inplace(const char* op, const Tensor& t) {
  if (GradMode::is_enabled() && t.requires_grad())
    throw_op_error(op, "tensor " + shape_str(t.shape()) + (t.is_leaf() ? " is a leaf that requires grad" : " is part of a graph") +
                           " and cannot be modified in place while grad mode is on (use NoGradGuard)");
}

}  // namespace

// ---- autograd
Tensor& Tensor::requires_grad_(bool r) {
  if (!is_leaf()) throw std::invalid_argument("requires_grad_: only leaf tensors can change requires_grad; use detach()");
  if (r && !is_floating(dtype()))
    throw std::invalid_argument(std::string("requires_grad_: only floating tensors can require grad, got ") +
                                dtype_name(dtype()));
  impl()->requires_grad = r;
  return *this;
}

Tensor Tensor::grad() const { return checked()->grad ? Tensor(checked()->grad) : Tensor(); }

void Tensor::set_grad(const Tensor& g) {
  if (g.defined() && (g.shape() != shape() || g.dtype() != dtype()))
    throw std::invalid_argument("set_grad: gradient " + shape_str(g.shape()) + " " + dtype_name(g.dtype()) +
                                " does not match the tensor " + shape_str(shape()) + " " + dtype_name(dtype()));
  checked()->grad = g.defined() ? g.impl_ptr() : nullptr;
}

void Tensor::backward(const Tensor& gradient, bool retain_graph) const { run_backward(*this, gradient, retain_graph); }

Tensor Tensor::detach() const { return make_view(*this, shape(), strides(), offset()); }

// ---- copies and conversions
Tensor Tensor::clone() const {
  Tensor out = empty(shape(), options());
  kernels::copy_(out, *this);
  return record("clone", out, {*this}, [](const Tensor& g, const std::vector<bool>&) { return Grads{g}; });
}

Tensor Tensor::contiguous() const { return is_contiguous() ? *this : clone(); }

Tensor Tensor::to(DType t) const {
  if (t == dtype()) return *this;
  Tensor out = empty(shape(), options().with_dtype(t));
  kernels::copy_(out, *this);
  if (!is_floating(t)) return out;  // integer results carry no gradient
  return record("to", out, {*this}, [from = dtype()](const Tensor& g, const std::vector<bool>&) {
    return Grads{g.to(from)};
  });
}

Tensor Tensor::to(Device d) const {
  if (d == device()) return *this;
  Tensor out = empty(shape(), options().with_device(d));
  kernels::copy_(out, *this);
  return record("to", out, {*this}, [from = device()](const Tensor& g, const std::vector<bool>&) {
    return Grads{g.to(from)};
  });
}

// ---- views
Tensor Tensor::view(const Shape& shape_in) const {
  Shape s = infer_shape("view", shape(), shape_in);
  auto st = view_strides(shape(), strides(), s);
  if (!st)
    throw_op_error("view", "shape " + shape_str(s) + " is not compatible with the strides " + shape_str(strides()) +
                               " of input " + shape_str(shape()) + "; use reshape (which copies)");
  return reshaping_view("view", *this, s, *st);
}

Tensor Tensor::reshape(const Shape& shape_in) const {
  Shape s = infer_shape("reshape", shape(), shape_in);
  if (auto st = view_strides(shape(), strides(), s)) return reshaping_view("reshape", *this, s, *st);
  return clone().view(s);
}

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  const int64_t n = dim();
  if (static_cast<int64_t>(dims.size()) != n)
    throw_op_error("permute", "got " + std::to_string(dims.size()) + " dims for a " + std::to_string(n) + "-d tensor " +
                                  shape_str(shape()));
  Shape s(n), st(n);
  std::vector<int64_t> inverse(n, -1);
  for (int64_t i = 0; i < n; ++i) {
    int64_t d = wrap_dim(dims[i], n, "permute");
    if (inverse[d] >= 0) throw_op_error("permute", "dim " + std::to_string(d) + " repeated in " + shape_str(dims));
    inverse[d] = i;
    s[i] = size(d);
    st[i] = stride(d);
  }
  Tensor out = make_view(*this, s, st, offset());
  return record("permute", out, {*this}, [inverse](const Tensor& g, const std::vector<bool>&) {
    return Grads{g.permute(inverse)};
  });
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  std::vector<int64_t> p(dim());
  std::iota(p.begin(), p.end(), 0);
  std::swap(p[wrap_dim(d0, dim(), "transpose")], p[wrap_dim(d1, dim(), "transpose")]);
  return permute(p);
}

Tensor Tensor::slice(int64_t d_in, int64_t start, int64_t end, int64_t step) const {
  const int64_t d = wrap_dim(d_in, dim(), "slice"), n = size(d);
  if (step < 1) throw_op_error("slice", "step must be >= 1, got " + std::to_string(step));
  // Python slicing: negative indices count from the end, out-of-range bounds are clamped.
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape s = shape();
  Strides st = strides();
  s[d] = (end - start + step - 1) / step;
  st[d] *= step;
  Tensor out = make_view(*this, s, st, offset() + start * stride(d));
  return record("slice", out, {*this}, [in = shape(), d, start, end, step](const Tensor& g, const std::vector<bool>&) {
    Tensor gx = zeros(in, g.options());
    kernels::copy_(gx.slice(d, start, end, step), g);
    return Grads{gx};
  });
}

Tensor Tensor::narrow(int64_t d_in, int64_t start, int64_t length) const {
  const int64_t d = wrap_dim(d_in, dim(), "narrow");
  if (start < 0 || length < 0 || start + length > size(d))
    throw_op_error("narrow", "range [" + std::to_string(start) + ", " + std::to_string(start + length) +
                                 ") is outside dim " + std::to_string(d) + " of size " + std::to_string(size(d)) +
                                 " in " + shape_str(shape()));
  return slice(d, start, start + length);
}

Tensor Tensor::select(int64_t d_in, int64_t index) const {
  const int64_t d = wrap_dim(d_in, dim(), "select");
  if (index < -size(d) || index >= size(d))
    throw_op_error("select", "index " + std::to_string(index) + " out of range for dim " + std::to_string(d) +
                                 " of size " + std::to_string(size(d)));
  if (index < 0) index += size(d);
  return narrow(d, index, 1).squeeze(d);
}

Tensor Tensor::expand(const Shape& shape_in) const {
  const int64_t n = static_cast<int64_t>(shape_in.size()), lead = n - dim();
  if (lead < 0)
    throw_op_error("expand", "target " + shape_str(shape_in) + " has fewer dims than the input " + shape_str(shape()));
  Shape s(n);
  Strides st(n, 0);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t want = shape_in[i];
    if (i < lead) {
      if (want < 0) throw_op_error("expand", "-1 is not allowed for a new leading dim in " + shape_str(shape_in));
      s[i] = want;
      continue;
    }
    const int64_t have = size(i - lead);
    if (want == -1 || want == have) {
      s[i] = have;
      st[i] = stride(i - lead);
    } else if (have == 1) {
      s[i] = want;
    } else {
      throw_op_error("expand", "cannot expand " + shape_str(shape()) + " to " + shape_str(shape_in) + " (dim " +
                                   std::to_string(i) + ": " + std::to_string(have) + " to " + std::to_string(want) + ")");
    }
  }
  if (s == shape()) return *this;
  Tensor out = make_view(*this, s, st, offset());
  return record("expand", out, {*this}, [in = shape()](const Tensor& g, const std::vector<bool>&) {
    return Grads{sum_to(g, in)};
  });
}

Tensor Tensor::squeeze() const {
  Shape s;
  Strides st;
  for (int64_t i = 0; i < dim(); ++i)
    if (size(i) != 1) {
      s.push_back(size(i));
      st.push_back(stride(i));
    }
  return reshaping_view("squeeze", *this, s, st);
}

Tensor Tensor::squeeze(int64_t d_in) const {
  const int64_t d = wrap_dim(d_in, dim(), "squeeze");
  if (size(d) != 1) return *this;  // as torch: squeezing a dim that is not 1 is a no-op
  Shape s = shape();
  Strides st = strides();
  s.erase(s.begin() + d);
  st.erase(st.begin() + d);
  return reshaping_view("squeeze", *this, s, st);
}

Tensor Tensor::unsqueeze(int64_t d_in) const {
  const int64_t d = wrap_dim(d_in, dim() + 1, "unsqueeze");
  Shape s = shape();
  Strides st = strides();
  const int64_t new_stride = d < dim() ? stride(d) * size(d) : 1;
  s.insert(s.begin() + d, 1);
  st.insert(st.begin() + d, new_stride);
  return reshaping_view("unsqueeze", *this, s, st);
}

Tensor Tensor::flatten(int64_t start_in, int64_t end_in) const {
  if (dim() == 0) return reshape({1});
  const int64_t a = wrap_dim(start_in, dim(), "flatten"), b = wrap_dim(end_in, dim(), "flatten");
  if (a > b) throw_op_error("flatten", "start_dim " + std::to_string(a) + " is after end_dim " + std::to_string(b));
  Shape s(shape().begin(), shape().begin() + a);
  int64_t m = 1;
  for (int64_t i = a; i <= b; ++i) m *= size(i);
  s.push_back(m);
  s.insert(s.end(), shape().begin() + b + 1, shape().end());
  return reshape(s);
}

// ---- reductions
Tensor Tensor::sum(const std::vector<int64_t>& dims, bool keepdim) const { return tl::sum(*this, dims, keepdim); }
Tensor Tensor::mean(const std::vector<int64_t>& dims, bool keepdim) const { return tl::mean(*this, dims, keepdim); }
Tensor Tensor::max(const std::vector<int64_t>& dims, bool keepdim) const { return tl::max(*this, dims, keepdim); }

// ---- in place
Tensor& Tensor::fill_(double value) {
  check_inplace("fill_", *this);
  kernels::fill_(*this, value);
  return *this;
}

Tensor& Tensor::copy_(const Tensor& src) {
  check_inplace("copy_", *this);
  kernels::copy_(*this, src.detach());
  return *this;
}

}  // namespace tl
