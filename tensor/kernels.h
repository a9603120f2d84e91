#pragma once
// The primitive ops: the short list a backend implements. Each function checks that its tensors
// share one device, then dispatches (kernels.cpp) to the CPU bodies in cpu/ or to the CUDA backend.
// Shapes and dtypes are validated one level up, by the ops of autograd/ops.h, which name the op the
// user called; the kernels trust them. Nothing here records gradients.
//
// Results are new contiguous tensors unless a function says otherwise.
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "tensor/activation.h"
#include "tensor/functors.h"  // TL_HD
#include "tensor/tensor.h"

namespace tl::kernels {

// ---- copy and fill
void copy_(const Tensor& dst, const Tensor& src);  // src broadcast to dst's shape, cast to dst's dtype
void fill_(const Tensor& dst, double value);

// ---- elementwise
enum class Unary { Neg, Exp, Log, Sqrt, Abs, Pow, Clamp, Sigmoid, Tanh, Relu, Gelu, Silu, PySilu };
struct UnaryParams {
  double a = 0, b = 0;  // Pow: a = exponent; Clamp: [a, b]
};
const char* unary_name(Unary op);
Tensor unary(Unary op, const Tensor& x, UnaryParams p = {});
// grad * f'(x), computed from the op's input x. Same shape as x.
Tensor unary_backward(Unary op, const Tensor& x, const Tensor& grad, UnaryParams p = {});

enum class Binary { Add, Sub, Mul, Div, Eq, Gt, Lt, Ge, Le, BceLogits, BceLogitsGrad };
const char* binary_name(Binary op);
// Broadcasts a and b (same dtype, same device). Comparisons give 0/1 in the inputs' dtype. With `out`
// (the broadcast shape, a's dtype) the result is written there and returned; out may be a or b itself
// (each element reads its inputs before writing), not an overlapping view of them.
Tensor binary(Binary op, const Tensor& a, const Tensor& b, const Tensor& out = Tensor());

// ---- reductions over `dims` (sorted, unique, already wrapped; empty means all dims)
enum class Reduce { Sum, Mean, Max };
Tensor reduce(Reduce op, const Tensor& x, const std::vector<int64_t>& dims, bool keepdim);
// x's dims split for a backend's reduce: the kept ("outer") dims index the outputs, the reduced
// ("inner") dims the `count` elements each output reduces.
struct ReducePlan {
  Shape out_shape;  // with keepdim, 1 in each reduced dim
  Shape outer_shape, inner_shape;
  Strides outer_strides, inner_strides;
  int64_t count = 1;  // elements per output
};
ReducePlan reduce_plan(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim);

// ---- GEMM: (B, M, K) x (B, K, N) -> (B, M, N), any strides (batch stride may be 0)
Tensor bmm(const Tensor& a, const Tensor& b);

// ---- convolution by im2col + GEMM; col2im + GEMM for the input gradient
struct Conv2dParams {
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
};
// x (N, C, H, W), w (O, C, kh, kw), bias (O) or undefined -> (N, O, Ho, Wo)
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, Conv2dParams p);
// grad (N, O, Ho, Wo), w (O, C, kh, kw) -> (N, C, H, W) with H, W from x_shape
Tensor conv2d_backward_input(const Tensor& grad, const Tensor& w, const Shape& x_shape, Conv2dParams p);
// grad (N, O, Ho, Wo), x (N, C, H, W) -> (O, C, kh, kw) with kh, kw from w_shape
Tensor conv2d_backward_weight(const Tensor& grad, const Tensor& x, const Shape& w_shape, Conv2dParams p);

// ---- pooling: x (N, C, H, W) -> (output, indices), indices (int64) index into each H*W plane
struct Pool2dParams {
  int64_t kernel_h, kernel_w, stride_h, stride_w;
};
std::pair<Tensor, Tensor> max_pool2d(const Tensor& x, Pool2dParams p);
// The forward's params tell a backend which windows hold a pixel (the CUDA kernel gathers).
Tensor max_pool2d_backward(const Tensor& grad, const Tensor& indices, const Shape& x_shape, Pool2dParams p);

