// The CUDA kernels' index math, run on the CPU: the convolution's im2col and col2im mappings, the
// weight gradient's batched layouts and the max-pool backward's window bounds (cuda/conv_index.h),
// and the strided offset calculator (cuda/launch.cuh). Each is used here exactly as the kernels use
// it, one "thread" per element, and the result is compared with the CPU backend's kernels. This
// checks the mapping on machines without a GPU; tests/test_cuda.cpp checks the kernels themselves on
// one. The last test checks how the CUDA
// allocator reads TL_CUDA_ALLOCATOR, which needs no GPU either.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "cuda/allocator.h"
#include "cuda/conv_index.h"
#include "cuda/launch.cuh"
#include "tensor/kernels.h"
#include "tests/test_util.h"

using namespace tl;

namespace {

struct Case {
  int64_t N, C, H, W, O, kh, kw, sh, sw, ph, pw;
};

// Convolution geometries: 3x3 same padding, strided, 1x1, rectangular kernels, padding wider than
// the stride, odd sizes.
const Case kCases[] = {
    {2, 3, 7, 9, 4, 3, 3, 1, 1, 1, 1}, {1, 2, 8, 8, 3, 3, 3, 2, 2, 1, 1}, {2, 5, 6, 5, 2, 1, 1, 1, 1, 0, 0},
    {1, 3, 9, 7, 2, 2, 2, 2, 2, 0, 0}, {1, 2, 7, 10, 3, 3, 5, 2, 3, 2, 1}, {2, 1, 5, 5, 1, 5, 5, 1, 1, 2, 2},
    {1, 4, 11, 6, 3, 1, 3, 3, 1, 0, 1},
};

cuda::ConvGeometry geometry_of(const Case& c) {
  cuda::ConvGeometry g{c.C, c.H, c.W, c.kh, c.kw, c.sh, c.sw, c.ph, c.pw, 0, 0};
  g.Ho = (c.H + 2 * c.ph - c.kh) / c.sh + 1;
  g.Wo = (c.W + 2 * c.pw - c.kw) / c.sw + 1;
  return g;
}

}  // namespace

TEST_CASE("conv2d through im2col_source + GEMM matches the CPU convolution (float64, tolerance 1e-12)") {
  for (const Case& c : kCases) {
    CAPTURE(c.kh);
    CAPTURE(c.sh);
    CAPTURE(c.ph);
    const cuda::ConvGeometry g = geometry_of(c);
    const Tensor x = randn({c.N, c.C, c.H, c.W}, kFloat64), w = randn({c.O, c.C, c.kh, c.kw}, kFloat64);
    const double* xp = x.data_ptr<double>();
    const double* wp = w.data_ptr<double>();
    Tensor out = empty({c.N, c.O, g.Ho, g.Wo}, kFloat64);
    double* op = out.data_ptr<double>();
    std::vector<double> col(static_cast<size_t>(g.K() * g.L()));
    for (int64_t n = 0; n < c.N; ++n) {
      for (int64_t r = 0; r < g.K(); ++r)  // one "thread" per column entry, as im2col_kernel
        for (int64_t l = 0; l < g.L(); ++l) {
          const int64_t src = cuda::im2col_source(g, r, l);
          col[static_cast<size_t>(r * g.L() + l)] = src < 0 ? 0.0 : xp[n * g.image() + src];
        }
      for (int64_t o = 0; o < c.O; ++o)
        for (int64_t l = 0; l < g.L(); ++l) {
          double acc = 0;
          for (int64_t r = 0; r < g.K(); ++r) acc += wp[o * g.K() + r] * col[static_cast<size_t>(r * g.L() + l)];
          op[(n * c.O + o) * g.L() + l] = acc;
        }
    }
    const Tensor want = kernels::conv2d(x, w, Tensor(), {c.sh, c.sw, c.ph, c.pw});
    TL_CHECK_CLOSE(out, want, 1e-12);
  }
}

