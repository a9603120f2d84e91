// The CUDA backend's foundation: copies between cpu and cuda:N (any strides, bit-exact), the caching
// allocator's reuse and stats, and the error for a device that does not exist. The ops are in
// test_cuda_ops.cpp, whole UNet steps in test_cuda_unet.cpp; tests/cuda_test_util.h says how they
// compare and how they skip without a GPU.
#define DOCTEST_CONFIG_IMPLEMENT
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "cuda/allocator.h"
#include "nn/optim.h"
#include "nn/unet.h"
#include "tests/cuda_test_util.h"

using namespace tl;
using namespace tl::testing;

namespace {

const DType kAllDTypes[] = {kFloat32, kFloat64, kInt64, kUInt8};

// A CPU tensor of `shape` filled with random bytes (NaN payloads, denormals and all for floats).
Tensor random_bits(const Shape& shape, DType dtype, uint64_t seed) {
  Tensor t = empty(shape, dtype);
  std::mt19937_64 rng(seed);
  auto* p = static_cast<unsigned char*>(t.raw_data());
  const size_t n = static_cast<size_t>(t.numel()) * dtype_size(dtype);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<unsigned char>(rng());
  return t;
}

// Both CPU tensors, same shape and dtype, same bytes in row-major order.
bool same_bytes(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  const Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.raw_data(), cb.raw_data(), static_cast<size_t>(ca.numel()) * dtype_size(ca.dtype())) == 0;
}

// Small integers (exact in every dtype) so that a view's values can be compared with ==.
Tensor iota(const Shape& shape, DType dtype) {
  return arange(static_cast<double>(numel_of(shape)), dtype).reshape(shape);
}

}  // namespace

TEST_CASE("round trip cpu -> cuda -> cpu is bit-exact for every dtype and odd sizes") {
  const std::vector<Shape> shapes = {{1}, {3}, {511}, {513}, {7, 131}, {3, 5, 7, 9}, {(1 << 20) + 3}};
  uint64_t seed = 1;
  for (DType dt : kAllDTypes) {
    for (const Shape& s : shapes) {
      CAPTURE(dtype_name(dt));
      CAPTURE(shape_str(s));
      Tensor h = random_bits(s, dt, seed++);
      Tensor d = h.to(kGpu);
      CHECK(d.device() == kGpu);
      CHECK(d.dtype() == dt);
      CHECK(d.shape() == s);
      CHECK(same_bytes(d.to(Device::cpu()), h));
      CHECK(same_bytes(d.clone().to(Device::cpu()), h));  // device -> device, contiguous
    }
  }
  Tensor e = empty({0, 4}).to(kGpu);
  CHECK(e.numel() == 0);
  CHECK(e.to(Device::cpu()).shape() == Shape{0, 4});
}

// copy_host_to_device stages through a ring of 4 pinned slots of 4 MiB (cuda/copy.cu) and returns
// without waiting for the stream, having read the source. 37 MiB + 5 bytes goes round the ring more
// than twice and ends on a short chunk; overwriting the source right after each upload checks that
// the device holds the bytes of the moment of the call.
TEST_CASE("uploads larger than the staging ring arrive whole, and the source may be reused at once") {
  const int64_t n = (int64_t{37} << 20) + 5;
  const Tensor first = random_bits({n}, kUInt8, 101), second = random_bits({n}, kUInt8, 102);
  Tensor h = first.clone();
  const Tensor d1 = h.to(kGpu);
  std::memcpy(h.raw_data(), second.raw_data(), static_cast<size_t>(n));
  const Tensor d2 = h.to(kGpu);
  std::memset(h.raw_data(), 0, static_cast<size_t>(n));
  const Tensor small = first.slice(0, 0, 1000).contiguous().to(kGpu);  // a small one right behind
  CHECK(same_bytes(d1.to(Device::cpu()), first));
  CHECK(same_bytes(d2.to(Device::cpu()), second));
  CHECK(same_bytes(small.to(Device::cpu()), first.slice(0, 0, 1000).contiguous()));
}

TEST_CASE("strided sources and destinations copy correctly both ways and on the device") {
  for (DType dt : kAllDTypes) {
    CAPTURE(dtype_name(dt));
    const Tensor base = iota({4, 6, 5}, dt);  // (4, 6, 5)
    const Tensor base_gpu = base.to(kGpu);
    using View = Tensor (*)(const Tensor&);
    const std::vector<std::pair<const char*, View>> views = {
        {"transpose(0,2)", [](const Tensor& t) { return t.transpose(0, 2); }},
        {"permute(1,2,0)", [](const Tensor& t) { return t.permute({1, 2, 0}); }},
        {"narrow(2,1,3)", [](const Tensor& t) { return t.narrow(2, 1, 3); }},
        {"slice(1,1,6,2)", [](const Tensor& t) { return t.slice(1, 1, 6, 2); }},
        {"select(1,2).expand", [](const Tensor& t) { return t.select(1, 2).unsqueeze(1).expand({4, 3, 5}); }},
        {"expand(2,4,6,5)", [](const Tensor& t) { return t.expand({2, 4, 6, 5}); }},
        {"narrow.transpose", [](const Tensor& t) { return t.narrow(0, 1, 2).transpose(1, 2); }},
    };
    for (const auto& [name, view] : views) {
      CAPTURE(name);
      const Tensor want = view(base).contiguous();               // the values, computed on the CPU
      CHECK(same_bytes(view(base).to(kGpu).to(Device::cpu()), want));      // strided cpu -> cuda
      CHECK(same_bytes(view(base_gpu).to(Device::cpu()), want));           // strided cuda -> cpu
      CHECK(same_bytes(view(base_gpu).contiguous().to(Device::cpu()), want));  // strided cuda -> cuda
      CHECK(view(base_gpu).contiguous().is_contiguous());
    }
  }
}

