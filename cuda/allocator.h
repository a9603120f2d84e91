#pragma once
// The caching device allocator: every CUDA Storage gets its bytes here. Plain C++ (no CUDA headers)
// so that tensor/ can include it.
//
// Policy:
// - Sizes are rounded up: to a multiple of 512 B up to 1 MiB ("small"), to a multiple of 2 MiB above
//   ("large"). A freed block goes to a free list keyed by (device, rounded size) and is handed, whole,
//   to the next request of the same rounded size. Blocks are never split or merged: a training step
//   asks for the same sizes every step, so after the first step every request is a cache hit and no
//   cudaMalloc runs.
// - Stream order: all work on a device runs on that device's one stream (runtime.h). A block freed on
//   the host may still be read by queued kernels, but anything that reuses it is queued after them on
//   the same stream, so reuse without a synchronization is safe. Code that puts work on another stream
//   must synchronize it before the tensors it touched are freed.
// - Out of memory: the device's cache is emptied and cudaMalloc tried once more; then a
//   std::runtime_error names the size, the device and the stats.
// - Thread-safe (one mutex). The allocator is never destroyed: storages may outlive static destruction.
#include <cstddef>
#include <string>

namespace tl::cuda {

struct AllocatorStats {
  size_t allocated_bytes = 0;       // in live blocks (rounded sizes)
  size_t reserved_bytes = 0;        // obtained from cudaMalloc: live + cached
  size_t peak_allocated_bytes = 0;  // the largest allocated_bytes seen (since reset_peak_stats)
  size_t num_device_mallocs = 0;    // cudaMalloc calls that succeeded
  size_t num_cache_hits = 0;        // requests served from the cache
};

// The block size a request of nbytes occupies (0 for 0).
size_t allocation_size(size_t nbytes);

// nullptr for nbytes == 0. Throws std::runtime_error for a device that does not exist or when the
// device is out of memory.
void* allocate(size_t nbytes, int device);
// Returns a block from allocate() to its free list. Never throws; nullptr is ignored.
void release(void* ptr, int device);

AllocatorStats allocator_stats(int device);
void reset_peak_stats(int device);
// cudaFree of every cached (free) block on every device; live blocks are untouched.
void empty_cache();

std::string stats_str(const AllocatorStats& s);  // one line, for error messages and logs

}  // namespace tl::cuda
