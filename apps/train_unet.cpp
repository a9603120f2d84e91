// train_unet: trains the UNet on Carvana-layout data (or the built-in synthetic set). See --help.
#include <unistd.h>

#include <csignal>
#include <ctime>
#include <filesystem>
#include <iostream>

#include "data/image.h"
#include "dist/communicator.h"
#include "nn/checkpoint.h"
#include "train/cli.h"
#include "train/run_folder.h"
#include "train/trainer.h"

namespace {

using tl::cli::UsageError;

std::string default_out() {
  char buf[64];
  const std::time_t now = std::time(nullptr);
  std::strftime(buf, sizeof buf, "runs/train_%Y%m%d-%H%M%S", std::localtime(&now));
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  // Under mpirun with several ranks: MPI, one process per rank (dist/communicator.h).
  tl::dist::Communicator* comm = nullptr;
  try {
    comm = &tl::dist::init(&argc, &argv);
  } catch (const std::exception& e) {
    std::cerr << "train_unet: " << e.what() << "\n";
    return 1;
  }
  const bool several = comm->size() > 1;
  const std::string program = several ? "train_unet: rank " + std::to_string(comm->rank()) : std::string("train_unet");
  const int code = tl::cli::run_main(program, [&] {
    tl::train::TrainConfig c;
    std::string image_size = "160x240", features = "64,128,256,512", weight_decay = "auto";
    int64_t split_seed = c.split_seed, seed = c.seed, max_pixels = tl::data::kDefaultMaxImagePixels;
    bool no_augment = false;
    tl::cli::Flags f("train_unet",
                     "Trains the UNet of DESIGN.md for car segmentation on the Kaggle Carvana layout\n"
                     "(DIR/train/*.jpg, DIR/train_masks/*_mask.gif|png) or on split CSVs (header image,mask).\n"
                     "Without --data-dir it generates a synthetic Carvana-like set into OUT/synthetic and trains on it.\n"
                     "Writes OUT/config.json, metrics.csv, log.txt, train.csv, val.csv, last.safetensors and\n"
                     "best.safetensors (by validation dice), and for people report.html, curves.svg and\n"
                     "panels/epoch_NNN.jpg (validation photos). Ctrl-C, SIGTERM or SIGHUP saves last.safetensors and\n"
                     "stops (exit status 128 + the signal);\n"
                     "--resume OUT/last.safetensors continues exactly where the run stopped; --init CKPT starts a new run\n"
                     "from a checkpoint's weights (as training at 160x240, then fine-tuning at 320x480).\n"
                     "Under `mpirun -np N` it trains data-parallel: each rank takes --batch-size images of its\n"
                     "shard per step (global batch N x --batch-size) and rank 0 writes the run folder.");
    f.add("--data-dir", &c.data_dir, "Kaggle-layout folder (empty: the synthetic set)");
    f.add("--train-csv", &c.train_csv,
          "training split file (with --val-csv); with --data-dir D its bare names are D/train/NAME and D/train_masks/NAME, "
          "other relative paths are relative to the CSV");
    f.add("--val-csv", &c.val_csv, "validation split file");
    f.add("--val-fraction", &c.val_fraction, "share of the cars held out for validation (automatic split)");
    f.add("--split-seed", &split_seed, "seed of the automatic split by car");
    f.add("--synthetic-count", &c.synthetic_count, "images in the synthetic set (8 views per car)");
    f.add("--image-size", &image_size, "HxW the images are resized to (multiples of 2^levels)");
    f.add("--epochs", &c.epochs, "passes over the training set");
    f.add("--batch-size", &c.batch_size, "images per step");
    f.add("--lr", &c.lr, "learning rate");
    f.add("--optimizer", &c.optimizer, "adam | adamw | sgd (momentum 0.9)");
    f.add("--weight-decay", &weight_decay, "L2 (adam, sgd) or decoupled (adamw) decay; auto: 0.01 for adamw, else 0");
    f.add("--scheduler", &c.scheduler, "none | cosine (to 0 over the epochs) | plateau (halve lr when val dice stalls)");
    f.add("--loss", &c.loss, "bce | bce+dice (BCE-with-logits plus soft dice loss)");
    f.add("--activation", &c.activation, "relu | gelu | silu | pysilu");
    f.add("--features", &features,
          "UNet widths, one per level (on the synthetic set: 16,32,64,128, to train in minutes on 2 cores)");
    f.add_switch("--conv-bias", &c.conv_bias, "biases in the 3x3 convolutions (off: BatchNorm follows)");
    f.add("--seed", &seed, "seed of the weights, the shuffling and the augmentations");
    f.add("--device", &c.device, "auto (the GPU when there is one, else the CPU) | cpu | cuda | cuda:N");
    f.add_switch("--tf32", &c.tf32, "TF32 GEMMs on the GPU (faster, 10-bit mantissa inputs; as TL_ALLOW_TF32=1)");
    f.add("--threads", &c.threads, "compute threads (0: all cores)");
    f.add("--workers", &c.workers, "loader threads that prepare batches ahead");
    f.add_switch("--no-augment", &no_augment, "train without rotation and flips");
    f.add_switch("--skip-bad", &c.skip_bad, "skip (and count) unreadable or mismatched samples instead of stopping");
    f.add("--decoder", &c.decoder, "stb | turbo (JPEGs decoded by libjpeg-turbo at a reduced scale, then resized)");
    f.add("--cache-mb", &c.cache_mb,
          "memory for decoded samples, MiB; the rest are decoded every epoch by the workers (-1: half the RAM)");
    f.add("--max-pixels", &max_pixels,
          "refuse an image or mask whose header declares more pixels (H*W) than this, before decoding it");
    f.add("--out", &c.out, "run folder (none: runs/train_<date>-<time>, or with --resume the checkpoint's folder)");
    f.add("--resume", &c.resume, "continue the run that wrote this checkpoint (last.safetensors)");
    f.add("--init", &c.init,
          "start a new run from this checkpoint's weights (fine-tuning, e.g. at a larger --image-size); the model flags "
          "default to its own, the optimizer and schedule start fresh");
    f.add("--max-steps", &c.max_steps, "stop after this many steps in all, saving last.safetensors (0: no limit)");
    f.add_switch("--quiet", &c.quiet, "no progress bar, only the epoch lines");
    f.add_switch("--sync-bn", &c.sync_bn, "under mpirun: batch norm statistics over the global batch (else per rank)");
    if (!f.parse(argc, argv)) return 0;
    if (max_pixels < 1) throw UsageError("--max-pixels: expected at least 1, got " + std::to_string(max_pixels));
    tl::data::set_max_image_pixels(max_pixels);

    if (f.was_set("--init") && f.was_set("--resume"))
      throw UsageError("--init and --resume exclude each other: --resume continues a run, --init starts a new one from a checkpoint's weights");
    if (!c.resume.empty()) {
      // The run's own settings come from the checkpoint; only these may change on a resume.
      const std::vector<std::string> free_flags = {"--resume", "--epochs", "--max-steps", "--quiet", "--threads",
                                                   "--workers", "--out", "--device", "--tf32", "--max-pixels",
                                                   "--cache-mb"};
      for (const char* name : {"--data-dir", "--train-csv", "--val-csv", "--val-fraction", "--split-seed", "--synthetic-count",
                               "--image-size", "--batch-size", "--lr", "--optimizer", "--weight-decay", "--scheduler",
                               "--loss", "--activation", "--features", "--conv-bias", "--seed", "--no-augment", "--skip-bad",
                               "--decoder", "--sync-bn", "--init"})
        if (f.was_set(name))
          throw UsageError(std::string(name) + " cannot change on --resume: the run's settings come from the checkpoint");
      // A kill may have left the checkpoint pair one save apart: repaired first (or the folder named
      // as one to start over).
      if (comm->rank() == 0)
        for (const std::string& note : tl::train::repair_for_resume(c.resume)) std::cout << note << "\n";
      comm->barrier();  // the other ranks read the checkpoint once rank 0 has repaired the folder
      if (!std::filesystem::exists(c.resume)) throw std::runtime_error(c.resume + ": no such file");
      tl::train::TrainConfig r = tl::train::config_from_checkpoint(c.resume);
      if (f.was_set("--epochs")) r.epochs = c.epochs;
      if (f.was_set("--max-steps")) r.max_steps = c.max_steps;
      else r.max_steps = 0;
      if (f.was_set("--threads")) r.threads = c.threads;
      if (f.was_set("--workers")) r.workers = c.workers;
      if (f.was_set("--cache-mb")) r.cache_mb = c.cache_mb;
      if (f.was_set("--device")) r.device = c.device;
      if (f.was_set("--tf32")) r.tf32 = true;  // else the run's own setting
      r.quiet = c.quiet;
      r.out = f.was_set("--out") ? c.out : std::filesystem::path(c.resume).parent_path().string();
      if (r.out.empty()) r.out = ".";
      r.resume = c.resume;
      c = r;
    } else {
      if (!c.init.empty()) {
        // The model flags not given come from the checkpoint; given ones must match it (the trainer says so).
        if (!std::filesystem::is_regular_file(c.init)) throw std::runtime_error("--init " + c.init + ": no such file");
        const tl::nn::UNetConfig m = tl::nn::load_checkpoint(c.init).config;
        if (!f.was_set("--features")) {
          features.clear();
          for (int64_t w : m.features) features += (features.empty() ? "" : ",") + std::to_string(w);
        }
        if (!f.was_set("--activation")) c.activation = m.activation;
        if (!f.was_set("--conv-bias")) c.conv_bias = m.conv_bias;
      }
      const auto [h, w] = tl::cli::parse_size("--image-size", image_size);
      c.height = h;
      c.width = w;
      const bool synthetic = c.data_dir.empty() && c.train_csv.empty() && c.val_csv.empty();
      if (synthetic && !f.was_set("--features")) features = "16,32,64,128";
      c.features = tl::cli::parse_int_list("--features", features);
      c.split_seed = split_seed;
      c.seed = seed;
      c.augment = !no_augment;
      c.weight_decay = weight_decay == "auto" ? -1.0 : tl::cli::parse_double("--weight-decay", weight_decay);
      if (c.weight_decay < -0.0 && weight_decay != "auto") throw UsageError("--weight-decay: must not be negative");
      if (c.out.empty()) c.out = default_out();
      if (!c.data_dir.empty() && !std::filesystem::is_directory(c.data_dir))
        throw std::runtime_error("--data-dir " + c.data_dir +
                                 (std::filesystem::exists(c.data_dir)
                                      ? ": is a file, not a folder (give the folder that holds train/ and train_masks/)"
                                      : ": no such folder"));
      try {
        c.validate();
      } catch (const std::invalid_argument& e) {
        throw UsageError(e.what());
      }
    }
    const bool tty = ::isatty(STDOUT_FILENO) != 0;
    try {
      const tl::train::TrainResult r = tl::train::train(c, std::cout, tty);
      if (r.stop == tl::train::StopReason::Interrupted) return 128 + (r.signal ? r.signal : SIGINT);
    } catch (const tl::train::TrainingDiverged& e) {
      std::cerr << program << ": " << e.what() << "\n";
      return 3;  // every rank: the loss is averaged over them
    }
    return 0;
  });
  // A failure on one rank (a bad file, a full disk) ends every rank at once, after its message:
  // the others would otherwise wait for it in their next collective.
  if (several && code == 1) comm->abort(code);
  tl::dist::finalize();
  return code;
}
