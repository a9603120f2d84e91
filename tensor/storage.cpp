#include "tensor/storage.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <list>
#include <mutex>
#include <unordered_map>
#include <vector>
#include <new>
#include <stdexcept>
#include <string>

#if TL_WITH_CUDA
#include "cuda/allocator.h"
#endif

namespace tl {

namespace {

// Blocks of at least this size are cached; smaller ones are cheap for malloc to recycle itself.
constexpr size_t kCacheMin = 1 << 16;

class CpuCache {
 public:
  void* allocate(size_t bytes) {
    if (enabled_ && bytes >= kCacheMin) {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = by_size_.find(bytes);
      if (it != by_size_.end() && !it->second.empty()) {
        auto node = it->second.back();  // the most recently freed block of this size
        it->second.pop_back();
        void* p = node->second;
        lru_.erase(node);
        stats_.cached_bytes -= bytes;
        stats_.live_bytes += bytes;
        ++stats_.hits;
        return p;
      }
      ++stats_.misses;
      // A miss: the cache keeps what was freed while live + cached memory stays within 1.5x the peak
      // of live memory so far (the program's peak without a cache is that peak); past it, the oldest
      // cached blocks go back to the system. A step that frees activations in backward and allocates
      // gradients of other sizes needs that room: bounded by the peak itself, or by giving back as much
      // as is taken, the cache evicts in backward the blocks the next forward needs, and every step
      // faults fresh pages in again (measured on the UNet at batch 4: 12 thousand page faults a step
      // at widths 16..128 and 150 thousand at 64..512 with the latter; a few hundred now, at a lower
      // peak RSS, with the size classes of cpu_block_size).
      const size_t peak = std::max(stats_.peak_live_bytes, stats_.live_bytes + bytes);
      const size_t limit = peak + peak / 2;
      while (!lru_.empty() && stats_.live_bytes + bytes + stats_.cached_bytes > limit)
        evict_oldest();
    }
    void* p = std::aligned_alloc(64, bytes);
    if (!p) {
      empty();  // the cache may be what is in the way
      p = std::aligned_alloc(64, bytes);
      if (!p) throw OutOfMemory("out of memory allocating " + bytes_str(bytes) + " on cpu");
    }
    if (enabled_ && bytes >= kCacheMin) {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.live_bytes += bytes;
      stats_.peak_live_bytes = std::max(stats_.peak_live_bytes, stats_.live_bytes);
    }
    return p;
  }

  void release(void* p, size_t bytes) {
    if (enabled_ && bytes >= kCacheMin) {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.live_bytes -= bytes;
      lru_.emplace_back(bytes, p);
      by_size_[bytes].push_back(std::prev(lru_.end()));
      stats_.cached_bytes += bytes;
      return;
    }
    std::free(p);
  }

  void empty() {
    std::lock_guard<std::mutex> lock(mu_);
    while (!lru_.empty()) evict_oldest();
  }

  CpuCacheStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

 private:
  using Block = std::pair<size_t, void*>;  // (bytes, pointer)

  // Frees the least recently cached block; returns its size. Caller holds mu_.
  size_t evict_oldest() {
    const auto [bytes, p] = lru_.front();
    auto& same = by_size_[bytes];
    same.pop_front();  // the oldest block of a size is also the first in its own list
    if (same.empty()) by_size_.erase(bytes);
    lru_.pop_front();
    std::free(p);
    stats_.cached_bytes -= bytes;
    return bytes;
  }

#if defined(__SANITIZE_ADDRESS__)
  bool enabled_ = false;  // keep use-after-free visible to the sanitizer
#else
  bool enabled_ = [] {
    const char* v = std::getenv("TL_CPU_CACHE");
    return !(v && std::string(v) == "0");
  }();
#endif
  std::mutex mu_;
  std::list<Block> lru_;  // cached blocks, oldest first
  std::unordered_map<size_t, std::deque<std::list<Block>::iterator>> by_size_;
  CpuCacheStats stats_;
};

CpuCache& cpu_cache() {
  static CpuCache* cache = new CpuCache();  // never destroyed: storages may outlive static destruction
  return *cache;
}

// A block's size: whole cache lines, and for cached blocks one of 4 sizes per power of two (the next
// multiple of a quarter of the largest power of two not above it), so that tensors of nearly the same
// size share blocks. The rounding costs address space, not memory: the pages past a tensor's end are
// never touched by it.
size_t cpu_block_size(size_t nbytes) {
  const size_t b = (nbytes + 63) / 64 * 64;
  if (b < kCacheMin) return b;
  const size_t quarter = (size_t{1} << (63 - __builtin_clzll(b))) / 4;
  return (b + quarter - 1) / quarter * quarter;
}

}  // namespace

std::string bytes_str(size_t bytes) {
  if (bytes < 1000) return std::to_string(bytes) + " bytes";
  const char* units[] = {"kB", "MB", "GB", "TB", "PB", "EB"};
  double v = static_cast<double>(bytes) / 1000;
  int u = 0;
  while (v >= 999.95 && u < 5) v /= 1000, ++u;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f %s (%zu bytes)", v, units[u], bytes);
  return buf;
}

CpuCacheStats cpu_cache_stats() { return cpu_cache().stats(); }
void empty_cpu_cache() { cpu_cache().empty(); }

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  if (device.is_cpu()) {
    const size_t rounded = cpu_block_size(nbytes);
    data_ = rounded ? cpu_cache().allocate(rounded) : nullptr;
    return;
  }
#if TL_WITH_CUDA
  data_ = cuda::allocate(nbytes, device.index);  // the caching allocator (cuda/allocator.h)
#else
  throw std::runtime_error("Storage: cannot allocate on " + device.str() +
                           ": this build has no CUDA backend (configure with nvcc present)");
#endif
}

Storage::~Storage() {
  if (device_.is_cpu()) {
    if (data_) cpu_cache().release(data_, cpu_block_size(nbytes_));
    return;
  }
#if TL_WITH_CUDA
  cuda::release(data_, device_.index);
#endif
}

}  // namespace tl
