// Pinned host buffers and their asynchronous copies to a device (cuda/pinned.h).
#include <stdexcept>
#include <string>

#include "cuda/check.h"
#include "cuda/pinned.h"
#include "cuda/runtime.h"

namespace tl::cuda {

PinnedBuffer::PinnedBuffer(size_t nbytes, int device) : nbytes_(nbytes), device_(device) {
  check_device(device);
  DeviceGuard guard(device);
  const cudaError_t err = cudaHostAlloc(&data_, nbytes ? nbytes : 1, cudaHostAllocDefault);
  if (err != cudaSuccess) {
    data_ = nullptr;
    throw std::runtime_error("cuda: cannot allocate " + std::to_string(nbytes) + " bytes of pinned host memory for cuda:" +
                             std::to_string(device) + ": " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
  }
  const cudaError_t ev = cudaEventCreateWithFlags(&copied_, cudaEventDisableTiming);
  if (ev != cudaSuccess) {
    (void)cudaFreeHost(data_);  // the destructor does not run for a throwing constructor
    TL_CUDA_CHECK(ev);
  }
}

PinnedBuffer::~PinnedBuffer() {
  // A DMA may still be reading the buffer: wait for it before the pages are unpinned and freed.
  if (pending_) (void)cudaEventSynchronize(copied_);
  (void)cudaEventDestroy(copied_);
  (void)cudaFreeHost(data_);
}

void PinnedBuffer::copy_to_device_async(size_t offset, void* dst, size_t nbytes) {
  if (offset > nbytes_ || nbytes > nbytes_ - offset)
    throw std::out_of_range("PinnedBuffer: copy of bytes [" + std::to_string(offset) + ", " +
                            std::to_string(offset + nbytes) + ") of a " + std::to_string(nbytes_) + "-byte buffer");
  if (nbytes == 0) return;
  cudaStream_t s = stream(device_);
  DeviceGuard guard(device_);
  TL_CUDA_CHECK(cudaMemcpyAsync(dst, static_cast<const char*>(data_) + offset, nbytes, cudaMemcpyHostToDevice, s));
  TL_CUDA_CHECK(cudaEventRecord(copied_, s));
  pending_ = true;
}

void PinnedBuffer::wait_copied() {
  if (!pending_) return;
  TL_CUDA_CHECK(cudaEventSynchronize(copied_));
  pending_ = false;
}

}  // namespace tl::cuda
