// The trainer: metrics definitions, the run config, and end-to-end runs on the synthetic set: the
// loss falls and the dice passes a threshold, resuming is bit-identical to an uninterrupted run,
// Ctrl-C saves a checkpoint that resumes, a diverging run stops with a clear error.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "nn/safetensors.h"
#include "tests/test_util.h"
#include "train/metrics.h"
#include "train/trainer.h"

#if TL_WITH_CUDA
#include "cuda/runtime.h"
#endif

using namespace tl;
using namespace tl::train;
namespace fs = std::filesystem;

namespace {

struct TempDir : tl::testing::TempDir {
  TempDir() : tl::testing::TempDir("tl_test_train") {}
};

// A small, fast run: 4 cars of 8 views (3 train, 1 validation), a two-level UNet at 64x96.
TrainConfig small_config(const fs::path& out) {
  TrainConfig c;
  c.synthetic_count = 32;
  c.val_fraction = 0.25;
  c.height = 64;
  c.width = 96;
  c.features = {8, 16};
  c.epochs = 2;
  c.batch_size = 4;
  c.lr = 3e-3;
  c.workers = 1;
  c.threads = 2;
  c.device = "cpu";  // bit-identical resumes are a CPU promise; test_cuda covers the GPU
  c.quiet = true;
  c.out = out.string();
  return c;
}

std::string read_text(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// metrics.csv without its last column (seconds), which is wall time.
std::string metrics_without_seconds(const fs::path& p) {
  std::stringstream in(read_text(p)), out;
  std::string line;
  while (std::getline(in, line)) out << line.substr(0, line.rfind(',')) << "\n";
  return out.str();
}

Tensor logits_of(const std::vector<float>& z) { return from_vector(z, {1, 1, 1, static_cast<int64_t>(z.size())}); }

}  // namespace

TEST_CASE("metrics: thresholded dice, soft dice and accuracy by their definitions") {
  SegmentationMetrics m;
  // predictions (logit > 0): 1 1 0 0 ; truth: 1 0 1 0 -> |P∩T| = 1, |P| = 2, |T| = 2
  m.add(logits_of({2.f, 1.f, -1.f, -3.f}), logits_of({1.f, 0.f, 1.f, 0.f}), 0.5);
  CHECK(m.dice() == doctest::Approx(0.5));
  CHECK(m.accuracy() == doctest::Approx(0.5));
  auto sig = [](double z) { return 1 / (1 + std::exp(-z)); };
  const double pt = sig(2) + sig(-1), p = sig(2) + sig(1) + sig(-1) + sig(-3);
  CHECK(m.dice_soft() == doctest::Approx((2 * pt + 1) / (p + 2 + 1)).epsilon(1e-12));
  CHECK(m.loss() == doctest::Approx(0.5));

  // Splitting the pixels into batches changes nothing but the loss weighting.
  SegmentationMetrics a, b;
  a.add(logits_of({2.f, 1.f}), logits_of({1.f, 0.f}), 0.5);
  b.add(logits_of({-1.f, -3.f}), logits_of({1.f, 0.f}), 0.5);
  a.merge(b);
  CHECK(a.dice() == m.dice());
  CHECK(a.dice_soft() == doctest::Approx(m.dice_soft()).epsilon(1e-15));

  SegmentationMetrics empty;  // nothing predicted, nothing true: a perfect score
  empty.add(logits_of({-1.f, -2.f}), logits_of({0.f, 0.f}), 0.1);
  CHECK(empty.dice() == 1.0);
  CHECK_THROWS_WITH_AS(m.add(logits_of({1.f}), logits_of({1.f, 0.f}), 0), doctest::Contains("differ in shape"),
                       std::invalid_argument);
}

TEST_CASE("config: JSON round trip and validation messages") {
  TrainConfig c = small_config("runs/x");
  c.activation = "pysilu";
  c.scheduler = "cosine";
  c.weight_decay = 0.25;
  const TrainConfig r = TrainConfig::from_json(c.to_json());
  CHECK(r.to_json() == c.to_json());
  CHECK(r.features == std::vector<int64_t>{8, 16});
  CHECK(r.height == 64);
  CHECK(r.width == 96);
  CHECK(TrainConfig{}.resolved_weight_decay() == 0.0);
  TrainConfig w;
  w.optimizer = "adamw";
  CHECK(w.resolved_weight_decay() == 0.01);

  c = small_config("runs/x");
  c.height = 66;  // not a multiple of 4 for two pooling levels
  CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("--image-size 66x96: height and width must be positive multiples of 4"),
                       std::invalid_argument);
  c = small_config("runs/x");
  c.optimizer = "rmsprop";
  CHECK_THROWS_WITH_AS(c.validate(), "--optimizer: expected adam|adamw|sgd, got 'rmsprop'", std::invalid_argument);
  c = small_config("runs/x");
  c.train_csv = "a.csv";
  CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("--train-csv and --val-csv go together"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(TrainConfig::from_json("{\"bogus\": 1}"), "train config: unknown key 'bogus'", std::runtime_error);

  // The device: auto, cpu, cuda or cuda:N (whether that GPU is there is train()'s question).
  c = small_config("runs/x");
  for (const char* d : {"auto", "cpu", "cuda", "cuda:1"}) {
    c.device = d;
    CHECK_NOTHROW(c.validate());
  }
  c.device = "gpu";
  CHECK_THROWS_WITH_AS(c.validate(), "--device: expected auto, cpu, cuda or cuda:N, got 'gpu'", std::invalid_argument);
  c.device = "cuda:1";
  c.tf32 = true;
  CHECK(TrainConfig::from_json(c.to_json()).to_json() == c.to_json());
  CHECK(c.to_json().find("\"tf32\": true") != std::string::npos);
}

TEST_CASE("train: a CUDA device that is not there is one clear error, before anything is written") {
#if TL_WITH_CUDA
  if (cuda::device_count() > 0) return;  // the GPU run is test_cuda's
  const std::string why = "--device cuda: no CUDA device is available";
#else
  const std::string why = "--device cuda: this build has no CUDA backend";
#endif
  TempDir dir;
  TrainConfig c = small_config(dir.path / "run");
  c.device = "cuda";
  std::ostringstream console;
  CHECK_THROWS_WITH_AS(train::train(c, console, false), doctest::Contains(why.c_str()), std::runtime_error);
  CHECK_FALSE(fs::exists(dir.path / "run"));
  CHECK(console.str().empty());
}

TEST_CASE("train: on the synthetic set the loss falls and the dice passes 0.7; outputs are complete") {
  TempDir dir;
  TrainConfig c = small_config(dir.path / "run");
  c.synthetic_count = 48;  // 6 cars: 4 to train on (32 images), 2 to validate
  c.features = {8, 16, 32};
  c.lr = 1e-2;
  c.epochs = 6;
  std::ostringstream console;
  const TrainResult r = train::train(c, console, false);
  INFO(console.str());
  CHECK(r.stop == StopReason::Finished);
  CHECK(r.epochs_done == 6);
  CHECK(r.steps == 6 * 8);  // 32 training images, batch 4
  CHECK(r.last_train_loss < 0.5 * r.first_train_loss);
  CHECK(r.best_val_dice > 0.7);
  for (const char* f : {"config.json", "metrics.csv", "log.txt", "train.csv", "val.csv", "last.safetensors", "best.safetensors"})
    CHECK_MESSAGE(fs::exists(dir.path / "run" / f), f);
  const std::string metrics = read_text(dir.path / "run" / "metrics.csv");
  CHECK(metrics.rfind(std::string(kMetricsColumns) + "\n", 0) == 0);
  CHECK(std::count(metrics.begin(), metrics.end(), '\n') == 7);
  // config.json lists every setting, defaults included, and reads back.
  const TrainConfig back = TrainConfig::from_json(read_text(dir.path / "run" / "config.json"));
  CHECK(back.to_json() == c.to_json());
  CHECK(read_text(dir.path / "run" / "log.txt").find("loader workers, device cpu\n") != std::string::npos);
  // The checkpoint alone tells the config of its run.
  CHECK(config_from_checkpoint((dir.path / "run" / "last.safetensors").string()).to_json() == c.to_json());
  // A second run into the same folder would lose the first: refused.
  CHECK_THROWS_WITH_AS(train::train(c, console, false), doctest::Contains("already holds a run"), std::runtime_error);
}

TEST_CASE("train: resuming from the middle of an epoch is bit-identical to an uninterrupted run") {
  TempDir dir;
  std::ostringstream console;
  const TrainConfig full = small_config(dir.path / "full");
  train::train(full, console, false);

  TrainConfig part = small_config(dir.path / "part");
  part.max_steps = 8;  // epoch 2, batch 2 of 6
  const TrainResult first = train::train(part, console, false);
  CHECK(first.stop == StopReason::MaxSteps);
  CHECK(first.steps == 8);
  TrainConfig resumed = part;
  resumed.max_steps = 0;
  resumed.resume = (dir.path / "part" / "last.safetensors").string();
  const TrainResult second = train::train(resumed, console, false);
  CHECK(second.stop == StopReason::Finished);
  CHECK(second.steps == 12);

  const auto a = safetensors::load((dir.path / "full" / "last.safetensors").string());
  const auto b = safetensors::load((dir.path / "part" / "last.safetensors").string());
  REQUIRE(a.tensors.size() == b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    INFO(a.tensors[i].first);
    REQUIRE(a.tensors[i].first == b.tensors[i].first);
    CHECK(a.tensors[i].second.to_vector<float>() == b.tensors[i].second.to_vector<float>());
  }
  CHECK(metrics_without_seconds(dir.path / "full" / "metrics.csv") ==
        metrics_without_seconds(dir.path / "part" / "metrics.csv"));
}

TEST_CASE("train: Ctrl-C saves last.safetensors and the run resumes from it") {
  TempDir dir;
  TrainConfig c = small_config(dir.path / "run");
  c.epochs = 50;  // far longer than the test waits
  std::ostringstream console;
  TrainResult r;
  std::thread run([&] { r = train::train(c, console, false); });
  // The handler is installed before config.json is written; interrupt once training has started.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!fs::exists(dir.path / "run" / "config.json") && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  std::raise(SIGINT);
  run.join();
  CHECK(r.stop == StopReason::Interrupted);
  REQUIRE(fs::exists(dir.path / "run" / "last.safetensors"));
  TrainConfig resumed = c;
  resumed.epochs = r.epochs_done + 1;
  resumed.resume = (dir.path / "run" / "last.safetensors").string();
  const TrainResult done = train::train(resumed, console, false);
  CHECK(done.stop == StopReason::Finished);
  CHECK(done.epochs_done == resumed.epochs);
}

TEST_CASE("train: a diverging run stops with a clear error and writes no bad checkpoint") {
  TempDir dir;
  TrainConfig c = small_config(dir.path / "run");
  c.optimizer = "sgd";
  c.lr = 1e30;
  std::ostringstream console;
  CHECK_THROWS_WITH_AS(train::train(c, console, false), doctest::Contains("training stopped"), TrainingDiverged);
  CHECK_FALSE(fs::exists(dir.path / "run" / "last.safetensors"));
}
