// bench_unet: times the UNet forward (eval, no grad) and train step (forward, BCE, backward, Adam)
// on the CPU; --profile breaks a train step down by layer kind. See bench/README.md.
//
//   bench_unet [--config B:HxW:ACT ...] [--threads N] [--iters 5] [--warmup 2] [--mode both|forward|train]
//              [--json] [--profile] [--gemm] [--no-fuse] [--features 64,128,256,512]
//   --features sets the UNet's widths (train_unet's CPU default is 16,32,64,128).
//   --no-fuse runs batch norm and its activation as two ops (nn::set_fusion(false)), to measure fusion.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "nn/optim.h"
#include "nn/unet.h"
#include "tensor/cpu/conv_winograd.h"
#include "tensor/cpu/gemm.h"
#include "tensor/parallel.h"
#include "tensor/profile.h"

using namespace tl;

namespace {

struct Config {
  int64_t batch = 4, height = 160, width = 240;
  std::string activation = "relu";
};

Config parse_config(const std::string& s) {
  // B:HxW:ACT, e.g. 4:160x240:relu
  Config c;
  char act[32] = {0};
  long long b = 0, h = 0, w = 0;
  if (std::sscanf(s.c_str(), "%lld:%lldx%lld:%31s", &b, &h, &w, act) != 4 || b < 1 || h < 16 || w < 16)
    throw std::invalid_argument("--config '" + s + "': expected B:HxW:ACT with B >= 1 and sides >= 16, e.g. 4:160x240:relu");
  c.batch = b;
  c.height = h;
  c.width = w;
  c.activation = act;
  nn::make_activation(c.activation);  // validates the name
  return c;
}

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

std::string list(const std::vector<double>& v) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < v.size(); ++i) os << (i ? ", " : "") << v[i];
  return os.str() + "]";
}

// Conv work of one call of f, counted by the profiler (the convolutions' multiply-adds x 2).
template <typename F>
double counted_gflop(const F& f) {
  profile::reset();
  profile::set_enabled(true);
  f();
  profile::set_enabled(false);
  double flops = 0;
  for (const profile::Entry& e : profile::snapshot()) flops += e.flops;
  return flops / 1e9;
}

void print_profile(const char* what, const Config& c, double step_ms) {
  auto entries = profile::snapshot();
  std::printf("\nprofile of one %s, batch %lld, %lldx%lld, %s (%.0f ms; GEMM %s, Winograd %s):\n", what,
              static_cast<long long>(c.batch), static_cast<long long>(c.height), static_cast<long long>(c.width),
              c.activation.c_str(), step_ms, cpu::gemm::isa_name(cpu::gemm::active_isa()),
              cpu::winograd_enabled() ? "on" : "off");
  std::printf("  %-24s %10s %7s %8s %10s\n", "layer kind", "ms", "share", "calls", "GFLOP/s");
  double accounted = 0;
  for (int k = 0; k < profile::kKinds; ++k) {
    const profile::Entry& e = entries[k];
    accounted += e.seconds * 1e3;
    if (e.calls == 0) continue;
    std::printf("  %-24s %10.1f %6.1f%% %8lld", profile::kind_name(static_cast<profile::Kind>(k)), e.seconds * 1e3,
                100 * e.seconds * 1e3 / step_ms, static_cast<long long>(e.calls));
    if (e.flops > 0) std::printf(" %10.1f", e.flops / e.seconds / 1e9);
    std::printf("\n");
  }
  std::printf("  %-24s %10.1f %6.1f%%\n", "other (graph, allocation)", step_ms - accounted,
              100 * (step_ms - accounted) / step_ms);
}

