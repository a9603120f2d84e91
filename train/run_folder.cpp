#include "train/run_folder.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <sstream>
#include <stdexcept>

#include "nn/json.h"
#include "tensor/file_util.h"

namespace tl::train {

namespace fs = std::filesystem;

namespace {

// The files a run writes at the top of its folder (synthetic/ is the generated set's folder).
const char* const kRunFiles[] = {"config.json", "log.txt", "train.csv", "val.csv", "metrics.csv", "last.safetensors",
                                 "best.safetensors", "report.html", "curves.svg"};
const char* const kPanels = "panels";  // the per-epoch validation panels: every file in it is the run's

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

bool is_run_config(const fs::path& config_json) {
  try {
    (void)TrainConfig::from_json(read_text(config_json));
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

bool present(const fs::path& p) {
  std::error_code ec;
  return fs::exists(fs::symlink_status(p, ec));
}

// A checkpoint's position and the best epoch it names, from its header alone; nullopt when the
// file is missing, incomplete or not a training checkpoint.
struct Position {
  int64_t step = 0, epoch = 0, batch = 0, best_epoch = 0;
};

std::optional<Position> read_position(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return std::nullopt;
  unsigned char len[8];
  if (!f.read(reinterpret_cast<char*>(len), 8)) return std::nullopt;
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
  if (n == 0 || n > (uint64_t{100} << 20)) return std::nullopt;
  std::string header(n, '\0');
  if (!f.read(header.data(), static_cast<std::streamsize>(n))) return std::nullopt;
  try {
    const json::Value root = json::parse(header);
    uint64_t end = 0;
    for (const auto& [name, v] : root.object) {
      if (name == "__metadata__") continue;
      const json::Value* off = v.find("data_offsets");
      if (off && off->array.size() == 2) end = std::max(end, static_cast<uint64_t>(off->array[1].integer));
    }
    std::error_code ec;
    if (fs::file_size(path, ec) != 8 + n + end || ec) return std::nullopt;  // cut short
    const json::Value* md = root.find("__metadata__");
    if (!md) return std::nullopt;
    auto num = [&](const char* key) -> int64_t {
      const json::Value* v = md->find(key);
      if (!v || !v->is(json::Value::Type::String)) throw std::runtime_error(key);
      return std::stoll(v->string);
    };
    return Position{num("step"), num("epoch"), num("train.batch_in_epoch"), num("train.best_epoch")};
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

void sync_folder(const fs::path& dir) {  // persists renames and links; best effort
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

fs::path temp_beside(const fs::path& file, const char* tag) {
  return file.string() + ".tmp." + std::to_string(::getpid()) + "." + tag;
}

// `to` becomes the same file as `from`: a hard link made under a temporary name, then renamed over
// `to`; where the file system has no hard links, a copy (fsynced) takes the link's place.
void link_over(const fs::path& from, const fs::path& to) {
  const fs::path tmp = temp_beside(to, "link");
  std::error_code ec;
  fs::remove(tmp, ec);
  fs::create_hard_link(from, tmp, ec);
  if (ec) {
    ec.clear();
    fs::copy_file(from, tmp, ec);
    const int fd = ec ? -1 : ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      if (::fsync(fd) != 0) ec = std::error_code(errno, std::generic_category());
      ::close(fd);
    }
  }
  if (!ec) fs::rename(tmp, to, ec);
  if (ec) {
    std::error_code rm;
    fs::remove(tmp, rm);
    throw std::runtime_error(to.string() + ": cannot make it the same file as " + from.string() + " (" + ec.message() + ")");
  }
  sync_folder(to.parent_path());
}

// Whether `name` is `<prefix>.tmp.<pid>...` or `<prefix>.link.<pid>` of a process that is gone.
bool stale_temp(const std::string& name, const std::string& prefix) {
  for (const char* tag : {".tmp.", ".link."}) {
    const std::string start = prefix + tag;
    if (name.rfind(start, 0) != 0) continue;
    const std::string rest = name.substr(start.size());
    const size_t digits = rest.find_first_not_of("0123456789");
    if (digits == 0 || (digits != std::string::npos && rest[digits] != '.')) continue;
    const long pid = std::strtol(rest.c_str(), nullptr, 10);
    const bool alive = pid != ::getpid() && (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM);
    if (!alive) return true;
  }
  return false;
}

// Removes the temporary files of the run's files (and of panels/) whose process is gone.
std::vector<std::string> remove_stale_temps(const fs::path& dir) {
  std::vector<std::string> removed;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    for (const char* f : kRunFiles) {
      std::error_code rm;
      if (stale_temp(name, f) && fs::remove(entry.path(), rm)) removed.push_back(name);
    }
  }
  for (const auto& entry : fs::directory_iterator(dir / kPanels, ec)) {
    const std::string name = entry.path().filename().string();
    const size_t tmp = name.find(".tmp.");
    std::error_code rm;
    if (tmp != std::string::npos && tmp > 0 && stale_temp(name, name.substr(0, tmp)) && fs::remove(entry.path(), rm))
      removed.push_back(std::string(kPanels) + "/" + name);
  }
  return removed;
}

std::string shell_quote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+=/.,:@%") ==
                        std::string::npos)
    return s;
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string shortest(double v) {  // the shortest text that reads back as v
  char buf[40];
  for (int digits = 1; digits <= 17; ++digits) {
    std::snprintf(buf, sizeof buf, "%.*g", digits, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

std::string resume_command(const fs::path& last) { return "train_unet --resume " + shell_quote(last.string()); }

// "<path>: cannot write (<step>: <reason>)" -> "<step>: <reason>"; other messages as they are.
std::string cause(const std::string& what) {
  const std::string mark = ": cannot write (";
  const size_t at = what.find(mark);
  if (at == std::string::npos || what.back() != ')') return what;
  return what.substr(at + mark.size(), what.size() - at - mark.size() - 1);
}

bool is_disk_full(const std::string& what) { return what.find(std::strerror(ENOSPC)) != std::string::npos; }

}  // namespace

// ---- the state of a folder -----------------------------------------------------------------------

FolderState inspect_run_folder(const fs::path& dir, const TrainConfig& cfg, std::vector<std::string>* found) {
  std::vector<std::string> names;
  for (const char* f : kRunFiles)
    if (present(dir / f)) names.emplace_back(f);
  const bool synthetic = cfg.data_dir.empty() && cfg.train_csv.empty();
  if (synthetic && present(dir / "synthetic")) names.emplace_back("synthetic/");
  if (found) *found = names;
  if (names.empty()) return FolderState::Fresh;
  if (present(dir / "last.safetensors") || present(dir / "best.safetensors")) return FolderState::Resumable;
  return is_run_config(dir / "config.json") ? FolderState::Restartable : FolderState::Foreign;
}

std::string restart_command(const TrainConfig& cfg) {
  const TrainConfig d;
  std::string s = "train_unet";
  auto flag = [&](const char* name, const std::string& v) { s += std::string(" ") + name + " " + shell_quote(v); };
  auto sw = [&](const char* name, bool on) {
    if (on) s += std::string(" ") + name;
  };
  if (cfg.data_dir != d.data_dir) flag("--data-dir", cfg.data_dir);
  if (cfg.train_csv != d.train_csv) flag("--train-csv", cfg.train_csv);
  if (cfg.val_csv != d.val_csv) flag("--val-csv", cfg.val_csv);
  if (cfg.val_fraction != d.val_fraction) flag("--val-fraction", shortest(cfg.val_fraction));
  if (cfg.split_seed != d.split_seed) flag("--split-seed", std::to_string(cfg.split_seed));
  if (cfg.synthetic_count != d.synthetic_count) flag("--synthetic-count", std::to_string(cfg.synthetic_count));
  if (cfg.height != d.height || cfg.width != d.width)
    flag("--image-size", std::to_string(cfg.height) + "x" + std::to_string(cfg.width));
  sw("--no-augment", !cfg.augment);
  sw("--skip-bad", cfg.skip_bad);
  if (cfg.decoder != d.decoder) flag("--decoder", cfg.decoder);
  if (cfg.cache_mb != d.cache_mb) flag("--cache-mb", std::to_string(cfg.cache_mb));
  std::string features;
  for (int64_t f : cfg.features) features += (features.empty() ? "" : ",") + std::to_string(f);
  flag("--features", features);  // always: the app's default depends on the data
  if (cfg.activation != d.activation) flag("--activation", cfg.activation);
  sw("--conv-bias", cfg.conv_bias);
  if (cfg.epochs != d.epochs) flag("--epochs", std::to_string(cfg.epochs));
  if (cfg.batch_size != d.batch_size) flag("--batch-size", std::to_string(cfg.batch_size));
  if (cfg.lr != d.lr) flag("--lr", shortest(cfg.lr));
  if (cfg.optimizer != d.optimizer) flag("--optimizer", cfg.optimizer);
  TrainConfig auto_decay = cfg;
  auto_decay.weight_decay = -1;
  if (cfg.resolved_weight_decay() != auto_decay.resolved_weight_decay())
    flag("--weight-decay", shortest(cfg.resolved_weight_decay()));
  if (cfg.scheduler != d.scheduler) flag("--scheduler", cfg.scheduler);
  if (cfg.loss != d.loss) flag("--loss", cfg.loss);
  if (cfg.seed != d.seed) flag("--seed", std::to_string(cfg.seed));
  if (cfg.max_steps != d.max_steps) flag("--max-steps", std::to_string(cfg.max_steps));
  if (cfg.device != d.device) flag("--device", cfg.device);
  sw("--tf32", cfg.tf32);
  if (cfg.threads != d.threads) flag("--threads", std::to_string(cfg.threads));
  if (cfg.workers != d.workers) flag("--workers", std::to_string(cfg.workers));
  sw("--quiet", cfg.quiet);
  flag("--out", cfg.out);
  return s;
}

// ---- repairs before a resume ---------------------------------------------------------------------

std::vector<std::string> repair_for_resume(const std::string& checkpoint) {
  const fs::path ckpt = checkpoint;
  const fs::path dir = ckpt.has_parent_path() ? ckpt.parent_path() : fs::path(".");
  std::vector<std::string> notes;
  if (ckpt.filename() != "last.safetensors" || !fs::is_directory(dir)) return notes;
  for (const std::string& t : remove_stale_temps(dir)) notes.push_back("removed the leftover temporary file " + t);
  const fs::path last = dir / "last.safetensors", best = dir / "best.safetensors";
  std::optional<Position> l = read_position(last);
  const std::optional<Position> b = read_position(best);
  if (!present(last) && !present(best)) {
    if (present(dir / "config.json") && is_run_config(dir / "config.json")) {
      TrainConfig cfg = TrainConfig::from_json(read_text(dir / "config.json"));
      cfg.out = dir.string();
      cfg.resume.clear();
      throw std::runtime_error(checkpoint + ": no such file: the run in " + dir.string() +
                               " stopped before its first checkpoint, so there is nothing to resume; it is "
                               "restartable: start it over with: " + restart_command(cfg));
    }
    throw std::runtime_error(checkpoint + ": no such file");
  }
  // The kill came between linking an epoch's checkpoint as best and renaming it to last: best is the
  // newer position, and last becomes it.
  if (b && (!l || b->step > l->step)) {
    link_over(best, last);
    notes.push_back("finished the interrupted save of epoch " + std::to_string(b->epoch) + ": " + last.string() +
                    " now holds it (it held " + (l ? "epoch " + std::to_string(l->epoch) : std::string("nothing")) + ")");
    l = b;
  }
  if (l && l->best_epoch > 0 && !(b && b->epoch == l->best_epoch && b->batch == 0)) {
    const std::string held = b ? "epoch " + std::to_string(b->epoch) : std::string(present(best) ? "an unreadable file" : "nothing");
    if (l->epoch == l->best_epoch && l->batch == 0) {
      link_over(last, best);
      notes.push_back("repaired " + best.string() + ": it held " + held + ", the best epoch is " +
                      std::to_string(l->best_epoch) + ", which " + last.string() + " holds");
    } else {
      notes.push_back("warning: " + best.string() + " holds " + held + ", not the best epoch " +
                      std::to_string(l->best_epoch) + ", and no copy of that epoch is left");
    }
  }
  if (!notes.empty()) {
    std::ofstream log(dir / "log.txt", std::ios::app);
    for (const std::string& n : notes) log << n << "\n";
  }
  return notes;
}

// ---- the test hook -------------------------------------------------------------------------------

void fault_point(const char* point) {
  struct Plan {
    std::string point;
    int64_t nth = 1;
    int signal = SIGKILL;
    std::atomic<int64_t> hits{0};
    Plan() {
      const char* env = std::getenv("TL_FAULT_KILL_AT");
      if (!env || !*env) return;
      std::string s = env;
      if (const auto colon = s.find(':'); colon != std::string::npos) {
        const std::string sig = s.substr(colon + 1);
        signal = sig == "TERM" ? SIGTERM : sig == "INT" ? SIGINT : sig == "HUP" ? SIGHUP : SIGKILL;
        s = s.substr(0, colon);
      }
      if (const auto at = s.find('@'); at != std::string::npos) {
        nth = std::max<int64_t>(1, std::atoll(s.c_str() + at + 1));
        s = s.substr(0, at);
      }
      point = s;
    }
  };
  static Plan plan;
  if (plan.point.empty() || plan.point != point) return;
  if (++plan.hits == plan.nth) ::kill(::getpid(), plan.signal);
}

// ---- RunFolder -----------------------------------------------------------------------------------

RunFolder::RunFolder(const TrainConfig& cfg, bool writer) : cfg_(cfg), writer_(writer), dir_(cfg.out) {
  if (!writer_) return;
  std::vector<std::string> found;
  const FolderState state = inspect_run_folder(dir_, cfg, &found);
  std::string list;
  for (const std::string& f : found) list += (list.empty() ? "" : ", ") + f;
  if (!cfg.resume.empty()) {
    notes_ = repair_for_resume(cfg.resume);  // which logs them itself
    const fs::path from = fs::path(cfg.resume).has_parent_path() ? fs::path(cfg.resume).parent_path() : fs::path(".");
    std::error_code ec;
    const bool same = fs::equivalent(from, dir_, ec);
    if (!same && state != FolderState::Fresh)
      throw std::runtime_error("--out " + dir_.string() + ": already holds " + list +
                               ", which resuming into it would overwrite; resume into the checkpoint's own folder (leave "
                               "out --out) or into a new folder");
  } else if (state == FolderState::Resumable) {
    throw std::runtime_error(dir_.string() + " already holds a run (" + list + "); continue it with: " +
                             resume_command(last()) + "; or choose another --out");
  } else if (state == FolderState::Foreign) {
    throw std::runtime_error("--out " + dir_.string() + ": holds " + list + ", which this run would overwrite, and is not a run folder (" +
                             (present(file("config.json")) ? "its config.json is not a run's" : "it has no config.json of a run") +
                             "); choose an empty or new folder");
  } else if (state == FolderState::Restartable) {
    // A run that stopped before its first checkpoint: nothing in it is worth keeping but its log.
    // config.json stays until it is rewritten, so that a kill in between leaves a restartable folder.
    for (const char* f : {"metrics.csv", "train.csv", "val.csv", "report.html", "curves.svg"}) fs::remove(dir_ / f);
    fs::remove_all(dir_ / "synthetic");
    fs::remove_all(dir_ / kPanels);
    notes_.push_back("starting over: " + dir_.string() + " held a run that stopped before its first checkpoint");
  }
  const size_t logged = notes_.size();
  fs::create_directories(dir_);
  for (const std::string& t : remove_stale_temps(dir_)) notes_.push_back("removed the leftover temporary file " + t);
  try {
    write_file_atomic(file("config.json").string(), cfg.to_json());  // first: marks the folder as a run's
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string(e.what()) + (is_disk_full(e.what()) ? "; free some space, then " : "; ") +
                             next_step());
  }
  fault_point("config");
  log_.open(file("log.txt"), std::ios::app);
  if (!log_) throw std::runtime_error(file("log.txt").string() + ": cannot open for writing");
  for (size_t i = logged; i < notes_.size(); ++i) log(notes_[i]);
}

void RunFolder::log(const std::string& line) {
  if (writer_) log_ << line << "\n" << std::flush;
}

std::string RunFolder::next_step() const {
  const FolderState state = inspect_run_folder(dir_, cfg_);
  if (state == FolderState::Resumable) return "the run folder is resumable: continue with: " + resume_command(last());
  if (!cfg_.resume.empty()) {  // nothing new was saved: the checkpoint resumed from is still the place to go on
    const bool same_folder = fs::path(cfg_.resume).parent_path() == dir_;
    return "continue with: " + resume_command(cfg_.resume) + (same_folder ? "" : " --out " + shell_quote(dir_.string()));
  }
  TrainConfig restart = cfg_;
  restart.resume.clear();
  return std::string(state == FolderState::Restartable ? "the run folder is restartable: start it over with: "
                                                        : "the run folder holds nothing of the run yet: start it with: ") +
         restart_command(restart);
}

std::string RunFolder::log_error(const std::string& what) {
  const std::string message = what + (is_disk_full(what) ? "; free some space, then " : "; ") + next_step();
  log("error: " + message);
  return message;
}

bool RunFolder::has_splits() const { return present(file("train.csv")) && present(file("val.csv")); }

void RunFolder::write_splits(const std::vector<data::Sample>& train, const std::vector<data::Sample>& val) {
  if (!writer_) return;
  data::write_split_csv(file("train.csv").string(), train);
  data::write_split_csv(file("val.csv").string(), val);
}

std::vector<std::string> RunFolder::metric_rows(int64_t keep) const {
  std::vector<std::string> rows;
  std::ifstream f(file("metrics.csv"));
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

void RunFolder::write_metric_rows(const std::vector<std::string>& rows) {
  if (!writer_) return;
  std::string text = std::string(kMetricsColumns) + "\n";
  for (const std::string& r : rows) text += r + "\n";
  write_file_atomic(file("metrics.csv").string(), text);
  fault_point("metrics");
}

fs::path RunFolder::view_path(const std::string& name) const {
  const fs::path path = dir_ / name;
  if (path.parent_path() != dir_) fs::create_directories(path.parent_path());
  return path;
}

void RunFolder::save_epoch(const Writer& write, int64_t epoch, bool is_best) {
  if (!writer_) return;
  const fs::path staging = temp_beside(last(), "next");
  try {
    write(staging.string());
  } catch (const std::exception& e) {
    std::error_code ec;
    fs::remove(staging, ec);
    throw std::runtime_error(last().string() + ": cannot save the checkpoint of epoch " + std::to_string(epoch) + " (" +
                             cause(e.what()) + "); last.safetensors and best.safetensors are unchanged");
  }
  fault_point("checkpoint");
  if (is_best) {
    try {
      link_over(staging, best());
    } catch (const std::exception& e) {
      std::error_code ec;
      fs::remove(staging, ec);
      throw std::runtime_error(std::string(e.what()) + "; last.safetensors and best.safetensors are unchanged");
    }
    fault_point("best");
  }
  std::error_code ec;
  fs::rename(staging, last(), ec);
  if (ec) throw std::runtime_error(last().string() + ": cannot replace it (" + ec.message() + ")");
  sync_folder(dir_);
  fault_point("last");
}

void RunFolder::save_stop(const Writer& write) {
  if (!writer_) return;
  try {
    write(last().string());
  } catch (const std::exception& e) {
    throw std::runtime_error(last().string() + ": cannot save the checkpoint of the stop (" + cause(e.what()) +
                             "); last.safetensors is unchanged");
  }
  fault_point("stop");
}

}  // namespace tl::train
