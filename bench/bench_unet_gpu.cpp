// bench_unet_gpu: times the UNet forward (eval, no grad) and train step (forward, BCE-with-logits,
// backward, Adam) on a CUDA device with CUDA events, with the allocator's peak memory; --profile breaks
// one forward and one train step down by layer kind. bench/compare_gpu.py runs it beside
// bench/torch_unet_gpu.py. See bench/README.md.
//
//   bench_unet_gpu [--config B:HxW:ACT ...] [--device cuda:0] [--iters 20] [--warmup 5]
//                  [--mode both|forward|train] [--tf32] [--json] [--profile] [--gemm] [--no-fuse]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/allocator.h"
#include "cuda/event.h"
#include "cuda/runtime.h"
#include "nn/optim.h"
#include "nn/unet.h"
#include "tensor/precision.h"
#include "tensor/profile.h"

using namespace tl;

namespace {

constexpr int kExitNoDevice = 77;  // as torch_unet_gpu.py without a GPU or without torch
constexpr int64_t kGemmN = 8192;
const char* const kDefaultConfigs[] = {"16:160x240:relu", "16:160x240:gelu", "16:160x240:silu", "16:160x240:pysilu",
                                       "4:320x480:relu",  "4:320x480:gelu",  "4:320x480:silu",  "4:320x480:pysilu"};

struct Config {
  int64_t batch = 16, height = 160, width = 240;
  std::string activation = "relu";
  std::string name;  // as given: B:HxW:ACT
};

Config parse_config(const std::string& s) {
  // B:HxW:ACT, e.g. 16:160x240:relu
  Config c;
  char act[32] = {0};
  long long b = 0, h = 0, w = 0;
  if (std::sscanf(s.c_str(), "%lld:%lldx%lld:%31s", &b, &h, &w, act) != 4 || b < 1 || h < 16 || w < 16)
    throw std::invalid_argument("--config '" + s + "': expected B:HxW:ACT with B >= 1 and sides >= 16, e.g. 16:160x240:relu");
  c.batch = b;
  c.height = h;
  c.width = w;
  c.activation = act;
  c.name = s;
  nn::make_activation(c.activation);  // validates the name
  return c;
}

struct Options {
  std::vector<Config> configs;
  Device device = Device::cuda(0);
  int iters = 20, warmup = 5;
  std::string mode = "both";
  bool tf32 = false, json = false, profile = false, gemm = false;
};

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double mib(size_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

std::string json_list(const std::vector<double>& v) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < v.size(); ++i) os << (i ? ", " : "") << v[i];
  return os.str() + "]";
}

std::string json_number(const std::vector<double>& v, double value) {
  return v.empty() ? "null" : std::to_string(value);
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out += std::string("\\") + ch;
    else if (ch == '\n') out += "\\n";
    else if (static_cast<unsigned char>(ch) < 0x20) out += ' ';
    else out += ch;
  }
  return out + "\"";
}

