// make_synthetic --out DIR --count N [--size HxW] [--seed S] [--views-per-car K]
// Writes synthetic Carvana-like samples in the Kaggle layout (data/synthetic.h).
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <tuple>

#include "data/synthetic.h"
#include "train/cli.h"

int main(int argc, char** argv) {
  using tl::cli::UsageError;
  tl::cli::Flags flags("make_synthetic",
                       "Writes synthetic Carvana-like studio photos of cars and their masks in the Kaggle layout:\n"
                       "DIR/train/<car>_<NN>.jpg and DIR/train_masks/<car>_<NN>_mask.png. Deterministic by seed;\n"
                       "existing files of the same names are replaced, nothing else is touched.");
  std::string out, size = "320x480";
  int64_t count = 0, seed = 20, views = 8;
  flags.add("--out", &out, "dataset folder to write (required)");
  flags.add("--count", &count, "number of samples (required)");
  flags.add("--size", &size, "frame size HxW, at least 32x48");
  flags.add("--seed", &seed, "random seed (>= 0)");
  flags.add("--views-per-car", &views, "photos per car, 1 to 99");
  return tl::cli::run_main("make_synthetic", [&] {
    if (!flags.parse(argc, argv)) return 0;
    if (out.empty()) throw UsageError("--out is required");
    if (!flags.was_set("--count")) throw UsageError("--count is required");
    if (count < 1) throw UsageError("--count must be positive, got " + std::to_string(count));
    if (seed < 0) throw UsageError("--seed must be >= 0, got " + std::to_string(seed));
    tl::data::SyntheticOptions options;
    std::tie(options.height, options.width) = tl::cli::parse_size("--size", size);
    options.seed = static_cast<uint64_t>(seed);
    options.views_per_car = views;
    try {
      options.check();
    } catch (const std::invalid_argument& e) {
      throw UsageError(e.what());
    }
    const auto start = std::chrono::steady_clock::now();
    tl::data::write_synthetic(out, count, options);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const int64_t cars = (count + views - 1) / views;
    std::printf("wrote %lld samples (%lld cars) to %s in %.2f s\n", static_cast<long long>(count),
                static_cast<long long>(cars), out.c_str(), seconds);
    return 0;
  });
}
