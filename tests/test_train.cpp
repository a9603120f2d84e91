// The trainer: metrics definitions, the run config, and end-to-end runs on the synthetic set: the
// loss falls and the dice passes a threshold, resuming is bit-identical to an uninterrupted run,
// Ctrl-C saves a checkpoint that resumes, a diverging run stops with a clear error.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "data/image.h"
#include "data/split.h"
#include "data/synthetic.h"
#include "nn/safetensors.h"
#include "tests/test_util.h"
#include "train/metrics.h"
#include "train/run_folder.h"
#include "train/trainer.h"

#if TL_WITH_CUDA
#include "cuda/runtime.h"
#endif

using namespace tl;
using namespace tl::train;
namespace fs = std::filesystem;
using tl::testing::read_text;
using tl::testing::metrics_without_seconds;

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

// --init: a new run (fresh optimizer, schedule and position) from another run's weights, at another
// image size. With lr 1e-12 its steps cannot move a float32 weight measurably, so its last
// checkpoint must still hold the first run's weights; a run without --init must not.
TEST_CASE("train: --init starts a new run from a checkpoint's weights, at another image size") {
  TempDir dir;
  std::ostringstream console;
  train::train(small_config(dir.path / "first"), console, false);
  const std::string first = (dir.path / "first" / "best.safetensors").string();

  auto fine_tune = [&](const char* name, const std::string& init) {
    TrainConfig c = small_config(dir.path / name);
    c.height = 32;
    c.width = 48;
    c.epochs = 1;
    c.lr = 1e-12;
    c.init = init;
    const TrainResult r = train::train(c, console, false);
    CHECK(r.stop == StopReason::Finished);
    CHECK(r.steps == 6);  // a fresh position: all of epoch 1
    return safetensors::load((dir.path / name / "last.safetensors").string());
  };
  const auto from_first = fine_tune("tuned", first);
  const auto fresh = fine_tune("fresh", "");
  const auto original = safetensors::load(first);
  auto weights = [](const auto& file) {
    std::map<std::string, std::vector<float>> w;
    for (const auto& [name, t] : file.tensors)
      if (name.rfind("optim.", 0) != 0 && name.find("running_") == std::string::npos && name.find("num_batches") == std::string::npos)
        w[name] = t.template to_vector<float>();
    return w;
  };
  const auto w0 = weights(original), w1 = weights(from_first), w2 = weights(fresh);
  REQUIRE(w0.size() == w1.size());
  REQUIRE(w0.size() > 4);
  double worst_tuned = 0, worst_fresh = 0;  // max abs difference to the first run's weights
  for (const auto& [name, v] : w0) {
    REQUIRE(w1.count(name));
    for (size_t i = 0; i < v.size(); ++i) {
      worst_tuned = std::max(worst_tuned, std::abs(double(v[i]) - w1.at(name)[i]));
      worst_fresh = std::max(worst_fresh, std::abs(double(v[i]) - w2.at(name)[i]));
    }
  }
  INFO("worst |tuned - first| " << worst_tuned << ", worst |fresh - first| " << worst_fresh << " (tolerance 1e-8)");
  CHECK(worst_tuned < 1e-8);
  CHECK(worst_fresh > 1e-3);
  CHECK(read_text(dir.path / "tuned" / "log.txt").find("weights from " + first) != std::string::npos);
  CHECK(TrainConfig::from_json(read_text(dir.path / "tuned" / "config.json")).init == first);

  // Another architecture: one error naming the checkpoint and both models, before any step.
  TrainConfig other = small_config(dir.path / "other");
  other.features = {4, 8};
  other.init = first;
  CHECK_THROWS_WITH_AS(train::train(other, console, false), doctest::Contains("is not the run's (features 4,8"), std::runtime_error);
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

TEST_CASE("train: data that cannot be split by car is one clear error, or a warning") {
  TempDir dir;
  // A Kaggle layout of 48x64 photos with the given stems.
  auto layout = [&](const std::string& name, const std::vector<std::string>& stems) {
    const fs::path root = dir.path / name;
    fs::create_directories(root / "train");
    fs::create_directories(root / "train_masks");
    for (const std::string& stem : stems) {
      data::write_jpeg((root / "train" / (stem + ".jpg")).string(), data::Image::blank(48, 64, 3, 120));
      data::write_png((root / "train_masks" / (stem + "_mask.png")).string(), data::Image::blank(48, 64, 1, 255));
    }
    return root.string();
  };
  TrainConfig c = small_config(dir.path / "one_car");
  c.data_dir = layout("one", {"car1_01", "car1_02"});
  c.height = 48;
  c.width = 64;
  std::ostringstream console;
  CHECK_THROWS_WITH_AS(train::train(c, console, false),
                       doctest::Contains("the validation split is empty: the data holds one car (car1, 2 images)"),
                       std::runtime_error);

  // Names without the _NN angle suffix: each is its own car, and the run says so.
  c = small_config(dir.path / "no_suffix");
  c.data_dir = layout("flat", {"alpha", "beta", "gamma_03", "delta_x"});
  c.height = 48;
  c.width = 64;
  c.epochs = 1;
  c.quiet = false;
  std::ostringstream out;
  train::train(c, out, false);
  CHECK_MESSAGE(out.str().find("warning: 3 of 4 image names have no _NN angle suffix (e.g. alpha.jpg)") != std::string::npos,
                out.str());

  // A folder given as a split file.
  c = small_config(dir.path / "csv_folder");
  c.train_csv = dir.path.string();
  c.val_csv = dir.path.string();
  CHECK_THROWS_WITH_AS(train::train(c, console, false), doctest::Contains(": is a folder, not a split file"),
                       std::runtime_error);
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

// ---- the run folder (train/run_folder.h): ctest runs these as test_train_run_folder, label reliability ----

namespace {

// A tiny run: two cars of 8 views at 32x48, widths 4,8, one thread.
TrainConfig tiny_config(const fs::path& out) {
  TrainConfig c = small_config(out);
  c.synthetic_count = 16;
  c.val_fraction = 0.5;
  c.height = 32;
  c.width = 48;
  c.features = {4, 8};
  c.batch_size = 2;
  c.threads = 1;
  return c;
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream f(p, std::ios::binary);
  f << text;
}

// As the trainer replaces files: a new file under the name (last and best may be one file, linked).
void replace_with(const fs::path& from, const fs::path& to) {
  fs::remove(to);
  fs::copy_file(from, to);
}

int64_t epoch_of(const fs::path& checkpoint) {
  return std::stoll(safetensors::load(checkpoint.string()).metadata.at("epoch"));
}

}  // namespace

TEST_CASE("run folder: an ordinary folder holding a file the run would write is refused, untouched") {
  TempDir dir;
  const fs::path out = dir.path / "mine";
  fs::create_directories(out);
  write_text(out / "train.csv", "my own notes\n");
  write_text(out / "config.json", "{\"editor\": \"mine\"}\n");
  std::ostringstream console;
  CHECK_THROWS_WITH_AS(train::train(tiny_config(out), console, false),
                       doctest::Contains("holds config.json, train.csv, which this run would overwrite, and is not a run folder"),
                       std::runtime_error);
  CHECK(read_text(out / "train.csv") == "my own notes\n");
  CHECK(read_text(out / "config.json") == "{\"editor\": \"mine\"}\n");
  CHECK_FALSE(fs::exists(out / "val.csv"));
  CHECK_FALSE(fs::exists(out / "log.txt"));
  // Files the run never writes are no reason to refuse, and stay.
  fs::remove(out / "train.csv");
  fs::remove(out / "config.json");
  write_text(out / "README", "keep\n");
  const TrainResult r = train::train(tiny_config(out), console, false);
  CHECK(r.stop == StopReason::Finished);
  CHECK(read_text(out / "README") == "keep\n");
}

TEST_CASE("run folder: a run stopped before its first checkpoint is restartable, and says how") {
  TempDir dir;
  const fs::path out = dir.path / "run";
  std::ostringstream console;
  TrainConfig c = tiny_config(out);
  train::train(c, console, false);
  // What a kill after metrics.csv and before the first checkpoint leaves.
  fs::remove(out / "last.safetensors");
  fs::remove(out / "best.safetensors");
  // Temporary files: ours of a process that is gone (no process has the largest pid), ours of a live
  // process (pid 1), and another program's.
  write_text(out / "last.safetensors.tmp.2147483646.next", "half a checkpoint");
  write_text(out / "metrics.csv.tmp.2147483646.7", "half a table");
  write_text(out / "best.safetensors.tmp.1.link", "a live writer's");
  write_text(out / "notes.txt.tmp.2147483646.1", "not ours");
  TrainConfig resume = c;
  resume.resume = (out / "last.safetensors").string();
  CHECK_THROWS_WITH_AS(train::train(resume, console, false),
                       doctest::Contains("stopped before its first checkpoint, so there is nothing to resume; it is restartable: "
                                         "start it over with: train_unet"),
                       std::runtime_error);
  CHECK(restart_command(c).find("--features 4,8 --epochs 2 --batch-size 2 --lr 0.003") != std::string::npos);
  CHECK(inspect_run_folder(out, c) == FolderState::Restartable);
  std::ostringstream again;
  const TrainResult r = train::train(c, again, false);
  CHECK(r.stop == StopReason::Finished);
  CHECK(again.str().find("starting over: " + out.string() + " held a run that stopped before its first checkpoint") !=
        std::string::npos);
  CHECK_FALSE(fs::exists(out / "last.safetensors.tmp.2147483646.next"));
  CHECK_FALSE(fs::exists(out / "metrics.csv.tmp.2147483646.7"));
  CHECK(fs::exists(out / "best.safetensors.tmp.1.link"));
  CHECK(fs::exists(out / "notes.txt.tmp.2147483646.1"));
  fs::remove(out / "best.safetensors.tmp.1.link");
  CHECK(inspect_run_folder(out, c) == FolderState::Resumable);
  const std::string refusal = "already holds a run (config.json, log.txt, train.csv, val.csv, metrics.csv, last.safetensors, "
                              "best.safetensors, report.html, curves.svg, synthetic/); continue it with: train_unet --resume " +
                              (out / "last.safetensors").string();
  CHECK_THROWS_WITH_AS(train::train(c, again, false), doctest::Contains(refusal.c_str()), std::runtime_error);
}

TEST_CASE("run folder: resuming repairs a checkpoint pair that a kill left one save apart") {
  TempDir dir;
  const fs::path out = dir.path / "run";
  std::ostringstream console;
  TrainConfig c = tiny_config(out);
  c.epochs = 3;
  c.lr = 0.03;     // the best validation dice at epochs 1 and 3
  c.max_steps = 8;  // the end of epoch 2 of 3
  train::train(c, console, false);
  const fs::path older = dir.path / "older.safetensors";
  fs::copy_file(out / "last.safetensors", older);  // epoch 2, best epoch 1
  TrainConfig resume = c;
  resume.max_steps = 0;
  resume.resume = (out / "last.safetensors").string();
  train::train(resume, console, false);
  REQUIRE(safetensors::load((out / "last.safetensors").string()).metadata.at("train.best_epoch") == "3");
  REQUIRE(epoch_of(out / "best.safetensors") == 3);

  SUBCASE("killed between linking best and renaming last: last rolls forward to best") {
    replace_with(older, out / "last.safetensors");
    const std::vector<std::string> notes = repair_for_resume((out / "last.safetensors").string());
    REQUIRE(notes.size() == 1);
    CHECK(notes[0].find("finished the interrupted save of epoch 3") != std::string::npos);
    CHECK(epoch_of(out / "last.safetensors") == 3);
  }
  SUBCASE("killed in the old order, between renaming last and linking best: best is relinked to last") {
    replace_with(older, out / "best.safetensors");
    const std::vector<std::string> notes = repair_for_resume((out / "last.safetensors").string());
    REQUIRE(notes.size() == 1);
    CHECK(notes[0].find("repaired " + (out / "best.safetensors").string() + ": it held epoch 2, the best epoch is 3") !=
          std::string::npos);
    CHECK(epoch_of(out / "best.safetensors") == 3);
    CHECK(read_text(out / "log.txt").find(notes[0]) != std::string::npos);
  }
  SUBCASE("best missing") {
    fs::remove(out / "best.safetensors");
    CHECK(repair_for_resume((out / "last.safetensors").string()).size() == 1);
    CHECK(epoch_of(out / "best.safetensors") == 3);
  }
  CHECK(repair_for_resume((out / "last.safetensors").string()).empty());  // nothing left to do
  // And the resumed run goes on from there.
  resume.epochs = 4;
  CHECK(train::train(resume, console, false).epochs_done == 4);
}

TEST_CASE("run folder: SIGTERM and SIGHUP stop the run as Ctrl-C does, with a checkpoint") {
  for (const int sig : {SIGTERM, SIGHUP}) {
    const auto previous = std::signal(sig, SIG_DFL);  // a SIGHUP ignored (nohup) would stay ignored
    TempDir dir;
    TrainConfig c = tiny_config(dir.path / "run");
    c.epochs = 500;  // far longer than the test waits
    std::ostringstream console;
    TrainResult r;
    std::thread run([&] { r = train::train(c, console, false); });
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (!fs::exists(dir.path / "run" / "metrics.csv") && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::raise(sig);
    run.join();
    CHECK(r.stop == StopReason::Interrupted);
    CHECK(r.signal == sig);
    CHECK(console.str().find(sig == SIGTERM ? "interrupted by SIGTERM" : "interrupted by SIGHUP") != std::string::npos);
    CHECK(inspect_run_folder(dir.path / "run", c) == FolderState::Resumable);
    std::signal(sig, previous);
  }
}

TEST_CASE("run folder: fatal errors reach log.txt with what to do; --threads has a bound") {
  TempDir dir;
  std::ostringstream console;
  TrainConfig c = tiny_config(dir.path / "run");
  c.optimizer = "sgd";
  c.lr = 1e30;
  CHECK_THROWS_AS(train::train(c, console, false), TrainingDiverged);
  CHECK(read_text(dir.path / "run" / "log.txt").find("error: the loss is") != std::string::npos);

  write_text(dir.path / "split.csv", "image,mask\n" + (dir.path / "none.jpg").string() + "," +
                                         (dir.path / "none.png").string() + "\n");
  c = tiny_config(dir.path / "csv");
  c.train_csv = c.val_csv = (dir.path / "split.csv").string();
  std::string message;
  try {
    train::train(c, console, false);
  } catch (const std::runtime_error& e) {
    message = e.what();
  }
  CHECK(message.find("none.jpg") != std::string::npos);
  CHECK(message.find("the run folder is restartable: start it over with: train_unet --train-csv") != std::string::npos);
  CHECK(read_text(dir.path / "csv" / "log.txt").find("error: " + message) != std::string::npos);

  c = tiny_config(dir.path / "x");
  c.threads = 100000;
  CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("--threads 100000: at most"), std::invalid_argument);
  c.threads = 1;
  CHECK_NOTHROW(c.validate());
}

TEST_CASE("train: the seed's split files with bare names train against --data-dir") {
  TempDir dir;
  const fs::path data = dir.path / "carvana";
  data::SyntheticOptions so;
  so.height = 64;
  so.width = 96;
  data::write_synthetic(data.string(), 16, so);  // cars synth0000 and synth0001, 8 views each
  std::ofstream train_csv(dir.path / "train_desc.csv"), val_csv(dir.path / "test_desc.csv");
  train_csv << "image,mask\n";
  val_csv << "image,mask\n";
  for (const auto& e : fs::directory_iterator(data / "train")) {
    const std::string name = e.path().filename().string(), stem = e.path().stem().string();
    (stem.rfind("synth0000", 0) == 0 ? train_csv : val_csv) << name << "," << stem << "_mask.png\n";
  }
  train_csv.close();
  val_csv.close();
  TrainConfig c = tiny_config(dir.path / "run");
  c.data_dir = data.string();
  c.train_csv = (dir.path / "train_desc.csv").string();
  c.val_csv = (dir.path / "test_desc.csv").string();
  c.epochs = 1;
  std::ostringstream console;
  const TrainResult r = train::train(c, console, false);
  CHECK(r.stop == StopReason::Finished);
  CHECK(r.epochs_done == 1);
  const std::string line = "(bare names in " + data.string() + "); train 8 images of 1 cars, validation 8 images of 1 cars";
  CHECK_MESSAGE(console.str().find(line) != std::string::npos, console.str());
  // The run's own split files name the files in data/train and data/train_masks, absolutely.
  const std::vector<data::Sample> used = data::read_split_csv((dir.path / "run" / "val.csv").string());
  REQUIRE(used.size() == 8);
  for (const data::Sample& x : used) {
    CHECK(fs::path(x.image).is_absolute());
    CHECK(fs::path(x.image).parent_path() == fs::absolute(data / "train"));
    CHECK(fs::path(x.mask).parent_path() == fs::absolute(data / "train_masks"));
  }
  // Without --data-dir the same names are relative to the CSV's folder, where they are not.
  TrainConfig plain = c;
  plain.data_dir.clear();
  plain.out = (dir.path / "run2").string();
  const std::string missing = (dir.path / "synth0000_01.jpg").string() + ": no such file";
  CHECK_THROWS_WITH_AS(train::train(plain, console, false), doctest::Contains(missing.c_str()), std::runtime_error);
}