// GPU milliseconds of each of `iters` calls of f after `warmup` untimed ones, each between two CUDA
// events on the device's stream. elapsed_ms() waits for the step, so every step starts on an idle GPU
// and includes the host's launch gaps, as torch.cuda.Event timing of an eager step does.
template <typename F>
std::vector<double> time_steps(int device, int iters, int warmup, const F& f) {
  cuda::EventTimer timer(device);
  std::vector<double> ms;
  for (int i = 0; i < warmup + iters; ++i) {
    timer.start();
    f();
    timer.stop();
    const double t = timer.elapsed_ms();
    if (i >= warmup) ms.push_back(t);
  }
  return ms;
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

// One profiled call of f. The process runs with CUDA_LAUNCH_BLOCKING=1 (see main), so each op's host
// scope lasts until its kernels finish and the profiler's host times are GPU times plus launch cost.
template <typename F>
void print_profile(const char* what, const Config& c, const Options& o, const F& f) {
  const int dev = o.device.index;
  cuda::synchronize(dev);
  profile::reset();
  profile::set_enabled(true);
  const double t0 = now_ms();
  f();
  cuda::synchronize(dev);
  const double step_ms = now_ms() - t0;
  profile::set_enabled(false);
  const auto entries = profile::snapshot();
  std::printf("\nprofile of one %s, %s, %s, %s (%.1f ms with CUDA_LAUNCH_BLOCKING=1):\n", what, c.name.c_str(),
              o.tf32 ? "tf32" : "fp32", o.device.str().c_str(), step_ms);
  std::printf("  %-24s %10s %7s %8s %10s\n", "layer kind", "ms", "share", "calls", "TFLOP/s");
  double accounted = 0;
  for (int k = 0; k < profile::kKinds; ++k) {
    const profile::Entry& e = entries[static_cast<size_t>(k)];
    accounted += e.seconds * 1e3;
    if (e.calls == 0) continue;
    std::printf("  %-24s %10.2f %6.1f%% %8lld", profile::kind_name(static_cast<profile::Kind>(k)), e.seconds * 1e3,
                100 * e.seconds * 1e3 / step_ms, static_cast<long long>(e.calls));
    if (e.flops > 0 && e.seconds > 0) std::printf(" %10.2f", e.flops / e.seconds / 1e12);
    std::printf("\n");
  }
  std::printf("  %-24s %10.2f %6.1f%%\n", "other (graph, launches)", step_ms - accounted,
              100 * (step_ms - accounted) / step_ms);
}

struct Result {
  std::vector<double> fwd, train;
  double fwd_peak_mb = 0, train_peak_mb = 0, fwd_gflop = 0, train_gflop = 0;
};

Result run_config(const Config& c, const Options& o) {
  const int dev = o.device.index;
  nn::UNetConfig uc;
  uc.activation = c.activation;
  Generator g(0);
  nn::UNet model(uc, &g);  // default widths 64,128,256,512, as bench_unet and torch_unet_gpu.py
  model.to(o.device);
  Tensor x = randn({c.batch, 3, c.height, c.width}, kFloat32, &g).to(o.device);  // (B, 3, H, W)
  Tensor target;  // (B, 1, H', W'), made at the first step from the logits' shape
  Result r;

  if (o.mode != "train") {
    model.eval();
    NoGradGuard no_grad;
    auto forward = [&] { model.forward(x); };
    cuda::reset_peak_stats(dev);
    r.fwd_gflop = counted_gflop(forward);
    if (o.profile) {
      for (int i = 0; i < o.warmup; ++i) forward();
      print_profile("forward (eval, no grad)", c, o, forward);
    } else {
      r.fwd = time_steps(dev, o.iters, o.warmup, forward);
    }
    r.fwd_peak_mb = mib(cuda::allocator_stats(dev).peak_allocated_bytes);
  }
  if (o.mode != "forward") {
    model.train();
    optim::Adam opt(model.named_parameters(), optim::AdamOptions{.lr = 1e-3});
    auto step = [&] {
      model.zero_grad();
      Tensor y = model.forward(x);
      if (!target.defined()) target = gt(rand(y.shape(), kFloat32, &g), 0.5).to(kFloat32).to(o.device);
      binary_cross_entropy_with_logits(y, target).backward();
      opt.step();
    };
    cuda::reset_peak_stats(dev);  // the peak includes Adam's state, made at the first step
    r.train_gflop = counted_gflop(step);
    if (o.profile) {
      for (int i = 0; i < o.warmup; ++i) step();
      print_profile("train step", c, o, step);
    } else {
      r.train = time_steps(dev, o.iters, o.warmup, step);
    }
    r.train_peak_mb = mib(cuda::allocator_stats(dev).peak_allocated_bytes);
  }
  cuda::synchronize(dev);
  return r;
}

void print_result(const Config& c, const Options& o, const Result& r) {
  const double f_med = r.fwd.empty() ? 0 : median(r.fwd), t_med = r.train.empty() ? 0 : median(r.train);
  const double f_min = r.fwd.empty() ? 0 : *std::min_element(r.fwd.begin(), r.fwd.end());
  const double t_min = r.train.empty() ? 0 : *std::min_element(r.train.begin(), r.train.end());
  const char* precision = o.tf32 ? "tf32" : "fp32";
  if (o.json) {
    std::printf("{\"impl\": \"torchlet\", \"device\": \"%s\", \"precision\": \"%s\", \"config\": \"%s\", "
                "\"batch\": %lld, \"height\": %lld, \"width\": %lld, \"activation\": \"%s\", \"iters\": %d, "
                "\"warmup\": %d, \"forward_ms_median\": %s, \"forward_ms_min\": %s, \"train_step_ms_median\": %s, "
                "\"train_step_ms_min\": %s, \"forward_ms_all\": %s, \"train_step_ms_all\": %s, "
                "\"forward_peak_mb\": %s, \"train_step_peak_mb\": %s, \"forward_gflop\": %.3f, "
                "\"train_step_gflop\": %.3f}\n",
                o.device.str().c_str(), precision, c.name.c_str(), static_cast<long long>(c.batch),
                static_cast<long long>(c.height), static_cast<long long>(c.width), c.activation.c_str(), o.iters,
                o.warmup, json_number(r.fwd, f_med).c_str(), json_number(r.fwd, f_min).c_str(),
                json_number(r.train, t_med).c_str(), json_number(r.train, t_min).c_str(), json_list(r.fwd).c_str(),
                json_list(r.train).c_str(), o.mode == "train" ? "null" : std::to_string(r.fwd_peak_mb).c_str(),
                o.mode == "forward" ? "null" : std::to_string(r.train_peak_mb).c_str(), r.fwd_gflop, r.train_gflop);
  } else if (!o.profile) {
    std::printf("%-18s %s %s: forward %8.2f ms (%6.2f TFLOP/s, peak %6.0f MiB)  train step %8.2f ms (%6.2f TFLOP/s, "
                "peak %6.0f MiB)\n",
                c.name.c_str(), precision, o.device.str().c_str(), f_med, f_med > 0 ? r.fwd_gflop / f_med : 0,
                r.fwd_peak_mb, t_med, t_med > 0 ? r.train_gflop / t_med : 0, r.train_peak_mb);
  }
}

// The device's GEMM ceiling at the chosen precision: an N x N x N float32 matmul, median of 10 after 2.
void run_gemm(const Options& o) {
  Generator g(0);
  Tensor a = randn({kGemmN, kGemmN}, kFloat32, &g).to(o.device), b = randn({kGemmN, kGemmN}, kFloat32, &g).to(o.device);
  const std::vector<double> ms = time_steps(o.device.index, 10, 2, [&] { matmul(a, b); });
  const double tflops = 2.0 * static_cast<double>(kGemmN * kGemmN) * static_cast<double>(kGemmN) / (median(ms) * 1e-3) / 1e12;
  if (o.json)
    std::printf("{\"impl\": \"torchlet\", \"device\": \"%s\", \"precision\": \"%s\", \"gemm_n\": %lld, \"gemm_tflops\": %.3f}\n",
                o.device.str().c_str(), o.tf32 ? "tf32" : "fp32", static_cast<long long>(kGemmN), tflops);
  else
    std::printf("SGEMM %lld^3 (cuBLAS, %s) on %s: %.2f TFLOP/s, median of 10\n", static_cast<long long>(kGemmN),
                o.tf32 ? "tf32" : "fp32", o.device.str().c_str(), tflops);
}

Options parse_flags(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    if (a == "--config") o.configs.push_back(parse_config(value()));
    else if (a == "--device") o.device = Device::parse(value());
    else if (a == "--iters") o.iters = std::stoi(value());
    else if (a == "--warmup") o.warmup = std::stoi(value());
    else if (a == "--mode") o.mode = value();
    else if (a == "--tf32") o.tf32 = true;
    else if (a == "--json") o.json = true;
    else if (a == "--profile") o.profile = true;
    else if (a == "--gemm") o.gemm = true;
    else if (a == "--no-fuse") nn::set_fusion(false);
    else throw std::invalid_argument("unknown flag " + a);
  }
  if (!o.device.is_cuda()) throw std::invalid_argument("--device must be cuda or cuda:N, got " + o.device.str());
  if (o.mode != "both" && o.mode != "forward" && o.mode != "train")
    throw std::invalid_argument("--mode must be both, forward or train, got '" + o.mode + "'");
  if (o.iters < 1 || o.warmup < 0) throw std::invalid_argument("--iters must be >= 1 and --warmup >= 0");
  if (o.profile && o.json) throw std::invalid_argument("--profile prints tables, not JSON: drop --json");
  if (o.configs.empty())
    for (const char* s : kDefaultConfigs) o.configs.push_back(parse_config(s));
  return o;
}