TEST_CASE("copies into strided destinations, with broadcasting and casting") {
  const Tensor src = iota({3, 4}, kFloat32);
  // cpu -> a transposed cuda destination
  Tensor buf = empty({4, 3}, TensorOptions(kFloat32).with_device(kGpu));
  buf.t().copy_(src);
  CHECK(same_bytes(buf.to(Device::cpu()), src.t().contiguous()));
  // cuda -> a transposed cpu destination
  Tensor host = empty({4, 3}, kFloat32);
  host.t().copy_(src.to(kGpu));
  CHECK(same_bytes(host, src.t().contiguous()));
  // cuda -> a narrowed cuda destination, broadcasting a row
  Tensor wide = iota({3, 8}, kFloat32).to(kGpu);
  wide.narrow(1, 2, 4).copy_(from_vector<float>({-1, -2, -3, -4}, {4}).to(kGpu));
  Tensor want = iota({3, 8}, kFloat32);
  want.narrow(1, 2, 4).copy_(from_vector<float>({-1, -2, -3, -4}, {4}));
  CHECK(same_bytes(wide.to(Device::cpu()), want));
  // casts: on the device, and on the way in and out
  for (DType from : kAllDTypes) {
    for (DType to : kAllDTypes) {
      CAPTURE(dtype_name(from));
      CAPTURE(dtype_name(to));
      const Tensor x = iota({5, 7}, from).t();
      CHECK(same_bytes(x.to(kGpu).to(to).to(Device::cpu()), x.to(to).contiguous()));
      Tensor dst = empty({7, 5}, TensorOptions(to).with_device(kGpu));
      dst.copy_(x);  // cpu `from` -> cuda `to`
      CHECK(same_bytes(dst.to(Device::cpu()), x.to(to).contiguous()));
      Tensor back = empty({7, 5}, to);
      back.copy_(x.to(kGpu));  // cuda `from` -> cpu `to`
      CHECK(same_bytes(back, x.to(to).contiguous()));
    }
  }
}

TEST_CASE("the allocator rounds sizes when caching and keeps them exact in pass-through mode") {
  CHECK(cuda::allocation_size(0) == 0);
  if (!cuda::caching_enabled()) {
    for (size_t n : {size_t{1}, size_t{511}, size_t{513}, size_t{1} << 20, (size_t{4} << 20) + 1})
      CHECK(cuda::allocation_size(n) == n);
    return;
  }
  CHECK(cuda::allocation_size(1) == 512);
  CHECK(cuda::allocation_size(512) == 512);
  CHECK(cuda::allocation_size(513) == 1024);
  CHECK(cuda::allocation_size(1 << 20) == (1 << 20));
  CHECK(cuda::allocation_size((1 << 20) + 1) == (2 << 20));
  CHECK(cuda::allocation_size((4 << 20) + 1) == (6 << 20));
}

