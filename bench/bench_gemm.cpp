// bench_gemm: the machine's float32 FMA peak, and our packed GEMM (each micro-kernel this CPU runs)
// against Eigen's, at 2048^3 and at the GEMM shapes of the UNet's 3x3 convolutions. See bench/README.md.
//
//   bench_gemm [--threads N] [--iters 5] [--features 16,32,64,128] [--height 160 --width 240] [--json] [--cpu-clock] [--peak-only]
//              [--convs [--batch 4]]
// --convs times the 3x3 convolution kernels themselves (forward, input and weight gradients, float32,
// batch --batch) at each UNet layer's shape, with each micro-kernel, instead of the GEMM table.
//
// The peak is measured, not looked up: a loop of independent FMAs on registers (enough chains to
// cover the latency on two FMA ports) on every thread, so it is FMA throughput x cores x the clock the
// cores actually run at. A shape (M, N, K) is one image's conv GEMM: M output channels, N = H*W
// output pixels, K = input channels * 9.
#include <Eigen/Core>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "tensor/cpu/cpu_kernels.h"
#include "tensor/cpu/gemm.h"
#include "tensor/parallel.h"
#include "tensor/random.h"

using namespace tl;
namespace gm = tl::cpu::gemm;

namespace {

// Wall time, or with --cpu-clock the process's CPU time: on one thread that leaves out the time other
// processes held the core, so tuning runs can share the machine.
bool g_cpu_clock = false;
double now_s() {
  if (g_cpu_clock) {
    timespec t{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// 16 independent FMA chains of one register each, `reps` times: 16 x width x 2 flops per rep.
__attribute__((target("avx512f,fma"), noinline)) float fma_loop_avx512(int64_t reps) {
  __m512 s[16];
  for (int i = 0; i < 16; ++i) s[i] = _mm512_set1_ps(1.0f + i * 1e-3f);
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int64_t r = 0; r < reps; ++r)
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) s[i] = _mm512_fmadd_ps(s[i], a, b);
  for (int i = 1; i < 16; ++i) s[0] = _mm512_add_ps(s[0], s[i]);
  return _mm512_reduce_add_ps(s[0]);
}

__attribute__((target("avx2,fma"), noinline)) float fma_loop_avx2(int64_t reps) {
  __m256 s[12];
  for (int i = 0; i < 12; ++i) s[i] = _mm256_set1_ps(1.0f + i * 1e-3f);
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (int64_t r = 0; r < reps; ++r)
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) s[i] = _mm256_fmadd_ps(s[i], a, b);
  float out[8];
  for (int i = 1; i < 12; ++i) s[0] = _mm256_add_ps(s[0], s[i]);
  _mm256_storeu_ps(out, s[0]);
  return out[0];
}

// GFLOP/s of FMAs at `width` floats per register on `threads` threads.
double peak_gflops(gm::Isa isa, int threads) {
  const int64_t reps = 100'000'000;
  const double flops_per_rep = isa == gm::Isa::Avx512 ? 16.0 * 16 * 2 : 12.0 * 8 * 2;
  std::vector<double> t;
  volatile float sink = 0;
  for (int trial = 0; trial < 5; ++trial) {
    const double t0 = now_s();
#pragma omp parallel num_threads(threads)
    { sink = sink + (isa == gm::Isa::Avx512 ? fma_loop_avx512(reps) : fma_loop_avx2(reps)); }
    t.push_back(now_s() - t0);
  }
  return flops_per_rep * reps * threads / median(t) / 1e9;
}

struct Shape3 {
  int64_t m, n, k;
  std::string what;
};

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Median seconds of `iters` runs of fn after one warm-up.
template <typename F>
double time_it(int iters, const F& fn) {
  fn();
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    const double t0 = now_s();
    fn();
    t.push_back(now_s() - t0);
  }
  return median(t);
}

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> v;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) v.push_back(std::stoll(item));
  return v;
}