TEST_CASE("conv2d's input gradient through GEMM + col2im_gather matches the CPU kernel (float64, tolerance 1e-12)") {
  for (const Case& c : kCases) {
    CAPTURE(c.kh);
    CAPTURE(c.sh);
    CAPTURE(c.ph);
    const cuda::ConvGeometry g = geometry_of(c);
    const Tensor grad = randn({c.N, c.O, g.Ho, g.Wo}, kFloat64), w = randn({c.O, c.C, c.kh, c.kw}, kFloat64);
    const double* gp = grad.data_ptr<double>();
    const double* wp = w.data_ptr<double>();
    Tensor dx = empty({c.N, c.C, c.H, c.W}, kFloat64);
    std::vector<double> col(static_cast<size_t>(g.K() * g.L()));
    for (int64_t n = 0; n < c.N; ++n) {
      for (int64_t r = 0; r < g.K(); ++r)  // colgrad = W^T g[n]
        for (int64_t l = 0; l < g.L(); ++l) {
          double acc = 0;
          for (int64_t o = 0; o < c.O; ++o) acc += wp[o * g.K() + r] * gp[(n * c.O + o) * g.L() + l];
          col[static_cast<size_t>(r * g.L() + l)] = acc;
        }
      for (int64_t pixel = 0; pixel < g.image(); ++pixel)  // one "thread" per pixel, as col2im_kernel
        dx.data_ptr<double>()[n * g.image() + pixel] = cuda::col2im_gather(g, col.data(), pixel);
    }
    const Tensor want = kernels::conv2d_backward_input(grad, w, Shape{c.N, c.C, c.H, c.W}, {c.sh, c.sw, c.ph, c.pw});
    TL_CHECK_CLOSE(dx, want, 1e-12);
  }
}

// conv.cu's weight gradient, step by step: per chunk of nb images, Col (K, nb*L) through
// batched_im2col_source and G (O, nb*L) through batched_grad_source (one "thread" per element, as
// im2col_batched_kernel and permute_grad_kernel), then the GEMM dW (+)= G @ Col^T with beta 0 on the
// first chunk and 1 after. Chunks of 1, 2 and all N images; with N = 5, nb = 2 leaves a short last
// chunk. (For nb == 1 the kernel skips the permutation, which is the identity then: checked too.)
TEST_CASE("conv2d's weight gradient through the batched Col and G layouts and one GEMM per chunk matches the CPU kernel (float64, tolerance 1e-12)") {
  for (const Case& c : kCases) {
    const int64_t N = 5;
    const cuda::ConvGeometry g = geometry_of(c);
    const int64_t K = g.K(), L = g.L(), O = c.O;
    const Tensor x = randn({N, c.C, c.H, c.W}, kFloat64), grad = randn({N, O, g.Ho, g.Wo}, kFloat64);
    const double* xp = x.data_ptr<double>();
    const double* gp = grad.data_ptr<double>();
    const Tensor want = kernels::conv2d_backward_weight(grad, x, Shape{O, c.C, c.kh, c.kw}, {c.sh, c.sw, c.ph, c.pw});
    for (int64_t chunk : {int64_t{1}, int64_t{2}, N}) {
      CAPTURE(c.kh);
      CAPTURE(c.sh);
      CAPTURE(c.ph);
      CAPTURE(g.pointwise());
      CAPTURE(chunk);
      Tensor dw = full({O, c.C, c.kh, c.kw}, std::nan(""), kFloat64);  // beta 0 must not read it
      double* dp = dw.data_ptr<double>();
      for (int64_t n0 = 0; n0 < N; n0 += chunk) {
        const int64_t nb = std::min(chunk, N - n0), nL = nb * L;
        const double* xn = xp + n0 * g.image();
        const double* gn = gp + n0 * O * L;
        std::vector<double> col(static_cast<size_t>(K * nL)), gperm(static_cast<size_t>(O * nL));
        for (int64_t i = 0; i < K * nL; ++i) {
          const int64_t src = cuda::batched_im2col_source(g, nb, i);
          col[static_cast<size_t>(i)] = src < 0 ? 0.0 : xn[src];
        }
        bool identity = true;
        for (int64_t i = 0; i < O * nL; ++i) {
          const int64_t src = cuda::batched_grad_source(O, L, nb, i);
          identity = identity && src == i;
          gperm[static_cast<size_t>(i)] = gn[src];
        }
        if (nb == 1) CHECK(identity);
        if (g.pointwise() && nb == 1)  // the kernel reads the image itself as Col
          for (int64_t i = 0; i < K * nL; ++i) REQUIRE(col[static_cast<size_t>(i)] == xn[i]);
        const double beta = n0 > 0 ? 1.0 : 0.0;
        for (int64_t o = 0; o < O; ++o)
          for (int64_t k = 0; k < K; ++k) {
            double acc = 0;
            for (int64_t j = 0; j < nL; ++j)
              acc += gperm[static_cast<size_t>(o * nL + j)] * col[static_cast<size_t>(k * nL + j)];
            double& d = dp[o * K + k];
            d = beta == 0.0 ? acc : beta * d + acc;  // BLAS: C is not read when beta is 0
          }
      }
      TL_CHECK_CLOSE(dw, want, 1e-12);
    }
  }
}

