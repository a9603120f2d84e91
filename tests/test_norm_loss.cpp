// batch_norm and the losses (BCE-with-logits, dice, log_softmax, nll, cross-entropy) against
// references written here with plain loops over to_vector<double>() data.
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "tensor/kernels.h"
#include "tensor/parallel.h"
#include "tests/test_util.h"

using namespace tl;
using tl::testing::error_of;
using tl::testing::compare;

namespace {

constexpr double kTol64 = 1e-12, kTol32 = 1e-5;
constexpr double kTolNumeric = 1e-7;  // central differences with h = 1e-5: O(h^2) truncation error

Tensor vec(const std::vector<double>& v, const Shape& shape, DType dt = kFloat64) {
  return from_vector<double>(v, shape, TensorOptions(dt));
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// (N, C, S...) read as (N, C, S).
struct Ncs {
  int64_t n, c, s;
  explicit Ncs(const Shape& sh) : n(sh[0]), c(sh[1]), s(numel_of(sh) / (sh[0] * sh[1])) {}
  int64_t at(int64_t in, int64_t ic, int64_t is) const { return (in * c + ic) * s + is; }
};

// Batch norm with batch statistics, straight from the definition. w, b empty: affine off.
struct BnRef {
  std::vector<double> y, mean, var;  // var biased
};
BnRef bn_ref(const std::vector<double>& x, const Shape& shape, const std::vector<double>& w,
             const std::vector<double>& b, double eps) {
  const Ncs d(shape);
  const double m = static_cast<double>(d.n * d.s);
  BnRef r{std::vector<double>(x.size()), std::vector<double>(d.c), std::vector<double>(d.c)};
  for (int64_t c = 0; c < d.c; ++c) {
    double s = 0, ss = 0;
    for (int64_t n = 0; n < d.n; ++n)
      for (int64_t i = 0; i < d.s; ++i) s += x[d.at(n, c, i)];
    const double mu = s / m;
    for (int64_t n = 0; n < d.n; ++n)
      for (int64_t i = 0; i < d.s; ++i) ss += (x[d.at(n, c, i)] - mu) * (x[d.at(n, c, i)] - mu);
    r.mean[c] = mu;
    r.var[c] = ss / m;
    for (int64_t n = 0; n < d.n; ++n)
      for (int64_t i = 0; i < d.s; ++i)
        r.y[d.at(n, c, i)] = (x[d.at(n, c, i)] - mu) / std::sqrt(r.var[c] + eps) * (w.empty() ? 1.0 : w[c]) +
                             (b.empty() ? 0.0 : b[c]);
  }
  return r;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// d/dv of f(v) by central differences, element by element.
std::vector<double> numeric_grad(std::vector<double> v, const std::function<double(const std::vector<double>&)>& f) {
  const double h = 1e-5;
  std::vector<double> g(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const double keep = v[i];
    v[i] = keep + h;
    const double up = f(v);
    v[i] = keep - h;
    const double down = f(v);
    v[i] = keep;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

}  // namespace

TEST_CASE("batch_norm training: output and saved statistics, (N,C,H,W) float64") {
  const Shape shape{4, 3, 5, 6};
  Tensor x = randn(shape, kFloat64) * 3.0 + 7.0;  // |mean| > std, as activations often are
  Tensor w = randn({3}, kFloat64), b = randn({3}, kFloat64);
  const auto ref = bn_ref(x.to_vector<double>(), shape, w.to_vector<double>(), b.to_vector<double>(), 1e-5);
  kernels::BatchNormOutput out = kernels::batch_norm(x, w, b, Tensor(), Tensor(), true, 0.1, 1e-5);
  TL_CHECK_CLOSE(out.y, vec(ref.y, shape), kTol64);
  TL_CHECK_CLOSE(out.mean, vec(ref.mean, {3}), kTol64);
  std::vector<double> invstd(3);
  for (int c = 0; c < 3; ++c) invstd[c] = 1.0 / std::sqrt(ref.var[c] + 1e-5);
  TL_CHECK_CLOSE(out.invstd, vec(invstd, {3}), kTol64);
  TL_CHECK_CLOSE(batch_norm(x, w, b, Tensor(), Tensor(), true), vec(ref.y, shape), kTol64);
}

TEST_CASE("batch_norm: a large input split over channels gives the single-thread result bit for bit") {
  const Shape shape{4, 8, 64, 64};  // M = 16384 per channel: several channels per thread chunk
  Tensor x = randn(shape, kFloat32) + 3.0;
  Tensor w = randn({8}, kFloat32), b = randn({8}, kFloat32), g = randn(shape, kFloat32);
  const int threads = get_num_threads();
  auto run = [&] {
    auto out = kernels::batch_norm(x, w, b, Tensor(), Tensor(), true, 0.1, 1e-5);
    auto grads = kernels::batch_norm_backward(g, x, w, b, out.mean, out.invstd, true);
    return std::vector<Tensor>{out.y, grads.dx, grads.dweight, grads.dbias};
  };
  const std::vector<Tensor> many = run();
  set_num_threads(1);
  const std::vector<Tensor> one = run();
  set_num_threads(threads);
  for (size_t i = 0; i < many.size(); ++i) CHECK(many[i].to_vector<float>() == one[i].to_vector<float>());
  const auto ref = bn_ref(x.to_vector<double>(), shape, w.to_vector<double>(), b.to_vector<double>(), 1e-5);
  TL_CHECK_CLOSE(many[0], vec(ref.y, shape), kTol32);
}

TEST_CASE("batch_norm training: running statistics after two calls (momentum 0.1, unbiased variance)") {
  const Shape shape{5, 2, 3};  // (N, C, L): M = 15 values per channel
  Tensor rm = zeros({2}, kFloat64), rv = ones({2}, kFloat64);
  Tensor x1 = randn(shape, kFloat64) + 2.0, x2 = randn(shape, kFloat64) * 0.5 - 1.0;
  batch_norm(x1, Tensor(), Tensor(), rm, rv, true, 0.1, 1e-5);
  batch_norm(x2, Tensor(), Tensor(), rm, rv, true, 0.1, 1e-5);
  const auto r1 = bn_ref(x1.to_vector<double>(), shape, {}, {}, 1e-5);
  const auto r2 = bn_ref(x2.to_vector<double>(), shape, {}, {}, 1e-5);
  const double unbias = 15.0 / 14.0;
  std::vector<double> want_m(2), want_v(2);
  for (int c = 0; c < 2; ++c) {
    want_m[c] = 0.9 * (0.9 * 0.0 + 0.1 * r1.mean[c]) + 0.1 * r2.mean[c];
    want_v[c] = 0.9 * (0.9 * 1.0 + 0.1 * r1.var[c] * unbias) + 0.1 * r2.var[c] * unbias;
  }
  TL_CHECK_CLOSE(rm, vec(want_m, {2}), kTol64);
  TL_CHECK_CLOSE(rv, vec(want_v, {2}), kTol64);
}

TEST_CASE("batch_norm eval: running statistics, left unchanged") {
  const Shape shape{3, 4, 2, 2};
  Tensor x = randn(shape, kFloat64);
  Tensor w = randn({4}, kFloat64), b = randn({4}, kFloat64);
  const std::vector<double> rmv{0.5, -1.0, 2.0, 0.0}, rvv{1.5, 0.25, 4.0, 1.0};
  Tensor rm = vec(rmv, {4}), rv = vec(rvv, {4});
  Tensor y = batch_norm(x, w, b, rm, rv, false, 0.1, 1e-5);
  const Ncs d(shape);
  const auto xv = x.to_vector<double>(), wv = w.to_vector<double>(), bv = b.to_vector<double>();
  std::vector<double> want(xv.size());
  for (int64_t n = 0; n < d.n; ++n)
    for (int64_t c = 0; c < d.c; ++c)
      for (int64_t i = 0; i < d.s; ++i)
        want[d.at(n, c, i)] = (xv[d.at(n, c, i)] - rmv[c]) / std::sqrt(rvv[c] + 1e-5) * wv[c] + bv[c];
  TL_CHECK_CLOSE(y, vec(want, shape), kTol64);
  CHECK(rm.to_vector<double>() == rmv);
  CHECK(rv.to_vector<double>() == rvv);
}

TEST_CASE("batch_norm: affine off on (N,C), float32 on (N,C,L), non-contiguous input") {
  SUBCASE("(N,C) without weight and bias") {
    Tensor x = randn({8, 5}, kFloat64);
    const auto ref = bn_ref(x.to_vector<double>(), {8, 5}, {}, {}, 1e-5);
    TL_CHECK_CLOSE(batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), true), vec(ref.y, {8, 5}), kTol64);
  }
  SUBCASE("(N,C,L) float32") {
    Tensor x = randn({4, 3, 10}, kFloat32) * 2.0 + 5.0;
    Tensor w = randn({3}, kFloat32), b = randn({3}, kFloat32);
    const auto ref = bn_ref(x.to_vector<double>(), {4, 3, 10}, w.to_vector<double>(), b.to_vector<double>(), 1e-5);
    Tensor y = batch_norm(x, w, b, Tensor(), Tensor(), true);
    CHECK(y.dtype() == kFloat32);
    TL_CHECK_CLOSE(y, vec(ref.y, {4, 3, 10}), kTol32);
  }
  SUBCASE("transposed (N,C,H,W) view") {
    Tensor base = randn({3, 2, 4, 5}, kFloat64);
    Tensor x = base.transpose(0, 1);  // (2, 3, 4, 5), not contiguous
    REQUIRE_FALSE(x.is_contiguous());
    Tensor w = randn({3}, kFloat64), b = randn({3}, kFloat64);
    const auto ref = bn_ref(x.to_vector<double>(), x.shape(), w.to_vector<double>(), b.to_vector<double>(), 1e-5);
    TL_CHECK_CLOSE(batch_norm(x, w, b, Tensor(), Tensor(), true), vec(ref.y, x.shape()), kTol64);
  }
}

TEST_CASE("batch_norm backward, training: central differences of the reference") {
  const Shape shape{3, 2, 3, 2};
  Tensor x = (randn(shape, kFloat64) * 2.0 + 1.0).requires_grad_();
  Tensor w = randn({2}, kFloat64).requires_grad_(), b = randn({2}, kFloat64).requires_grad_();
  Tensor r = randn(shape, kFloat64);  // L = sum(y * r)
  SUBCASE("weight and bias") {
    sum(mul(batch_norm(x, w, b, Tensor(), Tensor(), true), r)).backward();
    const auto xv = x.to_vector<double>(), wv = w.to_vector<double>(), bv = b.to_vector<double>();
    const auto rv = r.to_vector<double>();
    auto gx = numeric_grad(xv, [&](const std::vector<double>& v) { return dot(bn_ref(v, shape, wv, bv, 1e-5).y, rv); });
    auto gw = numeric_grad(wv, [&](const std::vector<double>& v) { return dot(bn_ref(xv, shape, v, bv, 1e-5).y, rv); });
    auto gb = numeric_grad(bv, [&](const std::vector<double>& v) { return dot(bn_ref(xv, shape, wv, v, 1e-5).y, rv); });
    TL_CHECK_CLOSE(x.grad(), vec(gx, shape), kTolNumeric);
    TL_CHECK_CLOSE(w.grad(), vec(gw, {2}), kTolNumeric);
    TL_CHECK_CLOSE(b.grad(), vec(gb, {2}), kTolNumeric);
  }
  SUBCASE("affine off; upstream gradient broadcast from a scalar") {
    Tensor y = batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), true);
    sum(mul(y, r)).backward();
    const auto rv = r.to_vector<double>();
    auto gx = numeric_grad(x.to_vector<double>(),
                           [&](const std::vector<double>& v) { return dot(bn_ref(v, shape, {}, {}, 1e-5).y, rv); });
    TL_CHECK_CLOSE(x.grad(), vec(gx, shape), kTolNumeric);
    // sum(y): the upstream gradient is a stride-0 view of one value, and the result is zero because
    // each channel's output sums to 0 whatever x is.
    x.set_grad(Tensor());
    sum(batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), true)).backward();
    CHECK(compare(x.grad(), zeros(shape, kFloat64)).max_abs < 1e-12);
  }
  SUBCASE("bias without weight") {
    sum(mul(batch_norm(x, Tensor(), b, Tensor(), Tensor(), true), r)).backward();
    TL_CHECK_CLOSE(b.grad(), sum(r, {0, 2, 3}), kTol64);
  }
}

