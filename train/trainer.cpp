#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <ostream>
#include <sstream>
#include <thread>

#include "autograd/grad_mode.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data/split.h"
#include "data/synthetic.h"
#include "nn/checkpoint.h"
#include "nn/lr_scheduler.h"
#include "nn/unet.h"
#include "tensor/parallel.h"
#include "tensor/precision.h"
#include "train/data_cache.h"
#include "train/data_parallel.h"
#include "train/metrics.h"
#include "train/progress.h"
#include "train/run_folder.h"
#include "train/run_report.h"

namespace fs = std::filesystem;

namespace tl::train {

namespace {

// ---- small formatting helpers ------------------------------------------------------------------

std::string exact(double v) {  // round-trips through text
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string fixed6(double v) {  // for people: 0.001, 3e-05
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

std::string join(const std::vector<int64_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s;
}

std::vector<int64_t> split_ints(const std::string& key, const std::string& text) {
  std::vector<int64_t> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0') throw std::invalid_argument(key + ": expected comma-separated integers, got '" + text + "'");
    out.push_back(v);
  }
  return out;
}

// Turns TF32 GEMMs on for a run when asked, and restores the process's setting after it.
struct Tf32Scope {
  bool previous;
  explicit Tf32Scope(bool on) : previous(allow_tf32()) {
    if (on) set_allow_tf32(true);
  }
  ~Tf32Scope() { set_allow_tf32(previous); }
  Tf32Scope(const Tf32Scope&) = delete;
  Tf32Scope& operator=(const Tf32Scope&) = delete;
};

// ---- stop signals --------------------------------------------------------------------------------

// The signal that asked the run to stop (SIGINT, SIGTERM or SIGHUP), 0 while none has.
volatile std::sig_atomic_t g_stop_signal = 0;
extern "C" void on_stop_signal(int sig) {
  g_stop_signal = sig;
  std::signal(sig, SIG_DFL);  // a second one kills as usual
}

// Catches Ctrl-C, SIGTERM and SIGHUP for the scope of a run: the current step finishes, the run
// saves last.safetensors and stops. A SIGHUP that the process ignores (nohup) stays ignored.
struct StopSignals {
  using Handler = void (*)(int);
  static constexpr int kSignals[3] = {SIGINT, SIGTERM, SIGHUP};
  Handler previous[3];
  StopSignals() {
    g_stop_signal = 0;
    for (int i = 0; i < 3; ++i) {
      previous[i] = std::signal(kSignals[i], on_stop_signal);
      if (kSignals[i] == SIGHUP && previous[i] == SIG_IGN) std::signal(SIGHUP, SIG_IGN);
    }
  }
  ~StopSignals() {
    for (int i = 0; i < 3; ++i) std::signal(kSignals[i], previous[i] == SIG_ERR ? SIG_DFL : previous[i]);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
};

std::string signal_name(int sig) { return sig == SIGTERM ? "SIGTERM" : sig == SIGHUP ? "SIGHUP" : "Ctrl-C (SIGINT)"; }

// ---- checkpoint metadata of the training position ---------------------------------------------------

std::string metrics_to_text(const SegmentationMetrics& m) {
  return exact(m.loss_sum) + "," + std::to_string(m.samples) + "," + std::to_string(m.intersection) + "," +
         std::to_string(m.predicted) + "," + std::to_string(m.truth) + "," + std::to_string(m.correct) + "," +
         std::to_string(m.pixels) + "," + exact(m.soft_intersection) + "," + exact(m.soft_predicted);
}

SegmentationMetrics metrics_from_text(const std::string& text) {
  std::vector<std::string> f;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) f.push_back(item);
  if (f.size() != 9) throw std::runtime_error("train.partial_metrics: expected 9 fields, got '" + text + "'");
  SegmentationMetrics m;
  m.loss_sum = std::stod(f[0]);
  m.samples = std::stoll(f[1]);
  m.intersection = std::stoll(f[2]);
  m.predicted = std::stoll(f[3]);
  m.truth = std::stoll(f[4]);
  m.correct = std::stoll(f[5]);
  m.pixels = std::stoll(f[6]);
  m.soft_intersection = std::stod(f[7]);
  m.soft_predicted = std::stod(f[8]);
  return m;
}

const std::string& meta(const nn::Checkpoint& ckpt, const std::string& key) {
  const auto it = ckpt.metadata.find(key);
  if (it == ckpt.metadata.end())
    throw std::runtime_error("checkpoint has no '" + key + "' metadata: it was not written by train_unet");
  return it->second;
}

// ---- the learning-rate schedule ------------------------------------------------------------------

struct Schedule {
  std::unique_ptr<optim::CosineAnnealingLR> cosine;
  std::unique_ptr<optim::ReduceLROnPlateau> plateau;

  Schedule(const TrainConfig& cfg, optim::Optimizer& opt) {
    if (cfg.scheduler == "cosine") cosine = std::make_unique<optim::CosineAnnealingLR>(opt, cfg.epochs);
    if (cfg.scheduler == "plateau") {
      optim::ReduceLROnPlateauOptions o;
      o.mode = "max";  // on validation dice
      o.factor = 0.5;
      o.patience = 1;
      plateau = std::make_unique<optim::ReduceLROnPlateau>(opt, o);
    }
  }
  void step(double val_dice) {
    if (cosine) cosine->step();
    if (plateau) plateau->step(val_dice);
  }
  void save(safetensors::Metadata& m) const {
    if (cosine) {
      const auto s = cosine->state();
      m["train.sched"] = std::to_string(s.last_epoch) + "," + exact(s.base_lr) + "," + exact(s.last_lr);
    }
    if (plateau) {
      const auto s = plateau->state();
      m["train.sched"] = std::to_string(s.last_epoch) + "," + exact(s.best) + "," + std::to_string(s.num_bad_epochs) +
                         "," + std::to_string(s.cooldown_counter) + "," + exact(s.last_lr);
    }
  }
  void load(const nn::Checkpoint& ckpt) {
    if (!cosine && !plateau) return;
    std::vector<std::string> f;
    std::stringstream ss(meta(ckpt, "train.sched"));
    std::string item;
    while (std::getline(ss, item, ',')) f.push_back(item);
    if (cosine && f.size() == 3) {
      cosine->load_state({std::stoll(f[0]), std::stod(f[1]), std::stod(f[2])});
    } else if (plateau && f.size() == 5) {
      plateau->load_state({std::stoll(f[0]), std::stod(f[1]), std::stoll(f[2]), std::stoll(f[3]), std::stod(f[4])});
    } else {
      throw std::runtime_error("checkpoint metadata train.sched is malformed: '" + meta(ckpt, "train.sched") + "'");
    }
  }
};

std::unique_ptr<optim::Optimizer> make_optimizer(const TrainConfig& cfg, optim::NamedParams params) {
  const double wd = cfg.resolved_weight_decay();
  if (cfg.optimizer == "adam") return std::make_unique<optim::Adam>(std::move(params), optim::AdamOptions{cfg.lr, 0.9, 0.999, 1e-8, wd});
  if (cfg.optimizer == "adamw")
    return std::make_unique<optim::AdamW>(std::move(params), optim::AdamWOptions{cfg.lr, 0.9, 0.999, 1e-8, wd});
  optim::SGDOptions o;
  o.lr = cfg.lr;
  o.momentum = 0.9;
  o.weight_decay = wd;
  return std::make_unique<optim::SGD>(std::move(params), o);
}

Tensor compute_loss(const TrainConfig& cfg, const Tensor& logits, const Tensor& masks) {
  Tensor loss = binary_cross_entropy_with_logits(logits, masks);
  if (cfg.loss == "bce+dice") loss = loss + dice_loss(logits, masks);
  return loss;
}

// ---- the data ----------------------------------------------------------------------------------

struct Splits {
  std::vector<data::Sample> train, val;
  std::string source;  // for the log
};

// The cars of `samples`, sorted, each once.
std::vector<std::string> distinct_cars(const std::vector<data::Sample>& samples) {
  std::vector<std::string> cars;
  for (const auto& x : samples) cars.push_back(data::car_id(x.image));
  std::sort(cars.begin(), cars.end());
  cars.erase(std::unique(cars.begin(), cars.end()), cars.end());
  return cars;
}

Splits find_data(const TrainConfig& cfg, const RunFolder& folder, std::vector<std::string>& notes,
                 const std::function<void(const std::string&)>& say) {
  Splits s;
  const fs::path train_csv = folder.file("train.csv"), val_csv = folder.file("val.csv");
  if (!cfg.resume.empty() && folder.has_splits()) {
    s.train = data::read_split_csv(train_csv.string());
    s.val = data::read_split_csv(val_csv.string());
    s.source = "the run's split files " + train_csv.string() + " and " + val_csv.string();
    return s;
  }
  if (!cfg.train_csv.empty()) {
    s.train = data::read_split_csv(cfg.train_csv, cfg.data_dir);  // bare names: in data_dir/train, train_masks
    s.val = data::read_split_csv(cfg.val_csv, cfg.data_dir);
    s.source = "split files " + cfg.train_csv + " and " + cfg.val_csv +
               (cfg.data_dir.empty() ? "" : " (bare names in " + cfg.data_dir + ")");
  } else {
    fs::path dir = cfg.data_dir;
    if (dir.empty()) {
      dir = folder.file("synthetic");
      data::SyntheticOptions so;
      so.seed = static_cast<uint64_t>(cfg.seed);
      const auto t0 = std::chrono::steady_clock::now();
      data::write_synthetic(dir.string(), cfg.synthetic_count, so);
      const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      say("generated the synthetic set: " + std::to_string(cfg.synthetic_count) + " samples in " + dir.string() +
          " (" + fixed(sec, 1) + " s)");
    }
    dir = fs::absolute(dir);  // split files hold absolute paths: a resumed run may start elsewhere
    std::vector<std::string> skipped;
    const auto all = data::scan_kaggle_layout(dir.string(), cfg.skip_bad ? &skipped : nullptr);
    for (const std::string& k : skipped) notes.push_back(k + ": no mask");
    const auto no_suffix = std::count_if(all.begin(), all.end(), [](const data::Sample& x) { return !data::has_angle_suffix(x.image); });
    if (no_suffix > 0) {
      const auto first = std::find_if(all.begin(), all.end(), [](const data::Sample& x) { return !data::has_angle_suffix(x.image); });
      say("warning: " + std::to_string(no_suffix) + " of " + std::to_string(all.size()) +
          " image names have no _NN angle suffix (e.g. " + fs::path(first->image).filename().string() +
          "): each such image counts as its own car, so the split cannot keep a car's photos on one side");
    }
    auto [train, val] = data::split_by_car(all, cfg.val_fraction, static_cast<uint64_t>(cfg.split_seed));
    s.train = std::move(train);
    s.val = std::move(val);
    s.source = dir.string() + " split by car (val fraction " + fixed(cfg.val_fraction, 2) + ", split seed " +
               std::to_string(cfg.split_seed) + ")";
  }
  auto empty_split = [&](const char* which, const std::vector<data::Sample>& other) {
    const std::vector<std::string> cars = distinct_cars(other);
    std::string why = "the " + std::string(which) + " split is empty";
    if (!cfg.train_csv.empty()) return std::runtime_error(why + " (its split file has no rows)");
    if (cars.size() == 1)
      return std::runtime_error(why + ": the data holds one car (" + cars[0] + ", " + std::to_string(other.size()) +
                                " images), and the split is by car, so it needs at least 2 cars (or give --train-csv and --val-csv)");
    return std::runtime_error(why + " (" + std::to_string(other.size()) + " images of " + std::to_string(cars.size()) +
                              " cars, --val-fraction " + fixed(cfg.val_fraction, 2) + ")");
  };
  if (s.train.empty()) throw empty_split("training", s.val);
  if (s.val.empty()) throw empty_split("validation", s.train);
  return s;
}

std::string describe_cars(const std::vector<data::Sample>& samples) {
  return std::to_string(samples.size()) + " images of " + std::to_string(distinct_cars(samples).size()) + " cars";
}

}  // namespace

// ---- TrainConfig -----------------------------------------------------------------------------------

double TrainConfig::resolved_weight_decay() const {
  if (weight_decay >= 0) return weight_decay;
  return optimizer == "adamw" ? 1e-2 : 0.0;
}

void TrainConfig::validate() const {
  auto bad = [](const std::string& what) { throw std::invalid_argument(what); };
  auto one_of = [&](const std::string& flag, const std::string& v, std::initializer_list<const char*> choices) {
    std::string list;
    for (const char* c : choices) {
      if (v == c) return;
      list += (list.empty() ? "" : "|") + std::string(c);
    }
    bad(flag + ": expected " + list + ", got '" + v + "'");
  };
  if (train_csv.empty() != val_csv.empty()) bad("--train-csv and --val-csv go together: give both or neither");
  if (train_csv.empty() && !(val_fraction > 0 && val_fraction < 1))
    bad("--val-fraction: expected a number between 0 and 1 (exclusive), got " + exact(val_fraction));
  if (synthetic_count < 16) bad("--synthetic-count: at least 16 samples (two cars), got " + std::to_string(synthetic_count));
  if (features.empty() || features.size() > 6) bad("--features: expected 1 to 6 widths, got " + join(features));
  for (int64_t f : features)
    if (f <= 0) bad("--features: widths must be positive, got " + join(features));
  for (size_t i = 1; i < features.size(); ++i)
    if (features[i] != 2 * features[i - 1])
      bad("--features: each width must double the one before (as 64,128,256,512), got " + join(features));
  const int64_t multiple = int64_t{1} << features.size();
  if (height <= 0 || width <= 0 || height % multiple || width % multiple)
    bad("--image-size " + std::to_string(height) + "x" + std::to_string(width) + ": height and width must be positive multiples of " +
        std::to_string(multiple) + " (2^" + std::to_string(features.size()) + " for " + std::to_string(features.size()) +
        " pooling levels), e.g. 160x240");
  one_of("--activation", activation, {"relu", "gelu", "silu", "pysilu"});
  one_of("--optimizer", optimizer, {"adam", "adamw", "sgd"});
  one_of("--scheduler", scheduler, {"none", "cosine", "plateau"});
  one_of("--loss", loss, {"bce", "bce+dice"});
  if (device != "auto") {
    try {
      (void)Device::parse(device);
    } catch (const std::exception&) {
      bad("--device: expected auto, cpu, cuda or cuda:N, got '" + device + "'");
    }
  }
  if (epochs < 1) bad("--epochs: at least 1, got " + std::to_string(epochs));
  if (batch_size < 1) bad("--batch-size: at least 1, got " + std::to_string(batch_size));
  if (!(lr > 0)) bad("--lr: must be positive, got " + exact(lr));
  if (max_steps < 0) bad("--max-steps: must be 0 (no limit) or positive, got " + std::to_string(max_steps));
  if (threads < 0) bad("--threads: must be 0 (all cores) or positive, got " + std::to_string(threads));
  const int64_t hardware = std::max<int64_t>(1, std::thread::hardware_concurrency());
  const int64_t max_threads = std::min<int64_t>(1024, 4 * hardware);
  if (threads > max_threads)
    bad("--threads " + std::to_string(threads) + ": at most " + std::to_string(max_threads) + " (4 per hardware thread, " +
        std::to_string(hardware) + " here, and never more than 1024); 0 uses all cores");
  if (workers < 0) bad("--workers: must be 0 or positive, got " + std::to_string(workers));
  if (cache_mb < -1) bad("--cache-mb: must be -1 (half the memory) or >= 0, got " + std::to_string(cache_mb));
  try {
    data::parse_photo_decoder(decoder);
  } catch (const std::invalid_argument& e) {
    bad(std::string("--") + e.what());
  }
  if (seed < 0 || split_seed < 0) bad("--seed and --split-seed must not be negative");
  if (out.empty()) bad("--out: a run folder is required");
}

std::string TrainConfig::to_json() const {
  std::ostringstream s;
  auto str = [&](const char* k, const std::string& v, bool last = false) {
    s << "  " << json::quote(k) << ": " << json::quote(v) << (last ? "\n" : ",\n");
  };
  auto num = [&](const char* k, const std::string& v) { s << "  " << json::quote(k) << ": " << v << ",\n"; };
  auto flag = [&](const char* k, bool v) { num(k, v ? "true" : "false"); };
  s << "{\n";
  str("data_dir", data_dir);
  str("train_csv", train_csv);
  str("val_csv", val_csv);
  num("val_fraction", exact(val_fraction));
  num("split_seed", std::to_string(split_seed));
  num("synthetic_count", std::to_string(synthetic_count));
  str("image_size", std::to_string(height) + "x" + std::to_string(width));
  flag("augment", augment);
  flag("skip_bad", skip_bad);
  str("decoder", decoder);
  num("cache_mb", std::to_string(cache_mb));
  str("features", join(features));
  str("activation", activation);
  flag("conv_bias", conv_bias);
  num("epochs", std::to_string(epochs));
  num("batch_size", std::to_string(batch_size));
  num("lr", exact(lr));
  str("optimizer", optimizer);
  num("weight_decay", exact(resolved_weight_decay()));
  str("scheduler", scheduler);
  str("loss", loss);
  num("seed", std::to_string(seed));
  num("max_steps", std::to_string(max_steps));
  str("device", device);
  flag("tf32", tf32);
  num("threads", std::to_string(threads));
  num("workers", std::to_string(workers));
  flag("sync_bn", sync_bn);
  str("resume", resume);
  str("init", init);
  flag("quiet", quiet);
  str("out", out, true);
  s << "}\n";
  return s.str();
}

TrainConfig TrainConfig::from_json(const std::string& text) {
  const json::Value root = json::parse(text);
  if (!root.is(json::Value::Type::Object)) throw std::runtime_error("train config: expected a JSON object");
  TrainConfig c;
  for (const auto& [key, v] : root.object) {
    auto need = [&](json::Value::Type t) {
      if (!v.is(t) && !(t == json::Value::Type::Real && v.is(json::Value::Type::Int)))
        throw std::runtime_error("train config: '" + key + "' is a " + v.type_name());
    };
    auto as_str = [&] { need(json::Value::Type::String); return v.string; };
    auto as_int = [&] { need(json::Value::Type::Int); return v.integer; };
    auto as_real = [&] { need(json::Value::Type::Real); return v.is(json::Value::Type::Int) ? static_cast<double>(v.integer) : v.real; };
    auto as_bool = [&] { need(json::Value::Type::Bool); return v.boolean; };
    if (key == "data_dir") c.data_dir = as_str();
    else if (key == "train_csv") c.train_csv = as_str();
    else if (key == "val_csv") c.val_csv = as_str();
    else if (key == "val_fraction") c.val_fraction = as_real();
    else if (key == "split_seed") c.split_seed = as_int();
    else if (key == "synthetic_count") c.synthetic_count = as_int();
    else if (key == "image_size") {
      const auto hw = split_ints(key, [&] { std::string t = as_str(); std::replace(t.begin(), t.end(), 'x', ','); return t; }());
      if (hw.size() != 2) throw std::runtime_error("train config: image_size '" + v.string + "' is not HxW");
      c.height = hw[0];
      c.width = hw[1];
    } else if (key == "augment") c.augment = as_bool();
    else if (key == "skip_bad") c.skip_bad = as_bool();
    else if (key == "decoder") c.decoder = as_str();
    else if (key == "cache_mb") c.cache_mb = as_int();
    else if (key == "features") c.features = split_ints(key, as_str());
    else if (key == "activation") c.activation = as_str();
    else if (key == "conv_bias") c.conv_bias = as_bool();
    else if (key == "epochs") c.epochs = as_int();
    else if (key == "batch_size") c.batch_size = as_int();
    else if (key == "lr") c.lr = as_real();
    else if (key == "optimizer") c.optimizer = as_str();
    else if (key == "weight_decay") c.weight_decay = as_real();
    else if (key == "scheduler") c.scheduler = as_str();
    else if (key == "loss") c.loss = as_str();
    else if (key == "seed") c.seed = as_int();
    else if (key == "max_steps") c.max_steps = as_int();
    else if (key == "device") c.device = as_str();
    else if (key == "tf32") c.tf32 = as_bool();
    else if (key == "threads") c.threads = as_int();
    else if (key == "workers") c.workers = as_int();
    else if (key == "sync_bn") c.sync_bn = as_bool();
    else if (key == "resume") c.resume = as_str();
    else if (key == "init") c.init = as_str();
    else if (key == "quiet") c.quiet = as_bool();
    else if (key == "out") c.out = as_str();
    else throw std::runtime_error("train config: unknown key '" + key + "'");
  }
  return c;
}

TrainConfig config_from_checkpoint(const std::string& checkpoint) {
  const nn::Checkpoint ckpt = nn::load_checkpoint(checkpoint);
  const auto it = ckpt.metadata.find("train.config");
  if (it == ckpt.metadata.end())
    throw std::runtime_error(checkpoint + ": has no training config (train.config metadata): not written by train_unet");
  try {
    return TrainConfig::from_json(it->second);
  } catch (const std::exception& e) {
    throw std::runtime_error(checkpoint + ": " + e.what());
  }
}

// ---- the run -----------------------------------------------------------------------------------------

namespace {

using Clock = std::chrono::steady_clock;

// One run's state and its steps; train() calls them in order.
class Run {
 public:
  Run(const TrainConfig& cfg, Device device, RunFolder& folder, Progress& progress, DataParallel& dp)
      : cfg_(cfg), device_(device), folder_(folder), progress_(progress), dp_(dp), gen_(static_cast<uint64_t>(cfg.seed)) {}