// Caching (the default): blocks are reused, a steady step makes no cudaMalloc. Pass-through
// (TL_CUDA_ALLOCATOR=passthrough, the sanitizer runs): every allocation is a cudaMalloc of its exact
// size and every release frees it, so nothing is ever cached.
TEST_CASE("the allocator reuses blocks when caching, caches nothing in pass-through mode, and keeps consistent stats") {
  const std::vector<int64_t> sizes = {1, 100, 511, 513, 4096, 1 << 20, (1 << 20) + 1, 5 << 20, 33 << 20};
  size_t step_bytes = 0;
  for (int64_t n : sizes) step_bytes += cuda::allocation_size(static_cast<size_t>(n));
  const cuda::AllocatorStats base = cuda::allocator_stats(0);
  INFO("mode: " << (cuda::caching_enabled() ? "caching" : "passthrough") << "; base: " << cuda::stats_str(base));

  if (!cuda::caching_enabled()) {
    CHECK(step_bytes == 1 + 100 + 511 + 513 + 4096 + (1 << 20) + (1 << 20) + 1 + (5 << 20) + (33 << 20));
    CHECK(base.reserved_bytes == base.allocated_bytes);
    CHECK(base.num_cache_hits == 0);
    for (int step = 0; step < 3; ++step) {
      CAPTURE(step);
      std::vector<Tensor> live;
      size_t expect_allocated = base.allocated_bytes;
      for (int64_t n : sizes) {
        const size_t mallocs = cuda::allocator_stats(0).num_device_mallocs;
        live.push_back(empty({n}, TensorOptions(kUInt8).with_device(kGpu)));
        expect_allocated += static_cast<size_t>(n);
        const cuda::AllocatorStats s = cuda::allocator_stats(0);
        CAPTURE(n);
        CHECK(s.num_device_mallocs == mallocs + 1);  // every allocation is a cudaMalloc
        CHECK(s.allocated_bytes == expect_allocated);  // of exactly the requested size
        CHECK(s.reserved_bytes == s.allocated_bytes);
        CHECK(s.peak_allocated_bytes >= s.allocated_bytes);
      }
      live.clear();  // each release frees its block: nothing stays reserved
      const cuda::AllocatorStats freed = cuda::allocator_stats(0);
      CHECK(freed.allocated_bytes == base.allocated_bytes);
      CHECK(freed.reserved_bytes == base.reserved_bytes);
      CHECK(freed.num_cache_hits == 0);
      CHECK(freed.peak_allocated_bytes >= base.allocated_bytes + step_bytes);
    }
    const cuda::AllocatorStats end = cuda::allocator_stats(0);
    CHECK(end.num_device_mallocs == base.num_device_mallocs + 3 * sizes.size());
    cuda::empty_cache();  // nothing to empty
    CHECK(cuda::allocator_stats(0).reserved_bytes == end.reserved_bytes);
    cuda::reset_peak_stats(0);
    CHECK(cuda::allocator_stats(0).peak_allocated_bytes == cuda::allocator_stats(0).allocated_bytes);
    return;
  }

  // One "step": every size live at once, then all freed.
  auto step = [&] {
    std::vector<Tensor> live;
    for (int64_t n : sizes) live.push_back(empty({n}, TensorOptions(kUInt8).with_device(kGpu)));
    const cuda::AllocatorStats s = cuda::allocator_stats(0);
    CHECK(s.allocated_bytes == base.allocated_bytes + step_bytes);
    CHECK(s.reserved_bytes >= s.allocated_bytes);
    CHECK(s.peak_allocated_bytes >= s.allocated_bytes);
  };
  step();  // warm-up
  const cuda::AllocatorStats warm = cuda::allocator_stats(0);
  CHECK(warm.allocated_bytes == base.allocated_bytes);
  CHECK(warm.reserved_bytes >= warm.allocated_bytes + step_bytes);  // the freed blocks are cached
  for (int i = 0; i < 3; ++i) step();
  const cuda::AllocatorStats after = cuda::allocator_stats(0);
  INFO("warm-up: " << cuda::stats_str(warm) << "\nafter: " << cuda::stats_str(after));
  CHECK(after.num_device_mallocs == warm.num_device_mallocs);  // no cudaMalloc in a steady step
  CHECK(after.num_cache_hits == warm.num_cache_hits + 3 * sizes.size());
  CHECK(after.reserved_bytes == warm.reserved_bytes);
  CHECK(after.allocated_bytes == base.allocated_bytes);
  CHECK(after.peak_allocated_bytes >= base.allocated_bytes + step_bytes);

  cuda::empty_cache();
  const cuda::AllocatorStats emptied = cuda::allocator_stats(0);
  INFO("emptied: " << cuda::stats_str(emptied));
  CHECK(emptied.reserved_bytes == emptied.allocated_bytes);  // nothing cached any more
  CHECK(emptied.allocated_bytes == base.allocated_bytes);
  {
    Tensor t = empty({4096}, TensorOptions(kUInt8).with_device(kGpu));  // a fresh cudaMalloc
    CHECK(cuda::allocator_stats(0).num_device_mallocs == emptied.num_device_mallocs + 1);
  }
  cuda::reset_peak_stats(0);
  CHECK(cuda::allocator_stats(0).peak_allocated_bytes == cuda::allocator_stats(0).allocated_bytes);
}

TEST_CASE("a device that does not exist is one clear error") {
  const int n = cuda::device_count();
  const std::string msg = "cuda: device cuda:" + std::to_string(n) + " is not available (" + std::to_string(n) +
                          " CUDA device" + (n == 1 ? "" : "s") + ")";
  CHECK_THROWS_WITH_AS(ones({2}).to(Device::cuda(n)), msg.c_str(), std::runtime_error);
  CHECK_THROWS_WITH_AS(cuda::allocate(16, n), msg.c_str(), std::runtime_error);
  CHECK_THROWS_WITH_AS(cuda::synchronize(-1), doctest::Contains("cuda: device cuda:-1 is not available"),
                       std::runtime_error);
  cuda::synchronize(0);
  CHECK(cuda::stream(0) != nullptr);
  CHECK(cuda::stream(0) == cuda::stream(0));
  CHECK(cuda::cublas_handle(0) != nullptr);
}

TL_CUDA_TEST_MAIN()
