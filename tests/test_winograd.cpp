// Winograd F(2x2, 3x3) (tensor/cpu/conv_winograd.h): the forward, the input gradient (a forward
// convolution with the rotated kernel) and the weight gradient against a float64 direct convolution,
// each no less accurate than the float32 path it replaces on the same shape (relative L2 error within
// 3x), under every GEMM micro-kernel this CPU has; the path is proven taken by its call counters.
// Also: where it applies, thread-count independent weight-gradient bits, and the fallback on an Inf
// (a bad TL_CONV_WINOGRAD is checked by the ctest conv_winograd_env_bad).
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "tensor/cpu/conv_winograd.h"
#include "tensor/cpu/gemm.h"
#include "tensor/kernels.h"
#include "tensor/parallel.h"
#include "tests/test_util.h"

using namespace tl;
namespace gm = tl::cpu::gemm;

namespace {

struct Case {
  int64_t N, C, H, W, O, pad;
};

// Odd and even sizes, N 1 and 3, paddings 0-2, channels at and above the thresholds (32 under the
// AVX2 micro-kernel, 64 under AVX-512; the cases below 64 run under AVX2 only); the 22x26 and 25x23
// cases span several blocks of tiles, with blocks and row segments that cross image boundaries.
const Case kCases[] = {
    {1, 128, 9, 11, 128, 1},  {3, 128, 10, 8, 144, 0}, {1, 160, 7, 13, 128, 2}, {3, 136, 12, 15, 128, 1},
    {3, 128, 22, 26, 128, 1}, {2, 128, 25, 23, 128, 1}, {2, 64, 21, 19, 64, 1},  {3, 32, 18, 23, 32, 1},
    {1, 48, 13, 10, 32, 2},   {2, 32, 15, 16, 40, 0},
};

struct Ref {
  std::vector<double> out, dx, dw;
};

// The direct convolution in float64: out = conv(x, w) + b, and the gradients of sum(out * R).
Ref direct(const Case& k, const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& b,
           const std::vector<double>& R) {
  const int64_t ho = k.H + 2 * k.pad - 2, wo = k.W + 2 * k.pad - 2;
  Ref r{std::vector<double>(static_cast<size_t>(k.N * k.O * ho * wo)),
        std::vector<double>(static_cast<size_t>(k.N * k.C * k.H * k.W)),
        std::vector<double>(static_cast<size_t>(k.O * k.C * 9))};
  for (int64_t n = 0; n < k.N; ++n)
    for (int64_t o = 0; o < k.O; ++o)
      for (int64_t oh = 0; oh < ho; ++oh)
        for (int64_t ow = 0; ow < wo; ++ow) {
          const size_t oi = static_cast<size_t>(((n * k.O + o) * ho + oh) * wo + ow);
          double s = b[static_cast<size_t>(o)];
          const double g = R[oi];
          for (int64_t c = 0; c < k.C; ++c)
            for (int64_t i = 0; i < 3; ++i) {
              const int64_t ih = oh - k.pad + i;
              if (ih < 0 || ih >= k.H) continue;
              for (int64_t j = 0; j < 3; ++j) {
                const int64_t iw = ow - k.pad + j;
                if (iw < 0 || iw >= k.W) continue;
                const size_t xi = static_cast<size_t>(((n * k.C + c) * k.H + ih) * k.W + iw);
                const size_t wi = static_cast<size_t>(((o * k.C + c) * 3 + i) * 3 + j);
                s += x[xi] * w[wi];
                r.dx[xi] += g * w[wi];
                r.dw[wi] += g * x[xi];
              }
            }
          r.out[oi] = s;
        }
  return r;
}

double rel_l2(const Tensor& got, const std::vector<double>& want) {
  return testing::rel_l2(got, from_vector<double>(want, got.shape(), kFloat64));
}

struct Results {
  Tensor out, dx, dw;
};

Results run(const Case& k, const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& R) {
  const kernels::Conv2dParams p{1, 1, k.pad, k.pad};
  return {kernels::conv2d(x, w, b, p), kernels::conv2d_backward_input(R, w, x.shape(), p),
          kernels::conv2d_backward_weight(R, x, w.shape(), p)};
}

std::vector<gm::Isa> vector_isas() {
  std::vector<gm::Isa> v;
  for (gm::Isa isa : {gm::Isa::Avx2, gm::Isa::Avx512})
    if (gm::isa_supported(isa)) v.push_back(isa);
  return v;
}

// Restores the switch, the micro-kernel and the thread count at the end of a test case.
struct Restore {
  bool on = cpu::winograd_enabled();
  gm::Isa isa = gm::active_isa();
  int threads = get_num_threads();
  ~Restore() {
    cpu::set_winograd_enabled(on);
    gm::set_isa(isa);
    set_num_threads(threads);
  }
};

}  // namespace

