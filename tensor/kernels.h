#pragma once
// The primitive ops: the short list a backend implements. Each function checks that its tensors
// share one device, then dispatches (kernels.cpp) to the CPU bodies in cpu/ or to the CUDA backend.
// Shapes and dtypes are validated one level up, by the ops of autograd/ops.h, which name the op the
// user called; the kernels trust them. Nothing here records gradients.
//
// Results are new contiguous tensors unless a function says otherwise.
#include <cstdint>
#include <utility>
#include <vector>

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
// Broadcasts a and b (same dtype, same device). Comparisons give 0/1 in the inputs' dtype.
Tensor binary(Binary op, const Tensor& a, const Tensor& b);

// ---- reductions over `dims` (sorted, unique, already wrapped; empty means all dims)
enum class Reduce { Sum, Mean, Max };
Tensor reduce(Reduce op, const Tensor& x, const std::vector<int64_t>& dims, bool keepdim);

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
std::pair<Tensor, Tensor> max_pool2d(const Tensor& x, int64_t kh, int64_t kw, int64_t sh, int64_t sw);
Tensor max_pool2d_backward(const Tensor& grad, const Tensor& indices, const Shape& x_shape);

// ---- batch norm over every dim but 1 (channels)
struct BatchNormOutput {
  Tensor y;
  Tensor mean;    // (C) the statistics used: batch mean (training) or running mean (eval)
  Tensor invstd;  // (C) 1 / sqrt(var + eps), var biased (training) or running (eval)
};
// weight, bias (C) may be undefined (affine off). In training mode running_mean/var (C), when defined,
// are updated in place: r = (1 - momentum) r + momentum * batch_stat, with the unbiased variance.
BatchNormOutput batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                           const Tensor& running_var, bool training, double momentum, double eps);
struct BatchNormGrads {
  Tensor dx, dweight, dbias;  // dweight/dbias undefined when weight is
};
// `training` says whether mean/invstd were batch statistics (they then depend on x).
BatchNormGrads batch_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight, const Tensor& mean,
                                   const Tensor& invstd, bool training);

// ---- negative log-likelihood: logp (N, C, ...) float, target (N, ...) int64 class indices.
// Mean over targets of -logp[n, target, ...]; a 0-d tensor.
Tensor nll_loss(const Tensor& logp, const Tensor& target);
// grad is the 0-d upstream gradient; returns d/dlogp (shape of logp).
Tensor nll_loss_backward(const Tensor& grad, const Tensor& logp, const Tensor& target);

// ---- random (counter-based, see random.h): fills a contiguous tensor from (seed, offset)
enum class Distribution { Uniform, Normal };
void fill_random_(const Tensor& dst, Distribution d, double a, double b, uint64_t seed, uint64_t offset);

}  // namespace tl::kernels
