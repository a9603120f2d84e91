// conv2d, conv_transpose2d and max_pool2d against straightforward loops: forward values, the three
// gradients of sum(out * R) for a random R, pooling indices, ties, NaN, and the argument errors.
#include <cmath>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "tensor/kernels.h"
#include "tensor/parallel.h"
#include "tensor/cpu/gemm.h"
#include "tests/test_util.h"

using namespace tl;

namespace {

double tol_for(DType t) { return t == kFloat64 ? 1e-12 : 1e-5; }

// A leaf that requires grad, seen through `view`: with non_contiguous, the leaf is laid out as
// (a, c, d, b) and the view permutes it back to (a, b, c, d), so the view's strides are not row-major.
struct Input {
  Tensor leaf, view;
  Tensor grad() const { return leaf.is_same(view) ? leaf.grad() : leaf.grad().permute({0, 3, 1, 2}); }
};

Input make_input(const Shape& s, DType dtype, bool non_contiguous) {
  if (!non_contiguous || s.size() != 4) {
    Tensor t = randn(s, dtype);
    t.requires_grad_();
    return {t, t};
  }
  Tensor t = randn({s[0], s[2], s[3], s[1]}, dtype);
  t.requires_grad_();
  return {t, t.permute({0, 3, 1, 2})};
}

Tensor f64(const std::vector<double>& v, const Shape& s) { return from_vector<double>(v, s, kFloat64); }

int64_t at(int64_t a, int64_t b, int64_t c, int64_t d, int64_t B, int64_t C, int64_t D) {
  return ((a * B + b) * C + c) * D + d;
}

struct ConvCase {
  int64_t N, C, H, W, O, kh, kw, sh, sw, ph, pw;
  bool bias;
};

// The case table: odd sizes, strides 1-3, paddings 0-2, 1x1 kernels (the no-im2col path and strided),
// a kernel as large as the padded input, non-square kernels, one case big enough to run threads, wide
// inputs at stride 1 (whose input gradient is computed as a convolution with the rotated kernel), and
// the last ones big enough for the CPU kernel to build the column matrix in several tiles of rows
// (up to 16 threads), the last tile shorter than the others.
const ConvCase kConvCases[] = {
    {1, 3, 7, 5, 4, 3, 3, 1, 1, 1, 1, true},   {3, 2, 7, 5, 5, 3, 3, 2, 2, 0, 0, false},
    {3, 2, 7, 5, 5, 3, 2, 2, 1, 1, 0, true},   {2, 4, 6, 6, 3, 1, 1, 1, 1, 0, 0, true},
    {2, 3, 5, 7, 2, 1, 1, 2, 2, 0, 0, false},  {1, 2, 4, 4, 3, 4, 4, 1, 1, 0, 0, true},
    {2, 3, 8, 8, 4, 2, 2, 2, 2, 0, 0, true},   {1, 1, 3, 3, 1, 5, 5, 1, 1, 1, 1, false},
    {1, 2, 5, 5, 2, 3, 3, 3, 3, 2, 2, true},   {2, 8, 40, 36, 6, 3, 3, 1, 1, 1, 1, true},
    // >= 32 input channels at stride 1: the input gradient runs as a convolution with the rotated kernel
    {1, 33, 9, 11, 5, 3, 2, 1, 1, 0, 1, true},  {2, 40, 7, 9, 3, 5, 3, 1, 1, 2, 0, false},
    {1, 64, 100, 64, 3, 3, 3, 1, 1, 1, 1, true}, {2, 48, 150, 70, 2, 3, 2, 2, 2, 1, 0, false},
};

// Direct convolution (7 loops) and, for out_grad R, the gradients of sum(out * R).
struct ConvRef {
  std::vector<double> out, dx, dw, db;
};
ConvRef naive_conv2d(const ConvCase& k, int64_t Ho, int64_t Wo, const std::vector<double>& x,
                     const std::vector<double>& w, const std::vector<double>& b, const std::vector<double>& R) {
  ConvRef r{std::vector<double>(k.N * k.O * Ho * Wo, 0.0), std::vector<double>(x.size(), 0.0),
            std::vector<double>(w.size(), 0.0), std::vector<double>(k.O, 0.0)};
  for (int64_t n = 0; n < k.N; ++n)
    for (int64_t o = 0; o < k.O; ++o)
      for (int64_t oh = 0; oh < Ho; ++oh)
        for (int64_t ow = 0; ow < Wo; ++ow) {
          const int64_t oi = at(n, o, oh, ow, k.O, Ho, Wo);
          double s = k.bias ? b[o] : 0.0;
          r.db[o] += R[oi];
          for (int64_t c = 0; c < k.C; ++c)
            for (int64_t i = 0; i < k.kh; ++i)
              for (int64_t j = 0; j < k.kw; ++j) {
                const int64_t ih = oh * k.sh - k.ph + i, iw = ow * k.sw - k.pw + j;
                if (ih < 0 || ih >= k.H || iw < 0 || iw >= k.W) continue;
                const int64_t xi = at(n, c, ih, iw, k.C, k.H, k.W), wi = at(o, c, i, j, k.C, k.kh, k.kw);
                s += x[xi] * w[wi];
                r.dx[xi] += R[oi] * w[wi];
                r.dw[wi] += R[oi] * x[xi];
              }
          r.out[oi] = s;
        }
  return r;
}

// Transposed convolution as a scatter: input pixel (ih, iw) adds w * x at (ih*s - p + i, iw*s - p + j).
// Here k.C is Cin, k.O is Cout, H/W the input size, w is (Cin, Cout, kh, kw).
ConvRef naive_conv_transpose2d(const ConvCase& k, int64_t Ho, int64_t Wo, const std::vector<double>& x,
                               const std::vector<double>& w, const std::vector<double>& b,
                               const std::vector<double>& R) {
  ConvRef r{std::vector<double>(k.N * k.O * Ho * Wo, 0.0), std::vector<double>(x.size(), 0.0),
            std::vector<double>(w.size(), 0.0), std::vector<double>(k.O, 0.0)};
  for (int64_t n = 0; n < k.N; ++n)
    for (int64_t o = 0; o < k.O; ++o)
      for (int64_t oh = 0; oh < Ho; ++oh)
        for (int64_t ow = 0; ow < Wo; ++ow) {
          const int64_t oi = at(n, o, oh, ow, k.O, Ho, Wo);
          if (k.bias) r.out[oi] += b[o];
          r.db[o] += R[oi];
        }
  for (int64_t n = 0; n < k.N; ++n)
    for (int64_t c = 0; c < k.C; ++c)
      for (int64_t ih = 0; ih < k.H; ++ih)
        for (int64_t iw = 0; iw < k.W; ++iw)
          for (int64_t o = 0; o < k.O; ++o)
            for (int64_t i = 0; i < k.kh; ++i)
              for (int64_t j = 0; j < k.kw; ++j) {
                const int64_t oh = ih * k.sh - k.ph + i, ow = iw * k.sw - k.pw + j;
                if (oh < 0 || oh >= Ho || ow < 0 || ow >= Wo) continue;
                const int64_t xi = at(n, c, ih, iw, k.C, k.H, k.W), wi = at(c, o, i, j, k.O, k.kh, k.kw);
                const int64_t oi = at(n, o, oh, ow, k.O, Ho, Wo);
                r.out[oi] += x[xi] * w[wi];
                r.dx[xi] += R[oi] * w[wi];
                r.dw[wi] += R[oi] * x[xi];
              }
  return r;
}

// Runs `op` on inputs made for case k and checks out, dx, dw, db against the reference.
template <typename Op, typename Ref>
void check_conv_case(const ConvCase& k, bool transposed, DType dtype, bool non_contiguous, const Op& op,
                     const Ref& ref) {
  CAPTURE(k.N); CAPTURE(k.C); CAPTURE(k.H); CAPTURE(k.W); CAPTURE(k.O); CAPTURE(k.kh); CAPTURE(k.kw);
  CAPTURE(k.sh); CAPTURE(k.sw); CAPTURE(k.ph); CAPTURE(k.pw); CAPTURE(k.bias);
  const std::string dtype_str = dtype_name(dtype);
  CAPTURE(dtype_str); CAPTURE(non_contiguous);
  const double tol = tol_for(dtype);
  Input x = make_input({k.N, k.C, k.H, k.W}, dtype, non_contiguous);
  const Shape w_shape = transposed ? Shape{k.C, k.O, k.kh, k.kw} : Shape{k.O, k.C, k.kh, k.kw};
  Input w = make_input(w_shape, dtype, non_contiguous);
  Tensor b;
  if (k.bias) b = randn({k.O}, dtype).requires_grad_();
  Tensor out = op(x.view, w.view, b);
  const int64_t Ho = out.size(2), Wo = out.size(3);
  Tensor R = randn(out.shape(), dtype);
  ConvRef r = ref(k, Ho, Wo, x.view.to_vector<double>(), w.view.to_vector<double>(),
                  k.bias ? b.to_vector<double>() : std::vector<double>(), R.to_vector<double>());
  TL_CHECK_CLOSE(out, f64(r.out, {k.N, k.O, Ho, Wo}), tol);
  sum(mul(out, R)).backward();
  TL_CHECK_CLOSE(x.grad(), f64(r.dx, {k.N, k.C, k.H, k.W}), tol);
  TL_CHECK_CLOSE(w.grad(), f64(r.dw, w_shape), tol);
  if (k.bias) TL_CHECK_CLOSE(b.grad(), f64(r.db, {k.O}), tol);
}

}  // namespace

