#pragma once
// The run folder (`--out`): its files, the order they are written in, and what a crash, a kill or a
// full disk may leave there. Everything train() writes into the folder goes through this class.
//
//   config.json        written first: it marks the folder as a run's (it parses as a TrainConfig)
//   log.txt            appended: the progress lines, epoch summaries, repairs and fatal errors
//   synthetic/         the generated set (synthetic runs only)
//   train.csv, val.csv the split used
//   metrics.csv        one row per finished epoch, written before that epoch's checkpoint
//   last.safetensors   the newest position: after every epoch and on a stop
//   best.safetensors   a hard link to the checkpoint of the best epoch (a copy where the file
//                      system has no hard links)
//   report.html, curves.svg, panels/epoch_NNN.jpg
//                      the views a person opens (train/run_report.h): rewritten at the start and
//                      after every epoch's checkpoint; never read back by the trainer
//
// Invariants, at every instant (each file is replaced by an atomic rename, never rewritten):
// - A folder is in one of four states: fresh (none of the files above), foreign (some of them, but
//   config.json is not a run's), restartable (a run's config.json, no checkpoint yet: a new run
//   into it starts over) or resumable (a checkpoint: `--resume DIR/last.safetensors`). A new run
//   refuses a foreign or resumable folder; the message gives the command that fits.
// - Of last and best, the one with more steps is the run's position, and best holds the epoch it
//   names as best. An epoch's checkpoint is written under a temporary name, linked as best (when it
//   is), and only then renamed to last; so a kill between the two leaves best one epoch ahead of
//   last, and resuming rolls last forward to it. Resuming also relinks a best that does not hold the
//   named epoch when last does.
// - Temporary files are `<file>.tmp.<pid>.<n>` (tensor/file_util.h) and `<file>.tmp.<pid>.next|link`
//   (here); those whose process is gone are removed when a run starts or resumes.
//
// Test hook: TL_FAULT_KILL_AT=<point>[@<n>][:KILL|TERM|INT|HUP] sends the signal (default SIGKILL) to
// the process the n-th time (default 1) it reaches <point>: config, data, step, metrics, checkpoint
// (an epoch's checkpoint written, not yet linked), best (linked as best), last (renamed to last) and
// stop (the checkpoint of a stop written). Unset, it costs one check per point.
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "data/split.h"
#include "train/trainer.h"

namespace tl::train {

enum class FolderState { Fresh, Foreign, Restartable, Resumable };

// What is in `dir` now, for a run with config `cfg` (its synthetic/ counts only for a synthetic run).
// `found` gets the names of the run's files that are there.
FolderState inspect_run_folder(const std::filesystem::path& dir, const TrainConfig& cfg, std::vector<std::string>* found = nullptr);

// The train_unet command that starts the run of `cfg` over (its flags, defaults left out).
std::string restart_command(const TrainConfig& cfg);

// Before a resume reads `checkpoint`: when it is a run folder's last.safetensors, removes stale
// temporary files, rolls last forward to a newer best and relinks best (see above); returns what it
// did, one line each (also appended to the folder's log.txt). A missing checkpoint in a restartable
// folder is an error that gives the restart command.
std::vector<std::string> repair_for_resume(const std::string& checkpoint);

// The test hook above.
void fault_point(const char* point);

class RunFolder {
 public:
  using Writer = std::function<void(const std::string& path)>;  // writes a checkpoint to path, atomically

  // Opens cfg.out for cfg's run: a new run refuses a foreign or resumable folder and starts a
  // restartable one over; a resume repairs the folder (repair_for_resume). Then removes stale
  // temporary files, writes config.json and opens log.txt. With writer false (the ranks of a
  // data-parallel run other than rank 0) it touches nothing on disk: the writes below do nothing and
  // the reads see what rank 0 wrote.
  explicit RunFolder(const TrainConfig& cfg, bool writer = true);

  const std::filesystem::path& path() const { return dir_; }
  std::filesystem::path file(const char* name) const { return dir_ / name; }
  std::filesystem::path last() const { return dir_ / "last.safetensors"; }
  std::filesystem::path best() const { return dir_ / "best.safetensors"; }
  // What opening did (started over, repaired), for the log.
  const std::vector<std::string>& notes() const { return notes_; }

  void log(const std::string& line);
  // A fatal error, into log.txt; returns `what` followed by what to do with the folder now.
  std::string log_error(const std::string& what);
  // What to do next: "continue with: train_unet --resume ..." or "start it over with: train_unet ...".
  std::string next_step() const;

  // The split files: read when the folder has both (a resume), else written.
  bool has_splits() const;
  void write_splits(const std::vector<data::Sample>& train, const std::vector<data::Sample>& val);

  // metrics.csv: the rows of epochs 1..keep, and a rewrite with `rows`.
  std::vector<std::string> metric_rows(int64_t keep) const;
  void write_metric_rows(const std::vector<std::string>& rows);

  // The path of a view (report.html, curves.svg, panels/...: `name` relative to the folder), its
  // subfolder made when missing. Views are written with tl::write_file_atomic (data::write_jpeg is
  // too), so a browser reloading one never reads a partial file.
  std::filesystem::path view_path(const std::string& name) const;

  // The checkpoint at the end of epoch `epoch`: written under a temporary name, linked as best when
  // `is_best`, then renamed to last. A failure leaves last and best as they were.
  void save_epoch(const Writer& write, int64_t epoch, bool is_best);
  // The checkpoint of a stop inside an epoch: last only.
  void save_stop(const Writer& write);

 private:
  TrainConfig cfg_;
  bool writer_;
  std::filesystem::path dir_;
  std::ofstream log_;
  std::vector<std::string> notes_;
};

}  // namespace tl::train