TEST_CASE("batch_norm backward, eval: dx = g w invstd, against loops") {
  const Shape shape{2, 3, 4};
  Tensor x = randn(shape, kFloat64).requires_grad_();
  Tensor w = randn({3}, kFloat64).requires_grad_(), b = randn({3}, kFloat64).requires_grad_();
  const std::vector<double> rmv{0.1, -0.2, 0.3}, rvv{0.5, 1.0, 2.0};
  Tensor r = randn(shape, kFloat64);
  sum(mul(batch_norm(x, w, b, vec(rmv, {3}), vec(rvv, {3}), false), r)).backward();
  const Ncs d(shape);
  const auto xv = x.to_vector<double>(), wv = w.to_vector<double>(), rv = r.to_vector<double>();
  std::vector<double> gx(xv.size()), gw(3, 0.0), gb(3, 0.0);
  for (int64_t n = 0; n < d.n; ++n)
    for (int64_t c = 0; c < d.c; ++c)
      for (int64_t i = 0; i < d.s; ++i) {
        const int64_t k = d.at(n, c, i);
        const double is = 1.0 / std::sqrt(rvv[c] + 1e-5);
        gx[k] = rv[k] * wv[c] * is;
        gw[c] += rv[k] * (xv[k] - rmv[c]) * is;
        gb[c] += rv[k];
      }
  TL_CHECK_CLOSE(x.grad(), vec(gx, shape), kTol64);
  TL_CHECK_CLOSE(w.grad(), vec(gw, {3}), kTol64);
  TL_CHECK_CLOSE(b.grad(), vec(gb, {3}), kTol64);
}