  void say(const std::string& line) {
    progress_.message(line);
    folder_.log(line);
  }

  // The split (found, or read back on a resume), written into the folder, and decoded.
  void load_data() {
    std::vector<std::string> notes;
    Splits splits;
    if (dp_.writer()) {
      splits = find_data(cfg_, folder_, notes, [&](const std::string& l) { say(l); });
      if (cfg_.resume.empty() || !folder_.has_splits()) folder_.write_splits(splits.train, splits.val);
    }
    dp_.barrier();  // rank 0 has written the split files (and the synthetic set); the other ranks read them
    if (!dp_.writer()) {
      splits.train = data::read_split_csv(folder_.file("train.csv").string());
      splits.val = data::read_split_csv(folder_.file("val.csv").string());
    }
    fault_point("data");
    say("data: " + splits.source + "; train " + describe_cars(splits.train) + ", validation " + describe_cars(splits.val));
    // The views a person opens (train/run_report.h): report.html from the start, written by the
    // rank that writes files (its panels run the model in eval mode, with no collective).
    if (dp_.writer()) {
      report_ = std::make_unique<RunReport>(cfg_, folder_, splits.train, splits.val, splits.source,
                                            [&](const std::string& l) { say(l); });
      report_->start();
    }
    data::DatasetOptions dopt;
    dopt.height = cfg_.height;
    dopt.width = cfg_.width;
    dopt.skip_bad = cfg_.skip_bad;
    dopt.decoder = data::parse_photo_decoder(cfg_.decoder);
    const CacheBudget budget = split_cache_budget(cfg_.cache_mb, static_cast<int64_t>(splits.train.size()),
                                                  static_cast<int64_t>(splits.val.size()));
    const auto load_start = Clock::now();
    dopt.cache_bytes = budget.train;
    train_set_ = std::make_unique<data::SegmentationDataset>(splits.train, dopt);
    dopt.cache_bytes = budget.val;
    val_set_ = std::make_unique<data::SegmentationDataset>(splits.val, dopt);
    for (const auto* ds : {train_set_.get(), val_set_.get()})
      for (const std::string& k : ds->skipped()) notes.push_back(k);
    if (!notes.empty()) {
      say("skipped " + std::to_string(notes.size()) + " bad sample(s) (--skip-bad):");
      for (const std::string& n : notes) say("  " + n);
    }
    say("decoded and resized to " + std::to_string(cfg_.height) + "x" + std::to_string(cfg_.width) + " in " +
        fixed(std::chrono::duration<double>(Clock::now() - load_start).count(), 1) + " s");
    say(describe_cache(*train_set_, *val_set_, budget, cfg_.workers));
  }