TEST_CASE("conv2d forward and backward match a direct 7-loop convolution") {
  for (const ConvCase& k : kConvCases)
    for (DType dtype : {kFloat64, kFloat32})
      for (bool non_contiguous : {false, true}) {
        const int64_t Ho = (k.H + 2 * k.ph - k.kh) / k.sh + 1, Wo = (k.W + 2 * k.pw - k.kw) / k.sw + 1;
        check_conv_case(
            k, false, dtype, non_contiguous,
            [&](const Tensor& x, const Tensor& w, const Tensor& b) {
              Tensor out = conv2d(x, w, b, Size2(k.sh, k.sw), Size2(k.ph, k.pw));
              CHECK(out.shape() == Shape{k.N, k.O, Ho, Wo});
              return out;
            },
            naive_conv2d);
      }
}

TEST_CASE("conv_transpose2d forward and backward match a scatter loop") {
  // C = Cin, O = Cout, H/W the input size. Includes the UNet's (kernel 2, stride 2) and, like it, two
  // more whose windows tile the output exactly (stride == kernel, no padding), one 3x3 and one 1x3.
  const ConvCase cases[] = {
      {2, 4, 3, 5, 3, 2, 2, 2, 2, 0, 0, true},  {1, 2, 4, 3, 3, 3, 3, 1, 1, 1, 1, false},
      {3, 3, 5, 4, 2, 3, 3, 2, 2, 1, 1, true},  {1, 2, 3, 3, 2, 4, 3, 3, 2, 1, 0, true},
      {2, 3, 4, 5, 4, 1, 1, 1, 1, 0, 0, true},  {1, 2, 2, 3, 3, 2, 3, 1, 2, 0, 1, false},
      {2, 3, 3, 4, 2, 3, 3, 3, 3, 0, 0, true},  {1, 2, 4, 3, 3, 1, 3, 1, 3, 0, 0, false},
  };
  for (const ConvCase& k : cases)
    for (DType dtype : {kFloat64, kFloat32})
      for (bool non_contiguous : {false, true}) {
        const int64_t Ho = (k.H - 1) * k.sh - 2 * k.ph + k.kh, Wo = (k.W - 1) * k.sw - 2 * k.pw + k.kw;
        check_conv_case(
            k, true, dtype, non_contiguous,
            [&](const Tensor& x, const Tensor& w, const Tensor& b) {
              Tensor out = conv_transpose2d(x, w, b, Size2(k.sh, k.sw), Size2(k.ph, k.pw));
              CHECK(out.shape() == Shape{k.N, k.O, Ho, Wo});
              return out;
            },
            naive_conv_transpose2d);
      }
}