TEST_CASE("batch_norm_activation equals the activation after batch_norm: float32 bit for bit, forward and backward") {
  const Activation acts[] = {Activation::Relu, Activation::Gelu, Activation::Silu, Activation::PySilu};
  for (DType dt : {kFloat32, kFloat64})
    for (bool training : {true, false})
      for (int affine = 0; affine < 3; ++affine)  // weight and bias, bias only, neither
        for (Activation act : acts) {
          const std::string dtype = dtype_name(dt), act_name = activation_name(act);
          CAPTURE(dtype);
          CAPTURE(training);
          CAPTURE(affine);
          CAPTURE(act_name);
          const Shape shape{3, 4, 5, 6};
          const Tensor x0 = randn(shape, dt) * 2.0 + 0.5, r = randn(shape, dt);
          const Tensor w0 = uniform({4}, 0.5, 1.5, dt), b0 = randn({4}, dt);
          // Each side gets its own leaves and running statistics, updated in place by the forward.
          auto run = [&](bool fused) {
            Tensor x = x0.clone().requires_grad_(), w = w0.clone().requires_grad_(), b = b0.clone().requires_grad_();
            Tensor rm = full({4}, 0.2, dt), rv = full({4}, 1.5, dt);
            const Tensor wa = affine == 0 ? w : Tensor(), ba = affine < 2 ? b : Tensor();
            Tensor y = fused ? batch_norm_activation(x, wa, ba, rm, rv, training, 0.1, 1e-5, act)
                             : activation(batch_norm(x, wa, ba, rm, rv, training, 0.1, 1e-5), act);
            sum(mul(y, r)).backward();
            return std::vector<Tensor>{y, x.grad(), affine == 0 ? w.grad() : zeros({1}, dt),
                                       affine < 2 ? b.grad() : zeros({1}, dt), rm, rv};
          };
          const std::vector<Tensor> fused = run(true), unfused = run(false);
          const char* what[] = {"y", "dx", "dweight", "dbias", "running_mean", "running_var"};
          for (size_t i = 0; i < fused.size(); ++i) {
            const std::vector<double> a = fused[i].to_vector<double>(), b = unfused[i].to_vector<double>();
            double worst = 0;
            for (size_t j = 0; j < a.size(); ++j) worst = std::max(worst, std::abs(a[j] - b[j]));
            // float32: the same operations in the same order, bit for bit. float64: the compiler may
            // contract a multiply-add of an activation's derivative into an FMA in one loop and not in
            // the other, an ulp apart, so there 1e-14 relative to the largest value.
            double scale = 0;
            for (double v : b) scale = std::max(scale, std::abs(v));
            const double tol = dt == kFloat32 ? 0.0 : 1e-14 * scale;
            CHECK_MESSAGE(worst <= tol, what[i], ": worst difference ", worst, ", tolerance ", tol);
          }
        }
}