  // The UNet (initialized on the CPU: the same weights on any device), its optimizer and schedule.
  void build_model() {
    mc_.features = cfg_.features;
    mc_.activation = cfg_.activation;
    mc_.conv_bias = cfg_.conv_bias;
    model_ = std::make_shared<nn::UNet>(mc_, &gen_);
    model_->to(device_);  // before the optimizer, whose state is made on the parameters' device
    optimizer_ = make_optimizer(cfg_, model_->named_parameters());
    schedule_ = std::make_unique<Schedule>(cfg_, *optimizer_);
  }

  // Whether a checkpoint's model is the run's architecture (what --resume and --init both require).
  bool same_model(const nn::UNetConfig& m) const {
    return m.features == mc_.features && m.activation == mc_.activation && m.conv_bias == mc_.conv_bias;
  }
  static std::string model_text(const nn::UNetConfig& m) {
    return "features " + join(m.features) + ", " + m.activation + (m.conv_bias ? ", conv bias" : "");
  }

  // Weights, optimizer, schedule, position and partial metrics from cfg.resume.
  void restore() {
    const nn::Checkpoint ckpt = nn::load_checkpoint(cfg_.resume);
    if (!same_model(ckpt.config)) throw std::runtime_error(cfg_.resume + ": its model config does not match the run's");
    model_->load_state_dict(ckpt.model_state);
    if (ckpt.optim_state.empty()) throw std::runtime_error(cfg_.resume + ": holds no optimizer state, cannot resume from it");
    const auto ws = ckpt.metadata.find("train.world_size");
    const int64_t world = ws == ckpt.metadata.end() ? 1 : std::stoll(ws->second);
    if (world != dp_.size())
      throw std::runtime_error(cfg_.resume + ": was written by a run of " + std::to_string(world) + " process(es), this one has " +
                               std::to_string(dp_.size()) + "; resume it with " +
                               (world == 1 ? std::string("train_unet alone (no mpirun)") : "mpirun -np " + std::to_string(world)) +
                               " (each epoch's shards depend on the number of processes)");
    optimizer_->load_state_dict(ckpt.optim_state);
    schedule_->load(ckpt);
    epoch_ = ckpt.state.epoch;
    step_ = ckpt.state.step;
    first_batch_ = std::stoll(meta(ckpt, "train.batch_in_epoch"));
    // The saved partial metrics are the sums over all ranks: rank 0 carries them.
    partial_ = dp_.writer() ? metrics_from_text(meta(ckpt, "train.partial_metrics")) : SegmentationMetrics{};
    carried_seconds_ = std::stod(meta(ckpt, "train.epoch_seconds"));
    result_.best_val_dice = std::stod(meta(ckpt, "train.best_val_dice"));
    result_.best_epoch = std::stoll(meta(ckpt, "train.best_epoch"));
    rows_ = folder_.metric_rows(epoch_);
    say("resumed from " + cfg_.resume + ": epoch " + std::to_string(epoch_ + 1) + ", batch " + std::to_string(first_batch_) +
        ", step " + std::to_string(step_));
  }

