// Forward values of the elementwise, reduction, matmul and shape ops against plain references, and
// the error messages of bad calls.
#include <cmath>
#include <limits>

#include "tests/test_util.h"

using namespace tl;

namespace {
Generator gen(99);
std::vector<double> vals(const Tensor& t) { return t.to_vector<double>(); }

// Applies f to every element of x (a reference for the unary ops).
template <typename F>
Tensor map_ref(const Tensor& x, F f) {
  std::vector<double> v = vals(x);
  for (double& e : v) e = f(e);
  return from_vector<double>(v, x.shape(), x.dtype());
}
}  // namespace

TEST_CASE("unary ops match the C library, float64 and float32") {
  for (DType dt : {kFloat64, kFloat32}) {
    const double tol = dt == kFloat64 ? 1e-14 : 1e-6;
    Tensor x = uniform({5, 7}, -4, 4, dt, &gen).t();  // non-contiguous
    Tensor pos = uniform({13}, 0.1, 4, dt, &gen);
    TL_CHECK_CLOSE(neg(x), map_ref(x, [](double v) { return -v; }), tol);
    TL_CHECK_CLOSE(exp(x), map_ref(x, [](double v) { return std::exp(v); }), tol);
    TL_CHECK_CLOSE(log(pos), map_ref(pos, [](double v) { return std::log(v); }), tol);
    TL_CHECK_CLOSE(sqrt(pos), map_ref(pos, [](double v) { return std::sqrt(v); }), tol);
    TL_CHECK_CLOSE(pow(pos, 2.5), map_ref(pos, [](double v) { return std::pow(v, 2.5); }), tol);
    TL_CHECK_CLOSE(abs(x), map_ref(x, [](double v) { return std::abs(v); }), tol);
    TL_CHECK_CLOSE(clamp(x, -1, 2), map_ref(x, [](double v) { return std::min(std::max(v, -1.0), 2.0); }), tol);
    TL_CHECK_CLOSE(sigmoid(x), map_ref(x, [](double v) { return 1 / (1 + std::exp(-v)); }), tol);
    TL_CHECK_CLOSE(tanh(x), map_ref(x, [](double v) { return std::tanh(v); }), tol);
    TL_CHECK_CLOSE(relu(x), map_ref(x, [](double v) { return v > 0 ? v : 0; }), tol);
    TL_CHECK_CLOSE(gelu(x), map_ref(x, [](double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); }), tol);
    TL_CHECK_CLOSE(silu(x), map_ref(x, [](double v) { return v / (1 + std::exp(-v)); }), tol);
    TL_CHECK_CLOSE(pysilu(x), map_ref(x, [](double v) { return v >= 0 ? v : v / (1 + v * v); }), tol);
  }
  // Known values.
  CHECK(gelu(scalar_tensor(1.0, kFloat64)).item() == doctest::Approx(0.8413447460685429).epsilon(1e-15));
  CHECK(pysilu(scalar_tensor(-2.0, kFloat64)).item() == doctest::Approx(-0.4).epsilon(1e-15));
  // Stable sigmoid at the extremes: no NaN, exact limits.
  Tensor ext = from_vector<float>({-1000, 1000, -88, 88}, {4});
  std::vector<float> s = sigmoid(ext).to_vector<float>();
  CHECK(s[0] == 0.0f);
  CHECK(s[1] == 1.0f);
  CHECK(std::isfinite(s[2]));
  CHECK(vals(silu(ext))[0] == doctest::Approx(0.0));
}

TEST_CASE("binary ops and comparisons") {
  Tensor a = from_vector<double>({1, -2, 3, 4, 5, 6}, {2, 3});
  Tensor b = from_vector<double>({2, 4, 8}, {3});
  CHECK(vals(a + b) == std::vector<double>{3, 2, 11, 6, 9, 14});
  CHECK(vals(a - b) == std::vector<double>{-1, -6, -5, 2, 1, -2});
  CHECK(vals(a * b) == std::vector<double>{2, -8, 24, 8, 20, 48});
  CHECK(vals(a / b) == std::vector<double>{0.5, -0.5, 0.375, 2, 1.25, 0.75});
  CHECK(vals(2.0 / b) == std::vector<double>{1, 0.5, 0.25});
  CHECK(vals(eq(a, a)) == std::vector<double>{1, 1, 1, 1, 1, 1});
  CHECK(vals(lt(a, b)) == std::vector<double>{1, 1, 1, 0, 0, 1});
  CHECK(vals(ge(b, b)) == std::vector<double>{1, 1, 1});
}

