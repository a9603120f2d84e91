#pragma once
// The caching device allocator: every CUDA Storage gets its bytes here. Plain C++ (no CUDA headers)
// so that tensor/ can include it.
//
// Two modes, chosen once per process by the environment variable TL_CUDA_ALLOCATOR:
// - unset, empty or `caching`: the caching policy below (the default, for speed);
// - `passthrough`: every allocate() is one cudaMalloc of exactly the requested size (no rounding, no
//   cache) and every release() synchronizes the device's stream and cudaFree's the block. Slow, but
//   compute-sanitizer's memcheck then sees an access past a tensor's end and a use after free, which
//   the caching mode hides inside its rounding and its reused blocks.
// Any other value is a std::runtime_error naming the variable and the accepted values, thrown by the
// first call that needs the mode (allocate, allocation_size, allocator_mode).
//
// Policy of the caching mode:
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

enum class AllocatorMode { caching, passthrough };

// The mode TL_CUDA_ALLOCATOR selects (read once); throws for a value it does not accept.
AllocatorMode allocator_mode();
// allocator_mode() == caching: tests of "no cudaMalloc in a steady step" only hold then.
bool caching_enabled();

// In both modes the stats count the same things; in pass-through mode reserved == allocated (nothing
// is cached), every allocation is a cudaMalloc and num_cache_hits stays 0.
struct AllocatorStats {
  size_t allocated_bytes = 0;       // in live blocks (block sizes: allocation_size())
  size_t reserved_bytes = 0;        // obtained from cudaMalloc: live + cached
  size_t peak_allocated_bytes = 0;  // the largest allocated_bytes seen (since reset_peak_stats)
  size_t num_device_mallocs = 0;    // cudaMalloc calls that succeeded
  size_t num_cache_hits = 0;        // requests served from the cache
};

// The block size a request of nbytes occupies in the current mode (0 for 0): rounded up when caching,
// nbytes itself in pass-through mode.
size_t allocation_size(size_t nbytes);

// nullptr for nbytes == 0. Throws std::runtime_error for a device that does not exist or when the
// device is out of memory.
void* allocate(size_t nbytes, int device);
// Returns a block from allocate() to its free list (caching), or waits for the device's stream and
// frees it (pass-through). Never throws; nullptr is ignored.
void release(void* ptr, int device);

AllocatorStats allocator_stats(int device);
void reset_peak_stats(int device);
// cudaFree of every cached (free) block on every device; live blocks are untouched.
void empty_cache();

std::string stats_str(const AllocatorStats& s);  // one line, for error messages and logs

}  // namespace tl::cuda