  // A new run from cfg.init's weights and batch norm statistics; the optimizer, the schedule and the
  // position start fresh. The architecture must be the run's (any image size: the UNet is fully
  // convolutional).
  void init_weights() {
    const nn::Checkpoint ckpt = nn::load_checkpoint(cfg_.init);
    if (!same_model(ckpt.config))
      throw std::runtime_error("--init " + cfg_.init + ": its model (" + model_text(ckpt.config) + ") is not the run's (" +
                               model_text(mc_) + ")");
    model_->load_state_dict(ckpt.model_state);
    say("weights from " + cfg_.init + " (epoch " + std::to_string(ckpt.state.epoch) + " of its run); optimizer and schedule start fresh");
  }

  // Every rank from rank 0's state, and the gradient all-reduce (a pass-through for one process).
  void distribute() { dp_.prepare(*model_); }

  void describe() {
    say("model: UNet features " + join(cfg_.features) + ", " + cfg_.activation + ", " + std::to_string(model_->num_parameters()) +
        " parameters; " + cfg_.optimizer + " lr " + fixed6(cfg_.lr) + ", weight decay " + exact(cfg_.resolved_weight_decay()) +
        ", schedule " + cfg_.scheduler + ", loss " + cfg_.loss + "; batch " + std::to_string(cfg_.batch_size) + dp_.describe(cfg_.batch_size) + ", " +
        std::to_string(get_num_threads()) + " threads, " + std::to_string(cfg_.workers) + " loader workers, device " +
        device_.str() + (cfg_.device == "auto" ? " (auto)" : "") +
        (device_.is_cuda() ? std::string(", TF32 GEMMs ") + (allow_tf32() ? "on" : "off")
                           : std::string(allow_tf32() ? "; TF32 does not apply on the CPU" : "")));
  }

