// Batch normalization over every dim but 1, forward (training and eval) and backward.
//
// A contiguous input (N, C, S...) is read as (N, C, S); channel c's M = N*S values are
// x[(n*C + c)*S + s]. Per-channel sums are split over `splits` blocks per channel (grid C * splits),
// each writing double partials that one thread per channel then adds in order, so the statistics
// are deterministic. The variance is taken in one pass as E[(x - k)^2] - E[x - k]^2 in double with
// k = the channel's first value: the shift keeps the cancellation that the CPU kernel's two passes
// avoid out of reach of float inputs. An elementwise kernel then applies the per-channel affine map
// and the fused activation; the backward recomputes the pre-activation where it needs it.
#include <algorithm>
#include <cmath>

#include "cuda/launch.cuh"
#include "cuda/ops.h"
#include "tensor/op_functors.h"

namespace tl::cuda {

namespace {

using kernels::NCS;

// Blocks per channel: enough to fill the device, each with a few elements per thread.
int64_t splits_for(const NCS& d, int device) {
  const int64_t target = 4 * static_cast<int64_t>(sm_count(device));
  const int64_t by_device = (target + d.c - 1) / std::max<int64_t>(d.c, 1);
  const int64_t by_work = (d.per_channel() + 4 * kThreads - 1) / (4 * kThreads);
  return std::max<int64_t>(1, std::min(by_device, by_work));
}

// The element j < M of channel c.
TL_HD int64_t channel_index(const NCS& d, int64_t c, int64_t j) { return ((j / d.s) * d.c + c) * d.s + j % d.s; }

// Element c of a (C) vector with stride `st`, or `fallback` when the pointer is null (affine off,
// no running statistics).
template <typename T>
TL_HD T at(const T* p, int64_t st, int64_t c, T fallback) {
  return p ? p[c * st] : fallback;
}

// partial[(c * splits + split) * 2 + {0, 1}] = sums of u and u^2 over the block's slice of channel c,
// u = x - x[channel's first element].
template <typename T>
__global__ void stats_partial_kernel(const T* x, double* partial, NCS d, int64_t splits) {
  __shared__ double shared[32];
  const int64_t c = blockIdx.x / splits, split = blockIdx.x % splits;
  const int64_t m = d.per_channel(), per = (m + splits - 1) / splits;
  const int64_t begin = split * per, end = begin + per < m ? begin + per : m;
  const double shift = m > 0 ? static_cast<double>(x[c * d.s]) : 0.0;
  double s1 = 0, s2 = 0;
  for (int64_t j = begin + threadIdx.x; j < end; j += blockDim.x) {
    const double u = static_cast<double>(x[channel_index(d, c, j)]) - shift;
    s1 += u;
    s2 += u * u;
  }
  auto add = [](double a, double b) { return a + b; };
  s1 = block_reduce(s1, shared, add);
  s2 = block_reduce(s2, shared, add);
  if (threadIdx.x == 0) {
    partial[blockIdx.x * 2] = s1;
    partial[blockIdx.x * 2 + 1] = s2;
  }
}

// Writes channel c's statistics, in double (the op's outputs).
__device__ inline void write_stats(int64_t c, double mu, double var, double eps, double* mean, double* invstd) {
  mean[c] = mu;
  invstd[c] = 1.0 / sqrt(var + eps);
}

// One thread per channel: the batch mean and biased variance, invstd, and the running statistics'
// update (unbiased variance, as PyTorch).
template <typename T>
__global__ void stats_finish_kernel(const T* x, const double* partial, NCS d, int64_t splits, double eps,
                                    T* running_mean, int64_t rm_stride, T* running_var, int64_t rv_stride,
                                    double momentum, double* mean, double* invstd) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= d.c) return;
  double s1 = 0, s2 = 0;
  for (int64_t k = 0; k < splits; ++k) {
    s1 += partial[(c * splits + k) * 2];
    s2 += partial[(c * splits + k) * 2 + 1];
  }
  const int64_t m = d.per_channel();
  const double shifted_mean = s1 / static_cast<double>(m);
  const double mu = (m > 0 ? static_cast<double>(x[c * d.s]) : 0.0) + shifted_mean;  // 0 / 0: NaN when M = 0
  double var = s2 / static_cast<double>(m) - shifted_mean * shifted_mean;
  if (var < 0) var = 0;
  if (running_mean) {
    T& r = running_mean[c * rm_stride];
    r = static_cast<T>((1.0 - momentum) * static_cast<double>(r) + momentum * mu);
  }
  if (running_var) {
    const double unbiased = m > 1 ? var * static_cast<double>(m) / static_cast<double>(m - 1) : var;
    T& r = running_var[c * rv_stride];
    r = static_cast<T>((1.0 - momentum) * static_cast<double>(r) + momentum * unbiased);
  }
  write_stats(c, mu, var, eps, mean, invstd);
}