TEST_CASE("Winograd forward, input and weight gradients against float64, as accurate as the float32 path") {
  Restore restore;
  const std::vector<gm::Isa> isas = vector_isas();
  if (isas.empty()) MESSAGE("skipped: this CPU has neither AVX2 nor AVX-512 (the reference kernel is tested below)");
  for (const Case& k : kCases) {
    manual_seed(1234);
    Tensor x = randn({k.N, k.C, k.H, k.W}), w = randn({k.O, k.C, 3, 3}), b = randn({k.O});
    const int64_t ho = k.H + 2 * k.pad - 2, wo = k.W + 2 * k.pad - 2;
    Tensor R = randn({k.N, k.O, ho, wo});
    const Ref ref = direct(k, x.to_vector<double>(), w.to_vector<double>(), b.to_vector<double>(), R.to_vector<double>());
    int ran = 0;
    for (gm::Isa isa : isas) {
      gm::set_isa(isa);
      if (!cpu::winograd_applies(cpu::Stride1Conv{k.N, k.C, k.H, k.W, k.O, 3, 3, k.pad, k.pad})) continue;
      ++ran;
      INFO(std::string(gm::isa_name(isa)) << " N" << k.N << " C" << k.C << " " << k.H << "x" << k.W << " O" << k.O
                                          << " pad " << k.pad);
      cpu::set_winograd_enabled(false);
      const int64_t f0 = cpu::winograd_forward_calls(), b0 = cpu::winograd_backward_weight_calls();
      const Results base = run(k, x, w, b, R);
      CHECK(cpu::winograd_forward_calls() == f0);  // off: the path is not taken
      CHECK(cpu::winograd_backward_weight_calls() == b0);
      cpu::set_winograd_enabled(true);
      const Results win = run(k, x, w, b, R);
      // The forward and the input gradient (a forward convolution) each took it once; dW once.
      CHECK(cpu::winograd_forward_calls() == f0 + 2);
      CHECK(cpu::winograd_backward_weight_calls() == b0 + 1);

      const double eo = rel_l2(win.out, ref.out), ex = rel_l2(win.dx, ref.dx), ew = rel_l2(win.dw, ref.dw);
      const double bo = rel_l2(base.out, ref.out), bx = rel_l2(base.dx, ref.dx), bw = rel_l2(base.dw, ref.dw);
      MESSAGE(std::string(gm::isa_name(isa))
              << " N" << k.N << " C" << k.C << " " << k.H << "x" << k.W << " O" << k.O << " pad " << k.pad
              << ": relative L2 error to float64, Winograd / float32 path: forward " << eo << " / " << bo
              << ", input grad " << ex << " / " << bx << ", weight grad " << ew << " / " << bw
              << " (tolerance 3x the float32 path's)");
      CHECK(eo <= 3 * bo);
      CHECK(ex <= 3 * bx);
      CHECK(ew <= 3 * bw);
      CHECK(eo < 1e-5);  // and small in absolute terms
      CHECK(ex < 1e-5);
      CHECK(ew < 1e-5);
    }
    if (!isas.empty()) CHECK(ran >= 1);  // every case applies under AVX2 at least
  }
}

TEST_CASE("Winograd under the portable reference micro-kernel") {
  Restore restore;
  gm::set_isa(gm::Isa::Reference);
  cpu::set_winograd_enabled(true);
  const Case k{2, 128, 11, 10, 136, 1};
  manual_seed(7);
  Tensor x = randn({k.N, k.C, k.H, k.W}), w = randn({k.O, k.C, 3, 3}), b = randn({k.O});
  Tensor R = randn({k.N, k.O, k.H, k.W});
  const Ref ref = direct(k, x.to_vector<double>(), w.to_vector<double>(), b.to_vector<double>(), R.to_vector<double>());
  const int64_t f0 = cpu::winograd_forward_calls();
  const Results win = run(k, x, w, b, R);
  CHECK(cpu::winograd_forward_calls() == f0 + 2);
  const double eo = rel_l2(win.out, ref.out), ex = rel_l2(win.dx, ref.dx), ew = rel_l2(win.dw, ref.dw);
  MESSAGE("reference kernel: relative L2 error forward " << eo << ", input grad " << ex << ", weight grad " << ew
                                                         << " (tolerance 1e-5)");
  CHECK(eo < 1e-5);
  CHECK(ex < 1e-5);
  CHECK(ew < 1e-5);
}