  void start_loaders() {
    data::LoaderOptions tl_opt;
    tl_opt.batch_size = cfg_.batch_size;
    tl_opt.workers = cfg_.workers;
    tl_opt.seed = static_cast<uint64_t>(cfg_.seed);
    tl_opt.augment.enabled = cfg_.augment;
    tl_opt.num_replicas = dp_.size();
    tl_opt.rank = dp_.rank();
    data::LoaderOptions vl_opt = tl_opt;
    vl_opt.pad_shards = false;  // validation: every sample once, over all ranks
    vl_opt.shuffle = false;
    vl_opt.augment.enabled = false;
    train_loader_ = std::make_unique<data::BatchLoader>(*train_set_, tl_opt);
    val_loader_ = std::make_unique<data::BatchLoader>(*val_set_, vl_opt);
    stager_ = std::make_unique<data::DeviceStager>(device_);  // pinned staging ring on a GPU, a pass-through on the CPU
    result_.epochs_done = epoch_;
  }

  bool epochs_left() const { return epoch_ < cfg_.epochs; }

  // Trains the rest of the current epoch. False when it stopped inside the epoch (a signal or
  // --max-steps); last.safetensors then holds the position.
  bool train_epoch() {
    epoch_start_ = Clock::now();
    carried_ = carried_seconds_;
    carried_seconds_ = 0;
    train_m_ = partial_;
    partial_ = {};
    train_loader_->start_epoch(epoch_, first_batch_);
    progress_.start_epoch(epoch_ + 1, cfg_.epochs, train_loader_->batches_per_epoch(), first_batch_);
    model_->train();
    data::Batch batch;
    int64_t b = first_batch_;
    first_batch_ = 0;
    for (;;) {
      if (cfg_.max_steps && step_ >= cfg_.max_steps) { result_.stop = StopReason::MaxSteps; break; }
      if (dp_.any_stop(g_stop_signal != 0)) { result_.stop = StopReason::Interrupted; break; }
      if (!train_loader_->next(batch)) break;
      train_step(batch, b);
      ++b;
      progress_.update(b, batch.images.size(0), last_loss_, train_m_.dice());
    }
    result_.steps = step_;
    if (result_.stop == StopReason::Finished || b >= train_loader_->batches_per_epoch()) return true;
    save_stop(b);
    return false;
  }

