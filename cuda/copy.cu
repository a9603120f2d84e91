// Host<->device and device<->device byte copies, and the strided (broadcasting, casting) copy kernel.
#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "cuda/check.h"
#include "cuda/copy.h"
#include "cuda/launch.cuh"
#include "cuda/pinned.h"
#include "cuda/runtime.h"

namespace tl::cuda {

namespace {

// The pinned staging ring of one device: copy_host_to_device copies the source into a slot on the
// host and queues the slot's DMA on the device's stream, so it returns without waiting for the queued
// kernels; it waits only for the slot's own previous copy, kStageSlots slots back. Created on first
// use, never destroyed (like the streams).
constexpr size_t kStageSlotBytes = size_t{4} << 20;
constexpr size_t kStageSlots = 4;

struct StagingRing {
  std::mutex mu;  // one upload at a time per device: a slot is written by one thread
  std::vector<std::unique_ptr<PinnedBuffer>> slots;
  size_t next = 0;
};

StagingRing& staging_ring(int device) {
  static std::mutex mu;
  static auto* rings = new std::vector<std::unique_ptr<StagingRing>>();
  std::lock_guard<std::mutex> lock(mu);
  if (rings->empty()) rings->resize(static_cast<size_t>(device_count()));
  auto& r = (*rings)[static_cast<size_t>(device)];
  if (!r) r = std::make_unique<StagingRing>();
  return *r;
}

}  // namespace

void copy_host_to_device(void* dst, const void* src, size_t nbytes, int device) {
  if (nbytes == 0) return;
  check_device(device);
  StagingRing& ring = staging_ring(device);
  std::lock_guard<std::mutex> lock(ring.mu);
  if (ring.slots.empty()) {
    std::vector<std::unique_ptr<PinnedBuffer>> slots;
    for (size_t i = 0; i < kStageSlots; ++i) slots.push_back(std::make_unique<PinnedBuffer>(kStageSlotBytes, device));
    ring.slots = std::move(slots);
  }
  for (size_t off = 0; off < nbytes; off += kStageSlotBytes) {
    const size_t n = std::min(kStageSlotBytes, nbytes - off);
    PinnedBuffer& slot = *ring.slots[ring.next];
    ring.next = (ring.next + 1) % kStageSlots;
    slot.wait_copied();  // this slot's previous DMA has read it; the stream's other work may still run
    std::memcpy(slot.data(), static_cast<const char*>(src) + off, n);
    slot.copy_to_device_async(0, static_cast<char*>(dst) + off, n);
  }
  // Every byte of src is in a slot now: the caller may free or reuse src at once.
}

void copy_device_to_host(void* dst, const void* src, size_t nbytes, int device) {
  if (nbytes == 0) return;
  cudaStream_t s = stream(device);
  DeviceGuard guard(device);
  TL_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, s));
  TL_CUDA_CHECK(cudaStreamSynchronize(s));
}

void copy_device_to_device(void* dst, int dst_device, const void* src, int src_device, size_t nbytes) {
  if (nbytes == 0) return;
  cudaStream_t s = stream(dst_device);
  if (src_device == dst_device) {
    DeviceGuard guard(dst_device);
    TL_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, s));
    return;
  }
  synchronize(src_device);  // the source's producers ran on the source device's stream
  DeviceGuard guard(dst_device);
  TL_CUDA_CHECK(cudaMemcpyPeerAsync(dst, dst_device, src, src_device, nbytes, s));
  // src is in the source device's stream order: later work there (a kernel reusing src's freed block)
  // must wait until this copy has read it.
  cudaEvent_t read;
  TL_CUDA_CHECK(cudaEventCreateWithFlags(&read, cudaEventDisableTiming));
  TL_CUDA_CHECK(cudaEventRecord(read, s));
  TL_CUDA_CHECK(cudaStreamWaitEvent(stream(src_device), read, 0));
  TL_CUDA_CHECK(cudaEventDestroy(read));  // released once it completes
}

namespace {

template <typename D, typename S>
__global__ void strided_copy_kernel(D* dst, const S* src, int64_t n, OffsetCalc<2> oc) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  int64_t off[2];
  oc.get(i, off);
  dst[off[0]] = static_cast<D>(src[off[1]]);
}

}  // namespace

void copy_strided(void* dst, DType dst_dtype, const int64_t* dst_strides, const void* src, DType src_dtype,
                  const int64_t* src_strides, const int64_t* sizes, int ndim, int device) {
  const Shape shape(sizes, sizes + ndim);
  int64_t n = 1;
  for (int64_t v : shape) n *= v;
  if (n == 0) return;
  // Size-1 dims dropped and neighbours contiguous in both operands merged, so that most views fit.
  const OffsetCalc<2> oc = make_offset_calc<2>(shape, {dst_strides, src_strides}, "copy_");
  cudaStream_t s = stream(device);
  DeviceGuard guard(device);
  dispatch_all(dst_dtype, [&]<typename D>() {
    dispatch_all(src_dtype, [&]<typename S>() {
      strided_copy_kernel<D, S><<<blocks_for(n), kThreads, 0, s>>>(static_cast<D*>(dst), static_cast<const S*>(src), n, oc);
    });
  });
  check_launch();
}

}  // namespace tl::cuda
