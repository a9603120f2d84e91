// Tensors: creation, views and strides, broadcasting, the generator, printing, dtypes.
#include "tests/test_util.h"

using namespace tl;

namespace {
std::vector<double> vals(const Tensor& t) { return t.to_vector<double>(); }
bool shares_storage(const Tensor& a, const Tensor& b) { return a.storage() == b.storage(); }
}  // namespace

TEST_CASE("creation") {
  CHECK(vals(zeros({2, 2})) == std::vector<double>{0, 0, 0, 0});
  CHECK(vals(ones({3}, kFloat64)) == std::vector<double>{1, 1, 1});
  CHECK(vals(full({2}, 2.5)) == std::vector<double>{2.5, 2.5});
  CHECK(vals(arange(5)) == std::vector<double>{0, 1, 2, 3, 4});
  CHECK(vals(arange(1, 2, 0.25, kFloat64)) == std::vector<double>{1, 1.25, 1.5, 1.75});
  CHECK(arange(4, kInt64).dtype() == kInt64);
  Tensor v = from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(v.shape() == Shape{2, 3});
  CHECK(v.strides() == Strides{3, 1});
  CHECK(v.dtype() == kFloat32);
  CHECK(from_vector<double>({1, 2}, {2}, kFloat32).dtype() == kFloat32);
  CHECK(scalar_tensor(3.0).dim() == 0);
  CHECK(scalar_tensor(3.0).item() == 3.0);
  CHECK(tensor({1, 2, 3}).shape() == Shape{3});
  CHECK(zeros({0, 3}).numel() == 0);
  CHECK_THROWS_WITH_AS(from_vector<float>({1, 2, 3}, {2, 2}), "from_vector: 3 values for shape (2,2) (4 elements)",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(zeros({2}, kInt64).requires_grad_(), "requires_grad_: only floating tensors can require grad, got int64",
                       std::invalid_argument);
}

TEST_CASE("views share storage and never copy") {
  Tensor a = arange(24, kFloat64).view({2, 3, 4});
  Tensor p = a.permute({2, 0, 1});
  CHECK(shares_storage(a, p));
  CHECK(p.shape() == Shape{4, 2, 3});
  CHECK(p.strides() == Strides{1, 12, 4});
  CHECK_FALSE(p.is_contiguous());
  CHECK(p.select(0, 1).select(0, 1).to_vector<double>() == std::vector<double>{13, 17, 21});

  Tensor t = a.transpose(1, 2);
  CHECK(t.strides() == Strides{12, 1, 4});
  CHECK(shares_storage(a, t));

  Tensor n = a.narrow(2, 1, 2);
  CHECK(n.shape() == Shape{2, 3, 2});
  CHECK(n.offset() == 1);
  CHECK(shares_storage(a, n));
  CHECK(vals(n.select(0, 0).select(0, 0)) == std::vector<double>{1, 2});

  Tensor s = a.slice(2, 0, 4, 2);
  CHECK(s.strides() == Strides{12, 4, 2});
  CHECK(vals(s.select(0, 1).select(0, 2)) == std::vector<double>{20, 22});
  CHECK(a.slice(1, -2, 100).shape() == Shape{2, 2, 4});  // python-style bounds

  Tensor e = arange(3, kFloat64).view({3, 1}).expand({2, 3, 4});
  CHECK(e.strides() == Strides{0, 1, 0});
  CHECK(vals(e.select(0, 1).select(0, 2)) == std::vector<double>{2, 2, 2, 2});

  Tensor u = a.unsqueeze(1);
  CHECK(u.shape() == Shape{2, 1, 3, 4});
  CHECK(u.squeeze(1).shape() == a.shape());
  CHECK(zeros({1, 3, 1}).squeeze().shape() == Shape{3});
  CHECK(a.flatten(1).shape() == Shape{2, 12});
  CHECK(shares_storage(a, a.flatten(1)));
  CHECK(a.t().dim() == 3);  // t() is transpose(0, 1)
}

TEST_CASE("reshape views when it can and copies only when it must") {
  Tensor a = arange(12, kFloat64).view({3, 4});
  CHECK(shares_storage(a, a.reshape({2, 6})));
  CHECK(shares_storage(a, a.reshape({-1})));
  Tensor t = a.t();  // (4, 3), not contiguous
  CHECK(shares_storage(t, t.reshape({4, 3, 1})));  // adding a unit dim is still a view
  Tensor r = t.reshape({12});                      // must copy
  CHECK_FALSE(shares_storage(t, r));
  CHECK(vals(r) == std::vector<double>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11});
  CHECK_THROWS_WITH_AS(t.view({12}),
                       "view: shape (12) is not compatible with the strides (1,4) of input (4,3); use reshape (which copies)",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(a.reshape({5, -1}), "reshape: shape (5,-1) is invalid for input of shape (3,4)",
                       std::invalid_argument);
  CHECK(a.contiguous().is_same(a));
  CHECK_FALSE(t.contiguous().is_same(t));
  CHECK(t.contiguous().is_contiguous());
}

TEST_CASE("every op accepts non-contiguous inputs") {
  Tensor a = arange(6, kFloat64).view({2, 3});
  Tensor at = a.t();  // (3, 2)
  CHECK(vals(add(at, at.contiguous())) == std::vector<double>{0, 6, 2, 8, 4, 10});
  CHECK(vals(exp(at)) == vals(exp(at.contiguous())));
  CHECK(vals(sum(at, {1})) == std::vector<double>{3, 5, 7});
  CHECK(vals(matmul(at, a)) == vals(matmul(at.contiguous(), a)));
  CHECK(vals(cat({at, at}, 1)) == vals(cat({at.contiguous(), at.contiguous()}, 1)));
}

TEST_CASE("broadcasting rules") {
  CHECK(broadcast_shapes({4, 1, 3}, {5, 1}, "t") == Shape{4, 5, 3});
  CHECK(broadcast_shapes({}, {2, 3}, "t") == Shape{2, 3});
  CHECK(broadcast_shapes({0, 1}, {1, 7}, "t") == Shape{0, 7});
  CHECK_THROWS_WITH_AS(broadcast_shapes({2, 3}, {4, 3}, "add"),
                       "add: shapes (2,3) and (4,3) cannot be broadcast (dim 0: 2 vs 4)", std::invalid_argument);
  Tensor col = from_vector<double>({1, 2}, {2, 1});
  Tensor row = from_vector<double>({10, 20, 30}, {3});
  CHECK(vals(col + row) == std::vector<double>{11, 21, 31, 12, 22, 32});
  CHECK(vals(col * 2.0) == std::vector<double>{2, 4});
  CHECK(vals(1.0 - col) == std::vector<double>{0, -1});
}

TEST_CASE("the generator is deterministic, thread-count independent and restorable") {
  const int threads = get_num_threads();
  Generator g1(42), g2(42), g3(43);
  set_num_threads(1);
  Tensor a = randn({1000, 37}, kFloat32, &g1);
  set_num_threads(2);
  Tensor b = randn({1000, 37}, kFloat32, &g2);
  set_num_threads(threads);
  CHECK(a.to_vector<float>() == b.to_vector<float>());
  CHECK(randn({10}, kFloat32, &g3).to_vector<float>() != randn({10}, kFloat32, &g1).to_vector<float>());

  // Two draws in a row equal one draw of their total size: the counter simply advances.
  Generator h1(5), h2(5);
  Tensor x1 = rand({100}, kFloat64, &h1), x2 = rand({50}, kFloat64, &h1);
  Tensor y = rand({150}, kFloat64, &h2);
  CHECK(vals(cat({x1, x2}, 0)) == vals(y));

  // Save (seed, offset), draw, restore, draw again.
  Generator s(9);
  rand({17}, kFloat32, &s);
  const uint64_t seed = s.seed(), offset = s.offset();
  CHECK(offset == 17);
  Tensor first = randn({8}, kFloat64, &s);
  s.set_state(seed, offset);
  CHECK(vals(randn({8}, kFloat64, &s)) == vals(first));

  // Moments of a large draw.
  Tensor n = randn({200000}, kFloat64, &s);
  CHECK(std::abs(mean(n).item()) < 0.01);
  CHECK(std::abs(mean(n * n).item() - 1.0) < 0.02);
  Tensor u = uniform({200000}, -2, 3, kFloat64, &s);
  CHECK(max(u).item() < 3.0);
  CHECK(-max(-u).item() >= -2.0);
  CHECK(std::abs(mean(u).item() - 0.5) < 0.02);
}

TEST_CASE("item, to_vector, dtype conversion") {
  Tensor a = from_vector<double>({1.5, -2.25, 3}, {3});
  CHECK(a.select(0, 1).item() == -2.25);
  CHECK(a.to(kFloat32).dtype() == kFloat32);
  CHECK(a.to(kInt64).to_vector<int64_t>() == std::vector<int64_t>{1, -2, 3});
  CHECK(gt(a, 0.0).dtype() == kUInt8);
  CHECK(gt(a, 0.0).to_vector<uint8_t>() == std::vector<uint8_t>{1, 0, 1});
  CHECK_THROWS_WITH_AS(a.item(), "item: tensor of shape (3) has 3 elements, expected 1", std::invalid_argument);
  CHECK_THROWS_WITH_AS(a.data_ptr<float>(), "data_ptr: tensor is float64, asked for float32", std::invalid_argument);
}

TEST_CASE("in-place copy and fill respect views") {
  Tensor a = zeros({3, 4}, kFloat64);
  a.narrow(1, 1, 2).fill_(7);
  CHECK(vals(a.select(0, 2)) == std::vector<double>{0, 7, 7, 0});
  a.t().select(0, 3).copy_(from_vector<double>({1, 2, 3}, {3}));
  CHECK(vals(a.select(1, 3)) == std::vector<double>{1, 2, 3});
  a.copy_(from_vector<double>({5, 6, 7, 8}, {4}));  // broadcast copy
  CHECK(vals(a.select(0, 1)) == std::vector<double>{5, 6, 7, 8});
}

TEST_CASE("printing") {
  CHECK(from_vector<float>({1, 2, 3, 4}, {2, 2}).str() == "tensor([[1.0000, 2.0000],\n        [3.0000, 4.0000]])");
  CHECK(arange(3, kInt64).str() == "tensor([0, 1, 2], dtype=int64)");
  CHECK(scalar_tensor(0.5, kFloat64).str() == "tensor(0.5000, dtype=float64)");
  CHECK(zeros({2}).requires_grad_().str() == "tensor([0.0000, 0.0000], requires_grad=True)");
  std::string big = arange(5000).str();
  CHECK(big.find("...") != std::string::npos);
  CHECK(big.size() < 200);
}

TEST_CASE("devices") {
  CHECK(Device::parse("cpu").is_cpu());
  CHECK(Device::parse("cuda:1") == Device::cuda(1));
  CHECK_THROWS_WITH_AS(Device::parse("gpu"), "Device: cannot parse 'gpu' (expected cpu, cuda or cuda:N)",
                       std::invalid_argument);
}

TEST_CASE("out of memory names the size, the dtype and the shape") {
#if defined(__SANITIZE_ADDRESS__)
  MESSAGE("skipped: AddressSanitizer aborts on an impossible allocation instead of returning null");
#else
  // 2^50 float32 elements: 4.5 PB, more than any machine has (and than the kernel's overcommit allows).
  std::string e;
  try {
    empty({1 << 20, 1 << 20, 1 << 10});
  } catch (const std::bad_alloc& err) {  // still a bad_alloc for code that catches that
    e = err.what();
  }
  MESSAGE(e);
  CHECK(e == "out of memory allocating 4.5 PB (4503599627370496 bytes) for a float32 tensor (1048576,1048576,1024) on cpu");
  CHECK(bytes_str(999) == "999 bytes");
  CHECK(bytes_str(8'112'000'000) == "8.1 GB (8112000000 bytes)");
#endif
}

TEST_CASE("the CPU block cache serves a repeated step without fresh allocations, within 1.5x its peak") {
  {
    const CpuCacheStats before = cpu_cache_stats();
    { Tensor a = empty({1 << 18}); }
    { Tensor a = empty({1 << 18}); }  // the same 1 MB block again
    if (cpu_cache_stats().hits == before.hits) {
      MESSAGE("skipped: the CPU block cache is off (TL_CPU_CACHE=0 or a sanitizer build)");
      return;
    }
  }
  empty_cpu_cache();
  // A training step's pattern: forward keeps 8 activations; backward frees them one by one, each for
  // an input gradient of the same size that lives until the next one exists, and allocates a weight
  // gradient of another size that lives until the step ends.
  auto step = [] {
    std::vector<Tensor> acts, wgrads;
    for (int i = 0; i < 8; ++i) acts.push_back(empty({300'000}));
    Tensor g = empty({300'000});
    for (int i = 0; i < 8; ++i) {
      acts.pop_back();
      wgrads.push_back(empty({50'000 + 10'000 * i}));
      g = empty({300'000});
    }
  };
  for (int s = 0; s < 2; ++s) step();
  const CpuCacheStats warm = cpu_cache_stats();
  for (int s = 0; s < 5; ++s) step();
  const CpuCacheStats after = cpu_cache_stats();
  MESSAGE("misses in 5 warm steps: " << after.misses - warm.misses << ", cached " << after.cached_bytes
                                     << " bytes, peak live " << after.peak_live_bytes << " bytes");
  CHECK(after.misses == warm.misses);
  CHECK(after.hits - warm.hits == 5 * 25);
  CHECK(after.live_bytes == warm.live_bytes);
  CHECK(after.cached_bytes <= after.peak_live_bytes + after.peak_live_bytes / 2);
  // Nearly the same size, the same block (one of 4 sizes per power of two: 4.4 and 5.0 MB both take
  // a block of 5 MiB).
  const CpuCacheStats before = cpu_cache_stats();
  { Tensor a = empty({1'100'000}); }
  { Tensor b = empty({1'250'000}); }
  CHECK(cpu_cache_stats().hits == before.hits + 1);
  empty_cpu_cache();
  CHECK(cpu_cache_stats().cached_bytes == 0);
}
