#pragma once
// The op catalog: every differentiable op of the engine. Each takes and returns Tensors, checks its
// arguments (errors name the op and show the shapes), records itself for autograd when an input
// requires grad, and works for float32 and float64 on any device that has the kernels.
// Names and semantics follow PyTorch (torch.* / torch.nn.functional.*).
#include <cstdint>
#include <vector>

#include "autograd/grad_mode.h"
#include "tensor/activation.h"
#include "tensor/tensor.h"

namespace tl {

// ---- elementwise, broadcasting (ops_elementwise.cpp)
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double s);
Tensor sub(const Tensor& a, double s);
Tensor rsub(const Tensor& a, double s);  // s - a
Tensor mul(const Tensor& a, double s);
Tensor div(const Tensor& a, double s);
Tensor rdiv(const Tensor& a, double s);  // s / a
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor pow(const Tensor& x, double exponent);
Tensor abs(const Tensor& x);
Tensor clamp(const Tensor& x, double lo, double hi);  // use +-infinity for a one-sided clamp
Tensor sigmoid(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor gelu(const Tensor& x);    // exact erf form
Tensor silu(const Tensor& x);
Tensor pysilu(const Tensor& x);  // x >= 0 ? x : x / (1 + x^2)
Tensor activation(const Tensor& x, Activation a);  // one of the four above by name; x itself for None
// Comparisons: not differentiable; 0/1 as uint8, as torch's bool masks.
Tensor eq(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, double s);
Tensor lt(const Tensor& a, double s);

Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& x);
Tensor operator+(const Tensor& a, double s);
Tensor operator-(const Tensor& a, double s);
Tensor operator*(const Tensor& a, double s);
Tensor operator/(const Tensor& a, double s);
Tensor operator+(double s, const Tensor& a);
Tensor operator-(double s, const Tensor& a);
Tensor operator*(double s, const Tensor& a);
Tensor operator/(double s, const Tensor& a);

// ---- reductions (ops_reduce.cpp); empty dims = all dims; max is torch.amax (ties share the gradient)
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor max(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
// Sums a broadcast gradient back to `shape` (the inverse of broadcasting `shape` to x's shape).
Tensor sum_to(const Tensor& x, const Shape& shape);

// ---- shape ops (ops_shape.cpp). Views never copy; see also the Tensor methods.
Tensor cat(const std::vector<Tensor>& tensors, int64_t dim);
// Constant padding, torch.nn.functional.pad order: (left, right) of the last dim, then of the one
// before, ... Sizes must be >= 0.
Tensor pad(const Tensor& x, const std::vector<int64_t>& pads, double value = 0.0);
// The central (h, w) window of the last two dims; starts at floor((size - target) / 2). A view.
Tensor center_crop(const Tensor& x, int64_t h, int64_t w);

// ---- linear algebra (ops_linalg.cpp)
// (M, K) x (K, N), or batched (..., M, K) x (..., K, N) with broadcast batch dims.
Tensor matmul(const Tensor& a, const Tensor& b);

// ---- convolution and pooling (ops_conv.cpp, ops_pool.cpp)
struct Size2 {
  int64_t h, w;
  Size2(int64_t v) : h(v), w(v) {}  // NOLINT: implicit, as torch accepts an int or a pair
  Size2(int64_t h_, int64_t w_) : h(h_), w(w_) {}
};
// x (N, C, H, W), weight (O, C, kh, kw), bias (O) or undefined.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(), Size2 stride = 1,
              Size2 padding = 0);
// x (N, Cin, H, W), weight (Cin, Cout, kh, kw) as torch's ConvTranspose2d, bias (Cout) or undefined.
// Output side: (H - 1) * stride - 2 * padding + kh.
Tensor conv_transpose2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(), Size2 stride = 1,
                        Size2 padding = 0);
// No padding; stride defaults to the kernel size, as in torch.
Tensor max_pool2d(const Tensor& x, Size2 kernel, Size2 stride = 0);

// ---- normalization (ops_norm.cpp)
// Over every dim but 1. Training: batch statistics, running stats (when defined) updated in place
// with momentum and the unbiased variance. Eval: running statistics.
Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                  const Tensor& running_var, bool training, double momentum = 0.1, double eps = 1e-5);
// act(batch_norm(x, ...)) in one pass: the values of activation(batch_norm(...)), forward and backward
// (float32 on the CPU: bit for bit). Saves less for backward: the pre-activation is recomputed.
Tensor batch_norm_activation(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                             const Tensor& running_var, bool training, double momentum, double eps, Activation act);

// ---- losses (ops_loss.cpp); all return a 0-d mean
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target);
// 1 - (2 sum(p t) + smooth) / (sum(p) + sum(t) + smooth), p = sigmoid(logits), over all elements.
Tensor dice_loss(const Tensor& logits, const Tensor& target, double smooth = 1.0);
Tensor log_softmax(const Tensor& x, int64_t dim);
// logp (N, C, ...) log-probabilities, target (N, ...) int64 class indices.
Tensor nll_loss(const Tensor& logp, const Tensor& target);
// logits (N, C, ...), target (N, ...) int64: nll_loss(log_softmax(logits, 1), target).
Tensor cross_entropy(const Tensor& logits, const Tensor& target);

}  // namespace tl