int run_gemm(bool json, int iters, int warmup) {
  const int64_t n = 2048;
  Generator g(0);
  Tensor a = randn({n, n}, kFloat32, &g), b = randn({n, n}, kFloat32, &g);
  std::vector<double> t;
  for (int i = 0; i < warmup + iters; ++i) {
    const double t0 = now_ms();
    Tensor c = matmul(a, b);
    if (i >= warmup) t.push_back(now_ms() - t0);
  }
  const double gflops = 2.0 * n * n * n / (median(t) * 1e-3) / 1e9;
  if (json) std::printf("{\"impl\": \"torchlet\", \"gemm_n\": %lld, \"gemm_gflops\": %.2f}\n", static_cast<long long>(n), gflops);
  else std::printf("SGEMM %lldx%lldx%lld (packed GEMM, %s): %.1f GFLOP/s, median of %d\n", static_cast<long long>(n),
                   static_cast<long long>(n), static_cast<long long>(n), cpu::gemm::isa_name(cpu::gemm::active_isa()), gflops, iters);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<Config> configs;
  int threads = get_num_threads(), iters = 5, warmup = 2;
  std::string mode = "both";
  bool json = false, prof = false, gemm = false;
  std::vector<int64_t> features = {64, 128, 256, 512};
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
        return argv[++i];
      };
      if (a == "--config") configs.push_back(parse_config(value()));
      else if (a == "--threads") threads = std::stoi(value());
      else if (a == "--iters") iters = std::stoi(value());
      else if (a == "--warmup") warmup = std::stoi(value());
      else if (a == "--mode") mode = value();
      else if (a == "--json") json = true;
      else if (a == "--profile") prof = true;
      else if (a == "--gemm") gemm = true;
      else if (a == "--no-fuse") nn::set_fusion(false);
      else if (a == "--features") {
        features.clear();
        std::stringstream ss(value());
        for (std::string item; std::getline(ss, item, ',');) features.push_back(std::stoll(item));
        if (features.empty()) throw std::invalid_argument("--features needs comma-separated widths, e.g. 16,32,64,128");
      }
      else if (a == "--help" || a == "-h") {
        std::printf("usage: bench_unet [--config B:HxW:ACT ...] [--threads N] [--iters 5] [--warmup 2]\n"
                    "                  [--mode both|forward|train] [--json] [--profile] [--gemm] [--no-fuse]\n"
                    "                  [--features 64,128,256,512]\n"
                    "Default configs: 4:160x240:relu 4:160x240:pysilu 1:320x480:relu 1:320x480:pysilu\n");
        return 0;
      } else throw std::invalid_argument("unknown flag " + a);
    }
    if (mode != "both" && mode != "forward" && mode != "train")
      throw std::invalid_argument("--mode must be both, forward or train, got '" + mode + "'");
    if (iters < 1 || warmup < 0) throw std::invalid_argument("--iters must be >= 1 and --warmup >= 0");
    set_num_threads(threads);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_unet: %s (see --help)\n", e.what());
    return 2;
  }
  if (gemm) return run_gemm(json, iters, warmup);
  if (configs.empty())
    for (const char* s : {"4:160x240:relu", "4:160x240:pysilu", "1:320x480:relu", "1:320x480:pysilu"})
      configs.push_back(parse_config(s));

  for (const Config& c : configs) {
    nn::UNetConfig uc;
    uc.activation = c.activation;
    uc.features = features;
    Generator g(0);
    nn::UNet model(uc, &g);
    Tensor x = randn({c.batch, 3, c.height, c.width}, kFloat32, &g);
    Tensor target;
    std::vector<double> fwd, train;
    double fwd_gflop = 0, train_gflop = 0;
    if (mode != "train") {
      model.eval();
      NoGradGuard no_grad;
      fwd_gflop = counted_gflop([&] { model.forward(x); });
      for (int i = 0; i < warmup + iters; ++i) {
        const double t0 = now_ms();
        Tensor y = model.forward(x);
        if (i >= warmup) fwd.push_back(now_ms() - t0);
      }
      if (prof && !json) {
        profile::reset();
        profile::set_enabled(true);
        const double t0 = now_ms();
        model.forward(x);
        const double ms = now_ms() - t0;
        profile::set_enabled(false);
        print_profile("forward (eval, no grad)", c, ms);
      }
    }
    if (mode != "forward") {
      model.train();
      optim::Adam opt(model.named_parameters(), optim::AdamOptions{.lr = 1e-3});
      auto step = [&] {
        model.zero_grad();
        Tensor y = model.forward(x);
        if (!target.defined()) target = gt(rand(y.shape(), kFloat32, &g), 0.5).to(kFloat32);
        binary_cross_entropy_with_logits(y, target).backward();
        opt.step();
      };
      train_gflop = counted_gflop(step);
      for (int i = 0; i < warmup + iters; ++i) {
        const double t0 = now_ms();
        step();
        if (i >= warmup) train.push_back(now_ms() - t0);
      }
      if (prof && !json) {
        profile::reset();
        profile::set_enabled(true);
        const double t0 = now_ms();
        step();
        const double ms = now_ms() - t0;
        profile::set_enabled(false);
        print_profile("train step", c, ms);
      }
    }
    const double f_med = fwd.empty() ? 0 : median(fwd), t_med = train.empty() ? 0 : median(train);
    if (json) {
      std::printf("{\"impl\": \"torchlet\", \"batch\": %lld, \"height\": %lld, \"width\": %lld, \"activation\": \"%s\", "
                  "\"threads\": %d, \"forward_ms_median\": %s, \"train_step_ms_median\": %s, \"forward_ms_all\": %s, "
                  "\"train_step_ms_all\": %s, \"peak_rss_mb\": %.1f, \"forward_gflop\": %.3f, \"train_step_gflop\": %.3f}\n",
                  static_cast<long long>(c.batch), static_cast<long long>(c.height), static_cast<long long>(c.width),
                  c.activation.c_str(), threads, fwd.empty() ? "null" : std::to_string(f_med).c_str(),
                  train.empty() ? "null" : std::to_string(t_med).c_str(), list(fwd).c_str(), list(train).c_str(),
                  peak_rss_mb(), fwd_gflop, train_gflop);
    } else {
      std::printf("batch %lld, %lldx%lld, %-6s threads %d: forward %8.1f ms (%5.1f GFLOP/s)  train step %8.1f ms "
                  "(%5.1f GFLOP/s)  peak RSS %.0f MB\n",
                  static_cast<long long>(c.batch), static_cast<long long>(c.height), static_cast<long long>(c.width),
                  c.activation.c_str(), threads, f_med, f_med > 0 ? fwd_gflop / f_med * 1e3 : 0, t_med,
                  t_med > 0 ? train_gflop / t_med * 1e3 : 0, peak_rss_mb());
    }
    std::fflush(stdout);
  }
  return 0;
}