TEST_CASE("reductions match naive sums") {
  Tensor x = uniform({4, 5, 6}, -1, 1, kFloat64, &gen);
  std::vector<double> v = vals(x);
  auto at = [&](int i, int j, int k) { return v[(i * 5 + j) * 6 + k]; };
  // sum over dims {0, 2}, keepdim
  Tensor s = sum(x, {0, 2}, true);
  CHECK(s.shape() == Shape{1, 5, 1});
  std::vector<double> ref(5, 0.0), mx(4, -1e300);
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 5; ++j)
      for (int k = 0; k < 6; ++k) {
        ref[j] += at(i, j, k);
        mx[i] = std::max(mx[i], at(i, j, k));
      }
  TL_CHECK_CLOSE(s.view({5}), from_vector<double>(ref, {5}), 1e-14);
  TL_CHECK_CLOSE(mean(x, {0, -1}), from_vector<double>(ref, {5}) / 24.0, 1e-14);
  TL_CHECK_CLOSE(max(x, {1, 2}), from_vector<double>(mx, {4}), 0);
  CHECK(sum(x).dim() == 0);
  CHECK(max(x, {2}, true).shape() == Shape{4, 5, 1});
  // max propagates NaN, as torch
  Tensor n = from_vector<double>({1, std::numeric_limits<double>::quiet_NaN(), 3}, {3});
  CHECK(std::isnan(max(n).item()));
  // float32 sums accumulate in double: 1e6 * 0.1f within float rounding of the exact value.
  CHECK(sum(full({1000000}, 0.1, kFloat32)).item() == doctest::Approx(100000.0 * 0.1f / 0.1).epsilon(1e-6));
  // The result does not depend on the thread count.
  const int t = get_num_threads();
  Tensor big = randn({300, 500}, kFloat32, &gen);
  set_num_threads(1);
  std::vector<float> one = sum(big, {0}).to_vector<float>();
  float all1 = sum(big).item<float>();
  set_num_threads(2);
  CHECK(sum(big, {0}).to_vector<float>() == one);
  CHECK(sum(big).item<float>() == all1);
  set_num_threads(t);
  CHECK_THROWS_WITH_AS(sum(x, {3}), "sum: dim 3 out of range for a 3-d tensor (expected in [-3, 2])", std::out_of_range);
  CHECK_THROWS_WITH_AS(sum(x, {1, -2}), "sum: dim 1 appears more than once", std::invalid_argument);
}

TEST_CASE("matmul matches a naive triple loop") {
  auto naive = [](const Tensor& a, const Tensor& b) {  // (B, M, K) x (B, K, N)
    const int64_t B = a.size(0), M = a.size(1), K = a.size(2), N = b.size(2);
    std::vector<double> av = vals(a.contiguous()), bv = vals(b.contiguous()), o(B * M * N, 0.0);
    for (int64_t z = 0; z < B; ++z)
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j)
          for (int64_t k = 0; k < K; ++k) o[(z * M + i) * N + j] += av[(z * M + i) * K + k] * bv[(z * K + k) * N + j];
    return from_vector<double>(o, {B, M, N});
  };
  for (DType dt : {kFloat64, kFloat32}) {
    const double tol = dt == kFloat64 ? 1e-13 : 1e-5;
    Tensor a = randn({7, 5}, dt, &gen), b = randn({5, 3}, dt, &gen);
    TL_CHECK_CLOSE(matmul(a, b), naive(a.unsqueeze(0), b.unsqueeze(0)).squeeze(0), tol);
    Tensor at = randn({5, 7}, dt, &gen).t(), bt = randn({3, 5}, dt, &gen).t();  // transposed views
    TL_CHECK_CLOSE(matmul(at, bt), naive(at.unsqueeze(0), bt.unsqueeze(0)).squeeze(0), tol);
    Tensor ba = randn({4, 6, 9}, dt, &gen), bb = randn({9, 2}, dt, &gen);  // broadcast batch
    TL_CHECK_CLOSE(matmul(ba, bb), naive(ba, bb.unsqueeze(0).expand({4, 9, 2})), tol);
    Tensor big_a = randn({130, 70}, dt, &gen), big_b = randn({70, 90}, dt, &gen);
    TL_CHECK_CLOSE(matmul(big_a, big_b), naive(big_a.unsqueeze(0), big_b.unsqueeze(0)).squeeze(0), tol);
  }
  CHECK(matmul(randn({2, 3, 4}), randn({2, 4, 5})).shape() == Shape{2, 3, 5});
  CHECK_THROWS_WITH_AS(matmul(zeros({2, 3}), zeros({4, 5})), "matmul: (2,3) @ (4,5): inner dims differ (3 vs 4)",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(matmul(zeros({2, 3}), zeros({3, 5}, kFloat64)), "matmul: dtype mismatch: float32 and float64",
                       std::invalid_argument);
}

