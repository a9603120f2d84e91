#pragma once
// Page-locked (pinned) host buffers for host-to-device copies that overlap with the host's work.
// Plain C++ header (no CUDA types).
//
// Unlike copy_host_to_device (cuda/copy.h), which takes pageable memory and has read it when it
// returns, a copy out of a PinnedBuffer is a true DMA that runs later on the device's stream: the host
// must not write the buffer again until that copy has read it. The buffer records an event after each
// copy it queues, and wait_copied() waits for the last one:
//
//   cuda::PinnedBuffer buf(nbytes, device);
//   buf.wait_copied();                                   // the previous copy out of it has finished
//   std::memcpy(buf.data(), host, nbytes);
//   buf.copy_to_device_async(0, device_ptr, nbytes);    // queued on stream(device); returns at once
struct CUevent_st;  // cudaEvent_t is CUevent_st*

namespace tl::cuda {

class PinnedBuffer {
 public:
  // cudaHostAlloc of nbytes (at least 1), and the event; throws std::runtime_error naming the size
  // and the device, or like check_device when the device is not available.
  PinnedBuffer(size_t nbytes, int device);
  ~PinnedBuffer();  // waits for a pending copy out of the buffer, then frees it; never throws
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  void* data() { return data_; }
  size_t nbytes() const { return nbytes_; }
  int device() const { return device_; }

  // Queues a copy of bytes [offset, offset + nbytes) of the buffer to `dst` (device memory of
  // device()) on stream(device()), and records the buffer's event after it. Returns without waiting.
  void copy_to_device_async(size_t offset, void* dst, size_t nbytes);
  // Blocks until every copy queued out of the buffer so far has completed (at once when none was).
  void wait_copied();

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  int device_ = 0;
  CUevent_st* copied_ = nullptr;
  bool pending_ = false;  // a copy was queued since the last wait_copied
};

}  // namespace tl::cuda