TEST_CASE("conv2d matches the direct loop on 1 and 3 threads, with the column matrix in tiles") {
  struct RestoreThreads {
    int n = get_num_threads();
    ~RestoreThreads() { set_num_threads(n); }
  } restore;
  const ConvCase& k = kConvCases[std::size(kConvCases) - 2];  // several tiles of rows
  for (int threads : {1, 3}) {
    CAPTURE(threads);
    set_num_threads(threads);
    check_conv_case(
        k, false, kFloat64, true,
        [&](const Tensor& x, const Tensor& w, const Tensor& b) {
          return conv2d(x, w, b, Size2(k.sh, k.sw), Size2(k.ph, k.pw));
        },
        naive_conv2d);
  }
}

TEST_CASE("float32 conv2d and conv_transpose2d match the direct loop on every GEMM micro-kernel") {
  namespace gm = tl::cpu::gemm;
  const gm::Isa saved = gm::active_isa();
  const ConvCase tcase{2, 4, 3, 5, 3, 2, 2, 2, 2, 0, 0, true};  // the UNet's up-convolution shape
  for (gm::Isa isa : {gm::Isa::Reference, gm::Isa::Avx2, gm::Isa::Avx512}) {
    if (!gm::isa_supported(isa)) {
      MESSAGE("skipped micro-kernel " << gm::isa_name(isa) << ": this CPU lacks it");
      continue;
    }
    const std::string isa_str = gm::isa_name(isa);
    CAPTURE(isa_str);
    gm::set_isa(isa);
    // The table, and stride-1 cases with output rows of >= 40 pixels and 8k output channels, which take the
    // direct weight-gradient kernel (rows of 109, 128, 101 and 41 pixels, K = 27, a 3x1 kernel, no padding,
    // images of one and two rows, and more than one block of 768 padded-width positions).
    std::vector<ConvCase> cases(std::begin(kConvCases), std::end(kConvCases));
    cases.push_back({2, 5, 20, 109, 8, 3, 3, 1, 1, 1, 1, true});
    cases.push_back({1, 3, 12, 128, 16, 3, 3, 1, 1, 1, 1, false});
    cases.push_back({1, 2, 9, 101, 8, 3, 1, 1, 1, 0, 0, false});
    cases.push_back({3, 4, 1, 41, 8, 3, 3, 1, 1, 1, 1, false});
    cases.push_back({2, 3, 2, 60, 24, 3, 3, 1, 1, 1, 0, true});
    // Small images done together by the direct forward (3 images of 12x40), K in two blocks, and 64
    // output channels, so a thread's tiles are taken in more than one run.
    cases.push_back({3, 20, 12, 40, 64, 3, 3, 1, 1, 1, 1, true});
    // An image large enough for the direct weight gradient to take it in bands of rows (64 channels of
    // 120 x 250: bands of 56, 56 and 8 output rows, each band's input with its 2 rows of overlap).
    cases.push_back({1, 64, 120, 250, 8, 3, 3, 1, 1, 1, 1, false});
    // The same with no padding along H (bands of 56, 56 and 6 rows whose halo rows are all image rows)
    // and a bias.
    cases.push_back({1, 64, 120, 250, 8, 3, 3, 1, 1, 0, 1, true});
    // Windows that tile the input (kernel == stride, no padding), whose column matrix is a permutation
    // of the input: 2x2 and 3x3 with a last row and column no window covers, large enough
    // (2160 and 2350 output pixels) for the weight gradient's dot-product kernel, and a 2x2 with 12
    // output channels, which that kernel does not take (not a multiple of 8).
    cases.push_back({2, 5, 97, 91, 8, 2, 2, 2, 2, 0, 0, true});
    cases.push_back({1, 2, 152, 142, 16, 3, 3, 3, 3, 0, 0, false});
    cases.push_back({1, 3, 9, 7, 12, 2, 2, 2, 2, 0, 0, true});
    for (const ConvCase& k : cases)
      check_conv_case(
          k, false, kFloat32, true,
          [&](const Tensor& x, const Tensor& w, const Tensor& b) { return conv2d(x, w, b, Size2(k.sh, k.sw), Size2(k.ph, k.pw)); },
          naive_conv2d);
    // The UNet's up-convolution, small and large enough (2200 input pixels, 8 input channels) for the
    // dot-product weight gradient.
    for (const ConvCase& t : {tcase, ConvCase{2, 8, 50, 44, 3, 2, 2, 2, 2, 0, 0, true}})
      check_conv_case(
          t, true, kFloat32, false,
          [&](const Tensor& x, const Tensor& w, const Tensor& b) {
            return conv_transpose2d(x, w, b, Size2(t.sh, t.sw), Size2(t.ph, t.pw));
          },
          naive_conv_transpose2d);
  }
  gm::set_isa(saved);
}