TEST_CASE("batch_norm errors name the op and the shapes") {
  Tensor x = randn({4, 3, 2}, kFloat64);
  std::string e = error_of([&] { batch_norm(randn({3}, kFloat64), Tensor(), Tensor(), Tensor(), Tensor(), true); });
  CHECK_MESSAGE((has(e, "batch_norm") && has(e, "(3)")), e);
  e = error_of([&] { batch_norm(x, randn({4}, kFloat64), Tensor(), Tensor(), Tensor(), true); });
  CHECK_MESSAGE((has(e, "batch_norm: weight (4)") && has(e, "(4,3,2)")), e);
  e = error_of([&] { batch_norm(x, Tensor(), randn({3}, kFloat32), Tensor(), Tensor(), true); });
  CHECK_MESSAGE((has(e, "bias is float32") && has(e, "float64")), e);
  e = error_of([&] { batch_norm(randn({1, 3}, kFloat64), Tensor(), Tensor(), Tensor(), Tensor(), true); });
  CHECK_MESSAGE(has(e, "Expected more than 1 value per channel when training, got input size (1,3)"), e);
  e = error_of([&] { batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), false); });
  CHECK_MESSAGE(has(e, "evaluation mode"), e);
  // One value per channel is fine in eval mode.
  Tensor y = batch_norm(randn({1, 3}, kFloat64), Tensor(), Tensor(), zeros({3}, kFloat64), ones({3}, kFloat64), false);
  CHECK(y.shape() == Shape{1, 3});
}

