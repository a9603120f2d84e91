#pragma once
// The CUDA bodies of the primitive ops of tensor/kernels.h (same signatures as tl::cpu's in
// tensor/cpu/cpu_kernels.h), for tensors on one cuda:N device. The dispatch in tensor/kernels.cpp
// calls them; arguments are already checked there and by the ops of autograd/ops.h. Every kernel is
// queued on the device's stream (cuda/runtime.h) and returns without waiting, except where a comment
// says it synchronizes. Plain C++ header: no CUDA types.
#include <cstdint>
#include <utility>
#include <vector>

#include "tensor/kernels.h"

namespace tl::cuda {

using kernels::Binary;
using kernels::Conv2dParams;
using kernels::Reduce;
using kernels::Unary;
using kernels::UnaryParams;

// t itself when contiguous, else a contiguous copy on its device, with no autograd history.
Tensor contiguous_copy(const Tensor& t);
void fill_(const Tensor& dst, double value);
void fill_random_(const Tensor& dst, kernels::Distribution d, double a, double b, uint64_t seed, uint64_t offset);

Tensor unary(Unary op, const Tensor& x, UnaryParams p);
Tensor unary_backward(Unary op, const Tensor& x, const Tensor& grad, UnaryParams p);
Tensor binary(Binary op, const Tensor& a, const Tensor& b, const Tensor& out);
Tensor reduce(Reduce op, const Tensor& x, const std::vector<int64_t>& dims, bool keepdim);

// cuBLAS. The float32 GEMMs run in strict fp32 unless tl::allow_tf32() (tensor/precision.h).
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

// Synchronizes once: the targets are checked on the device and an 8-byte record read back; a bad one
// raises the CPU kernel's error message.
Tensor nll_loss(const Tensor& logp, const Tensor& target);
// Does not check the targets (the forward did) and does not synchronize; an out-of-range target is
// skipped (its gradient stays 0), never written through.
Tensor nll_loss_backward(const Tensor& grad, const Tensor& logp, const Tensor& target);

}  // namespace tl::cuda
