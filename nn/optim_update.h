#pragma once
// The per-element optimizer updates, shared by the CPU loop (nn/optim.cpp) and the fused CUDA step
// (nn/optim_cuda.cu), and the CUDA step's entry points.
#include <cmath>
#include <cstdint>
#include <vector>

#include "tensor/functors.h"  // TL_HD

namespace tl::optim {

// ---- the per-element updates. Each line is one op of torch 1.13's _single_tensor_* function (quoted
// beside it). A hyperparameter enters as T(x), torch's rounding of the Python float to the tensor's
// dtype; std::fma stands where torch's vectorized CPU kernels fuse (add with alpha is
// fmadd(other, alpha, self); addcmul's `self + value * t1 * t2` is contracted), and addcdiv adds an
// unfused quotient. With these choices ten float32 steps of every optimizer here reproduced torch
// 1.13's CPU (AVX2) results bit for bit on a million elements; each other choice changed thousands.
template <class T>
struct SgdUpdate {
  T weight_decay, momentum, one_minus_dampening, neg_lr;
  bool decay, has_momentum, nesterov;
  bool first;  // this parameter's first update: the buffer starts as a copy of the gradient
  TL_HD void operator()(T& p, T g, T& buf) const {
    T d = decay ? std::fma(p, weight_decay, g) : g;  // d_p = d_p.add(param, alpha=weight_decay)
    if (has_momentum) {
      // buf.mul_(momentum).add_(d_p, alpha=1 - dampening)
      buf = first ? d : std::fma(d, one_minus_dampening, buf * momentum);
      d = nesterov ? std::fma(buf, momentum, d) : buf;  // d_p = d_p.add(buf, alpha=momentum)
    }
    p = std::fma(d, neg_lr, p);  // param.add_(d_p, alpha=-lr)
  }
};

template <class T>
struct AdamUpdate {
  T decay;         // AdamW: 1 - lr * weight_decay
  T weight_decay;  // Adam: the L2 coefficient
  T beta1, one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, eps, neg_step_size;
  bool decoupled, l2;
  TL_HD void operator()(T& p, T g, T& m, T& v) const {
    if (decoupled) p = p * decay;                     // param.mul_(1 - lr * weight_decay)
    if (l2) g = std::fma(p, weight_decay, g);         // grad = grad.add(param, alpha=weight_decay)
    m = std::fma(g, one_minus_beta1, m * beta1);      // exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    v = std::fma(one_minus_beta2 * g, g, v * beta2);  // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    const T denom = std::sqrt(v) / bias_correction2_sqrt + eps;  // (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps)
    p = p + neg_step_size * m / denom;                // param.addcdiv_(exp_avg, denom, value=-step_size)
  }
};

#if TL_WITH_CUDA
// One parameter's contiguous device buffers for the fused step: the parameter, its gradient and up
// to two state slots (null when the optimizer has fewer), numel elements each.
struct DeviceSlots {
  void* param;
  const void* grad;
  void* slot0;
  void* slot1;
  int64_t numel;
};
// Applies the update to every listed parameter on `device` in as few kernel launches as the
// parameter table allows (one per kMaxFusedTensors parameters), queued on the device's stream.
constexpr int kMaxFusedTensors = 24;
template <class T>
void cuda_sgd_step(const std::vector<DeviceSlots>& params, const SgdUpdate<T>& f, int device);
template <class T>
void cuda_adam_step(const std::vector<DeviceSlots>& params, const AdamUpdate<T>& f, int device);
#endif

}  // namespace tl::optim