// ---- batch norm over every dim but 1 (channels)
// x (N, C, S...) read as (N, C, S), S the product of the trailing dims; channel c's N*S values are
// x[(n * C + c) * S + s] when x is contiguous. Both backends' kernels index it so.
struct NCS {
  int64_t n, c, s;
  explicit NCS(const Shape& shape)
      : n(shape[0]), c(shape[1]), s(numel_of(shape) / (shape[0] * shape[1] > 0 ? shape[0] * shape[1] : 1)) {}
  TL_HD int64_t per_channel() const { return n * s; }
};
// Batch norm's per-channel map z = (x - mean) * (invstd * w) + b, computed in double and rounded to T
// once. Both backends' forwards and backwards use it, so a backward's recomputed pre-activation
// equals its forward's bit for bit.
struct NormAffine {
  double mean, scale, shift;
  TL_HD NormAffine(double mean_, double invstd, double w, double b) : mean(mean_), scale(invstd * w), shift(b) {}
  template <class T>
  TL_HD T operator()(T x) const {
    return static_cast<T>((static_cast<double>(x) - mean) * scale + shift);
  }
};
// g * act'(z) at z = affine(x): the gradient at the pre-activation. With no activation it is g.
template <class F, class T>
TL_HD T pre_activation_grad(const F& f, const NormAffine& affine, T x, T g) {
  if constexpr (std::is_same_v<F, fn::Identity>) {
    (void)f, (void)affine, (void)x;
    return g;
  } else {
    return f.grad(affine(x), g);
  }
}
// Batch norm's input gradient with its per-channel factors folded: dx = a gz + b (x - mean) + k, from the
// channel's sums of gz and gz * xhat (tensor/cpu/norm.cpp derives it). Both backends use it.
struct NormGradCoef {
  double a, b, k;
  static TL_HD NormGradCoef make(double w, double invstd, double sum_g, double sum_gxhat, int64_t m, bool training) {
    NormGradCoef r{w * invstd, 0.0, 0.0};
    if (training && m > 0) {  // mean and invstd depend on x
      const double inv_m = 1.0 / static_cast<double>(m);
      r.b = -r.a * inv_m * sum_gxhat * invstd;  // the xhat * sum(gz xhat) term, xhat = (x - mean) invstd
      r.k = -r.a * inv_m * sum_g;
    }
    return r;
  }
  TL_HD double operator()(double gz, double x_minus_mean) const { return a * gz + b * x_minus_mean + k; }
};
struct BatchNormOutput {
  Tensor y;
  // (C) float64, whatever x's dtype: the statistics used, batch (training) or running (eval). The
  // backward reads these exact values, so a fused activation's recomputed input equals the forward's.
  Tensor mean;
  Tensor invstd;  // 1 / sqrt(var + eps), var biased (training) or running (eval)
};
// y = act(w * (x - mean) * invstd + b), act applied in the same pass (Activation::None: no act).
// weight, bias (C) may be undefined (affine off). In training mode running_mean/var (C), when defined,
// are updated in place: r = (1 - momentum) r + momentum * batch_stat, with the unbiased variance.
BatchNormOutput batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                           const Tensor& running_var, bool training, double momentum, double eps,
                           Activation act = Activation::None);
struct BatchNormGrads {
  Tensor dx, dweight, dbias;  // dweight (dbias) undefined when weight (bias) is
};
// grad is d/dy. With an activation, d/d(pre-activation) is recomputed from x, the statistics, weight
// and bias. `training` says whether mean/invstd were batch statistics (they then depend on x).
BatchNormGrads batch_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight, const Tensor& bias,
                                   const Tensor& mean, const Tensor& invstd, bool training,
                                   Activation act = Activation::None);

// ---- negative log-likelihood: logp (N, C, ...) float, target (N, ...) int64 class indices.
// Mean over targets of -logp[n, target, ...]; a 0-d tensor.
Tensor nll_loss(const Tensor& logp, const Tensor& target);
// grad is the 0-d upstream gradient; returns d/dlogp (shape of logp).
Tensor nll_loss_backward(const Tensor& grad, const Tensor& logp, const Tensor& target);

// ---- random (counter-based, see random.h): fills a contiguous tensor from (seed, offset)
enum class Distribution { Uniform, Normal };
void fill_random_(const Tensor& dst, Distribution d, double a, double b, uint64_t seed, uint64_t offset);

}  // namespace tl::kernels