TEST_CASE("the direct float32 weight gradient meets only the products of the sum: an Inf in the input") {
  // The direct kernel runs over padded-width rows, where the positions past each row's end pair a zero
  // gradient with input values outside the sum; 0 * Inf would make a NaN there. An input with an Inf
  // takes the GEMM path, so the taps that never see it stay finite, exactly as in the reference.
  const ConvCase k{2, 3, 6, 64, 8, 3, 3, 1, 1, 1, 1, false};
  Tensor x = randn({k.N, k.C, k.H, k.W});
  std::vector<float> xv = x.to_vector<float>();
  xv[static_cast<size_t>(at(1, 2, 3, 0, k.C, k.H, k.W))] = std::numeric_limits<float>::infinity();  // a first column
  xv[static_cast<size_t>(at(0, 1, 4, 63, k.C, k.H, k.W))] = -std::numeric_limits<float>::infinity();  // a last column
  x = from_vector<float>(xv, x.shape());
  Tensor w = randn({k.O, k.C, k.kh, k.kw}).requires_grad_();
  Tensor out = conv2d(x, w, Tensor(), 1, 1);
  Tensor R = randn(out.shape());
  sum(mul(out, R)).backward();
  std::vector<double> xd(xv.begin(), xv.end());
  ConvRef r = naive_conv2d(k, k.H, k.W, xd, w.to_vector<double>(), {}, R.to_vector<double>());
  std::vector<double> got = w.grad().to_vector<double>();
  int64_t finite = 0;
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    CHECK_MESSAGE(std::isfinite(got[i]) == std::isfinite(r.dw[i]), "dw[" << i << "] " << got[i] << " vs " << r.dw[i]);
    if (std::isfinite(r.dw[i])) {
      ++finite;
      worst = std::max(worst, std::abs(got[i] - r.dw[i]) / (1 + std::abs(r.dw[i])));
    }
  }
  MESSAGE("finite weight-gradient entries: " << finite << " of " << got.size() << ", worst error " << worst
                                             << " (tolerance 1e-4)");
  CHECK(finite > 0);
  CHECK(worst < 1e-4);
}

