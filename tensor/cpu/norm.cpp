// Batch normalization over every dim but 1: forward (training and eval) and backward.
//
// A contiguous input (N, C, S...) is read as (N, C, S) with S the product of the trailing dims; the
// M = N * S values of channel c are x[(n * C + c) * S + s]. Each channel is reduced by one thread in
// a fixed order, in double precision, so results do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "tensor/cpu/cpu_kernels.h"
#include "tensor/cpu/lane_sum.h"
#include "tensor/op_functors.h"
#include "tensor/strided.h"

namespace tl::cpu {

namespace {

// x (N, C, S...) read as (N, C, S).
using kernels::NCS;

// Channels per thread chunk: about kElementwiseGrain elements of work each.
int64_t channel_grain(const NCS& d) {
  return std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(d.per_channel(), 1));
}

// Element c of a (C) tensor of any stride; `fallback` when the tensor is undefined (affine off).
template <typename T>
T channel_value(const Tensor& t, int64_t c, T fallback) {
  return t.defined() ? t.data_ptr<T>()[c * t.stride(0)] : fallback;
}

// Channel c's map z = (x - mean) * (invstd * w) + b.
template <typename T>
kernels::NormAffine affine_of(double mean, double invstd, const Tensor& weight, const Tensor& bias, int64_t c) {
  return {mean, invstd, static_cast<double>(channel_value<T>(weight, c, T(1))),
          static_cast<double>(channel_value<T>(bias, c, T(0)))};
}

// Options of the (C) statistics: float64 on x's device, whatever x's dtype (see kernels.h).
TensorOptions stats_options(const Tensor& x) { return TensorOptions(kFloat64).with_device(x.device()); }

}  // namespace

// x (N, C, S...), weight/bias/running_mean/running_var (C) or undefined -> y (N, C, S...), mean (C), invstd (C)
kernels::BatchNormOutput batch_norm(const Tensor& x_in, const Tensor& weight, const Tensor& bias,
                                    const Tensor& running_mean, const Tensor& running_var, bool training,
                                    double momentum, double eps, Activation act) {
  const Tensor x = contiguous_copy(x_in);
  const NCS d(x.shape());
  const int64_t m = d.per_channel();
  kernels::BatchNormOutput out{empty(x.shape(), x.options()), empty({d.c}, stats_options(x)),
                               empty({d.c}, stats_options(x))};

  dispatch_floating(x.dtype(), "batch_norm", [&]<typename T>() {
    kernels::with_activation(act, [&](auto f) {
      const T* xp = x.data_ptr<T>();
      T* yp = out.y.data_ptr<T>();
      double* mean_p = out.mean.data_ptr<double>();
      double* invstd_p = out.invstd.data_ptr<double>();
      parallel_for(0, d.c, channel_grain(d), [&](int64_t cb, int64_t ce) {
        for (int64_t c = cb; c < ce; ++c) {
          double mu, var;
          if (training) {
            // Two passes (mean, then squared deviations): E[x^2] - E[x]^2 cancels catastrophically
            // when |mean| >> std, which is common for activations.
            double s1 = 0;
            for (int64_t n = 0; n < d.n; ++n) {
              const T* p = xp + (n * d.c + c) * d.s;
              s1 += lane_sum(d.s, [&](int64_t i) { return static_cast<double>(p[i]); });
            }
            mu = s1 / static_cast<double>(m);
            double s2 = 0;
            for (int64_t n = 0; n < d.n; ++n) {
              const T* p = xp + (n * d.c + c) * d.s;
              s2 += lane_sum(d.s, [&](int64_t i) {
                const double dv = static_cast<double>(p[i]) - mu;
                return dv * dv;
              });
            }
            var = s2 / static_cast<double>(m);  // biased: what normalizes the batch
            if (running_mean.defined()) {
              T& r = running_mean.data_ptr<T>()[c * running_mean.stride(0)];
              r = static_cast<T>((1.0 - momentum) * static_cast<double>(r) + momentum * mu);
            }
            if (running_var.defined()) {
              // The running estimate uses the unbiased variance, as PyTorch does. M > 1 is checked by
              // the op; with M == 1 the biased value (0) is kept rather than dividing by zero.
              const double unbiased = m > 1 ? var * static_cast<double>(m) / static_cast<double>(m - 1) : var;
              T& r = running_var.data_ptr<T>()[c * running_var.stride(0)];
              r = static_cast<T>((1.0 - momentum) * static_cast<double>(r) + momentum * unbiased);
            }
          } else {
            mu = static_cast<double>(channel_value<T>(running_mean, c, T(0)));
            var = static_cast<double>(channel_value<T>(running_var, c, T(1)));
          }
          mean_p[c] = mu;
          invstd_p[c] = 1.0 / std::sqrt(var + eps);
          const kernels::NormAffine z = affine_of<T>(mean_p[c], invstd_p[c], weight, bias, c);
          for (int64_t n = 0; n < d.n; ++n) {
            const int64_t base = (n * d.c + c) * d.s;
            for (int64_t i = 0; i < d.s; ++i) yp[base + i] = f(z(xp[base + i]));
          }
        }
      });
    });
  });
  return out;
}

