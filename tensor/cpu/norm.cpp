// Batch normalization over every dim but 1: forward (training and eval) and backward.
//
// A contiguous input (N, C, S...) is read as (N, C, S) with S the product of the trailing dims; the
// M = N * S values of channel c are x[(n * C + c) * S + s]. Each channel is reduced by one thread in
// a fixed order, in double precision, so results do not depend on the thread count.
#include <algorithm>
#include <cmath>

#include "tensor/cpu/cpu_kernels.h"
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

}  // namespace

// x (N, C, S...), weight/bias/running_mean/running_var (C) or undefined -> y (N, C, S...), mean (C), invstd (C)
kernels::BatchNormOutput batch_norm(const Tensor& x_in, const Tensor& weight, const Tensor& bias,
                                    const Tensor& running_mean, const Tensor& running_var, bool training,
                                    double momentum, double eps) {
  const Tensor x = contiguous_copy(x_in);
  const NCS d(x.shape());
  const int64_t m = d.per_channel();
  kernels::BatchNormOutput out{empty(x.shape(), x.options()), empty({d.c}, x.options()), empty({d.c}, x.options())};

  dispatch_floating(x.dtype(), "batch_norm", [&]<typename T>() {
    const T* xp = x.data_ptr<T>();
    T* yp = out.y.data_ptr<T>();
    T* mean_p = out.mean.data_ptr<T>();
    T* invstd_p = out.invstd.data_ptr<T>();
    parallel_for(0, d.c, channel_grain(d), [&](int64_t cb, int64_t ce) {
      for (int64_t c = cb; c < ce; ++c) {
        double mu, var;
        if (training) {
          // Two passes (mean, then squared deviations): E[x^2] - E[x]^2 cancels catastrophically when
          // |mean| >> std, which is common for activations.
          double s1 = 0;
          for (int64_t n = 0; n < d.n; ++n) {
            const T* p = xp + (n * d.c + c) * d.s;
            for (int64_t i = 0; i < d.s; ++i) s1 += static_cast<double>(p[i]);
          }
          mu = s1 / static_cast<double>(m);
          double s2 = 0;
          for (int64_t n = 0; n < d.n; ++n) {
            const T* p = xp + (n * d.c + c) * d.s;
            for (int64_t i = 0; i < d.s; ++i) {
              const double dv = static_cast<double>(p[i]) - mu;
              s2 += dv * dv;
            }
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
        const double invstd = 1.0 / std::sqrt(var + eps);
        mean_p[c] = static_cast<T>(mu);
        invstd_p[c] = static_cast<T>(invstd);
        // y = (x - mu) * (invstd * w) + b. Subtracting mu first keeps the precision that folding it
        // into the shift would cancel away when |mu| >> std.
        const double scale = invstd * static_cast<double>(channel_value<T>(weight, c, T(1)));
        const double shift = static_cast<double>(channel_value<T>(bias, c, T(0)));
        for (int64_t n = 0; n < d.n; ++n) {
          const int64_t base = (n * d.c + c) * d.s;
          for (int64_t i = 0; i < d.s; ++i)
            yp[base + i] = static_cast<T>((static_cast<double>(xp[base + i]) - mu) * scale + shift);
        }
      }
    });
  });
  return out;
}

// grad, x (N, C, S...), weight (C) or undefined, mean/invstd (C) -> dx (N, C, S...), dweight/dbias (C)
//
// With xhat = (x - mean) * invstd and y = w * xhat + b:
//   dbias = sum(g), dweight = sum(g * xhat) over each channel.
//   Eval (mean, invstd constants): dx = g * w * invstd.
//   Training (mean, invstd functions of x): dx = w * invstd / M * (M g - sum(g) - xhat * sum(g * xhat)).
kernels::BatchNormGrads batch_norm_backward(const Tensor& grad_in, const Tensor& x_in, const Tensor& weight,
                                            const Tensor& mean, const Tensor& invstd, bool training) {
  // grad is often a broadcast view (the backward of a sum): read it as a contiguous copy.
  const Tensor x = contiguous_copy(x_in);
  const Tensor g = contiguous_copy(grad_in);
  const NCS d(x.shape());
  const int64_t m = d.per_channel();
  kernels::BatchNormGrads out;
  out.dx = empty(x.shape(), x.options());
  if (weight.defined()) {
    out.dweight = empty({d.c}, x.options());
    out.dbias = empty({d.c}, x.options());
  }

  dispatch_floating(x.dtype(), "batch_norm_backward", [&]<typename T>() {
    const T* xp = x.data_ptr<T>();
    const T* gp = g.data_ptr<T>();
    T* dxp = out.dx.data_ptr<T>();
    parallel_for(0, d.c, channel_grain(d), [&](int64_t cb, int64_t ce) {
      for (int64_t c = cb; c < ce; ++c) {
        const double mu = static_cast<double>(channel_value<T>(mean, c, T(0)));
        const double is = static_cast<double>(channel_value<T>(invstd, c, T(1)));
        const double w = static_cast<double>(channel_value<T>(weight, c, T(1)));
        double sum_g = 0, sum_gxhat = 0;
        for (int64_t n = 0; n < d.n; ++n) {
          const int64_t base = (n * d.c + c) * d.s;
          for (int64_t i = 0; i < d.s; ++i) {
            const double gv = static_cast<double>(gp[base + i]);
            sum_g += gv;
            sum_gxhat += gv * (static_cast<double>(xp[base + i]) - mu);
          }
        }
        sum_gxhat *= is;
        if (weight.defined()) {
          out.dweight.data_ptr<T>()[c] = static_cast<T>(sum_gxhat);
          out.dbias.data_ptr<T>()[c] = static_cast<T>(sum_g);
        }
        // dx = a g + b (x - mean) + k: the formula above with its per-channel factors folded.
        const double a = w * is;
        double b = 0, k = 0;
        if (training && m > 0) {
          const double inv_m = 1.0 / static_cast<double>(m);
          b = -a * inv_m * sum_gxhat * is;  // the xhat * sum(g xhat) term, xhat = (x - mean) invstd
          k = -a * inv_m * sum_g;
        }
        for (int64_t n = 0; n < d.n; ++n) {
          const int64_t base = (n * d.c + c) * d.s;
          for (int64_t i = 0; i < d.s; ++i)
            dxp[base + i] = static_cast<T>(a * static_cast<double>(gp[base + i]) +
                                           b * (static_cast<double>(xp[base + i]) - mu) + k);
        }
      }
    });
  });
  return out;
}

}  // namespace tl::cpu