// Eval: the statistics are the running ones (or 0 and 1 when there are none).
template <typename T>
__global__ void eval_stats_kernel(int64_t C, double eps, const T* running_mean, int64_t rm_stride,
                                  const T* running_var, int64_t rv_stride, double* mean, double* invstd) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const double mu = static_cast<double>(at(running_mean, rm_stride, c, T(0)));
  const double var = static_cast<double>(at(running_var, rv_stride, c, T(1)));
  write_stats(c, mu, var, eps, mean, invstd);
}

// Channel c's map z = (x - mean) * (invstd * w) + b, as the CPU kernel builds it.
template <typename T>
__device__ kernels::NormAffine affine_of(const double* mean, const double* invstd, const T* w, int64_t w_stride,
                                         const T* b, int64_t b_stride, int64_t c) {
  return {mean[c], invstd[c], static_cast<double>(at(w, w_stride, c, T(1))),
          static_cast<double>(at(b, b_stride, c, T(0)))};
}

// y = act(z(x)).
template <typename T, class F>
__global__ void bn_apply_kernel(const T* x, T* y, NCS d, const double* mean, const double* invstd, const T* w,
                                int64_t w_stride, const T* b, int64_t b_stride, F f, int64_t total) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int64_t c = (i / d.s) % d.c;
  y[i] = f(affine_of(mean, invstd, w, w_stride, b, b_stride, c)(x[i]));
}

// partial[(c * splits + split) * 2 + {0, 1}] = sums of gz and gz * (x - mean) over the block's slice,
// gz the gradient at the pre-activation (the incoming g when there is no activation).
template <typename T, class F>
__global__ void grad_partial_kernel(const T* g, const T* x, const double* mean, const double* invstd, const T* w,
                                    int64_t w_stride, const T* b, int64_t b_stride, F f, double* partial, NCS d,
                                    int64_t splits) {
  __shared__ double shared[32];
  const int64_t c = blockIdx.x / splits, split = blockIdx.x % splits;
  const int64_t m = d.per_channel(), per = (m + splits - 1) / splits;
  const int64_t begin = split * per, end = begin + per < m ? begin + per : m;
  const kernels::NormAffine z = affine_of(mean, invstd, w, w_stride, b, b_stride, c);
  double sg = 0, sgx = 0;
  for (int64_t j = begin + threadIdx.x; j < end; j += blockDim.x) {
    const int64_t i = channel_index(d, c, j);
    const double gv = static_cast<double>(kernels::pre_activation_grad(f, z, x[i], g[i]));
    sg += gv;
    sgx += gv * (static_cast<double>(x[i]) - z.mean);
  }
  auto add = [](double a, double b) { return a + b; };
  sg = block_reduce(sg, shared, add);
  sgx = block_reduce(sgx, shared, add);
  if (threadIdx.x == 0) {
    partial[blockIdx.x * 2] = sg;
    partial[blockIdx.x * 2 + 1] = sgx;
  }
}

// One thread per channel: dweight, dbias, and the dx coefficients (kernels::NormGradCoef).
template <typename T>
__global__ void grad_finish_kernel(const double* partial, NCS d, int64_t splits, const T* w, int64_t w_stride,
                                   const double* invstd, bool training, T* dweight, T* dbias,
                                   kernels::NormGradCoef* coef) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= d.c) return;
  double sum_g = 0, sum_gx = 0;
  for (int64_t k = 0; k < splits; ++k) {
    sum_g += partial[(c * splits + k) * 2];
    sum_gx += partial[(c * splits + k) * 2 + 1];
  }
  const double is = invstd[c];
  const double sum_gxhat = sum_gx * is;
  if (dweight) dweight[c] = static_cast<T>(sum_gxhat);
  if (dbias) dbias[c] = static_cast<T>(sum_g);
  coef[c] = kernels::NormGradCoef::make(static_cast<double>(at(w, w_stride, c, T(1))), is, sum_g, sum_gxhat,
                                        d.per_channel(), training);
}

template <typename T, class F>
__global__ void grad_apply_kernel(const T* g, const T* x, const double* mean, const double* invstd, const T* w,
                                  int64_t w_stride, const T* b, int64_t b_stride, F f,
                                  const kernels::NormGradCoef* coef, T* dx, NCS d, int64_t total) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int64_t c = (i / d.s) % d.c;
  const kernels::NormAffine z = affine_of(mean, invstd, w, w_stride, b, b_stride, c);
  const double gv = static_cast<double>(kernels::pre_activation_grad(f, z, x[i], g[i]));
  dx[i] = static_cast<T>(coef[c](gv, static_cast<double>(x[i]) - z.mean));
}

template <typename T>
const T* ptr(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}
int64_t stride0(const Tensor& t) { return t.defined() ? t.stride(0) : 0; }

// A scratch buffer of n doubles on `like`'s device.
Tensor doubles(int64_t n, const Tensor& like) { return empty({n}, TensorOptions(kFloat64).with_device(like.device())); }

}  // namespace