TEST_CASE("max_pool2d's backward gathered through first_window/last_window equals the CPU scatter exactly") {
  struct Pool {
    int64_t H, W, kh, kw, sh, sw;
  };
  // 2x2 stride 2 (the UNet's), overlapping windows, windows wider than the stride, odd leftovers.
  const Pool pools[] = {{8, 10, 2, 2, 2, 2}, {9, 7, 3, 3, 2, 2}, {7, 9, 3, 2, 1, 2}, {11, 6, 4, 3, 3, 1}, {5, 5, 5, 5, 1, 1}};
  for (const Pool& p : pools) {
    CAPTURE(p.kh);
    CAPTURE(p.sh);
    // Few distinct values, so that ties (first maximum wins) occur.
    std::mt19937 rng(static_cast<unsigned>(p.H * 100 + p.kh));
    std::vector<double> values(static_cast<size_t>(6 * p.H * p.W));
    for (double& v : values) v = static_cast<double>(rng() % 4);
    const Tensor x = from_vector(values, {2, 3, p.H, p.W});
    const kernels::Pool2dParams pp{p.kh, p.kw, p.sh, p.sw};
    const auto [out, indices] = kernels::max_pool2d(x, pp);
    const Tensor grad = randn(out.shape(), kFloat64);
    const int64_t Ho = out.size(2), Wo = out.size(3);
    const double* gp = grad.data_ptr<double>();
    const int64_t* ip = indices.data_ptr<int64_t>();
    Tensor dx = empty(x.shape(), kFloat64);
    for (int64_t plane = 0; plane < 6; ++plane)
      for (int64_t ih = 0; ih < p.H; ++ih)
        for (int64_t iw = 0; iw < p.W; ++iw) {  // one "thread" per input pixel, as the kernel
          double acc = 0;
          for (int64_t oh = cuda::first_window(ih, p.kh, p.sh); oh <= cuda::last_window(ih, p.sh, Ho); ++oh)
            for (int64_t ow = cuda::first_window(iw, p.kw, p.sw); ow <= cuda::last_window(iw, p.sw, Wo); ++ow)
              if (ip[(plane * Ho + oh) * Wo + ow] == ih * p.W + iw) acc += gp[(plane * Ho + oh) * Wo + ow];
          dx.data_ptr<double>()[(plane * p.H + ih) * p.W + iw] = acc;
        }
    const Tensor want = kernels::max_pool2d_backward(grad, indices, x.shape(), pp);
    TL_CHECK_CLOSE(dx, want, 0.0);
  }
}

