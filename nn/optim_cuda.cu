// The fused multi-tensor optimizer step on CUDA: one kernel launch updates up to kMaxFusedTensors
// parameters (a whole UNet in two launches), instead of one launch per parameter and per op.
//
// The launch carries a table of the parameters' pointers and sizes as a kernel argument (no upload).
// Block b belongs to the parameter t with first_block[t] <= b < first_block[t + 1] and updates its
// elements [(b - first_block[t]) * kBlockElems, ...), each thread one element per loop step. The
// per-element update is the CPU's functor (nn/optim_update.h), so both devices do the same
// arithmetic.
#include <algorithm>

#include "cuda/check.h"
#include "cuda/runtime.h"
#include "nn/optim_update.h"

namespace tl::optim {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kBlockElems = kThreads * 16;  // elements per block

template <class T>
struct Table {  // ~1.2 KB of kernel parameters
  T* param[kMaxFusedTensors];
  const T* grad[kMaxFusedTensors];
  T* slot0[kMaxFusedTensors];
  T* slot1[kMaxFusedTensors];
  int64_t numel[kMaxFusedTensors];
  int64_t first_block[kMaxFusedTensors + 1];
  int count;
};

template <class T>
__device__ int tensor_of_block(const Table<T>& t, int64_t b) {
  int i = 0;
  while (i + 1 < t.count && t.first_block[i + 1] <= b) ++i;
  return i;
}

// Element i of one parameter for each optimizer: its functor on the parameter, gradient and slots.
template <class T>
struct SgdApply {
  SgdUpdate<T> f;
  __device__ void operator()(T* p, const T* g, T* buf, T*, int64_t i) const {
    T unused = T(0);
    f(p[i], g[i], buf ? buf[i] : unused);
  }
};
template <class T>
struct AdamApply {
  AdamUpdate<T> f;
  __device__ void operator()(T* p, const T* g, T* m, T* v, int64_t i) const { f(p[i], g[i], m[i], v[i]); }
};

template <class T, class Apply>
__global__ void step_kernel(Table<T> t, Apply apply) {
  const int k = tensor_of_block(t, blockIdx.x);
  const int64_t begin = (blockIdx.x - t.first_block[k]) * kBlockElems;
  const int64_t end = begin + kBlockElems < t.numel[k] ? begin + kBlockElems : t.numel[k];
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) apply(t.param[k], t.grad[k], t.slot0[k], t.slot1[k], i);
}

// Calls launch(table, blocks) for each group of up to kMaxFusedTensors non-empty parameters.
template <class T, class Launch>
void for_each_table(const std::vector<DeviceSlots>& params, const Launch& launch) {
  Table<T> t{};
  int64_t blocks = 0;
  auto flush = [&] {
    if (t.count == 0) return;
    t.first_block[t.count] = blocks;
    if (blocks > INT_MAX) throw std::runtime_error("optimizer step: too many elements for one launch");
    launch(t, static_cast<unsigned>(blocks));
    t = Table<T>{};
    blocks = 0;
  };
  for (const DeviceSlots& s : params) {
    if (s.numel == 0) continue;
    const int i = t.count++;
    t.param[i] = static_cast<T*>(s.param);
    t.grad[i] = static_cast<const T*>(s.grad);
    t.slot0[i] = static_cast<T*>(s.slot0);
    t.slot1[i] = static_cast<T*>(s.slot1);
    t.numel[i] = s.numel;
    t.first_block[i] = blocks;
    blocks += (s.numel + kBlockElems - 1) / kBlockElems;
    if (t.count == kMaxFusedTensors) flush();
  }
  flush();
}

template <class T, class Apply>
void run_step(const std::vector<DeviceSlots>& params, const Apply& apply, int device) {
  cudaStream_t s = cuda::stream(device);
  cuda::DeviceGuard guard(device);
  for_each_table<T>(params, [&](const Table<T>& t, unsigned blocks) {
    step_kernel<T, Apply><<<blocks, kThreads, 0, s>>>(t, apply);
    TL_CUDA_CHECK(cudaGetLastError());
  });
}

}  // namespace

template <class T>
void cuda_sgd_step(const std::vector<DeviceSlots>& params, const SgdUpdate<T>& f, int device) {
  run_step<T>(params, SgdApply<T>{f}, device);
}

template <class T>
void cuda_adam_step(const std::vector<DeviceSlots>& params, const AdamUpdate<T>& f, int device) {
  run_step<T>(params, AdamApply<T>{f}, device);
}

template void cuda_sgd_step<float>(const std::vector<DeviceSlots>&, const SgdUpdate<float>&, int);
template void cuda_sgd_step<double>(const std::vector<DeviceSlots>&, const SgdUpdate<double>&, int);
template void cuda_adam_step<float>(const std::vector<DeviceSlots>&, const AdamUpdate<float>&, int);
template void cuda_adam_step<double>(const std::vector<DeviceSlots>&, const AdamUpdate<double>&, int);

}  // namespace tl::optim