  // Validation, metrics.csv, the checkpoint pair and the epoch line; false when the run stops here.
  bool end_epoch() {
    dp_.reduce(train_m_);  // every rank's batches
    const SegmentationMetrics val_m = validate();
    const double lr_used = optimizer_->lr();
    schedule_->step(val_m.dice());
    const double seconds = elapsed();  // training and validation of this epoch
    rows_.push_back(std::to_string(epoch_ + 1) + "," + fixed(train_m_.loss(), 6) + "," + fixed(train_m_.dice(), 6) + "," +
                    fixed(train_m_.accuracy(), 6) + "," + fixed(val_m.loss(), 6) + "," + fixed(val_m.dice(), 6) + "," +
                    fixed(val_m.dice_soft(), 6) + "," + fixed(val_m.accuracy(), 6) + "," + exact(lr_used) + "," +
                    fixed(seconds, 2));
    folder_.write_metric_rows(rows_);  // before the checkpoint: a resume keeps the rows up to its epoch
    const bool best = val_m.dice() > result_.best_val_dice || result_.best_epoch == 0;
    if (best) {
      result_.best_val_dice = val_m.dice();
      result_.best_epoch = epoch_ + 1;
    }
    result_.epochs_done = epoch_ + 1;
    result_.last_val_dice = val_m.dice();
    result_.last_train_loss = train_m_.loss();
    folder_.save_epoch([&](const std::string& path) { save(path, epoch_ + 1, 0, {}, 0); }, epoch_ + 1, best);
    const std::string line = "epoch " + std::to_string(epoch_ + 1) + "/" + std::to_string(cfg_.epochs) + "  train loss " +
                             fixed(train_m_.loss(), 4) + " dice " + fixed(train_m_.dice(), 4) + " acc " +
                             fixed(train_m_.accuracy(), 4) + " | val loss " + fixed(val_m.loss(), 4) + " dice " +
                             fixed(val_m.dice(), 4) + " (soft " + fixed(val_m.dice_soft(), 4) + ") acc " +
                             fixed(val_m.accuracy(), 4) + " | lr " + fixed6(lr_used) + " | " +
                             Progress::format_duration(seconds) + (best ? "  (best)" : "");
    progress_.finish_epoch(line);
    folder_.log(line);
    if (report_) report_->end_epoch(epoch_ + 1, model_, device_);  // the epoch's panel, curves.svg, report.html
    ++epoch_;
    const bool signalled = dp_.any_stop(g_stop_signal != 0);
    if (result_.stop == StopReason::Finished && !signalled) return true;
    if (signalled) result_.stop = StopReason::Interrupted;
    if (epoch_ >= cfg_.epochs) {
      result_.stop = StopReason::Finished;
      return true;
    }
    say(stop_cause() + " after epoch " + std::to_string(epoch_) + "; continue with: train_unet --resume " + folder_.last().string());
    return false;
  }

