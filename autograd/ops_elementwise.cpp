// Elementwise ops: forward by a kernel, backward right below it, written with ops.
#include <limits>
#include <stdexcept>

#include "autograd/node.h"
#include "autograd/ops.h"
#include "tensor/kernels.h"

namespace tl {

namespace {

using kernels::Binary;
using kernels::Unary;
using Grads = std::vector<Tensor>;

void check_floating(const char* op, const Tensor& x) {
  if (!is_floating(x.dtype()))
    throw_op_error(op, std::string("expected a floating tensor, got ") + dtype_name(x.dtype()) + " " +
                           shape_str(x.shape()));
}

// Unary ops whose derivative is a function of the input: backward is kernels::unary_backward.
Tensor unary_op(Unary op, const Tensor& x, kernels::UnaryParams p = {}) {
  check_floating(kernels::unary_name(op), x);
  Tensor out = kernels::unary(op, x, p);
  return record(kernels::unary_name(op), out, {x}, [x = x.detach(), op, p](const Tensor& g, const std::vector<bool>&) {
    return Grads{kernels::unary_backward(op, x, g, p)};
  });
}

Tensor scalar_like(double s, const Tensor& a) { return scalar_tensor(s, a.options()); }

}  // namespace

Tensor neg(const Tensor& x) { return unary_op(Unary::Neg, x); }
Tensor exp(const Tensor& x) { return unary_op(Unary::Exp, x); }
Tensor log(const Tensor& x) { return unary_op(Unary::Log, x); }
Tensor sqrt(const Tensor& x) { return unary_op(Unary::Sqrt, x); }
Tensor abs(const Tensor& x) { return unary_op(Unary::Abs, x); }
Tensor pow(const Tensor& x, double exponent) { return unary_op(Unary::Pow, x, {exponent, 0}); }
Tensor clamp(const Tensor& x, double lo, double hi) {
  if (lo > hi) throw_op_error("clamp", "min " + std::to_string(lo) + " is greater than max " + std::to_string(hi));
  return unary_op(Unary::Clamp, x, {lo, hi});
}
Tensor sigmoid(const Tensor& x) { return unary_op(Unary::Sigmoid, x); }
Tensor tanh(const Tensor& x) { return unary_op(Unary::Tanh, x); }
Tensor relu(const Tensor& x) { return unary_op(Unary::Relu, x); }
Tensor gelu(const Tensor& x) { return unary_op(Unary::Gelu, x); }
Tensor silu(const Tensor& x) { return unary_op(Unary::Silu, x); }
Tensor pysilu(const Tensor& x) { return unary_op(Unary::PySilu, x); }
Tensor activation(const Tensor& x, Activation a) {
  switch (a) {
    case Activation::None: return x;
    case Activation::Relu: return relu(x);
    case Activation::Gelu: return gelu(x);
    case Activation::Silu: return silu(x);
    case Activation::PySilu: return pysilu(x);
  }
  throw std::logic_error("activation: bad value");
}

// ---- binary, broadcasting. Each input's gradient is summed back to that input's shape.

Tensor add(const Tensor& a, const Tensor& b) {
  check_floating("add", a);
  Tensor out = kernels::binary(Binary::Add, a, b);
  return record("add", out, {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor& g, const std::vector<bool>& n) {
    return Grads{n[0] ? sum_to(g, sa) : Tensor(), n[1] ? sum_to(g, sb) : Tensor()};
  });
}

Tensor sub(const Tensor& a, const Tensor& b) {
  check_floating("sub", a);
  Tensor out = kernels::binary(Binary::Sub, a, b);
  return record("sub", out, {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor& g, const std::vector<bool>& n) {
    return Grads{n[0] ? sum_to(g, sa) : Tensor(), n[1] ? sum_to(neg(g), sb) : Tensor()};
  });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  check_floating("mul", a);
  Tensor out = kernels::binary(Binary::Mul, a, b);
  return record("mul", out, {a, b}, [a = a.detach(), b = b.detach()](const Tensor& g, const std::vector<bool>& n) {
    return Grads{n[0] ? sum_to(mul(g, b), a.shape()) : Tensor(), n[1] ? sum_to(mul(g, a), b.shape()) : Tensor()};
  });
}

Tensor div(const Tensor& a, const Tensor& b) {
  check_floating("div", a);
  Tensor out = kernels::binary(Binary::Div, a, b);
  return record("div", out, {a, b}, [a = a.detach(), b = b.detach()](const Tensor& g, const std::vector<bool>& n) {
    // d(a/b)/db = -a / b^2
    return Grads{n[0] ? sum_to(div(g, b), a.shape()) : Tensor(),
                 n[1] ? sum_to(neg(div(mul(g, a), mul(b, b))), b.shape()) : Tensor()};
  });
}

// ---- with a scalar: the scalar is a constant, only the tensor gets a gradient

Tensor add(const Tensor& a, double s) {
  check_floating("add", a);
  Tensor out = kernels::binary(Binary::Add, a, scalar_like(s, a));
  return record("add", out, {a}, [](const Tensor& g, const std::vector<bool>&) { return Grads{g}; });
}
Tensor sub(const Tensor& a, double s) { return add(a, -s); }
Tensor rsub(const Tensor& a, double s) {
  check_floating("rsub", a);
  Tensor out = kernels::binary(Binary::Sub, scalar_like(s, a), a);
  return record("rsub", out, {a}, [](const Tensor& g, const std::vector<bool>&) { return Grads{neg(g)}; });
}
Tensor mul(const Tensor& a, double s) {
  check_floating("mul", a);
  Tensor out = kernels::binary(Binary::Mul, a, scalar_like(s, a));
  return record("mul", out, {a}, [s](const Tensor& g, const std::vector<bool>&) { return Grads{mul(g, s)}; });
}
Tensor div(const Tensor& a, double s) {
  check_floating("div", a);
  Tensor out = kernels::binary(Binary::Div, a, scalar_like(s, a));
  return record("div", out, {a}, [s](const Tensor& g, const std::vector<bool>&) { return Grads{div(g, s)}; });
}
Tensor rdiv(const Tensor& a, double s) {
  check_floating("rdiv", a);
  Tensor out = kernels::binary(Binary::Div, scalar_like(s, a), a);
  return record("rdiv", out, {a}, [a = a.detach(), s](const Tensor& g, const std::vector<bool>&) {
    return Grads{mul(div(g, mul(a, a)), -s)};  // d(s/a)/da = -s / a^2
  });
}

// ---- comparisons: masks, no gradient

namespace {
Tensor compare(Binary op, const Tensor& a, const Tensor& b) {
  Tensor f = kernels::binary(op, a.detach(), b.detach());
  Tensor m = empty(f.shape(), f.options().with_dtype(kUInt8));
  kernels::copy_(m, f);
  return m;
}
}  // namespace

Tensor eq(const Tensor& a, const Tensor& b) { return compare(Binary::Eq, a, b); }
Tensor gt(const Tensor& a, const Tensor& b) { return compare(Binary::Gt, a, b); }
Tensor lt(const Tensor& a, const Tensor& b) { return compare(Binary::Lt, a, b); }
Tensor ge(const Tensor& a, const Tensor& b) { return compare(Binary::Ge, a, b); }
Tensor le(const Tensor& a, const Tensor& b) { return compare(Binary::Le, a, b); }
Tensor gt(const Tensor& a, double s) { return compare(Binary::Gt, a, scalar_like(s, a)); }
Tensor lt(const Tensor& a, double s) { return compare(Binary::Lt, a, scalar_like(s, a)); }

// ---- operators
Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator-(const Tensor& x) { return neg(x); }
Tensor operator+(const Tensor& a, double s) { return add(a, s); }
Tensor operator-(const Tensor& a, double s) { return sub(a, s); }
Tensor operator*(const Tensor& a, double s) { return mul(a, s); }
Tensor operator/(const Tensor& a, double s) { return div(a, s); }
Tensor operator+(double s, const Tensor& a) { return add(a, s); }
Tensor operator-(double s, const Tensor& a) { return rsub(a, s); }
Tensor operator*(double s, const Tensor& a) { return mul(a, s); }
Tensor operator/(double s, const Tensor& a) { return rdiv(a, s); }

}  // namespace tl
