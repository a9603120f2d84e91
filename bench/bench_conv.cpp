// Times the float32 3x3 stride-1 (padding 1) convolution of each shape: forward, input gradient and
// weight gradient, with Winograd F(2x2, 3x3) off and on in alternating rounds (tensor/cpu/conv_winograd.h).
// GFLOP/s are effective: the direct convolution's 2 * N * O * C * 9 * H * W per pass.
//   bench_conv [--shape N,C,H,W,O ...] [--up N,C,H,W,O ...] [--threads 2] [--iters 5] [--rounds 2]
// Without --shape or --up: the 3x3 layers of the UNet at batch 4, 160x240, widths 64..512 (C = O per level).
// --up times the UNet's 2x2 stride-2 transposed convolution instead, C channels of H x W up to O channels
// of 2H x 2W (forward, input gradient, weight gradient; Winograd does not apply, so one pass per round).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "tensor/cpu/conv_winograd.h"
#include "tensor/cpu/gemm.h"
#include "tensor/kernels.h"
#include "tensor/parallel.h"
#include "tensor/random.h"

using namespace tl;

namespace {

struct Shape5 {
  int64_t N, C, H, W, O;
};

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The best of `iters` runs of each pass, run in turn (forward, input gradient, weight gradient), in ms.
struct Times {
  double forward, input, weight;
};
template <typename F, typename X, typename W>
Times best_of(int iters, const F& forward, const X& input, const W& weight) {
  Times t{1e30, 1e30, 1e30};
  for (int i = 0; i < iters; ++i) {
    const double t0 = now_ms();
    forward();
    const double t1 = now_ms();
    input();
    const double t2 = now_ms();
    weight();
    const double t3 = now_ms();
    t = {std::min(t.forward, t1 - t0), std::min(t.input, t2 - t1), std::min(t.weight, t3 - t2)};
  }
  return t;
}

Shape5 parse_shape(const std::string& s) {
  std::vector<int64_t> v;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) v.push_back(std::stoll(item));
  if (v.size() != 5 || *std::min_element(v.begin(), v.end()) < 1)
    throw std::invalid_argument("--shape needs N,C,H,W,O (positive), got '" + s + "'");
  return {v[0], v[1], v[2], v[3], v[4]};
}

}  // namespace

int main(int argc, char** argv) {
  try {
    int threads = 2, iters = 5, rounds = 2;
    std::vector<Shape5> shapes, ups;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
        return argv[++i];
      };
      if (a == "--shape") shapes.push_back(parse_shape(value()));
      else if (a == "--up") ups.push_back(parse_shape(value()));
      else if (a == "--threads") threads = std::stoi(value());
      else if (a == "--iters") iters = std::stoi(value());
      else if (a == "--rounds") rounds = std::stoi(value());
      else throw std::invalid_argument("unknown flag " + a);
    }
    if (threads < 1 || iters < 1 || rounds < 1) throw std::invalid_argument("--threads, --iters and --rounds must be >= 1");
    if (shapes.empty() && ups.empty()) shapes = {{4, 64, 160, 240, 64}, {4, 128, 80, 120, 128}, {4, 256, 40, 60, 256}, {4, 512, 20, 30, 512}};
    set_num_threads(threads);
    std::printf("threads %d, GEMM %s, best of %d iterations, %d rounds (Winograd off, on alternating)\n", threads,
                cpu::gemm::isa_name(cpu::gemm::active_isa()), iters, rounds);
    for (const Shape5& s : shapes) {
      Tensor x = randn({s.N, s.C, s.H, s.W}), w = randn({s.O, s.C, 3, 3}), g = randn({s.N, s.O, s.H, s.W});
      const kernels::Conv2dParams p{1, 1, 1, 1};
      const double gflop = 2.0 * s.N * s.O * s.C * 9 * s.H * s.W / 1e9;
      for (int r = 0; r < rounds; ++r)
        for (int on = 0; on < 2; ++on) {
          cpu::set_winograd_enabled(on != 0);
          const auto [tf, tx, tw] = best_of(
              iters, [&] { kernels::conv2d(x, w, Tensor(), p); },
              [&] { kernels::conv2d_backward_input(g, w, x.shape(), p); },
              [&] { kernels::conv2d_backward_weight(g, x, w.shape(), p); });
          std::printf("N%lld C%lld %lldx%lld O%lld  Winograd %-3s  forward %8.2f ms (%4.0f GFLOP/s)  input grad %8.2f ms "
                      "(%4.0f)  weight grad %8.2f ms (%4.0f)\n",
                      static_cast<long long>(s.N), static_cast<long long>(s.C), static_cast<long long>(s.H),
                      static_cast<long long>(s.W), static_cast<long long>(s.O), on ? "on" : "off", tf,
                      gflop / tf * 1e3, tx, gflop / tx * 1e3, tw, gflop / tw * 1e3);
        }
    }
    for (const Shape5& s : ups) {
      // As conv_transpose2d computes it: the adjoint of a conv2d with weight (O = C, C = O, 2, 2).
      Tensor x = randn({s.N, s.C, s.H, s.W}), w = randn({s.C, s.O, 2, 2}), g = randn({s.N, s.O, 2 * s.H, 2 * s.W});
      const kernels::Conv2dParams p{2, 2, 0, 0};
      const Shape out_shape{s.N, s.O, 2 * s.H, 2 * s.W};
      const double gflop = 2.0 * s.N * s.C * s.O * 4 * s.H * s.W / 1e9;
      for (int r = 0; r < rounds; ++r) {
        const auto [tf, tx, tw] = best_of(
            iters, [&] { kernels::conv2d_backward_input(x, w, out_shape, p); },
            [&] { kernels::conv2d(g, w, Tensor(), p); },
            [&] { kernels::conv2d_backward_weight(x, g, w.shape(), p); });
        std::printf("up N%lld C%lld %lldx%lld O%lld  forward %8.2f ms (%4.0f GFLOP/s)  input grad %8.2f ms (%4.0f)  "
                    "weight grad %8.2f ms (%4.0f)\n",
                    static_cast<long long>(s.N), static_cast<long long>(s.C), static_cast<long long>(s.H),
                    static_cast<long long>(s.W), static_cast<long long>(s.O), tf, gflop / tf * 1e3, tx,
                    gflop / tx * 1e3, tw, gflop / tw * 1e3);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_conv: %s\n", e.what());
    return 1;
  }
  return 0;
}
