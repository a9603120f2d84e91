#include "train/trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <sstream>

#include "autograd/grad_mode.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data/split.h"
#include "data/synthetic.h"
#include "nn/checkpoint.h"
#include "nn/lr_scheduler.h"
#include "nn/unet.h"
#include "tensor/file_util.h"
#include "tensor/parallel.h"
#include "tensor/precision.h"
#include "train/metrics.h"
#include "train/progress.h"

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

// `to` becomes the same file as `from` without writing it again: a hard link made beside `to`, then
// renamed over it (atomic). Writers replace files by renaming new ones over them, so a later
// last.safetensors never changes best.safetensors. Where hard links are not available, `write` is
// called instead.
void share_file(const fs::path& from, const fs::path& to, const std::function<void()>& write) {
  const fs::path tmp = to.string() + ".link." + std::to_string(::getpid());
  std::error_code ec;
  fs::remove(tmp, ec);
  fs::create_hard_link(from, tmp, ec);
  if (!ec) fs::rename(tmp, to, ec);
  if (ec) {
    fs::remove(tmp, ec);
    write();
  }
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

// ---- Ctrl-C ------------------------------------------------------------------------------------

volatile std::sig_atomic_t g_interrupted = 0;
extern "C" void on_sigint(int) { g_interrupted = 1; }

// Catches SIGINT for the scope of a run; a second Ctrl-C after the first is seen kills as usual.
struct SigintScope {
  using Handler = void (*)(int);
  Handler previous;
  SigintScope() {
    g_interrupted = 0;
    previous = std::signal(SIGINT, on_sigint);
  }
  ~SigintScope() { std::signal(SIGINT, previous == SIG_ERR ? SIG_DFL : previous); }
};

// ---- metrics.csv ---------------------------------------------------------------------------------

// The rows of an earlier metrics.csv for epochs 1..keep (a resumed run continues after them).
std::vector<std::string> read_metric_rows(const fs::path& path, int64_t keep) {
  std::vector<std::string> rows;
  std::ifstream f(path);
  if (!f) return rows;
  std::string line;
  std::getline(f, line);  // header
  while (std::getline(f, line)) {
    if (line.empty()) continue;
    const long long epoch = std::strtoll(line.c_str(), nullptr, 10);
    if (epoch >= 1 && epoch <= keep) rows.push_back(line);
  }
  return rows;
}

void write_metric_rows(const fs::path& path, const std::vector<std::string>& rows) {
  std::string text = std::string(kMetricsColumns) + "\n";
  for (const std::string& r : rows) text += r + "\n";
  write_file_atomic(path.string(), text);
}

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

Splits find_data(const TrainConfig& cfg, const fs::path& out, std::vector<std::string>& notes,
                 const std::function<void(const std::string&)>& say) {
  Splits s;
  const fs::path train_csv = out / "train.csv", val_csv = out / "val.csv";
  if (!cfg.resume.empty() && fs::exists(train_csv) && fs::exists(val_csv)) {
    s.train = data::read_split_csv(train_csv.string());
    s.val = data::read_split_csv(val_csv.string());
    s.source = "the run's split files " + train_csv.string() + " and " + val_csv.string();
    return s;
  }
  if (!cfg.train_csv.empty()) {
    s.train = data::read_split_csv(cfg.train_csv);
    s.val = data::read_split_csv(cfg.val_csv);
    s.source = "split files " + cfg.train_csv + " and " + cfg.val_csv;
  } else {
    fs::path dir = cfg.data_dir;
    if (dir.empty()) {
      dir = out / "synthetic";
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
    auto [train, val] = data::split_by_car(all, cfg.val_fraction, static_cast<uint64_t>(cfg.split_seed));
    s.train = std::move(train);
    s.val = std::move(val);
    s.source = dir.string() + " split by car (val fraction " + fixed(cfg.val_fraction, 2) + ", split seed " +
               std::to_string(cfg.split_seed) + ")";
  }
  if (s.train.empty()) throw std::runtime_error("the training split is empty");
  if (s.val.empty()) throw std::runtime_error("the validation split is empty");
  return s;
}

std::string describe_cars(const std::vector<data::Sample>& samples) {
  std::vector<std::string> cars;
  for (const auto& x : samples) cars.push_back(data::car_id(x.image));
  std::sort(cars.begin(), cars.end());
  cars.erase(std::unique(cars.begin(), cars.end()), cars.end());
  return std::to_string(samples.size()) + " images of " + std::to_string(cars.size()) + " cars";
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
  if (!train_csv.empty() && !data_dir.empty()) bad("give --data-dir or --train-csv/--val-csv, not both");
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
  if (workers < 0) bad("--workers: must be 0 or positive, got " + std::to_string(workers));
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
  str("resume", resume);
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
    else if (key == "resume") c.resume = as_str();
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

TrainResult train(const TrainConfig& cfg, std::ostream& console, bool tty) {
  using Clock = std::chrono::steady_clock;
  const auto run_start = Clock::now();
  cfg.validate();
  const Device device = nn::resolve_device(cfg.device);  // before anything is written
  const Tf32Scope tf32(cfg.tf32);
  SigintScope sigint;  // from here on, Ctrl-C stops at the next step with a checkpoint
  if (cfg.threads > 0) set_num_threads(static_cast<int>(cfg.threads));

  const fs::path out = cfg.out;
  if (cfg.resume.empty() && (fs::exists(out / "metrics.csv") || fs::exists(out / "last.safetensors")))
    throw std::runtime_error(out.string() + " already holds a run (metrics.csv or last.safetensors); continue it with --resume " +
                             (out / "last.safetensors").string() + " or choose another --out");
  fs::create_directories(out);

  std::ofstream log(out / "log.txt", std::ios::app);
  if (!log) throw std::runtime_error((out / "log.txt").string() + ": cannot open for writing");
  Progress progress(console, tty, cfg.quiet);
  auto say = [&](const std::string& line) {
    progress.message(line);
    log << line << "\n" << std::flush;
  };

  // Data.
  std::vector<std::string> notes;
  Splits splits = find_data(cfg, out, notes, say);
  if (cfg.resume.empty() || !fs::exists(out / "train.csv")) {
    data::write_split_csv((out / "train.csv").string(), splits.train);
    data::write_split_csv((out / "val.csv").string(), splits.val);
  }
  write_file_atomic((out / "config.json").string(), cfg.to_json());
  say("data: " + splits.source + "; train " + describe_cars(splits.train) + ", validation " + describe_cars(splits.val));

  data::DatasetOptions dopt;
  dopt.height = cfg.height;
  dopt.width = cfg.width;
  dopt.skip_bad = cfg.skip_bad;
  const auto load_start = Clock::now();
  const data::SegmentationDataset train_set(splits.train, dopt);
  const data::SegmentationDataset val_set(splits.val, dopt);
  for (const auto* ds : {&train_set, &val_set})
    for (const std::string& k : ds->skipped()) notes.push_back(k);
  if (!notes.empty()) {
    say("skipped " + std::to_string(notes.size()) + " bad sample(s) (--skip-bad):");
    for (const std::string& n : notes) say("  " + n);
  }
  say("decoded and resized to " + std::to_string(cfg.height) + "x" + std::to_string(cfg.width) + " in " +
      fixed(std::chrono::duration<double>(Clock::now() - load_start).count(), 1) + " s");

  // Model, optimizer, schedule.
  nn::UNetConfig mc;
  mc.features = cfg.features;
  mc.activation = cfg.activation;
  mc.conv_bias = cfg.conv_bias;
  Generator gen(static_cast<uint64_t>(cfg.seed));
  auto model = std::make_shared<nn::UNet>(mc, &gen);  // initialized on the CPU: the same weights on any device
  model->to(device);  // before the optimizer, whose state is made on the parameters' device
  auto optimizer = make_optimizer(cfg, model->named_parameters());
  Schedule schedule(cfg, *optimizer);

  TrainResult result;
  int64_t epoch = 0, first_batch = 0;  // where to start: 0-based epoch, batches already done in it
  int64_t step = 0;
  double carried_seconds = 0;          // time already spent in a resumed, unfinished epoch
  SegmentationMetrics partial;         // train metrics of the batches already done in it
  std::vector<std::string> rows;
  if (!cfg.resume.empty()) {
    const nn::Checkpoint ckpt = nn::load_checkpoint(cfg.resume);
    if (ckpt.config.features != mc.features || ckpt.config.activation != mc.activation || ckpt.config.conv_bias != mc.conv_bias)
      throw std::runtime_error(cfg.resume + ": its model config does not match the run's");
    model->load_state_dict(ckpt.model_state);
    if (ckpt.optim_state.empty()) throw std::runtime_error(cfg.resume + ": holds no optimizer state, cannot resume from it");
    optimizer->load_state_dict(ckpt.optim_state);
    schedule.load(ckpt);
    epoch = ckpt.state.epoch;
    step = ckpt.state.step;
    first_batch = std::stoll(meta(ckpt, "train.batch_in_epoch"));
    partial = metrics_from_text(meta(ckpt, "train.partial_metrics"));
    carried_seconds = std::stod(meta(ckpt, "train.epoch_seconds"));
    result.best_val_dice = std::stod(meta(ckpt, "train.best_val_dice"));
    result.best_epoch = std::stoll(meta(ckpt, "train.best_epoch"));
    rows = read_metric_rows(out / "metrics.csv", epoch);
    say("resumed from " + cfg.resume + ": epoch " + std::to_string(epoch + 1) + ", batch " + std::to_string(first_batch) +
        ", step " + std::to_string(step));
  }
  result.epochs_done = epoch;

  say("model: UNet features " + join(cfg.features) + ", " + cfg.activation + ", " + std::to_string(model->num_parameters()) +
      " parameters; " + cfg.optimizer + " lr " + fixed6(cfg.lr) + ", weight decay " + exact(cfg.resolved_weight_decay()) +
      ", schedule " + cfg.scheduler + ", loss " + cfg.loss + "; batch " + std::to_string(cfg.batch_size) + ", " +
      std::to_string(get_num_threads()) + " threads, " + std::to_string(cfg.workers) + " loader workers, device " +
      device.str() + (cfg.device == "auto" ? " (auto)" : "") +
      (device.is_cuda() ? std::string(", TF32 GEMMs ") + (allow_tf32() ? "on" : "off")
                        : std::string(allow_tf32() ? "; TF32 does not apply on the CPU" : "")));

  data::LoaderOptions tl_opt;
  tl_opt.batch_size = cfg.batch_size;
  tl_opt.workers = cfg.workers;
  tl_opt.seed = static_cast<uint64_t>(cfg.seed);
  tl_opt.augment.enabled = cfg.augment;
  data::LoaderOptions vl_opt = tl_opt;
  vl_opt.shuffle = false;
  vl_opt.augment.enabled = false;
  data::BatchLoader train_loader(train_set, tl_opt);
  data::BatchLoader val_loader(val_set, vl_opt);
  data::DeviceStager stager(device);  // pinned staging ring on a GPU, a pass-through on the CPU

  // Writes last.safetensors (and best.safetensors) at the current position.
  auto save = [&](const fs::path& path, int64_t at_epoch, int64_t at_batch, const SegmentationMetrics& m, double seconds) {
    safetensors::Metadata extra;
    extra["image_size"] = std::to_string(cfg.height) + "x" + std::to_string(cfg.width);
    extra["train.config"] = cfg.to_json();
    extra["train.batch_in_epoch"] = std::to_string(at_batch);
    extra["train.partial_metrics"] = metrics_to_text(m);
    extra["train.epoch_seconds"] = exact(seconds);
    extra["train.best_val_dice"] = exact(result.best_val_dice);
    extra["train.best_epoch"] = std::to_string(result.best_epoch);
    schedule.save(extra);
    nn::TrainingState st{step, at_epoch, static_cast<uint64_t>(cfg.seed), gen.offset()};
    nn::save_checkpoint(path.string(), *model, optimizer.get(), st, extra);
  };

  bool first_loss_seen = false;
  for (; epoch < cfg.epochs; ++epoch, first_batch = 0) {
    const auto epoch_start = Clock::now();
    const double carried = carried_seconds;
    carried_seconds = 0;
    auto elapsed = [&] { return carried + std::chrono::duration<double>(Clock::now() - epoch_start).count(); };
    SegmentationMetrics train_m = partial;
    partial = {};
    train_loader.start_epoch(epoch, first_batch);
    progress.start_epoch(epoch + 1, cfg.epochs, train_loader.batches_per_epoch(), first_batch);
    model->train();
    data::Batch batch;
    int64_t b = first_batch;
    for (;;) {
      if (cfg.max_steps && step >= cfg.max_steps) { result.stop = StopReason::MaxSteps; break; }
      if (g_interrupted) { result.stop = StopReason::Interrupted; break; }
      if (!train_loader.next(batch)) break;
      // On a GPU: the copy is queued here and the host goes on to queue the forward. The host waits
      // once, for the loss; then it copies the logits back (the stream is idle: no wait), queues the
      // backward and the optimizer step, and computes the metrics and fetches and stages the next
      // batch while the GPU runs them.
      const data::Batch on_device = stager.to_device(batch);
      // Gradients are dropped, not zeroed (PyTorch 2's default): backward then allocates the same
      // blocks every step, so on a GPU a step after the first makes no cudaMalloc.
      optimizer->zero_grad(/*set_to_none=*/true);
      const Tensor logits = model->forward(on_device.images);
      const Tensor loss = compute_loss(cfg, logits, on_device.masks);
      const double lv = loss.item();
      if (!std::isfinite(lv)) {
        const bool have = fs::exists(out / "last.safetensors");
        throw TrainingDiverged("the loss is " + std::string(std::isnan(lv) ? "nan" : "inf") + " at epoch " +
                               std::to_string(epoch + 1) + ", batch " + std::to_string(b + 1) + " (step " +
                               std::to_string(step + 1) + "); training stopped. " +
                               (have ? "The last good checkpoint is " + (out / "last.safetensors").string() +
                                           " (end of epoch " + std::to_string(result.epochs_done) + ")"
                                     : std::string("No checkpoint had been written yet")) +
                               "; try a lower --lr");
      }
      const Tensor logits_cpu = logits.detach().to(Device::cpu());
      loss.backward();
      optimizer->step();
      ++step;
      ++b;
      train_m.add(logits_cpu, batch.masks, lv);
      if (!first_loss_seen) {
        first_loss_seen = true;
        result.first_train_loss = lv;
      }
      progress.update(b, batch.images.size(0), lv, train_m.dice());
    }
    result.steps = step;
    if (result.stop != StopReason::Finished && b < train_loader.batches_per_epoch()) {
      save(out / "last.safetensors", epoch, b, train_m, elapsed());
      progress.finish_epoch(
          std::string(result.stop == StopReason::Interrupted ? "interrupted" : "reached --max-steps") + " at epoch " +
          std::to_string(epoch + 1) + ", batch " + std::to_string(b) + "/" + std::to_string(train_loader.batches_per_epoch()) +
          " (step " + std::to_string(step) + "); saved " + (out / "last.safetensors").string() + "; continue with --resume " +
          (out / "last.safetensors").string());
      log << "stopped at epoch " << epoch + 1 << ", batch " << b << ", step " << step << "\n";
      break;
    }

    // Validation.
    SegmentationMetrics val_m;
    {
      NoGradGuard no_grad;
      model->eval();
      val_loader.start_epoch(0);
      while (val_loader.next(batch)) {
        const data::Batch on_device = stager.to_device(batch);
        const Tensor logits = model->forward(on_device.images);
        const double lv = compute_loss(cfg, logits, on_device.masks).item();
        val_m.add(logits.to(Device::cpu()), batch.masks, lv);
      }
      model->train();
    }
    const double lr_used = optimizer->lr();
    schedule.step(val_m.dice());
    const double seconds = elapsed();  // training and validation of this epoch
    rows.push_back(std::to_string(epoch + 1) + "," + fixed(train_m.loss(), 6) + "," + fixed(train_m.dice(), 6) + "," +
                   fixed(train_m.accuracy(), 6) + "," + fixed(val_m.loss(), 6) + "," + fixed(val_m.dice(), 6) + "," +
                   fixed(val_m.dice_soft(), 6) + "," + fixed(val_m.accuracy(), 6) + "," + exact(lr_used) + "," +
                   fixed(seconds, 2));
    write_metric_rows(out / "metrics.csv", rows);
    const bool best = val_m.dice() > result.best_val_dice || result.best_epoch == 0;
    if (best) {
      result.best_val_dice = val_m.dice();
      result.best_epoch = epoch + 1;
    }
    result.epochs_done = epoch + 1;
    result.last_val_dice = val_m.dice();
    result.last_train_loss = train_m.loss();
    save(out / "last.safetensors", epoch + 1, 0, {}, 0);
    if (best)
      share_file(out / "last.safetensors", out / "best.safetensors",
                 [&] { save(out / "best.safetensors", epoch + 1, 0, {}, 0); });
    const std::string line = "epoch " + std::to_string(epoch + 1) + "/" + std::to_string(cfg.epochs) + "  train loss " +
                             fixed(train_m.loss(), 4) + " dice " + fixed(train_m.dice(), 4) + " acc " +
                             fixed(train_m.accuracy(), 4) + " | val loss " + fixed(val_m.loss(), 4) + " dice " +
                             fixed(val_m.dice(), 4) + " (soft " + fixed(val_m.dice_soft(), 4) + ") acc " +
                             fixed(val_m.accuracy(), 4) + " | lr " + fixed6(lr_used) + " | " +
                             Progress::format_duration(seconds) + (best ? "  (best)" : "");
    progress.finish_epoch(line);
    log << line << "\n" << std::flush;
    if (result.stop != StopReason::Finished || g_interrupted) {
      if (g_interrupted) result.stop = StopReason::Interrupted;
      if (epoch + 1 < cfg.epochs) {
        say(std::string(result.stop == StopReason::Interrupted ? "interrupted" : "reached --max-steps") + " after epoch " +
            std::to_string(epoch + 1) + "; continue with --resume " + (out / "last.safetensors").string());
        break;
      }
      result.stop = StopReason::Finished;
    }
  }
  result.seconds = std::chrono::duration<double>(Clock::now() - run_start).count();
  if (result.stop == StopReason::Finished)
    say("finished " + std::to_string(result.epochs_done) + " epochs in " + Progress::format_duration(result.seconds) +
        "; best val dice " + fixed(result.best_val_dice, 4) + " at epoch " + std::to_string(result.best_epoch) +
        "; run folder " + out.string());
  return result;
}

}  // namespace tl::train