kernels::BatchNormOutput batch_norm(const Tensor& x_in, const Tensor& weight, const Tensor& bias,
                                    const Tensor& running_mean, const Tensor& running_var, bool training,
                                    double momentum, double eps, Activation act) {
  const Tensor x = contiguous_copy(x_in);
  const NCS d(x.shape());
  kernels::BatchNormOutput out{empty(x.shape(), x.options()), doubles(d.c, x), doubles(d.c, x)};
  if (d.c == 0) return out;
  const int device = x.device().index;
  cudaStream_t s = stream(device);
  double* mean = out.mean.data_ptr<double>();
  double* invstd = out.invstd.data_ptr<double>();
  dispatch_floating(x.dtype(), "batch_norm", [&]<typename T>() {
    T* rm = running_mean.defined() ? running_mean.data_ptr<T>() : nullptr;
    T* rv = running_var.defined() ? running_var.data_ptr<T>() : nullptr;
    DeviceGuard guard(device);
    if (training) {
      const int64_t splits = splits_for(d, device);
      Tensor partial = doubles(2 * d.c * splits, x);
      stats_partial_kernel<T><<<blocks_for(d.c * splits, 1), kThreads, 0, s>>>(x.data_ptr<T>(), partial.data_ptr<double>(),
                                                                               d, splits);
      check_launch();
      stats_finish_kernel<T><<<blocks_for(d.c), kThreads, 0, s>>>(x.data_ptr<T>(), partial.data_ptr<double>(), d,
                                                                  splits, eps, rm, stride0(running_mean), rv,
                                                                  stride0(running_var), momentum, mean, invstd);
    } else {
      eval_stats_kernel<T><<<blocks_for(d.c), kThreads, 0, s>>>(d.c, eps, rm, stride0(running_mean), rv,
                                                                stride0(running_var), mean, invstd);
    }
    check_launch();
    const int64_t total = x.numel();
    if (total == 0) return;
    kernels::with_activation(act, [&](auto f) {
      bn_apply_kernel<T><<<blocks_for(total), kThreads, 0, s>>>(x.data_ptr<T>(), out.y.data_ptr<T>(), d, mean, invstd,
                                                                ptr<T>(weight), stride0(weight), ptr<T>(bias),
                                                                stride0(bias), f, total);
      check_launch();
    });
  });
  return out;
}

kernels::BatchNormGrads batch_norm_backward(const Tensor& grad_in, const Tensor& x_in, const Tensor& weight,
                                            const Tensor& bias, const Tensor& mean, const Tensor& invstd,
                                            bool training, Activation act) {
  const Tensor x = contiguous_copy(x_in);
  const Tensor g = contiguous_copy(grad_in);
  // The statistics: the forward's own (C) float64 outputs (any stride accepted, as on the CPU).
  const Tensor mean_c = contiguous_copy(mean), invstd_c = contiguous_copy(invstd);
  const double* mean_p = mean_c.data_ptr<double>();
  const double* invstd_p = invstd_c.data_ptr<double>();
  const NCS d(x.shape());
  kernels::BatchNormGrads out;
  out.dx = empty(x.shape(), x.options());
  if (weight.defined()) out.dweight = empty({d.c}, x.options());
  if (bias.defined()) out.dbias = empty({d.c}, x.options());
  if (d.c == 0) return out;
  const int device = x.device().index;
  cudaStream_t s = stream(device);
  const int64_t splits = splits_for(d, device);
  Tensor partial = doubles(2 * d.c * splits, x);
  // One kernels::NormGradCoef (three doubles) per channel.
  static_assert(sizeof(kernels::NormGradCoef) == 3 * sizeof(double));
  Tensor coef_buffer = doubles(3 * d.c, x);
  auto* coef = reinterpret_cast<kernels::NormGradCoef*>(coef_buffer.data_ptr<double>());
  dispatch_floating(x.dtype(), "batch_norm_backward", [&]<typename T>() {
    kernels::with_activation(act, [&](auto f) {
      DeviceGuard guard(device);
      grad_partial_kernel<T><<<blocks_for(d.c * splits, 1), kThreads, 0, s>>>(
          g.data_ptr<T>(), x.data_ptr<T>(), mean_p, invstd_p, ptr<T>(weight), stride0(weight), ptr<T>(bias),
          stride0(bias), f, partial.data_ptr<double>(), d, splits);
      check_launch();
      grad_finish_kernel<T><<<blocks_for(d.c), kThreads, 0, s>>>(
          partial.data_ptr<double>(), d, splits, ptr<T>(weight), stride0(weight), invstd_p, training,
          weight.defined() ? out.dweight.data_ptr<T>() : nullptr, bias.defined() ? out.dbias.data_ptr<T>() : nullptr,
          coef);
      check_launch();
      const int64_t total = x.numel();
      if (total == 0) return;
      grad_apply_kernel<T><<<blocks_for(total), kThreads, 0, s>>>(g.data_ptr<T>(), x.data_ptr<T>(), mean_p, invstd_p,
                                                                  ptr<T>(weight), stride0(weight), ptr<T>(bias),
                                                                  stride0(bias), f, coef,
                                                                  out.dx.data_ptr<T>(), d, total);
      check_launch();
    });
  });
  return out;
}

}  // namespace tl::cuda
