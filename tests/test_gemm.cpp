// The packed GEMM (tensor/cpu/gemm.h): every micro-kernel this CPU can run against a float64 triple
// loop, over edge shapes (partial tiles, narrow last panels, K blocks, K = 0), strided and transposed
// operands and accumulation; and the same bits whatever the thread count.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <tuple>
#include <vector>

#include "tensor/cpu/gemm.h"
#include "tensor/parallel.h"
#include "tensor/random.h"

using namespace tl;
namespace gm = tl::cpu::gemm;

namespace {

std::vector<float> random_vector(int64_t n, uint64_t seed) {
  std::vector<float> v(static_cast<size_t>(n));
  uint64_t s = seed * 6364136223846793005ULL + 1442695040888963407ULL;
  for (float& x : v) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    x = static_cast<float>(static_cast<int64_t>(s >> 40) % 2001 - 1000) / 1000.0f;
  }
  return v;
}

struct Case {
  int64_t m, n, k;
  bool a_trans, b_trans, accumulate;
};

// Worst |got - want| / (sum_k |a||b| + tiny) over C: float32 summation error relative to the size of
// the terms, which is what a K-long dot product can promise.
double worst_error(const Case& c, gm::Isa isa) {
  const std::vector<float> a = random_vector(c.m * c.k, 1 + c.m), b = random_vector(c.k * c.n, 2 + c.n);
  const int64_t ldc = c.n + 3;  // a row stride wider than the row
  std::vector<float> out = random_vector(c.m * ldc, 3);
  const std::vector<float> before = out;
  // A (m, k) row-major or its transpose stored (k, m); B likewise.
  const gm::View av = c.a_trans ? gm::View{a.data(), 1, c.m} : gm::View{a.data(), c.k, 1};
  const gm::View bv = c.b_trans ? gm::View{b.data(), 1, c.k} : gm::View{b.data(), c.n, 1};
  gm::set_isa(isa);
  gm::gemm(c.m, c.n, c.k, av, bv, out.data(), ldc, c.accumulate);
  double worst = 0;
  for (int64_t i = 0; i < c.m; ++i)
    for (int64_t j = 0; j < c.n; ++j) {
      double want = c.accumulate ? before[i * ldc + j] : 0, mag = std::abs(want);
      for (int64_t p = 0; p < c.k; ++p) {
        const double x = av.p[i * av.rs + p * av.cs], y = bv.p[p * bv.rs + j * bv.cs];
        want += x * y;
        mag += std::abs(x * y);
      }
      worst = std::max(worst, std::abs(out[i * ldc + j] - want) / (mag + 1e-30));
    }
  // The padding columns of each row are never written.
  for (int64_t i = 0; i < c.m; ++i)
    for (int64_t j = c.n; j < ldc; ++j)
      if (out[i * ldc + j] != before[i * ldc + j]) return 1.0;
  return worst;
}

std::vector<gm::Isa> isas() {
  std::vector<gm::Isa> v;
  for (gm::Isa isa : {gm::Isa::Reference, gm::Isa::Avx2, gm::Isa::Avx512})
    if (gm::isa_supported(isa)) v.push_back(isa);
  return v;
}

}  // namespace

TEST_CASE("gemm: every micro-kernel matches a float64 reference on edge shapes") {
  const gm::Isa saved = gm::active_isa();
  const double tol = 1e-6;  // float32 rounding of a sum, relative to the sum of |terms|
  const Case cases[] = {
      {1, 1, 1, false, false, false},    {7, 23, 5, false, false, false},    {8, 48, 256, false, false, false},
      {9, 49, 257, false, false, true},  {16, 144, 600, false, true, false}, {33, 100, 31, true, false, true},
      {64, 9, 513, true, true, false},   {5, 1000, 3, false, false, false},  {12, 7, 0, false, false, false},
      {12, 7, 0, false, false, true},    {130, 77, 290, true, false, false}, {3, 2000, 27, false, false, true},
      // A last panel of exactly one or two vectors of columns (16 or 32 with AVX-512, 8 or 16 with AVX2)
      // on full tiles of rows, which the narrow kernels store directly.
      {8, 64, 100, false, false, true},  {24, 16, 77, false, false, false}, {32, 80, 41, false, true, true},
  };
  for (gm::Isa isa : isas()) {
    double worst = 0;
    for (const Case& c : cases) {
      const double e = worst_error(c, isa);
      CHECK_MESSAGE(e <= tol, gm::isa_name(isa) << " m=" << c.m << " n=" << c.n << " k=" << c.k << " a_trans=" << c.a_trans
                                                << " b_trans=" << c.b_trans << " acc=" << c.accumulate << ": error " << e
                                                << " (tolerance " << tol << ")");
      worst = std::max(worst, e);
    }
    std::printf("gemm %-9s: %zu shapes, worst relative error %.3g (tolerance %.0e)\n", gm::isa_name(isa),
                std::size(cases), worst, tol);
  }
  gm::set_isa(saved);
}

TEST_CASE("gemm: the same bits on 1 and 2 threads, split by rows or by columns") {
  const int saved_threads = get_num_threads();
  const gm::Isa saved = gm::active_isa();
  for (gm::Isa isa : isas()) {
    gm::set_isa(isa);
    for (const auto& [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{16, 3000, 300}, {1024, 40, 700}}) {
      const std::vector<float> a = random_vector(m * k, 5), b = random_vector(k * n, 6);
      std::vector<float> c1(static_cast<size_t>(m * n)), c2(c1.size());
      set_num_threads(1);
      gm::gemm(m, n, k, {a.data(), k, 1}, {b.data(), n, 1}, c1.data(), n, false);
      set_num_threads(2);
      gm::gemm(m, n, k, {a.data(), k, 1}, {b.data(), n, 1}, c2.data(), n, false);
      CHECK_MESSAGE(c1 == c2, gm::isa_name(isa) << " m=" << m << " n=" << n << " k=" << k);
    }
  }
  set_num_threads(saved_threads);
  gm::set_isa(saved);
}

TEST_CASE("gemm: an ISA the CPU lacks is refused by name") {
  for (gm::Isa isa : {gm::Isa::Avx2, gm::Isa::Avx512})
    if (!gm::isa_supported(isa)) CHECK_THROWS_WITH(gm::set_isa(isa), doctest::Contains(gm::isa_name(isa)));
  CHECK(gm::isa_supported(gm::Isa::Reference));
}