// The 3x3 stride-1 pad-1 convolutions of the UNet at widths `features` on (batch, *, height, width):
// each layer's forward, input gradient and weight gradient, float32, GFLOP/s per micro-kernel.
int run_convs(const std::vector<gm::Isa>& isas, const std::string& features, int64_t height, int64_t width,
              int64_t batch, int iters, int threads, bool json) {
  struct Layer {
    int64_t cin, cout, h, w;
  };
  std::vector<Layer> layers;
  const std::vector<int64_t> f = parse_list(features);
  int64_t h = height, w = width, cin = 3;
  for (size_t l = 0; l <= f.size(); ++l) {
    const int64_t c = l < f.size() ? f[l] : 2 * f.back();
    layers.push_back({cin, c, h, w});
    layers.push_back({c, c, h, w});
    if (l < f.size()) layers.push_back({2 * c, c, h, w});  // the decoder's conv after the concat
    cin = c;
    h /= 2;
    w /= 2;
  }
  if (!json) {
    std::printf("%-24s", "conv (in->out @HxW)");
    for (gm::Isa isa : isas) std::printf(" %9s fwd %8s dX %8s dW", gm::isa_name(isa), "", "");
    std::printf("   (GFLOP/s, batch %lld, median of %d, %d threads)\n", static_cast<long long>(batch), iters, threads);
  }
  Generator g(0);
  const kernels::Conv2dParams p{1, 1, 1, 1};
  for (const Layer& l : layers) {
    const Tensor x = randn({batch, l.cin, l.h, l.w}, kFloat32, &g), wt = randn({l.cout, l.cin, 3, 3}, kFloat32, &g);
    const Tensor gr = randn({batch, l.cout, l.h, l.w}, kFloat32, &g);
    const double flop = 2.0 * batch * l.cout * l.cin * 9 * l.h * l.w;
    const std::string name = std::to_string(l.cin) + "->" + std::to_string(l.cout) + " @" + std::to_string(l.h) + "x" +
                             std::to_string(l.w);
    if (json) std::printf("{\"conv\": \"%s\"", name.c_str());
    else std::printf("%-24s", name.c_str());
    for (gm::Isa isa : isas) {
      gm::set_isa(isa);
      const double fw = flop / time_it(iters, [&] { cpu::conv2d(x, wt, Tensor(), p); }) / 1e9;
      const double dx = flop / time_it(iters, [&] { cpu::conv2d_backward_input(gr, wt, x.shape(), p); }) / 1e9;
      const double dw = flop / time_it(iters, [&] { cpu::conv2d_backward_weight(gr, x, wt.shape(), p); }) / 1e9;
      if (json)
        std::printf(", \"%s_forward_gflops\": %.1f, \"%s_input_grad_gflops\": %.1f, \"%s_weight_grad_gflops\": %.1f",
                    gm::isa_name(isa), fw, gm::isa_name(isa), dx, gm::isa_name(isa), dw);
      else std::printf(" %13.1f %11.1f %11.1f", fw, dx, dw);
    }
    std::printf(json ? "}\n" : "\n");
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = get_num_threads(), iters = 5;
  std::string features = "16,32,64,128";
  int64_t height = 160, width = 240;
  bool json = false, peak_only = false, convs = false;
  int64_t batch = 4;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_gemm: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--threads") threads = std::stoi(value());
    else if (a == "--iters") iters = std::stoi(value());
    else if (a == "--features") features = value();
    else if (a == "--height") height = std::stoll(value());
    else if (a == "--width") width = std::stoll(value());
    else if (a == "--json") json = true;
    else if (a == "--cpu-clock") g_cpu_clock = true;
    else if (a == "--peak-only") peak_only = true;
    else if (a == "--convs") convs = true;
    else if (a == "--batch") batch = std::stoll(value());
    else {
      std::fprintf(stderr, "usage: bench_gemm [--threads N] [--iters 5] [--features 16,32,64,128] [--height H --width W] [--json] [--cpu-clock] [--peak-only] [--convs [--batch 4]]\n");
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  set_num_threads(threads);
  Eigen::setNbThreads(threads);

  std::vector<gm::Isa> isas;
  for (gm::Isa isa : {gm::Isa::Avx2, gm::Isa::Avx512})
    if (gm::isa_supported(isa)) isas.push_back(isa);

  for (gm::Isa isa : isas) {
    const double p = peak_gflops(isa, threads);
    if (json) std::printf("{\"peak_isa\": \"%s\", \"threads\": %d, \"peak_gflops\": %.1f}\n", gm::isa_name(isa), threads, p);
    else std::printf("measured FMA peak, %s, %d threads: %.1f GFLOP/s\n", gm::isa_name(isa), threads, p);
  }

  if (peak_only) return 0;
  if (convs) return run_convs(isas, features, height, width, batch, iters, threads, json);

  // 2048^3, then the conv shapes: each level's convs at its resolution (encoder, bottleneck, decoder).
  std::vector<Shape3> shapes = {{2048, 2048, 2048, "2048^3"}};
  const std::vector<int64_t> f = parse_list(features);
  int64_t h = height, w = width, cin = 3;
  for (size_t l = 0; l <= f.size(); ++l) {
    const int64_t c = l < f.size() ? f[l] : 2 * f.back();
    const std::string at = std::to_string(h) + "x" + std::to_string(w);
    shapes.push_back({c, h * w, cin * 9, "conv " + std::to_string(cin) + "->" + std::to_string(c) + " @" + at});
    shapes.push_back({c, h * w, c * 9, "conv " + std::to_string(c) + "->" + std::to_string(c) + " @" + at});
    if (l < f.size()) shapes.push_back({c, h * w, 2 * c * 9, "conv " + std::to_string(2 * c) + "->" + std::to_string(c) + " @" + at + " (decoder)"});
    // The weight gradient of the c->c conv: (M, N, K) = (c, c*9, h*w).
    shapes.push_back({c, c * 9, h * w, "dW " + std::to_string(c) + "->" + std::to_string(c) + " @" + at});
    cin = c;
    h /= 2;
    w /= 2;
  }

  if (!json) {
    std::printf("%-34s %6s %6s %6s %10s", "shape", "M", "N", "K", "Eigen");
    for (gm::Isa isa : isas) std::printf(" %10s", gm::isa_name(isa));
    std::printf("   (GFLOP/s, median of %d, %d threads)\n", iters, threads);
  }
  for (const Shape3& s : shapes) {
    RowMat a = RowMat::Random(s.m, s.k), b = RowMat::Random(s.k, s.n), c(s.m, s.n);
    const double flop = 2.0 * s.m * s.n * s.k;
    const double eigen = flop / time_it(iters, [&] { c.noalias() = a * b; }) / 1e9;
    std::vector<double> ours;
    for (gm::Isa isa : isas) {
      gm::set_isa(isa);
      ours.push_back(flop / time_it(iters, [&] {
                       gm::gemm(s.m, s.n, s.k, {a.data(), s.k, 1}, {b.data(), s.n, 1}, c.data(), s.n, false);
                     }) / 1e9);
    }
    if (json) {
      std::printf("{\"shape\": \"%s\", \"m\": %lld, \"n\": %lld, \"k\": %lld, \"eigen_gflops\": %.1f", s.what.c_str(),
                  static_cast<long long>(s.m), static_cast<long long>(s.n), static_cast<long long>(s.k), eigen);
      for (size_t i = 0; i < isas.size(); ++i) std::printf(", \"%s_gflops\": %.1f", gm::isa_name(isas[i]), ours[i]);
      std::printf("}\n");
    } else {
      std::printf("%-34s %6lld %6lld %6lld %10.1f", s.what.c_str(), static_cast<long long>(s.m),
                  static_cast<long long>(s.n), static_cast<long long>(s.k), eigen);
      for (double g : ours) std::printf(" %10.1f", g);
      std::printf("\n");
    }
    std::fflush(stdout);
  }
  return 0;
}