TEST_CASE("conv2d computes only the gradients that are needed") {
  Tensor x = randn({2, 3, 5, 5}, kFloat64);  // an image batch: no gradient wanted
  Tensor w = randn({4, 3, 3, 3}, kFloat64).requires_grad_();
  Tensor out = conv2d(x, w, Tensor(), 1, 1);
  CHECK(out.requires_grad());
  sum(out).backward();
  CHECK(w.grad().defined());
  CHECK_FALSE(x.grad().defined());
  Tensor y = conv2d(x, w.detach());  // nothing requires grad: nothing recorded
  CHECK_FALSE(y.requires_grad());
}

namespace {

struct PoolCase {
  int64_t N, C, H, W, kh, kw, sh, sw;  // stride 0: the kernel size
};

// Window scan: value and flat H*W index of each window's maximum (first max wins, first NaN wins),
// and the gradient of sum(out * R) scattered to those indices.
struct PoolRef {
  std::vector<double> out, index, dx;
};
PoolRef naive_max_pool(const PoolCase& k, int64_t Ho, int64_t Wo, int64_t sh, int64_t sw,
                       const std::vector<double>& x, const std::vector<double>& R) {
  PoolRef r{std::vector<double>(k.N * k.C * Ho * Wo), std::vector<double>(k.N * k.C * Ho * Wo),
            std::vector<double>(x.size(), 0.0)};
  for (int64_t n = 0; n < k.N; ++n)
    for (int64_t c = 0; c < k.C; ++c)
      for (int64_t oh = 0; oh < Ho; ++oh)
        for (int64_t ow = 0; ow < Wo; ++ow) {
          double best = 0;
          int64_t best_i = -1;
          for (int64_t i = oh * sh; i < oh * sh + k.kh; ++i)
            for (int64_t j = ow * sw; j < ow * sw + k.kw; ++j) {
              const double v = x[at(n, c, i, j, k.C, k.H, k.W)];
              if (best_i < 0 || (!std::isnan(best) && (std::isnan(v) || v > best))) {
                best = v;
                best_i = i * k.W + j;
              }
            }
          const int64_t oi = at(n, c, oh, ow, k.C, Ho, Wo);
          r.out[oi] = best;
          r.index[oi] = static_cast<double>(best_i);
          r.dx[(n * k.C + c) * k.H * k.W + best_i] += R[oi];
        }
  return r;
}

// TL_CHECK_CLOSE for outputs that may hold NaN: the NaNs must sit at the same places, and the other
// values must match.
void check_close_nan(const Tensor& got, const std::vector<double>& want, double tol) {
  std::vector<double> g = got.to_vector<double>(), w = want;
  REQUIRE(g.size() == w.size());
  for (size_t i = 0; i < g.size(); ++i) {
    CHECK_MESSAGE(std::isnan(g[i]) == std::isnan(w[i]), "NaN mismatch at flat index " << i);
    if (std::isnan(g[i])) g[i] = 0;
    if (std::isnan(w[i])) w[i] = 0;
  }
  TL_CHECK_CLOSE(f64(g, got.shape()), f64(w, got.shape()), tol);
}

// Checks values, indices and the gradient for input x (N, C, H, W) of case k.
void check_pool(const PoolCase& k, const Tensor& leaf, const Tensor& x, bool permuted) {
  CAPTURE(k.N); CAPTURE(k.C); CAPTURE(k.H); CAPTURE(k.W); CAPTURE(k.kh); CAPTURE(k.kw); CAPTURE(k.sh);
  CAPTURE(k.sw);
  const std::string dtype_str = dtype_name(x.dtype());
  CAPTURE(dtype_str); CAPTURE(permuted);
  const double tol = tol_for(x.dtype());
  const int64_t sh = k.sh ? k.sh : k.kh, sw = k.sw ? k.sw : k.kw;
  const int64_t Ho = (k.H - k.kh) / sh + 1, Wo = (k.W - k.kw) / sw + 1;
  Tensor out = max_pool2d(x, Size2(k.kh, k.kw), Size2(k.sh, k.sw));
  REQUIRE(out.shape() == Shape{k.N, k.C, Ho, Wo});
  Tensor R = randn(out.shape(), x.dtype());
  PoolRef r = naive_max_pool(k, Ho, Wo, sh, sw, x.to_vector<double>(), R.to_vector<double>());
  check_close_nan(out, r.out, tol);
  auto [values, indices] = kernels::max_pool2d(x.detach(), {k.kh, k.kw, sh, sw});
  CHECK(indices.dtype() == kInt64);
  TL_CHECK_CLOSE(indices, f64(r.index, out.shape()), 0.0);
  sum(mul(out, R)).backward();
  Tensor dx = permuted ? leaf.grad().permute({0, 3, 1, 2}) : leaf.grad();
  TL_CHECK_CLOSE(dx, f64(r.dx, x.shape()), tol);
}

const PoolCase kPoolCases[] = {
    {2, 3, 7, 5, 2, 2, 0, 0},  // odd sides: the last row/column is dropped
    {1, 2, 7, 5, 3, 3, 2, 2},  // overlapping windows: gradients accumulate
    {3, 2, 6, 7, 3, 2, 1, 2},  // stride 1 rows, non-square kernel
    {1, 1, 4, 4, 4, 4, 0, 0},  // one window
    {2, 4, 40, 36, 3, 3, 2, 2},  // big enough to run threads
};

}  // namespace