  TrainResult finish(Clock::time_point run_start) {
    result_.signal = result_.stop == StopReason::Interrupted ? static_cast<int>(g_stop_signal) : 0;
    result_.seconds = std::chrono::duration<double>(Clock::now() - run_start).count();
    if (report_) report_->finish(result_);
    if (result_.stop == StopReason::Finished)
      say("finished " + std::to_string(result_.epochs_done) + " epochs in " + Progress::format_duration(result_.seconds) +
          "; best val dice " + fixed(result_.best_val_dice, 4) + " at epoch " + std::to_string(result_.best_epoch) +
          "; run folder " + folder_.path().string());
    return result_;
  }

 private:
  double elapsed() const { return carried_ + std::chrono::duration<double>(Clock::now() - epoch_start_).count(); }

  std::string stop_cause() const {
    return result_.stop == StopReason::Interrupted ? "interrupted by " + signal_name(g_stop_signal) : "reached --max-steps";
  }

  // One optimizer step. On a GPU: the copy is queued here and the host goes on to queue the forward.
  // The host waits once, for the loss; then it copies the logits back (the stream is idle: no
  // wait), queues the backward and the optimizer step, and computes the metrics and fetches and
  // stages the next batch while the GPU runs them.
  void train_step(const data::Batch& batch, int64_t b) {
    const data::Batch on_device = stager_->to_device(batch);
    // Gradients are dropped, not zeroed (PyTorch 2's default): backward then allocates the same
    // blocks every step, so on a GPU a step after the first makes no cudaMalloc.
    optimizer_->zero_grad(/*set_to_none=*/true);
    dp_.sync_buffers(*model_);
    const Tensor logits = model_->forward(on_device.images);
    const Tensor loss = compute_loss(cfg_, logits, on_device.masks);
    const double local_lv = loss.item();
    const double lv = dp_.mean(local_lv);  // the global batch's loss: a NaN on any rank stops every rank
    if (!std::isfinite(lv)) {
      const bool have = fs::exists(folder_.last());
      throw TrainingDiverged("the loss is " + std::string(std::isnan(lv) ? "nan" : "inf") + " at epoch " +
                             std::to_string(epoch_ + 1) + ", batch " + std::to_string(b + 1) + " (step " +
                             std::to_string(step_ + 1) + "); training stopped. " +
                             (have ? "The last good checkpoint is " + folder_.last().string() + " (end of epoch " +
                                         std::to_string(result_.epochs_done) + ")"
                                   : std::string("No checkpoint had been written yet")) +
                             "; try a lower --lr");
    }
    const Tensor logits_cpu = logits.detach().to(Device::cpu());
    dp_.backward(loss);
    optimizer_->step();
    ++step_;
    train_m_.add(logits_cpu, batch.masks, local_lv);
    if (!first_loss_seen_) {
      first_loss_seen_ = true;
      result_.first_train_loss = lv;
    }
    last_loss_ = lv;
    fault_point("step");
  }

  SegmentationMetrics validate() {
    SegmentationMetrics val_m;
    NoGradGuard no_grad;
    dp_.sync_buffers(*model_);
    model_->eval();
    val_loader_->start_epoch(0);
    data::Batch batch;
    while (val_loader_->next(batch)) {
      const data::Batch on_device = stager_->to_device(batch);
      const Tensor logits = model_->forward(on_device.images);
      const double lv = compute_loss(cfg_, logits, on_device.masks).item();
      val_m.add(logits.to(Device::cpu()), batch.masks, lv);
    }
    dp_.reduce(val_m);  // each rank validated its shard
    model_->train();
    return val_m;
  }