TEST_CASE("binary_cross_entropy_with_logits: value, gradient, stability") {
  SUBCASE("value and gradient vs the naive formula") {
    Tensor x = randn({4, 5}, kFloat64).requires_grad_();
    Tensor t = rand({4, 5}, kFloat64).requires_grad_();
    Tensor loss = binary_cross_entropy_with_logits(x, t);
    CHECK(loss.dim() == 0);
    const auto xv = x.to_vector<double>(), tv = t.to_vector<double>();
    double want = 0;
    std::vector<double> gx(20), gt(20);
    for (size_t i = 0; i < 20; ++i) {
      const double p = 1.0 / (1.0 + std::exp(-xv[i]));
      want -= (tv[i] * std::log(p) + (1 - tv[i]) * std::log(1 - p)) / 20.0;
      gx[i] = (p - tv[i]) / 20.0;
      gt[i] = -xv[i] / 20.0;  // -log(p) + log(1 - p) = -x
    }
    TL_CHECK_CLOSE(loss, scalar_tensor(want, kFloat64), kTol64);
    loss.backward();
    TL_CHECK_CLOSE(x.grad(), vec(gx, {4, 5}), kTol64);
    TL_CHECK_CLOSE(t.grad(), vec(gt, {4, 5}), kTol64);
  }
  SUBCASE("|x| = 100 and 1000 stay finite and exact") {
    for (DType dt : {kFloat64, kFloat32}) {
      const std::vector<double> xs{1000, -1000, 1000, -1000, 100, -100};
      const std::vector<double> ts{0, 1, 1, 0, 0, 1};
      const std::vector<double> want{1000, 1000, 0, 0, 100, 100};
      for (size_t i = 0; i < xs.size(); ++i) {
        Tensor x = vec({xs[i]}, {1}, dt).requires_grad_();
        Tensor loss = binary_cross_entropy_with_logits(x, vec({ts[i]}, {1}, dt));
        CHECK(std::isfinite(loss.item()));
        CHECK(loss.item() == doctest::Approx(want[i]).epsilon(1e-6));
        loss.backward();
        CHECK(x.grad().item() == doctest::Approx(xs[i] > 0 ? 1.0 - ts[i] : -ts[i]));
      }
    }
  }
  SUBCASE("errors") {
    std::string e =
        error_of([] { binary_cross_entropy_with_logits(randn({2, 3}, kFloat64), randn({3, 2}, kFloat64)); });
    CHECK_MESSAGE((has(e, "binary_cross_entropy_with_logits") && has(e, "(3,2)") && has(e, "(2,3)")), e);
    e = error_of([] { binary_cross_entropy_with_logits(randn({2, 3}, kFloat64), randn({2, 3}, kFloat32)); });
    CHECK_MESSAGE((has(e, "float64") && has(e, "float32")), e);
  }
}

