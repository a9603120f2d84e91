// Negative log-likelihood over class indices (the end of cross_entropy): forward and backward.
//
// The forward checks the targets on the device: a kernel records the first position whose target is
// outside [0, classes) (an atomicMin, so the record does not depend on scheduling), then one 8-byte
// copy of that record to the host (the forward's one synchronization) raises the CPU kernel's error
// for it (cpu::nll_target_error). The backward does not check again: the autograd node calls it with
// the forward's targets. Its kernel skips an out-of-range target instead, so a direct caller with a
// bad target gets a wrong gradient but never a write outside dlogp.
#include "cuda/copy.h"
#include "cuda/launch.cuh"
#include "cuda/ops.h"
#include "tensor/cpu/cpu_kernels.h"

namespace tl::cuda {

namespace {

constexpr int kLossThreads = 1024;

constexpr unsigned long long kNoBadTarget = ~0ull;  // the record when every target is in range

// *first = min(*first, every position i < count whose target is outside [0, classes)).
__global__ void find_bad_target_kernel(const int64_t* target, int64_t count, int64_t classes,
                                       unsigned long long* first) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= count) return;
  const int64_t c = target[i];
  if (c < 0 || c >= classes) atomicMin(first, static_cast<unsigned long long>(i));
}

// Throws the CPU kernel's error for the first target of t (contiguous int64, on its device) outside
// [0, classes). Synchronizes: one 8-byte record comes back (and the bad value, on an error).
void check_targets(const char* op, const Tensor& t, int64_t classes) {
  const int64_t count = t.numel();
  if (count == 0) return;
  const int device = t.device().index;
  Tensor record = empty({1}, TensorOptions(kInt64).with_device(t.device()));
  auto* first = reinterpret_cast<unsigned long long*>(record.data_ptr<int64_t>());
  {
    cudaStream_t s = stream(device);
    DeviceGuard guard(device);
    TL_CUDA_CHECK(cudaMemsetAsync(first, 0xff, sizeof(unsigned long long), s));  // kNoBadTarget
    find_bad_target_kernel<<<blocks_for(count), kThreads, 0, s>>>(t.data_ptr<int64_t>(), count, classes, first);
    check_launch();
  }
  unsigned long long pos = kNoBadTarget;
  copy_device_to_host(&pos, first, sizeof pos, device);
  if (pos == kNoBadTarget) return;
  int64_t value = 0;
  copy_device_to_host(&value, t.data_ptr<int64_t>() + pos, sizeof value, device);
  throw_op_error(op, cpu::nll_target_error(value, static_cast<int64_t>(pos), t.shape(), classes));
}

// One block: out = -sum over positions of logp[n, target, s] / count, in double, fixed order. The
// targets are checked (check_targets).
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

// dlogp is zero-filled; each target position gets -grad / count. Unchecked targets: one outside
// [0, classes) is skipped, so that nothing outside dlogp is written.
template <typename T>
__global__ void nll_backward_kernel(const T* grad, const int64_t* target, T* dlogp, cpu::NllDims d) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t count = d.n * d.s;
  if (i >= count) return;
  const int64_t c = target[i];
  if (c < 0 || c >= d.c) return;
  const int64_t n = i / d.s, s = i % d.s;
  dlogp[(n * d.c + c) * d.s + s] = static_cast<T>(-static_cast<double>(*grad) / static_cast<double>(count));
}

}  // namespace

Tensor nll_loss(const Tensor& logp_in, const Tensor& target) {
  const cpu::NllDims d(logp_in);
  const Tensor t = contiguous_copy(target);  // on the device, as the position the error names
  check_targets("nll_loss", t, d.c);
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
  const Tensor t = contiguous_copy(target);  // not checked again: see the file's comment
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