TEST_CASE("Winograd applies to 3x3, stride 1, padding <= 2, 64 (AVX2: 32) to 512 channels") {
  using cpu::Stride1Conv;
  Restore restore;
  CHECK(cpu::winograd_min_channels(gm::Isa::Avx512) == 64);
  CHECK(cpu::winograd_min_channels(gm::Isa::Avx2) == 32);
  CHECK(cpu::winograd_min_channels(gm::Isa::Reference) == 32);
  for (gm::Isa isa : {gm::Isa::Reference, gm::Isa::Avx2, gm::Isa::Avx512}) {
    if (!gm::isa_supported(isa)) continue;
    gm::set_isa(isa);
    INFO(gm::isa_name(isa));
    const bool wide = isa == gm::Isa::Avx512;
    CHECK(cpu::winograd_applies(Stride1Conv{4, 64, 160, 240, 64, 3, 3, 1, 1}));
    CHECK(cpu::winograd_applies(Stride1Conv{1, 512, 5, 5, 512, 3, 3, 2, 0}));
    CHECK(cpu::winograd_applies(Stride1Conv{4, 32, 80, 120, 32, 3, 3, 1, 1}) == !wide);
    CHECK(cpu::winograd_applies(Stride1Conv{4, 32, 160, 240, 64, 3, 3, 1, 1}) == !wide);  // 32 input channels
    CHECK(cpu::winograd_applies(Stride1Conv{4, 64, 160, 240, 32, 3, 3, 1, 1}) == !wide);  // 32 output channels
    CHECK_FALSE(cpu::winograd_applies(Stride1Conv{4, 16, 160, 240, 32, 3, 3, 1, 1}));     // few input channels
    CHECK_FALSE(cpu::winograd_applies(Stride1Conv{4, 64, 160, 240, 16, 3, 3, 1, 1}));     // few output channels
    CHECK_FALSE(cpu::winograd_applies(Stride1Conv{4, 512, 10, 15, 1024, 3, 3, 1, 1}));  // U past 512 x 512
    CHECK_FALSE(cpu::winograd_applies(Stride1Conv{4, 64, 160, 240, 64, 1, 1, 0, 0}));    // 1x1
    CHECK_FALSE(cpu::winograd_applies(Stride1Conv{4, 64, 160, 240, 64, 3, 2, 1, 1}));    // 3x2
    CHECK_FALSE(cpu::winograd_applies(Stride1Conv{1, 64, 1, 1, 64, 3, 3, 0, 0}));        // no output
  }
  // A strided convolution keeps its own path.
  cpu::set_winograd_enabled(true);
  Tensor x = randn({1, 64, 9, 9}), w = randn({64, 64, 3, 3});
  const int64_t f0 = cpu::winograd_forward_calls();
  kernels::conv2d(x, w, Tensor(), kernels::Conv2dParams{2, 2, 1, 1});
  CHECK(cpu::winograd_forward_calls() == f0);
}

TEST_CASE("the Winograd weight gradient has the same bits on 1, 2 and 3 threads") {
  Restore restore;
  cpu::set_winograd_enabled(true);
  const Case k{3, 128, 22, 26, 128, 1};
  manual_seed(99);
  Tensor x = randn({k.N, k.C, k.H, k.W}), R = randn({k.N, k.O, k.H, k.W});
  const kernels::Conv2dParams p{1, 1, 1, 1};
  set_num_threads(1);
  const std::vector<float> one = kernels::conv2d_backward_weight(R, x, {k.O, k.C, 3, 3}, p).to_vector<float>();
  for (int threads : {2, 3}) {
    set_num_threads(threads);
    const int64_t b0 = cpu::winograd_backward_weight_calls();
    const std::vector<float> got = kernels::conv2d_backward_weight(R, x, {k.O, k.C, 3, 3}, p).to_vector<float>();
    CHECK(cpu::winograd_backward_weight_calls() == b0 + 1);
    int64_t differ = 0;
    for (size_t i = 0; i < one.size(); ++i) differ += one[i] != got[i];
    MESSAGE(differ << " of " << one.size() << " weight-gradient entries differ between 1 and " << threads
                   << " threads (allowed: 0)");
    CHECK(differ == 0);
  }
}

TEST_CASE("an Inf in the input takes the direct path: taps and outputs that never meet it stay finite") {
  Restore restore;
  cpu::set_winograd_enabled(true);
  const Case k{1, 128, 8, 10, 128, 1};
  Tensor x = randn({k.N, k.C, k.H, k.W}), w = randn({k.O, k.C, 3, 3}), R = randn({k.N, k.O, k.H, k.W});
  std::vector<float> xv = x.to_vector<float>();
  xv[static_cast<size_t>((3 * k.H + 0) * k.W + 0)] = std::numeric_limits<float>::infinity();  // channel 3, corner
  x = from_vector<float>(xv, x.shape());
  const int64_t f0 = cpu::winograd_forward_calls(), b0 = cpu::winograd_backward_weight_calls();
  const Results got = run(k, x, w, Tensor(), R);
  CHECK(cpu::winograd_forward_calls() == f0 + 1);  // the input gradient (finite operands) still takes it
  CHECK(cpu::winograd_backward_weight_calls() == b0);
  cpu::set_winograd_enabled(false);
  const Results want = run(k, x, w, Tensor(), R);
  auto finite_count = [](const Tensor& t) {
    int64_t n = 0;
    for (float v : t.to_vector<float>()) n += std::isfinite(v);
    return n;
  };
  MESSAGE("finite outputs " << finite_count(got.out) << " (want " << finite_count(want.out) << " of "
                            << got.out.numel() << "), finite weight-gradient entries " << finite_count(got.dw)
                            << " (want " << finite_count(want.dw) << ")");
  CHECK(finite_count(got.out) == finite_count(want.out));
  CHECK(finite_count(got.out) < got.out.numel());
  CHECK(finite_count(got.dw) == finite_count(want.dw));
  CHECK(finite_count(got.dw) < got.dw.numel());
}