TEST_CASE("dice_loss: value and gradient vs the naive formula") {
  Tensor x = randn({2, 1, 3, 4}, kFloat64).requires_grad_();
  Tensor t = gt(rand({2, 1, 3, 4}, kFloat64), 0.5).to(kFloat64);
  const double smooth = 1.0;
  Tensor loss = dice_loss(x, t, smooth);
  const auto xv = x.to_vector<double>(), tv = t.to_vector<double>();
  std::vector<double> p(xv.size());
  double inter = 0, sp = 0, st = 0;
  for (size_t i = 0; i < xv.size(); ++i) {
    p[i] = 1.0 / (1.0 + std::exp(-xv[i]));
    inter += p[i] * tv[i];
    sp += p[i];
    st += tv[i];
  }
  const double num = 2 * inter + smooth, den = sp + st + smooth;
  TL_CHECK_CLOSE(loss, scalar_tensor(1 - num / den, kFloat64), kTol64);
  loss.backward();
  std::vector<double> gx(xv.size());
  for (size_t i = 0; i < xv.size(); ++i) gx[i] = -(2 * tv[i] * den - num) / (den * den) * p[i] * (1 - p[i]);
  TL_CHECK_CLOSE(x.grad(), vec(gx, x.shape()), kTol64);
  std::string e = error_of([] { dice_loss(randn({2, 3}, kFloat64), randn({2, 4}, kFloat64)); });
  CHECK_MESSAGE((has(e, "dice_loss") && has(e, "(2,3)") && has(e, "(2,4)")), e);
}

TEST_CASE("log_softmax: rows are distributions, stable at x = 1000, gradient") {
  Tensor x = randn({4, 7}, kFloat64).requires_grad_();
  for (int64_t dim : {1, -1, 0}) {
    Tensor s = sum(exp(log_softmax(x, dim)), {dim});
    TL_CHECK_CLOSE(s, ones(s.shape(), kFloat64), kTol64);
  }
  // Large logits: naive exp overflows; shifted, the result is log_softmax of (0, 1, 2).
  Tensor big = vec({1000, 1001, 1002}, {1, 3});
  const double lse = std::log(1 + std::exp(1.0) + std::exp(2.0));
  TL_CHECK_CLOSE(log_softmax(big, 1), vec({-lse, 1 - lse, 2 - lse}, {1, 3}), kTol64);
  TL_CHECK_CLOSE(log_softmax(big.to(kFloat32), 1), vec({-lse, 1 - lse, 2 - lse}, {1, 3}, kFloat32), kTol32);
  // d/dx sum(log_softmax(x) * r) = r - softmax(x) * sum(r) per row
  Tensor r = randn({4, 7}, kFloat64);
  sum(mul(log_softmax(x, 1), r)).backward();
  const auto xv = x.to_vector<double>(), rv = r.to_vector<double>();
  std::vector<double> want(28);
  for (int n = 0; n < 4; ++n) {
    double z = 0, rs = 0;
    for (int c = 0; c < 7; ++c) {
      z += std::exp(xv[n * 7 + c]);
      rs += rv[n * 7 + c];
    }
    for (int c = 0; c < 7; ++c) want[n * 7 + c] = rv[n * 7 + c] - std::exp(xv[n * 7 + c]) / z * rs;
  }
  TL_CHECK_CLOSE(x.grad(), vec(want, {4, 7}), kTol64);
}