TEST_CASE("OffsetCalc gives every operand's offset of every element of strided, broadcast views") {
  std::mt19937 rng(7);
  const Shape shape{3, 1, 4, 5, 2};
  for (int trial = 0; trial < 20; ++trial) {
    // Operand 0 contiguous; 1 a permuted layout; 2 broadcast on random dims; 3 with gaps (a sliced view).
    std::array<Strides, 4> st;
    st[0] = contiguous_strides(shape);
    std::vector<int64_t> perm{0, 1, 2, 3, 4};
    std::shuffle(perm.begin(), perm.end(), rng);
    Shape permuted(5);
    for (size_t d = 0; d < 5; ++d) permuted[d] = shape[static_cast<size_t>(perm[d])];
    const Strides ps = contiguous_strides(permuted);
    st[1] = Strides(5);
    for (size_t d = 0; d < 5; ++d) st[1][static_cast<size_t>(perm[d])] = ps[d];
    st[2] = st[0];
    for (size_t d = 0; d < 5; ++d)
      if (rng() % 2) st[2][d] = 0;
    st[3] = Strides(5);
    int64_t s = 1;
    for (size_t d = 5; d-- > 0;) {
      st[3][d] = s * (1 + static_cast<int64_t>(rng() % 3));
      s = st[3][d] * shape[d];
    }
    const cuda::OffsetCalc<4> oc = cuda::make_offset_calc<4>(
        shape, {st[0].data(), st[1].data(), st[2].data(), st[3].data()}, "test");
    bool all = true;
    for (int64_t i = 0; i < numel_of(shape); ++i) {
      int64_t got[4];
      oc.get(i, got);
      int64_t rest = i, want[4] = {0, 0, 0, 0};
      for (size_t d = 5; d-- > 0;) {
        const int64_t c = rest % shape[d];
        rest /= shape[d];
        for (int k = 0; k < 4; ++k) want[k] += c * st[static_cast<size_t>(k)][d];
      }
      for (int k = 0; k < 4; ++k)
        if (got[k] != want[k]) {
          all = false;
          FAIL_CHECK("trial " << trial << " element " << i << " operand " << k << ": offset " << got[k] << ", expected "
                              << want[k]);
        }
      if (!all) break;
    }
    CHECK(all);
  }
}

TEST_CASE("make_offset_calc merges contiguous dims and names the op for views it cannot take") {
  const Shape shape{2, 3, 4};
  const Strides st = contiguous_strides(shape);
  const cuda::OffsetCalc<1> oc = cuda::make_offset_calc<1>(shape, {st.data()}, "test");
  CHECK(oc.ndim == 1);
  CHECK(oc.sizes[0] == 24);
  // Nine dims that no neighbour merges: reversed strides.
  Shape big(9, 2);
  Strides rev(9);
  for (size_t d = 0; d < 9; ++d) rev[d] = int64_t{1} << d;
  CHECK(testing::error_of([&] { cuda::make_offset_calc<1>(big, {rev.data()}, "myop"); }).find("myop: the CUDA kernels handle at most 8") !=
        std::string::npos);
}

// The allocator reads TL_CUDA_ALLOCATOR once, at the first call that succeeds; nothing before this
// test in this program asks for it, and a failed read is not kept, so the variable can be set here.
TEST_CASE("TL_CUDA_ALLOCATOR with an unknown value is one clear error naming the variable and the accepted values") {
  const char* prev = std::getenv("TL_CUDA_ALLOCATOR");
  const std::string saved = prev ? prev : "";
  ::setenv("TL_CUDA_ALLOCATOR", "pool", 1);
  const char* msg = "TL_CUDA_ALLOCATOR=pool: expected caching (the default) or passthrough";
  CHECK_THROWS_WITH_AS(cuda::allocator_mode(), msg, std::runtime_error);
  CHECK_THROWS_WITH_AS(cuda::caching_enabled(), msg, std::runtime_error);
  CHECK_THROWS_WITH_AS(cuda::allocation_size(16), msg, std::runtime_error);
  ::setenv("TL_CUDA_ALLOCATOR", "passthrough", 1);
  CHECK(cuda::allocator_mode() == cuda::AllocatorMode::passthrough);  // read now, and kept
  CHECK(cuda::allocation_size(513) == 513);                           // exact sizes: no rounding
  ::setenv("TL_CUDA_ALLOCATOR", "caching", 1);
  CHECK(cuda::allocator_mode() == cuda::AllocatorMode::passthrough);  // the mode is fixed once read
  if (prev)
    ::setenv("TL_CUDA_ALLOCATOR", saved.c_str(), 1);
  else
    ::unsetenv("TL_CUDA_ALLOCATOR");
}