// grad, x (N, C, S...), weight/bias (C) or undefined, mean/invstd (C) float64 -> dx (N, C, S...),
// dweight/dbias (C)
//
// With xhat = (x - mean) * invstd, z = w * xhat + b, y = act(z), and g the gradient at z (the
// activation's backward of the incoming one, from z recomputed exactly as the forward computed it):
//   dbias = sum(g), dweight = sum(g * xhat) over each channel.
//   Eval (mean, invstd constants): dx = g * w * invstd.
//   Training (mean, invstd functions of x): dx = w * invstd / M * (M g - sum(g) - xhat * sum(g * xhat)).
kernels::BatchNormGrads batch_norm_backward(const Tensor& grad_in, const Tensor& x_in, const Tensor& weight,
                                            const Tensor& bias, const Tensor& mean, const Tensor& invstd,
                                            bool training, Activation act) {
  // grad is often a broadcast view (the backward of a sum): read it as a contiguous copy.
  const Tensor x = contiguous_copy(x_in);
  const Tensor g = contiguous_copy(grad_in);
  const NCS d(x.shape());
  const int64_t m = d.per_channel();
  kernels::BatchNormGrads out;
  out.dx = empty(x.shape(), x.options());
  if (weight.defined()) out.dweight = empty({d.c}, x.options());
  if (bias.defined()) out.dbias = empty({d.c}, x.options());

  dispatch_floating(x.dtype(), "batch_norm_backward", [&]<typename T>() {
    kernels::with_activation(act, [&](auto f) {
      const T* xp = x.data_ptr<T>();
      const T* gp = g.data_ptr<T>();
      T* dxp = out.dx.data_ptr<T>();
      parallel_for(0, d.c, channel_grain(d), [&](int64_t cb, int64_t ce) {
        // The gradient at the pre-activation, act'(z) g, of one channel (n-major, as x's rows), computed
        // once by a loop of its own: free of the sums' dependency chain it vectorizes, and the two
        // passes below share it. Without an activation it is g itself.
        CpuBuffer<T> gz(act == Activation::None ? 0 : static_cast<size_t>(m));
        for (int64_t c = cb; c < ce; ++c) {
          const double mu = channel_value<double>(mean, c, 0.0);
          const double is = channel_value<double>(invstd, c, 1.0);
          const kernels::NormAffine z = affine_of<T>(mu, is, weight, bias, c);
          if (!gz.empty())
            for (int64_t n = 0; n < d.n; ++n) {
              const int64_t base = (n * d.c + c) * d.s;
              T* out_row = gz.data() + n * d.s;
              for (int64_t i = 0; i < d.s; ++i)
                out_row[i] = kernels::pre_activation_grad(f, z, xp[base + i], gp[base + i]);
            }
          // Row n of the gradient at the pre-activation.
          auto gz_row = [&](int64_t n) -> const T* {
            return gz.empty() ? gp + (n * d.c + c) * d.s : gz.data() + n * d.s;
          };
          double sum_g = 0, sum_gxhat = 0;
          for (int64_t n = 0; n < d.n; ++n) {
            const T* xr = xp + (n * d.c + c) * d.s;
            const T* gr = gz_row(n);
            const auto [sg, sgx] = lane_sum2(
                d.s, [&](int64_t i) { return static_cast<double>(gr[i]); },
                [&](int64_t i) { return static_cast<double>(gr[i]) * (static_cast<double>(xr[i]) - mu); });
            sum_g += sg;
            sum_gxhat += sgx;
          }
          sum_gxhat *= is;
          if (weight.defined()) out.dweight.data_ptr<T>()[c] = static_cast<T>(sum_gxhat);
          if (bias.defined()) out.dbias.data_ptr<T>()[c] = static_cast<T>(sum_g);
          // The formula above with its per-channel factors folded.
          const auto dx = kernels::NormGradCoef::make(static_cast<double>(channel_value<T>(weight, c, T(1))), is,
                                                      sum_g, sum_gxhat, m, training);
          for (int64_t n = 0; n < d.n; ++n) {
            const int64_t base = (n * d.c + c) * d.s;
            const T* gr = gz_row(n);
            for (int64_t i = 0; i < d.s; ++i)
              dxp[base + i] = static_cast<T>(dx(static_cast<double>(gr[i]), static_cast<double>(xp[base + i]) - mu));
          }
        }
      });
    });
  });
  return out;
}

}  // namespace tl::cpu
