// Unary and binary elementwise kernels: the functors of tensor/functors.h run over the strided loop.
#include "tensor/cpu/cpu_kernels.h"
#include "tensor/functors.h"
#include "tensor/strided.h"

namespace tl::cpu {

namespace {

// Calls fn(functor) with the functor object for `op`.
template <typename Fn>
decltype(auto) with_unary(Unary op, UnaryParams p, const Fn& fn) {
  switch (op) {
    case Unary::Neg: return fn(fn::Neg{});
    case Unary::Exp: return fn(fn::Exp{});
    case Unary::Log: return fn(fn::Log{});
    case Unary::Sqrt: return fn(fn::Sqrt{});
    case Unary::Abs: return fn(fn::Abs{});
    case Unary::Pow: return fn(fn::Pow{p.a});
    case Unary::Clamp: return fn(fn::Clamp{p.a, p.b});
    case Unary::Sigmoid: return fn(fn::Sigmoid{});
    case Unary::Tanh: return fn(fn::Tanh{});
    case Unary::Relu: return fn(fn::Relu{});
    case Unary::Gelu: return fn(fn::Gelu{});
    case Unary::Silu: return fn(fn::Silu{});
    case Unary::PySilu: return fn(fn::PySilu{});
  }
  throw std::logic_error("unary: bad op");
}

template <typename Fn>
decltype(auto) with_binary(Binary op, const Fn& fn) {
  switch (op) {
    case Binary::Add: return fn(fn::Add{});
    case Binary::Sub: return fn(fn::Sub{});
    case Binary::Mul: return fn(fn::Mul{});
    case Binary::Div: return fn(fn::Div{});
    case Binary::Eq: return fn(fn::Eq{});
    case Binary::Gt: return fn(fn::Gt{});
    case Binary::Lt: return fn(fn::Lt{});
    case Binary::Ge: return fn(fn::Ge{});
    case Binary::Le: return fn(fn::Le{});
    case Binary::BceLogits: return fn(fn::BceLogits{});
    case Binary::BceLogitsGrad: return fn(fn::BceLogitsGrad{});
  }
  throw std::logic_error("binary: bad op");
}

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

Tensor binary(Binary op, const Tensor& a, const Tensor& b) {
  Tensor out = empty(broadcast_shapes(a.shape(), b.shape(), kernels::binary_name(op)), a.options());
  dispatch_floating(a.dtype(), kernels::binary_name(op), [&]<typename T>() {
    with_binary(op, [&](auto f) { map2<T>(out, a, b, f); });
  });
  return out;
}

}  // namespace tl::cpu