TEST_CASE("max_pool2d values, indices and backward match a window scan") {
  for (const PoolCase& k : kPoolCases)
    for (DType dtype : {kFloat64, kFloat32}) {
      Tensor x = randn({k.N, k.C, k.H, k.W}, dtype).requires_grad_();
      check_pool(k, x, x, false);
      Tensor leaf = randn({k.N, k.H, k.W, k.C}, dtype).requires_grad_();
      check_pool(k, leaf, leaf.permute({0, 3, 1, 2}), true);
    }
}

TEST_CASE("max_pool2d ties go to the first maximum, overlapping windows accumulate there") {
  for (const PoolCase& k : {PoolCase{2, 2, 7, 7, 3, 3, 2, 2}, PoolCase{1, 3, 6, 5, 2, 2, 1, 1},
                            PoolCase{2, 3, 9, 38, 2, 2, 0, 0}}) {
    // Few distinct values, so most windows hold a tie.
    std::vector<double> v(static_cast<size_t>(k.N * k.C * k.H * k.W));
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>((i * 7) % 3);
    Tensor x = from_vector<double>(v, {k.N, k.C, k.H, k.W}, kFloat64).requires_grad_();
    check_pool(k, x, x, false);
    Tensor ones_x = ones({k.N, k.C, k.H, k.W}, kFloat64).requires_grad_();
    check_pool(k, ones_x, ones_x, false);
  }
}

