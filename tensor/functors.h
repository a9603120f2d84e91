#pragma once
// Elementwise math, written once. Each unary functor has `operator()(x)` (the forward value) and
// `grad(x, g)` (g * f'(x), the backward from the input); binary functors have `operator()(a, b)`.
// TL_HD makes them callable from CUDA kernels as well as from the CPU loops, so the formula the
// gradient check proves on CPU is the formula the GPU runs.
#include <cmath>

#if defined(__CUDACC__)
#define TL_HD __host__ __device__ __forceinline__
#else
#define TL_HD inline
#endif

namespace tl::fn {

// ---- unary
struct Neg {
  template <class T> TL_HD T operator()(T x) const { return -x; }
  template <class T> TL_HD T grad(T, T g) const { return -g; }
};
struct Exp {
  template <class T> TL_HD T operator()(T x) const { return std::exp(x); }
  template <class T> TL_HD T grad(T x, T g) const { return g * std::exp(x); }
};
struct Log {
  template <class T> TL_HD T operator()(T x) const { return std::log(x); }
  template <class T> TL_HD T grad(T x, T g) const { return g / x; }
};
struct Sqrt {
  template <class T> TL_HD T operator()(T x) const { return std::sqrt(x); }
  template <class T> TL_HD T grad(T x, T g) const { return g / (T(2) * std::sqrt(x)); }
};
struct Abs {
  template <class T> TL_HD T operator()(T x) const { return x < T(0) ? -x : x; }
  template <class T> TL_HD T grad(T x, T g) const { return x > T(0) ? g : (x < T(0) ? -g : T(0)); }
};
struct Pow {
  double p;
  template <class T> TL_HD T operator()(T x) const { return std::pow(x, T(p)); }
  template <class T> TL_HD T grad(T x, T g) const { return p == 0.0 ? T(0) : g * T(p) * std::pow(x, T(p - 1.0)); }
};
// Clamp to [lo, hi] (either may be infinite). The gradient passes where lo <= x <= hi, as in PyTorch.
struct Clamp {
  double lo, hi;
  template <class T> TL_HD T operator()(T x) const { return x < T(lo) ? T(lo) : (x > T(hi) ? T(hi) : x); }
  template <class T> TL_HD T grad(T x, T g) const { return (x >= T(lo) && x <= T(hi)) ? g : T(0); }
};
// Stable on both sides: never evaluates exp of a large positive number.
struct Sigmoid {
  template <class T> TL_HD T operator()(T x) const {
    if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
    T e = std::exp(x);
    return e / (T(1) + e);
  }
  template <class T> TL_HD T grad(T x, T g) const {
    T s = (*this)(x);
    return g * s * (T(1) - s);
  }
};
struct Tanh {
  template <class T> TL_HD T operator()(T x) const { return std::tanh(x); }
  template <class T> TL_HD T grad(T x, T g) const {
    T t = std::tanh(x);
    return g * (T(1) - t * t);
  }
};
struct Relu {
  template <class T> TL_HD T operator()(T x) const { return x > T(0) ? x : T(0); }
  template <class T> TL_HD T grad(T x, T g) const { return x > T(0) ? g : T(0); }
};
// The exact (erf) GELU, PyTorch's default: x * Phi(x).
struct Gelu {
  template <class T> TL_HD T operator()(T x) const {
    return T(0.5) * x * (T(1) + std::erf(x * T(0.70710678118654752440)));
  }
  template <class T> TL_HD T grad(T x, T g) const {
    T cdf = T(0.5) * (T(1) + std::erf(x * T(0.70710678118654752440)));
    T pdf = T(0.39894228040143267794) * std::exp(T(-0.5) * x * x);
    return g * (cdf + x * pdf);
  }
};
struct Silu {
  template <class T> TL_HD T operator()(T x) const { return x * Sigmoid{}(x); }
  template <class T> TL_HD T grad(T x, T g) const {
    T s = Sigmoid{}(x);
    return g * s * (T(1) + x * (T(1) - s));
  }
};
// pysilu(x) = x for x >= 0, x / (1 + x^2) for x < 0. Continuous with slope 1 at 0 from both sides.
struct PySilu {
  template <class T> TL_HD T operator()(T x) const { return x >= T(0) ? x : x / (T(1) + x * x); }
  template <class T> TL_HD T grad(T x, T g) const {
    if (x >= T(0)) return g;
    T d = T(1) + x * x;
    return g * (T(1) - x * x) / (d * d);
  }
};

// The identity, for kernels that take an optional activation (batch norm's fused one).
struct Identity {
  template <class T> TL_HD T operator()(T x) const { return x; }
  template <class T> TL_HD T grad(T, T g) const { return g; }
};

// ---- binary
struct Add { template <class T> TL_HD T operator()(T a, T b) const { return a + b; } };
struct Sub { template <class T> TL_HD T operator()(T a, T b) const { return a - b; } };
struct Mul { template <class T> TL_HD T operator()(T a, T b) const { return a * b; } };
struct Div { template <class T> TL_HD T operator()(T a, T b) const { return a / b; } };
struct Eq { template <class T> TL_HD T operator()(T a, T b) const { return a == b ? T(1) : T(0); } };
struct Gt { template <class T> TL_HD T operator()(T a, T b) const { return a > b ? T(1) : T(0); } };
struct Lt { template <class T> TL_HD T operator()(T a, T b) const { return a < b ? T(1) : T(0); } };
struct Ge { template <class T> TL_HD T operator()(T a, T b) const { return a >= b ? T(1) : T(0); } };
struct Le { template <class T> TL_HD T operator()(T a, T b) const { return a <= b ? T(1) : T(0); } };
// One element of binary cross-entropy on a logit x with target t, stable for any |x|:
// max(x, 0) - x t + log(1 + exp(-|x|)).
struct BceLogits {
  template <class T> TL_HD T operator()(T x, T t) const {
    T ax = x < T(0) ? -x : x;
    return (x > T(0) ? x : T(0)) - x * t + std::log1p(std::exp(-ax));
  }
};
// d/dx of BceLogits: sigmoid(x) - t.
struct BceLogitsGrad { template <class T> TL_HD T operator()(T x, T t) const { return Sigmoid{}(x) - t; } };

}  // namespace tl::fn