TEST_CASE("cross_entropy and nll_loss vs naive, (N,C) and (N,C,H,W)") {
  for (Shape shape : {Shape{5, 4}, Shape{2, 3, 4, 5}}) {
    INFO("shape " << shape_str(shape));
    const Ncs d(shape);
    Shape tshape = shape;
    tshape.erase(tshape.begin() + 1);
    std::vector<int64_t> tv(static_cast<size_t>(numel_of(tshape)));
    for (size_t i = 0; i < tv.size(); ++i) tv[i] = static_cast<int64_t>((i * 7 + 3) % static_cast<size_t>(d.c));
    Tensor target = from_vector<int64_t>(tv, tshape);
    Tensor x = (randn(shape, kFloat64) * 3.0).requires_grad_();
    Tensor loss = cross_entropy(x, target);
    CHECK(loss.dim() == 0);
    const auto xv = x.to_vector<double>();
    double want = 0;
    std::vector<double> gx(xv.size());
    const double count = static_cast<double>(d.n * d.s);
    for (int64_t n = 0; n < d.n; ++n)
      for (int64_t i = 0; i < d.s; ++i) {
        double z = 0;
        for (int64_t c = 0; c < d.c; ++c) z += std::exp(xv[d.at(n, c, i)]);
        const int64_t t = tv[n * d.s + i];
        want += (std::log(z) - xv[d.at(n, t, i)]) / count;
        for (int64_t c = 0; c < d.c; ++c) gx[d.at(n, c, i)] = (std::exp(xv[d.at(n, c, i)]) / z - (c == t)) / count;
      }
    TL_CHECK_CLOSE(loss, scalar_tensor(want, kFloat64), kTol64);
    loss.backward();
    TL_CHECK_CLOSE(x.grad(), vec(gx, shape), kTol64);
    // float32 agrees to float32 precision
    TL_CHECK_CLOSE(cross_entropy(x.detach().to(kFloat32), target), scalar_tensor(want, kFloat32), kTol32);
  }
}

TEST_CASE("nll_loss backward scatters -grad / count; non-contiguous logp") {
  Tensor base = randn({3, 2}, kFloat64);
  Tensor logp = base.t().requires_grad_();  // (2, 3) view, not contiguous
  Tensor target = from_vector<int64_t>({2, 0}, {2});
  Tensor loss = nll_loss(logp, target);
  const auto lv = logp.to_vector<double>();
  TL_CHECK_CLOSE(loss, scalar_tensor(-(lv[2] + lv[3]) / 2, kFloat64), kTol64);
  mul(loss, 3.0).backward();
  TL_CHECK_CLOSE(logp.grad(), vec({0, 0, -1.5, -1.5, 0, 0}, {2, 3}), kTol64);
}

TEST_CASE("nll_loss and cross_entropy errors") {
  Tensor logp = randn({2, 3, 2}, kFloat64);
  std::string e = error_of([&] { nll_loss(logp, from_vector<int64_t>({0, 1, 2, 3}, {2, 2})); });
  CHECK_MESSAGE((has(e, "nll_loss") && has(e, "target 3 at position (1,1)") && has(e, "3 classes")), e);
  e = error_of([&] { cross_entropy(logp, from_vector<int64_t>({0, -1, 2, 0}, {2, 2})); });
  CHECK_MESSAGE(has(e, "target -1 at position (0,1)"), e);
  e = error_of([&] { nll_loss(logp, from_vector<int64_t>({0, 1, 2, 0, 1, 2}, {2, 3})); });
  CHECK_MESSAGE((has(e, "nll_loss: target (2,3) does not match input (2,3,2)") && has(e, "expected target (2,2)")), e);
  e = error_of([&] { cross_entropy(logp, zeros({2, 2}, kFloat64)); });
  CHECK_MESSAGE((has(e, "cross_entropy") && has(e, "int64") && has(e, "float64")), e);
  e = error_of([&] { nll_loss(from_vector<int64_t>({0, 1}, {1, 2}), from_vector<int64_t>({0}, {1})); });
  CHECK_MESSAGE((has(e, "nll_loss") && has(e, "floating")), e);
}