TEST_CASE("max_pool2d propagates NaN") {
  const PoolCase k{1, 2, 5, 5, 3, 3, 2, 2};
  std::vector<double> v(50);
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(static_cast<double>(i));
  v[12] = std::numeric_limits<double>::quiet_NaN();  // plane 0, (2, 2): in all four windows
  v[25 + 3] = std::numeric_limits<double>::quiet_NaN();  // plane 1, (0, 3): in the top-right window
  v[25 + 4] = std::numeric_limits<double>::quiet_NaN();  // a second NaN in that window: the first stays
  Tensor x = from_vector<double>(v, {1, 2, 5, 5}, kFloat64).requires_grad_();
  Tensor out = max_pool2d(x, 3, 2);
  std::vector<double> o = out.to_vector<double>();
  for (int i = 0; i < 4; ++i) CHECK(std::isnan(o[i]));
  CHECK_FALSE(std::isnan(o[4]));
  CHECK(std::isnan(o[5]));
  check_pool(k, x, x, false);
  // The 2x2, stride-2 path: NaN first, second and last in its window, and two NaNs in one window.
  const PoolCase k2{1, 1, 4, 36, 2, 2, 0, 0};
  std::vector<double> w(4 * 36);
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::cos(static_cast<double>(i));
  const double nan = std::numeric_limits<double>::quiet_NaN();
  w[0] = nan;                     // window 0, first
  w[3] = nan;                     // window 1, second
  w[36 + 5] = nan;                // window 2, last
  w[36 * 2 + 6] = w[36 * 3 + 7] = nan;  // window (1, 3), first and last
  for (DType dtype : {kFloat64, kFloat32}) {
    Tensor x2 = from_vector<double>(w, {1, 1, 4, 36}, kFloat64).to(dtype).requires_grad_();
    Tensor o2 = max_pool2d(x2, 2);
    for (int i = 0; i < 3; ++i) CHECK(std::isnan(o2.to_vector<double>()[static_cast<size_t>(i)]));
    CHECK(std::isnan(o2.to_vector<double>()[18 + 3]));
    check_pool(k2, x2, x2, false);
  }
}