  // The checkpoint of a stop inside the epoch, after `b` of its batches.
  void save_stop(int64_t b) {
    SegmentationMetrics all = train_m_;
    dp_.reduce(all);
    folder_.save_stop([&](const std::string& path) { save(path, epoch_, b, all, elapsed()); });
    const std::string at = "epoch " + std::to_string(epoch_ + 1) + ", batch " + std::to_string(b) + "/" +
                           std::to_string(train_loader_->batches_per_epoch()) + " (step " + std::to_string(step_) + ")";
    progress_.finish_epoch(stop_cause() + " at " + at + "; saved " + folder_.last().string() + "; continue with: train_unet --resume " +
                           folder_.last().string());
    folder_.log("stopped (" + stop_cause() + ") at " + at);
  }

  // Writes a checkpoint of the current position to `path`.
  void save(const std::string& path, int64_t at_epoch, int64_t at_batch, const SegmentationMetrics& m, double seconds) {
    safetensors::Metadata extra;
    extra["image_size"] = std::to_string(cfg_.height) + "x" + std::to_string(cfg_.width);
    extra["train.config"] = cfg_.to_json();
    extra["train.batch_in_epoch"] = std::to_string(at_batch);
    extra["train.partial_metrics"] = metrics_to_text(m);
    extra["train.epoch_seconds"] = exact(seconds);
    extra["train.best_val_dice"] = exact(result_.best_val_dice);
    extra["train.best_epoch"] = std::to_string(result_.best_epoch);
    extra["train.world_size"] = std::to_string(dp_.size());
    schedule_->save(extra);
    nn::TrainingState st{step_, at_epoch, static_cast<uint64_t>(cfg_.seed), gen_.offset()};
    nn::save_checkpoint(path, *model_, optimizer_.get(), st, extra);
  }

  const TrainConfig& cfg_;
  const Device device_;
  RunFolder& folder_;
  Progress& progress_;
  DataParallel& dp_;
  Generator gen_;
  std::unique_ptr<data::SegmentationDataset> train_set_, val_set_;
  nn::UNetConfig mc_;
  std::shared_ptr<nn::UNet> model_;
  std::unique_ptr<optim::Optimizer> optimizer_;
  std::unique_ptr<Schedule> schedule_;
  std::unique_ptr<data::BatchLoader> train_loader_, val_loader_;
  std::unique_ptr<data::DeviceStager> stager_;
  std::unique_ptr<RunReport> report_;
  TrainResult result_;
  std::vector<std::string> rows_;  // metrics.csv
  int64_t epoch_ = 0, first_batch_ = 0;  // where to start: 0-based epoch, batches already done in it
  int64_t step_ = 0;
  double carried_seconds_ = 0;     // time already spent in a resumed, unfinished epoch
  double carried_ = 0;             // the same, for the epoch being trained
  SegmentationMetrics partial_;    // train metrics of the batches already done in it
  SegmentationMetrics train_m_;    // train metrics of the epoch being trained
  Clock::time_point epoch_start_;
  bool first_loss_seen_ = false;
  double last_loss_ = 0;
};

}  // namespace

TrainResult train(const TrainConfig& cfg, std::ostream& console, bool tty) {
  const auto run_start = Clock::now();
  cfg.validate();
  const Device device = nn::resolve_device(cfg.device);  // before anything is written
  const Tf32Scope tf32(cfg.tf32);
  const StopSignals signals;  // from here on, Ctrl-C, SIGTERM and SIGHUP stop at the next step with a checkpoint
  dist::Communicator& comm = dist::world();
  if (comm.size() > 1 && !device.is_cpu())
    throw std::runtime_error("--device " + cfg.device + ": training under mpirun runs on the CPU (its gradient all-reduce is " +
                             "MPI's); give --device cpu");
  if (cfg.threads > 0) set_num_threads(static_cast<int>(cfg.threads));
  else if (comm.local_size() > 1)  // "all cores" shared by the ranks on this machine
    set_num_threads(std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / comm.local_size()));
  DataParallel dp(comm, cfg.sync_bn);
  RunFolder folder(cfg, dp.writer());  // rank 0: refuses, starts over or repairs; writes config.json; opens log.txt
  std::ostream silent(nullptr);        // the other ranks' console
  Progress progress(dp.writer() ? console : silent, tty, cfg.quiet);
  Run run(cfg, device, folder, progress, dp);
  try {
    for (const std::string& note : folder.notes()) progress.message(note);  // already in log.txt
    run.load_data();
    run.build_model();
    if (!cfg.resume.empty()) run.restore();
    else if (!cfg.init.empty()) run.init_weights();
    run.distribute();
    run.describe();
    run.start_loaders();
    while (run.epochs_left()) {
      if (!run.train_epoch()) break;  // stopped inside the epoch, its position saved
      if (!run.end_epoch()) break;    // validated and saved, then stopped
    }
    return run.finish(run_start);
  } catch (const TrainingDiverged& e) {
    folder.log(std::string("error: ") + e.what());
    throw;
  } catch (const std::exception& e) {
    throw std::runtime_error(folder.log_error(e.what()));
  }
}

}  // namespace tl::train
