#pragma once
// The Carvana trainer behind apps/train_unet: data (Kaggle layout, split files or the built-in
// synthetic set), the UNet, the optimizer and schedule, the epoch loop with its progress display,
// validation metrics, metrics.csv, config.json and checkpoints, resuming, and clean stops.
//
// A run folder (`out`, see train/run_folder.h for its invariants) holds:
//   config.json        every setting of the run, defaults included
//   train.csv, val.csv the split used (header image,mask), so the run can be repeated
//   metrics.csv        one row per finished epoch (columns: kMetricsColumns)
//   log.txt            the plain progress lines and the epoch summaries
//   last.safetensors   model + optimizer + schedule + position, written after every epoch and on a stop
//   best.safetensors   the same at the epoch of the best validation dice so far
//   synthetic/         the generated data set, when no --data-dir was given
//   report.html, curves.svg, panels/epoch_NNN.jpg   the views for people (train/run_report.h)
#include <cstdint>
#include <iosfwd>
#include <stdexcept>
#include <string>
#include <vector>

#include "nn/json.h"

namespace tl::train {

inline constexpr const char* kMetricsColumns =
    "epoch,train_loss,train_dice,train_acc,val_loss,val_dice,val_dice_soft,val_acc,lr,seconds";

struct TrainConfig {
  // data
  std::string data_dir;            // Kaggle layout; empty: the synthetic set, written to <out>/synthetic
  std::string train_csv, val_csv;  // split files; both or neither (then an automatic split by car)
  double val_fraction = 0.2;
  int64_t split_seed = 20;
  int64_t synthetic_count = 384;   // samples in the synthetic set (8 views per car)
  int64_t height = 160, width = 240;
  bool augment = true;
  bool skip_bad = false;
  std::string decoder = "stb";     // stb | turbo (libjpeg-turbo at a reduced DCT scale, data/photo_decode.h)
  int64_t cache_mb = -1;           // decoded-sample cache budget, MiB; -1: half the machine's memory
  // model
  std::vector<int64_t> features = {64, 128, 256, 512};
  std::string activation = "relu";
  bool conv_bias = false;
  // optimization
  int64_t epochs = 5;
  int64_t batch_size = 4;
  double lr = 1e-3;
  std::string optimizer = "adam";  // adam | adamw | sgd (momentum 0.9)
  double weight_decay = -1;        // < 0: the optimizer's default (adamw 0.01, else 0)
  std::string scheduler = "cosine";  // none | cosine (over the epochs) | plateau (on val dice)
  std::string loss = "bce";        // bce | bce+dice
  int64_t seed = 20;               // weights, shuffling and augmentation
  int64_t max_steps = 0;           // stop after this many optimizer steps in all (0: no limit)
  // machine and output
  std::string device = "auto";     // auto (the GPU when there is one) | cpu | cuda | cuda:N
  bool tf32 = false;               // TF32 GEMMs on CUDA (TL_ALLOW_TF32=1 in the environment does the same)
  int64_t threads = 0;             // compute threads; 0: all cores
  int64_t workers = 2;             // loader threads
  bool sync_bn = false;            // under mpirun: batch norm statistics over the global batch (train/data_parallel.h)
  std::string out;                 // run folder (required by train())
  std::string resume;              // checkpoint to continue from
  std::string init;                // checkpoint whose weights (and batch norm statistics) start a new run:
                                   // fine-tuning, e.g. at a larger --image-size; optimizer and schedule start fresh
  bool quiet = false;              // no progress display, only the epoch lines

  // Throws cli::UsageError-style std::invalid_argument naming the flag ("--image-size ...").
  void validate() const;
  double resolved_weight_decay() const;
  std::string to_json() const;  // a flat JSON object, keys as the flags without "--"
  static TrainConfig from_json(const std::string& text);  // throws naming the key
};

enum class StopReason { Finished, MaxSteps, Interrupted };

struct TrainResult {
  StopReason stop = StopReason::Finished;
  int signal = 0;               // Interrupted: the signal that stopped it (SIGINT, SIGTERM or SIGHUP)
  int64_t epochs_done = 0;      // finished epochs
  int64_t steps = 0;            // optimizer steps in all
  double best_val_dice = 0;
  int64_t best_epoch = 0;       // 1-based; 0 before the first validation
  double last_val_dice = 0, last_train_loss = 0, first_train_loss = 0;
  double seconds = 0;
};

// A NaN or Inf loss: training stopped, nothing was written for the bad step.
struct TrainingDiverged : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Runs (or resumes) a run. `console` gets the progress display and the epoch lines; `tty` selects
// the redrawn progress bar, otherwise plain lines every few seconds. Ctrl-C (SIGINT), SIGTERM or
// SIGHUP during the run finishes the current step, writes last.safetensors, says so and returns
// StopReason::Interrupted with the signal; a second one kills as usual. The run folder's files and
// what a crash may leave in it are train/run_folder.h's: a new run refuses a folder that holds a
// file it would write (unless that folder is a run that stopped before its first checkpoint, which
// starts over), and a fatal error reaches log.txt and says how to resume or restart.
// The device is resolved first (nn::resolve_device): a CUDA device that is not there is a
// std::runtime_error "--device cuda: no CUDA device is available" before anything is written. On a
// GPU the whole step runs there: the model and optimizer state live on the device, batches are staged
// through pinned memory (data::DeviceStager), and the host reads back the loss and the logits (for the
// metrics) once per step. With tf32 the run turns TF32 GEMMs on for its duration (tl::set_allow_tf32).
TrainResult train(const TrainConfig& config, std::ostream& console, bool tty);

// The config of the run that wrote `checkpoint` (its "train_config" metadata).
TrainConfig config_from_checkpoint(const std::string& checkpoint);

}  // namespace tl::train
