// Negative log-likelihood over class indices (the end of cross_entropy): forward and backward.
// The targets are checked on the host first, with the CPU kernel's error (one copy to the host and
// a synchronization); the kernels then trust them.
#include "cuda/launch.cuh"
#include "cuda/ops.h"
#include "tensor/cpu/cpu_kernels.h"

namespace tl::cuda {

namespace {

constexpr int kLossThreads = 1024;

// One block: out = -sum over positions of logp[n, target, s] / count, in double, fixed order.
template <typename T>
__global__ void nll_kernel(const T* logp, const int64_t* target, T* out, cpu::NllDims d) {
  __shared__ double shared[32];
  const int64_t count = d.n * d.s;
  double acc = 0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
    const int64_t n = i / d.s, s = i % d.s;
    acc -= static_cast<double>(logp[(n * d.c + target[i]) * d.s + s]);
  }
  acc = block_reduce(acc, shared, [](double a, double b) { return a + b; });
  if (threadIdx.x == 0) *out = static_cast<T>(acc / static_cast<double>(count));  // 0 / 0: NaN, as torch
}

// dlogp is zero-filled; each target position gets -grad / count.
template <typename T>
__global__ void nll_backward_kernel(const T* grad, const int64_t* target, T* dlogp, cpu::NllDims d) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t count = d.n * d.s;
  if (i >= count) return;
  const int64_t n = i / d.s, s = i % d.s;
  dlogp[(n * d.c + target[i]) * d.s + s] = static_cast<T>(-static_cast<double>(*grad) / static_cast<double>(count));
}

// The checked targets, contiguous, on `device`.
Tensor device_targets(const char* op, const Tensor& target, int64_t classes, Device device) {
  const Tensor checked = cpu::check_nll_target(op, target, classes);
  if (target.is_contiguous()) return target;
  return checked.to(device);
}

}  // namespace

Tensor nll_loss(const Tensor& logp_in, const Tensor& target) {
  const cpu::NllDims d(logp_in);
  const Tensor t = device_targets("nll_loss", target, d.c, logp_in.device());
  const Tensor logp = contiguous_copy(logp_in);
  Tensor out = empty({}, logp.options());
  const int device = logp.device().index;
  cudaStream_t s = stream(device);
  DeviceGuard guard(device);
  dispatch_floating(logp.dtype(), "nll_loss", [&]<typename T>() {
    nll_kernel<T><<<1, kLossThreads, 0, s>>>(logp.data_ptr<T>(), t.data_ptr<int64_t>(), out.data_ptr<T>(), d);
  });
  check_launch();
  return out;
}

Tensor nll_loss_backward(const Tensor& grad, const Tensor& logp, const Tensor& target) {
  const cpu::NllDims d(logp);
  const Tensor t = device_targets("nll_loss_backward", target, d.c, logp.device());
  Tensor out = empty(logp.shape(), TensorOptions(logp.dtype()).with_device(logp.device()));
  fill_(out, 0.0);
  const int64_t count = d.n * d.s;
  if (count == 0) return out;
  const Tensor g = grad.to(logp.dtype()).to(logp.device());  // any dtype, as the CPU's grad.item()
  const int device = logp.device().index;
  cudaStream_t s = stream(device);
  DeviceGuard guard(device);
  dispatch_floating(logp.dtype(), "nll_loss_backward", [&]<typename T>() {
    nll_backward_kernel<T><<<blocks_for(count), kThreads, 0, s>>>(g.data_ptr<T>(), t.data_ptr<int64_t>(),
                                                                  out.data_ptr<T>(), d);
  });
  check_launch();
  return out;
}

}  // namespace tl::cuda
