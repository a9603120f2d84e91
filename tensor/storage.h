#pragma once
// Storage: reference-counted bytes on one device. Tensors are views into a Storage; many views may
// share one. CPU bytes are 64-byte aligned so that vector loads never straddle a cache line.
#include <cstddef>
#include <memory>
#include <new>
#include <string>
#include <utility>

#include "tensor/device.h"

namespace tl {

// A failed allocation that says what it was: "out of memory allocating 8.1 GB (8112000000 bytes)
// for a float32 tensor (26000,26000,3) on cpu" (empty() adds the tensor; Storage alone gives the
// bytes and the device). Still a std::bad_alloc for code that catches that.
class OutOfMemory : public std::bad_alloc {
 public:
  explicit OutOfMemory(std::string message) : message_(std::move(message)) {}
  const char* what() const noexcept override { return message_.c_str(); }

 private:
  std::string message_;
};

// "512 bytes", "3.2 MB", "8.1 GB" (powers of 1000), then the exact count: "8.1 GB (8112000000 bytes)".
std::string bytes_str(size_t bytes);

class Storage {
 public:
  Storage(size_t nbytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() { return data_; }
  const void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
};

using StoragePtr = std::shared_ptr<Storage>;

// CPU memory is recycled: a freed block goes to a cache keyed by its size and is handed to the next
// allocation of that size. A training step allocates the same sizes every step, so after the first
// step no fresh pages are touched (fresh pages cost a page fault each: a third of a second per step
// of the UNet at batch 4). Live + cached bytes stay within 1.5x the peak of live bytes so far. Blocks of
// 64 KiB and more are cached (malloc recycles smaller ones itself), rounded up to one of 4 sizes per
// power of two so that tensors of nearly the same size share them. Disabled under AddressSanitizer,
// or with TL_CPU_CACHE=0 in the environment.
struct CpuCacheStats {
  size_t cached_bytes = 0;     // held by the cache, free for reuse
  size_t live_bytes = 0;       // handed out and not yet released (cacheable sizes only)
  size_t peak_live_bytes = 0;  // the most live_bytes has been
  size_t hits = 0, misses = 0;
};
CpuCacheStats cpu_cache_stats();
void empty_cpu_cache();  // returns every cached block to the system

// A kernel's scratch memory: `count` Ts (uninitialized, 64-byte aligned) from the same CPU block
// cache. A std::vector of a few MB would fault fresh zeroed pages in on every call, since malloc hands
// blocks past its mmap threshold back to the system when they are freed; the cache hands the same
// block back call after call.
template <typename T>
class CpuBuffer {
 public:
  CpuBuffer() = default;
  explicit CpuBuffer(size_t count)
      : count_(count), storage_(count ? std::make_unique<Storage>(count * sizeof(T), Device::cpu()) : nullptr) {}
  T* data() { return storage_ ? static_cast<T*>(storage_->data()) : nullptr; }
  const T* data() const { return storage_ ? static_cast<const T*>(storage_->data()) : nullptr; }
  size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }

 private:
  size_t count_ = 0;
  std::unique_ptr<Storage> storage_;
};

}  // namespace tl
