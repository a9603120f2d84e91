// Unary and binary elementwise kernels: the functors of tensor/functors.h run over the strided loop.
#include "tensor/cpu/cpu_kernels.h"
#include "tensor/op_functors.h"
#include "tensor/strided.h"

namespace tl::cpu {

namespace {

using kernels::with_binary;
using kernels::with_unary;

// out[i] = f(a[i], b[i]) over out's shape; a and b broadcast. The unit-stride and scalar-b rows get
// their own loops so that the compiler vectorizes them.
template <typename T, typename F>
void map2(const Tensor& out, const Tensor& a, const Tensor& b, const F& f) {
  const Shape& s = out.shape();
  auto plan = make_strided_plan<3>(
      s, {out.strides(), broadcast_strides(a.shape(), a.strides(), s), broadcast_strides(b.shape(), b.strides(), s)});
  T* o = out.data_ptr<T>();
  const T* ap = a.data_ptr<T>();
  const T* bp = b.data_ptr<T>();
  for_each_row(plan, [&](const auto& off, int64_t n, const auto& st) {
    T* dst = o + off[0];
    const T* x = ap + off[1];
    const T* y = bp + off[2];
    if (st[0] == 1 && st[1] == 1 && st[2] == 1) {
      for (int64_t i = 0; i < n; ++i) dst[i] = f(x[i], y[i]);
    } else if (st[0] == 1 && st[1] == 1 && st[2] == 0) {
      const T yv = *y;
      for (int64_t i = 0; i < n; ++i) dst[i] = f(x[i], yv);
    } else {
      for (int64_t i = 0; i < n; ++i) dst[i * st[0]] = f(x[i * st[1]], y[i * st[2]]);
    }
  });
}

}  // namespace

Tensor unary(Unary op, const Tensor& x, UnaryParams p) {
  Tensor out = empty(x.shape(), x.options());
  dispatch_floating(x.dtype(), kernels::unary_name(op), [&]<typename T>() {
    with_unary(op, p, [&](auto f) {
      auto plan = make_strided_plan<2>(x.shape(), {out.strides(), x.strides()});
      T* o = out.data_ptr<T>();
      const T* xp = x.data_ptr<T>();
      for_each_row(plan, [&](const auto& off, int64_t n, const auto& st) {
        T* dst = o + off[0];
        const T* in = xp + off[1];
        if (st[0] == 1 && st[1] == 1)
          for (int64_t i = 0; i < n; ++i) dst[i] = f(in[i]);
        else
          for (int64_t i = 0; i < n; ++i) dst[i * st[0]] = f(in[i * st[1]]);
      });
    });
  });
  return out;
}

Tensor unary_backward(Unary op, const Tensor& x, const Tensor& grad, UnaryParams p) {
  Tensor out = empty(x.shape(), x.options());
  dispatch_floating(x.dtype(), kernels::unary_name(op), [&]<typename T>() {
    with_unary(op, p, [&](auto f) { map2<T>(out, x, grad, [f](T a, T g) { return f.grad(a, g); }); });
  });
  return out;
}

Tensor binary(Binary op, const Tensor& a, const Tensor& b, const Tensor& out_in) {
  const Tensor out =
      out_in.defined() ? out_in : empty(broadcast_shapes(a.shape(), b.shape(), kernels::binary_name(op)), a.options());
  dispatch_floating(a.dtype(), kernels::binary_name(op), [&]<typename T>() {
    with_binary(op, [&](auto f) { map2<T>(out, a, b, f); });
  });
  return out;
}

}  // namespace tl::cpu
