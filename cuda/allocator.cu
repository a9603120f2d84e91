// The caching device allocator and its pass-through mode (policy in allocator.h).
#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "cuda/allocator.h"
#include "cuda/check.h"
#include "cuda/runtime.h"

namespace tl::cuda {

namespace {

constexpr size_t kSmallRound = 512;           // granularity of small blocks
constexpr size_t kSmallMax = size_t{1} << 20;  // requests up to 1 MiB are small
constexpr size_t kLargeRound = size_t{2} << 20;  // granularity of large blocks

size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

AllocatorMode mode_from_env() {
  const char* v = std::getenv("TL_CUDA_ALLOCATOR");
  if (!v || !*v || std::string(v) == "caching") return AllocatorMode::caching;
  if (std::string(v) == "passthrough") return AllocatorMode::passthrough;
  throw std::runtime_error(std::string("TL_CUDA_ALLOCATOR=") + v +
                           ": expected caching (the default) or passthrough");
}

// The mode of a block that exists: allocate() read it successfully before the block was made, so
// allocator_mode() no longer throws; the catch only keeps release() noexcept.
AllocatorMode block_mode() noexcept {
  try {
    return allocator_mode();
  } catch (...) {
    return AllocatorMode::caching;
  }
}

// Waits for the device's stream, then cudaFree's p: no kernel still queued can touch the block once it
// is gone. Never throws (a release runs in destructors); restores the current device.
void free_now(void* p, int device) noexcept {
  int prev = -1;
  (void)cudaGetDevice(&prev);
  (void)cudaSetDevice(device);
  try {
    (void)cudaStreamSynchronize(stream(device));
  } catch (...) {  // the stream could not be created: wait for the whole device instead
    (void)cudaDeviceSynchronize();
  }
  (void)cudaFree(p);
  if (prev >= 0) (void)cudaSetDevice(prev);
}

class Allocator {
 public:
  void* allocate(size_t nbytes, int device) {
    check_device(device);
    if (nbytes == 0) return nullptr;
    const size_t size = allocation_size(nbytes);
    const bool caching = allocator_mode() == AllocatorMode::caching;
    std::lock_guard<std::mutex> lock(mu_);
    Device& d = dev(device);
    auto it = caching ? d.free.find(size) : d.free.end();
    if (it != d.free.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      ++d.stats.num_cache_hits;
      on_allocated(d, p, size);
      return p;
    }
    void* p = device_malloc(d, device, size, nbytes);
    on_allocated(d, p, size);
    return p;
  }

  void release(void* p, int device) noexcept {
    if (!p) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (device < 0 || static_cast<size_t>(device) >= devices_.size()) return;  // not ours: ignore
      Device& d = devices_[static_cast<size_t>(device)];
      auto it = d.live.find(p);
      if (it == d.live.end()) return;  // not ours (or a double free): never throw from a destructor path
      const size_t size = it->second;
      d.live.erase(it);
      d.stats.allocated_bytes -= size;
      if (block_mode() == AllocatorMode::caching) {
        try {
          d.free[size].push_back(p);
          return;
        } catch (...) {  // no memory for the free list: give the block back to the driver instead
        }
      }
      d.stats.reserved_bytes -= size;
    }
    free_now(p, device);  // outside the lock: waiting for the stream must not hold up other threads
  }

  AllocatorStats stats(int device) {
    check_device(device);
    std::lock_guard<std::mutex> lock(mu_);
    return dev(device).stats;
  }

  void reset_peak(int device) {
    check_device(device);
    std::lock_guard<std::mutex> lock(mu_);
    Device& d = dev(device);
    d.stats.peak_allocated_bytes = d.stats.allocated_bytes;
  }

  void empty_cache() {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < devices_.size(); ++i) empty_device(devices_[i], static_cast<int>(i));
  }

 private:
  struct Device {
    std::unordered_map<void*, size_t> live;               // pointer -> rounded size
    std::unordered_map<size_t, std::vector<void*>> free;  // rounded size -> cached blocks
    AllocatorStats stats;
  };

