// bench_dist: data-parallel training steps on the CPU under mpirun, with the time the step waits for
// the gradient all-reduce and the timeline of one step's buckets. See bench/README.md.
//
//   bench_dist [--global-batch 2] [--size 160x240] [--features 64,128,256,512] [--threads N]
//              [--steps 4] [--warmup 1] [--bucket-mb 25] [--sync-bn]
//   mpirun --oversubscribe -np 2 bench_dist --threads 1      # 2 ranks x 1 thread
//   bench_dist --threads 2                                   # 1 rank x 2 threads, same global batch
// Each rank runs global-batch / ranks images per step (forward, BCE, backward with the bucketed
// all-reduce, Adam). Rank 0 prints the medians over --steps and the last step's bucket timeline.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "dist/ddp.h"
#include "dist/sync_batch_norm.h"
#include "nn/optim.h"
#include "nn/unet.h"
#include "tensor/parallel.h"
#include "tensor/random.h"

using namespace tl;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::vector<int64_t> ints(const std::string& s) {
  std::vector<int64_t> out;
  size_t at = 0;
  while (at <= s.size()) {
    const size_t comma = s.find(',', at);
    out.push_back(std::stoll(s.substr(at, comma - at)));
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  return out;
}

int run(int argc, char** argv, dist::Communicator& comm) {
  int64_t global_batch = 2, height = 160, width = 240, threads = 0, steps = 4, warmup = 1;
  double bucket_mb = 25;
  bool sync_bn = false;
  std::vector<int64_t> features = {64, 128, 256, 512};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + ": missing value");
      return argv[++i];
    };
    if (a == "--global-batch") global_batch = std::stoll(value());
    else if (a == "--size") {
      const std::string v = value();
      const size_t x = v.find('x');
      if (x == std::string::npos) throw std::invalid_argument("--size: expected HxW, got '" + v + "'");
      height = std::stoll(v.substr(0, x));
      width = std::stoll(v.substr(x + 1));
    } else if (a == "--features") features = ints(value());
    else if (a == "--threads") threads = std::stoll(value());
    else if (a == "--steps") steps = std::stoll(value());
    else if (a == "--warmup") warmup = std::stoll(value());
    else if (a == "--bucket-mb") bucket_mb = std::stod(value());
    else if (a == "--sync-bn") sync_bn = true;
    else throw std::invalid_argument("unknown flag " + a);
  }
  if (global_batch % comm.size() != 0 || steps < 1)
    throw std::invalid_argument("--global-batch must be a multiple of the number of ranks, --steps at least 1");
  if (threads > 0) set_num_threads(static_cast<int>(threads));
  const int64_t batch = global_batch / comm.size();

  nn::UNetConfig cfg;
  cfg.features = features;
  Generator gen(20);
  nn::UNet model(cfg, &gen);
  dist::broadcast_module(comm, model);
  if (sync_bn) dist::convert_sync_batchnorm(model, comm);
  optim::Adam opt(model.named_parameters());
  dist::GradReducer reducer(comm, model.named_parameters(), bucket_mb);
  Generator data_gen(100 + static_cast<uint64_t>(comm.rank()));
  const Tensor images = rand({batch, 3, height, width}, {}, &data_gen);
  const Tensor masks = rand({batch, 1, height, width}, {}, &data_gen);

  using Clock = std::chrono::steady_clock;
  std::vector<double> step_ms, fwd_ms, bwd_ms, wait_ms, comm_ms;
  for (int64_t s = 0; s < warmup + steps; ++s) {
    comm.barrier();  // every rank starts the step together
    const auto t0 = Clock::now();
    opt.zero_grad(true);
    if (!sync_bn) dist::broadcast_buffers(comm, model);
    const Tensor loss = binary_cross_entropy_with_logits(model.forward(images), masks);
    const auto t1 = Clock::now();
    if (comm.size() > 1) reducer.backward(loss);
    else loss.backward();  // one process: the plain backward, no bucket copies (what train_unet runs)
    const auto t2 = Clock::now();
    opt.step();
    const auto t3 = Clock::now();
    if (s < warmup) continue;
    const auto& t = reducer.last_step();
    step_ms.push_back(std::chrono::duration<double, std::milli>(t3 - t0).count());
    fwd_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    bwd_ms.push_back(comm.size() > 1 ? t.backward_ms : std::chrono::duration<double, std::milli>(t2 - t1).count());
    wait_ms.push_back(comm.size() > 1 ? t.wait_ms : 0.0);
    double busy = 0;
    for (const auto& b : t.buckets) busy += b.finished_ms - b.started_ms;
    comm_ms.push_back(busy);
  }
  if (comm.rank() != 0) return 0;
  if (comm.size() == 1) {
    std::printf("bench_dist: 1 process x %d thread(s), batch %lld, %lldx%lld, UNet %lld parameters: median of %lld steps: "
                "step %.0f ms (%.2f img/s), forward %.0f ms, backward %.0f ms\n",
                get_num_threads(), static_cast<long long>(batch), static_cast<long long>(height), static_cast<long long>(width),
                static_cast<long long>(model.num_parameters()), static_cast<long long>(steps), median(step_ms),
                1000.0 * static_cast<double>(global_batch) / median(step_ms), median(fwd_ms), median(bwd_ms));
    return 0;
  }
  size_t bytes = 0;
  for (const auto& b : reducer.last_step().buckets) bytes += b.bytes;
  std::printf("bench_dist: %d rank(s) x %d thread(s), %lld image(s) per rank (global batch %lld), %lldx%lld, UNet %lld "
              "parameters, %zu buckets (%.1f MB of gradients), %s batch norm\n",
              comm.size(), get_num_threads(), static_cast<long long>(batch), static_cast<long long>(global_batch),
              static_cast<long long>(height), static_cast<long long>(width), static_cast<long long>(model.num_parameters()),
              reducer.num_buckets(), static_cast<double>(bytes) / 1e6, sync_bn ? "synchronized" : "per-rank");
  const double step = median(step_ms), wait = median(wait_ms);
  std::printf("median of %lld steps: step %.0f ms (%.2f img/s), forward %.0f ms, backward %.0f ms, waiting after "
              "backward %.1f ms (%.1f%% of the step), all-reduce busy %.0f ms\n",
              static_cast<long long>(steps), step, 1000.0 * static_cast<double>(global_batch) / step, median(fwd_ms),
              median(bwd_ms), wait, 100.0 * wait / step, median(comm_ms));
  std::printf("bucket timeline of the last step (ms from the start of backward; backward ended at %.1f):\n",
              reducer.last_step().backward_ms);
  std::printf("  bucket  params      MB   ready  started  finished\n");
  const auto& buckets = reducer.last_step().buckets;
  for (size_t k = 0; k < buckets.size(); ++k)
    std::printf("  %6zu  %6zu  %6.2f  %6.1f  %7.1f  %8.1f\n", k, buckets[k].params, static_cast<double>(buckets[k].bytes) / 1e6,
                buckets[k].ready_ms, buckets[k].started_ms, buckets[k].finished_ms);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  dist::Communicator* comm = nullptr;
  try {
    comm = &dist::init(&argc, &argv);
    const int rc = run(argc, argv, *comm);
    dist::finalize();
    return rc;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_dist: %s\n", e.what());
    if (comm && comm->size() > 1) comm->abort(1);
    return 1;
  }
}