TEST_CASE("cat, pad and center_crop") {
  Tensor a = arange(6, kFloat64).view({2, 3}), b = arange(6, 8, 1, kFloat64).view({2, 1});
  CHECK(vals(cat({a, b}, 1)) == std::vector<double>{0, 1, 2, 6, 3, 4, 5, 7});
  CHECK(vals(cat({a, a}, 0)).size() == 12);
  CHECK(vals(pad(b, {1, 2}, -1)) == std::vector<double>{-1, 6, -1, -1, -1, 7, -1, -1});
  CHECK(pad(zeros({1, 2, 3, 4}), {1, 1, 2, 0}).shape() == Shape{1, 2, 5, 6});
  // The crop starts at floor((size - target) / 2): 7 -> 4 starts at 1, 6 -> 3 starts at 1.
  Tensor img = arange(42, kFloat64).view({1, 1, 6, 7});
  Tensor c = center_crop(img, 3, 4);
  CHECK(c.shape() == Shape{1, 1, 3, 4});
  CHECK(vals(c.select(2, 0).flatten()) == std::vector<double>{8, 9, 10, 11});
  CHECK(c.storage() == img.storage());  // a view
  CHECK_THROWS_WITH_AS(cat({a, zeros({3, 1}, kFloat64)}, 1),
                       "cat: tensor 1 has shape (3,1), tensor 0 has (2,3); all dims but 1 must match",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(cat({a, zeros({2, 1})}, 1), "cat: tensor 1 is float32 on cpu, tensor 0 is float64 on cpu",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(center_crop(img, 7, 4), "center_crop: cannot crop (1,1,6,7) to 7x4", std::invalid_argument);
  CHECK_THROWS_WITH_AS(pad(a, {-1, 0}), "pad: negative padding (-1,0) is not supported (use narrow)",
                       std::invalid_argument);
}

TEST_CASE("mismatches name the op and show the shapes") {
  CHECK_THROWS_WITH_AS(zeros({2, 3}) + zeros({4, 3}), "add: shapes (2,3) and (4,3) cannot be broadcast (dim 0: 2 vs 4)",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(zeros({2, 3}) * zeros({3}, kFloat64), "mul: dtype mismatch: float32 (2,3) and float64 (3)",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(exp(zeros({2}, kInt64)), "exp: expected a floating tensor, got int64 (2)", std::invalid_argument);
  CHECK_THROWS_WITH_AS(zeros({2, 3}).expand({4, 3, 2}), "expand: cannot expand (2,3) to (4,3,2) (dim 1: 2 to 3)",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(zeros({2, 3}).permute({0, 0}), "permute: dim 0 repeated in (0,0)", std::invalid_argument);
  CHECK_THROWS_WITH_AS(zeros({2, 3}).narrow(1, 2, 2), "narrow: range [2, 4) is outside dim 1 of size 3 in (2,3)",
                       std::invalid_argument);
}