  Device& dev(int device) {  // caller holds mu_ and has checked the index
    if (devices_.empty()) devices_.resize(static_cast<size_t>(device_count()));
    return devices_[static_cast<size_t>(device)];
  }

  void on_allocated(Device& d, void* p, size_t size) {
    d.live.emplace(p, size);
    d.stats.allocated_bytes += size;
    d.stats.peak_allocated_bytes = std::max(d.stats.peak_allocated_bytes, d.stats.allocated_bytes);
  }

  // cudaFree of every cached block of one device. Caller holds mu_. The device is synchronized first,
  // so no queued kernel still reads a block freed here. Each block leaves the cache as it is freed:
  // a failure part way leaves no freed pointer behind to be freed or handed out again.
  void empty_device(Device& d, int device) {
    if (d.free.empty()) return;
    DeviceGuard guard(device);
    TL_CUDA_CHECK(cudaDeviceSynchronize());
    for (auto it = d.free.begin(); it != d.free.end(); it = d.free.erase(it)) {
      while (!it->second.empty()) {
        TL_CUDA_CHECK(cudaFree(it->second.back()));
        it->second.pop_back();
        d.stats.reserved_bytes -= it->first;
      }
    }
  }

  // A fresh block; on out-of-memory, empties this device's cache and tries once more. Caller holds mu_.
  void* device_malloc(Device& d, int device, size_t size, size_t requested) {
    DeviceGuard guard(device);
    void* p = nullptr;
    cudaError_t err = cudaMalloc(&p, size);
    if (err == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // clear it before the retry
      empty_device(d, device);
      err = cudaMalloc(&p, size);
    }
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      const bool info = cudaMemGetInfo(&free_b, &total_b) == cudaSuccess;
      (void)cudaGetLastError();
      throw std::runtime_error(
          std::string("cuda allocator: ") + (err == cudaErrorMemoryAllocation ? "out of memory" : "cudaMalloc failed") +
          " allocating " + std::to_string(requested) + " bytes (block of " + std::to_string(size) + ") on cuda:" +
          std::to_string(device) + " after emptying the cache: " + cudaGetErrorName(err) + "; " + stats_str(d.stats) +
          (info ? "; device free " + std::to_string(free_b) + " of " + std::to_string(total_b) + " bytes" : ""));
    }
    ++d.stats.num_device_mallocs;
    d.stats.reserved_bytes += size;
    return p;
  }

  std::mutex mu_;
  std::vector<Device> devices_;  // indexed by device, sized on first use
};

Allocator& allocator() {
  static Allocator* a = new Allocator();  // never destroyed: storages may outlive static destruction
  return *a;
}

}  // namespace

AllocatorMode allocator_mode() {
  static const AllocatorMode mode = mode_from_env();  // an exception leaves it unset: the next call throws too
  return mode;
}

bool caching_enabled() { return allocator_mode() == AllocatorMode::caching; }

size_t allocation_size(size_t nbytes) {
  if (nbytes == 0) return 0;
  if (nbytes > (size_t{1} << 60))  // rounding up would wrap; no device has this much memory
    throw std::length_error("cuda allocator: a request of " + std::to_string(nbytes) + " bytes is not valid");
  if (allocator_mode() == AllocatorMode::passthrough) return nbytes;
  return nbytes <= kSmallMax ? round_up(nbytes, kSmallRound) : round_up(nbytes, kLargeRound);
}

void* allocate(size_t nbytes, int device) { return allocator().allocate(nbytes, device); }
void release(void* ptr, int device) { allocator().release(ptr, device); }
AllocatorStats allocator_stats(int device) { return allocator().stats(device); }
void reset_peak_stats(int device) { allocator().reset_peak(device); }
void empty_cache() { allocator().empty_cache(); }

std::string stats_str(const AllocatorStats& s) {
  return "allocated " + std::to_string(s.allocated_bytes) + " bytes, reserved " + std::to_string(s.reserved_bytes) +
         " bytes, peak allocated " + std::to_string(s.peak_allocated_bytes) + " bytes, " +
         std::to_string(s.num_device_mallocs) + " cudaMalloc calls, " + std::to_string(s.num_cache_hits) +
         " cache hits";
}

}  // namespace tl::cuda