TEST_CASE("conv and pool argument errors name the op and the shapes") {
  using E = std::invalid_argument;
  auto f = [](const Shape& s, DType d = kFloat32) { return zeros(s, d); };
  CHECK_THROWS_WITH_AS(conv2d(f({4, 3, 160, 240}), f({64, 4, 3, 3})),
                       "conv2d: input (4,3,160,240) has 3 channels, weight (64,4,3,3) expects 4", E);
  CHECK_THROWS_WITH_AS(conv2d(f({3, 5, 5}), f({4, 3, 3, 3})),
                       "conv2d: expected a 4-D input (N, C, H, W), got (3,5,5)", E);
  CHECK_THROWS_WITH_AS(conv2d(f({1, 3, 5, 5}), f({4, 3, 3})), "conv2d: expected a 4-D weight, got (4,3,3)", E);
  CHECK_THROWS_WITH_AS(conv2d(f({1, 3, 5, 5}), f({4, 3, 3, 3}, kFloat64)),
                       "conv2d: dtype mismatch: input float32 vs weight float64", E);
  CHECK_THROWS_WITH_AS(conv2d(f({1, 3, 5, 5}), f({4, 3, 3, 3}), f({5})),
                       "conv2d: bias (5) does not match weight (4,3,3,3): expected (4)", E);
  CHECK_THROWS_WITH_AS(conv2d(f({1, 3, 5, 5}), f({4, 3, 3, 3}), f({4}, kFloat64)),
                       "conv2d: dtype mismatch: input float32 vs bias float64", E);
  CHECK_THROWS_WITH_AS(conv2d(f({1, 3, 5, 5}), f({4, 3, 3, 3}), Tensor(), Size2(0, 1)),
                       "conv2d: stride must be >= 1, got (0,1)", E);
  CHECK_THROWS_WITH_AS(conv2d(f({1, 3, 5, 5}), f({4, 3, 3, 3}), Tensor(), 1, Size2(1, -1)),
                       "conv2d: padding must be >= 0, got (1,-1)", E);
  CHECK_THROWS_WITH_AS(conv2d(f({1, 3, 2, 5}), f({4, 3, 3, 3})),
                       "conv2d: input (1,3,2,5) padded by (0,0) is smaller than the kernel (3,3)", E);
  CHECK_THROWS_WITH_AS(conv2d(f({1, 3, 5, 5}, kInt64), f({4, 3, 3, 3}, kInt64)),
                       "conv2d: expected floating tensors (float32 or float64), got int64", E);

  CHECK_THROWS_WITH_AS(conv_transpose2d(f({1, 3, 4, 4}), f({4, 8, 2, 2})),
                       "conv_transpose2d: input (1,3,4,4) has 3 channels, weight (4,8,2,2) expects 4", E);
  CHECK_THROWS_WITH_AS(conv_transpose2d(f({1, 4, 4, 4}), f({4, 8, 2, 2}), f({4})),
                       "conv_transpose2d: bias (4) does not match weight (4,8,2,2): expected (8)", E);
  CHECK_THROWS_WITH_AS(conv_transpose2d(f({1, 2, 1, 1}), f({2, 3, 1, 1}), Tensor(), 1, 1),
                       "conv_transpose2d: output size (-1,-1) is too small: input (1,2,1,1), weight (2,3,1,1), "
                       "stride (1,1), padding (1,1)",
                       E);

  CHECK_THROWS_WITH_AS(max_pool2d(f({2, 5, 5}), 2), "max_pool2d: expected a 4-D input (N, C, H, W), got (2,5,5)", E);
  CHECK_THROWS_WITH_AS(max_pool2d(f({1, 2, 5, 5}), 0), "max_pool2d: kernel size must be >= 1, got (0,0)", E);
  CHECK_THROWS_WITH_AS(max_pool2d(f({1, 2, 5, 5}), 2, Size2(-1, 2)),
                       "max_pool2d: stride must be >= 1 (or 0 for the kernel size), got (-1,2)", E);
  CHECK_THROWS_WITH_AS(max_pool2d(f({1, 2, 5, 1}), 2),
                       "max_pool2d: input (1,2,5,1) is smaller than the kernel (2,2)", E);
}