void print_help() {
  std::printf(
      "usage: bench_unet_gpu [--config B:HxW:ACT ...] [--device cuda:0] [--iters 20] [--warmup 5]\n"
      "                      [--mode both|forward|train] [--tf32] [--json] [--profile] [--gemm] [--no-fuse]\n"
      "Times the default-width UNet's forward (eval, no grad) and train step (forward, BCE-with-logits,\n"
      "backward, Adam) on a GPU: each step between two CUDA events, median and min of --iters steps after\n"
      "--warmup untimed ones, and the allocator's peak allocated memory.\n"
      "  --tf32     TF32 GEMMs (tensor cores); strict fp32 otherwise\n"
      "  --json     one JSON line per config (an \"error\" key when that config failed)\n"
      "  --profile  instead of timing: one forward and one train step by layer kind, run with\n"
      "             CUDA_LAUNCH_BLOCKING=1 so each op's host time covers its kernels\n"
      "  --gemm     also time a %lld^3 float32 matmul first (the cuBLAS ceiling)\n"
      "  --no-fuse  batch norm and its activation as two ops (to measure the fusion)\n"
      "Default configs: 16:160x240 and 4:320x480, each with relu, gelu, silu, pysilu.\n"
      "Exit status: 0, 1 when a config failed, 2 for bad flags, %d without a usable CUDA device.\n",
      static_cast<long long>(kGemmN), kExitNoDevice);
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
      print_help();
      return 0;
    }
  Options o;
  try {
    o = parse_flags(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_unet_gpu: %s (see --help)\n", e.what());
    return 2;
  }
  // The CUDA runtime reads this when it initializes, which has not happened yet: no CUDA call so far.
  if (o.profile) setenv("CUDA_LAUNCH_BLOCKING", "1", 1);
  set_allow_tf32(o.tf32);
  try {
    cuda::check_device(o.device.index);
  } catch (const std::exception& e) {
    const std::string why = cuda::device_count_error();
    std::fprintf(stderr, "bench_unet_gpu: %s%s; this benchmark needs a GPU\n", e.what(),
                 why.empty() ? "" : (" (counting devices failed: " + why + ")").c_str());
    return kExitNoDevice;
  }

  int failed = 0;
  if (o.gemm) {
    try {
      run_gemm(o);
    } catch (const std::exception& e) {
      ++failed;
      std::fprintf(stderr, "bench_unet_gpu: gemm: %s\n", e.what());
      if (o.json)
        std::printf("{\"impl\": \"torchlet\", \"device\": \"%s\", \"precision\": \"%s\", \"gemm_n\": %lld, \"error\": %s}\n",
                    o.device.str().c_str(), o.tf32 ? "tf32" : "fp32", static_cast<long long>(kGemmN),
                    json_string(e.what()).c_str());
    }
    std::fflush(stdout);
  }
  for (const Config& c : o.configs) {
    // A failed config (out of memory, a missing kernel) is reported and the next one still runs.
    try {
      print_result(c, o, run_config(c, o));
    } catch (const std::exception& e) {
      ++failed;
      std::fprintf(stderr, "bench_unet_gpu: %s: %s\n", c.name.c_str(), e.what());
      if (o.json)
        std::printf("{\"impl\": \"torchlet\", \"device\": \"%s\", \"precision\": \"%s\", \"config\": \"%s\", "
                    "\"batch\": %lld, \"height\": %lld, \"width\": %lld, \"activation\": \"%s\", \"error\": %s}\n",
                    o.device.str().c_str(), o.tf32 ? "tf32" : "fp32", c.name.c_str(), static_cast<long long>(c.batch),
                    static_cast<long long>(c.height), static_cast<long long>(c.width), c.activation.c_str(),
                    json_string(e.what()).c_str());
    }
    std::fflush(stdout);
    try {
      cuda::empty_cache();  // the next config's shapes share no blocks with this one's
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench_unet_gpu: %s\n", e.what());  // a broken context: the next config says so too
    }
  }
  return failed ? 1 : 0;
}
