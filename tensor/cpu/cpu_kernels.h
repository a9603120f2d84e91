#pragma once
// CPU bodies of the primitive ops of tensor/kernels.h (same signatures, namespace tl::cpu).
// Arguments are already checked by the caller; inputs may have any strides.
#include <string>

#include "tensor/kernels.h"

namespace tl::cpu {

using kernels::Binary;
using kernels::Conv2dParams;
using kernels::Reduce;
using kernels::Unary;
using kernels::UnaryParams;

void copy_(const Tensor& dst, const Tensor& src);
// x itself when contiguous, else a contiguous copy made by copy_ (no autograd history), for the
// kernels whose loops index raw (N, C, ...) buffers.
Tensor contiguous_copy(const Tensor& x);
void fill_(const Tensor& dst, double value);
void fill_random_(const Tensor& dst, kernels::Distribution d, double a, double b, uint64_t seed, uint64_t offset);

Tensor unary(Unary op, const Tensor& x, UnaryParams p);
Tensor unary_backward(Unary op, const Tensor& x, const Tensor& grad, UnaryParams p);
Tensor binary(Binary op, const Tensor& a, const Tensor& b, const Tensor& out);
Tensor reduce(Reduce op, const Tensor& x, const std::vector<int64_t>& dims, bool keepdim);
Tensor bmm(const Tensor& a, const Tensor& b);

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, Conv2dParams p);
Tensor conv2d_backward_input(const Tensor& grad, const Tensor& w, const Shape& x_shape, Conv2dParams p);
Tensor conv2d_backward_weight(const Tensor& grad, const Tensor& x, const Shape& w_shape, Conv2dParams p);

std::pair<Tensor, Tensor> max_pool2d(const Tensor& x, kernels::Pool2dParams p);
Tensor max_pool2d_backward(const Tensor& grad, const Tensor& indices, const Shape& x_shape, kernels::Pool2dParams p);

kernels::BatchNormOutput batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                    const Tensor& running_mean, const Tensor& running_var, bool training,
                                    double momentum, double eps, Activation act);
kernels::BatchNormGrads batch_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight,
                                            const Tensor& bias, const Tensor& mean, const Tensor& invstd,
                                            bool training, Activation act);

// logp (N, C, S...) read as (N, C, S); a 1-d logp (C) is one sample (N = 1, S = 1).
struct NllDims {
  int64_t n, c, s;
  explicit NllDims(const Tensor& logp) {
    const bool batched = logp.dim() >= 2;
    n = batched ? logp.size(0) : 1;
    c = batched ? logp.size(1) : logp.size(0);
    s = batched && n * c > 0 ? logp.numel() / (n * c) : 1;
  }
};
Tensor nll_loss(const Tensor& logp, const Tensor& target);
// target (N, S...) int64 on any device as a contiguous CPU tensor, every value checked to lie in
// [0, classes); the error names `op`, the value and its position.
Tensor check_nll_target(const char* op, const Tensor& target, int64_t classes);
// The text of that error after "op: ", for `value` at flat position `position` of a target of
// `shape`. Shared with the CUDA backend, which checks its targets on the device.
std::string nll_target_error(int64_t value, int64_t position, const Shape& shape, int64_t classes);
Tensor nll_loss_backward(const Tensor& grad, const Tensor& logp, const Tensor& target);

}  // namespace tl::cpu
