// predict_unet --checkpoint W.safetensors --input FILE|DIR [--output DIR] [--overlay] [--rle FILE.csv] ...
// Segments photos with a trained UNet: <stem>_mask.png (0/255) at each photo's own resolution, and
// optionally <stem>_overlay.png and a Kaggle submission CSV.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "data/image.h"
#include "tensor/parallel.h"
#include "tensor/precision.h"
#include "train/cli.h"
#include "train/predict.h"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  tl::cli::Flags flags("predict_unet",
                       "Segments photos with a trained UNet checkpoint. Writes <stem>_mask.png (0/255, at the photo's\n"
                       "own resolution) into --output for each input, and with --overlay also <stem>_overlay.png.\n"
                       "Every output path is checked before the first photo is read. An unreadable photo stops the\n"
                       "run, naming it: the masks already written stay and --rle gets their rows. With --skip-bad\n"
                       "unreadable photos are skipped and listed instead, and the exit status is 0 unless all failed.");
  std::string checkpoint, input, output = "predictions", rle, image_size, device = "auto";
  double threshold = 0.5;
  bool write_overlay = false, tf32 = false, skip_bad = false, tta = false, largest_region = false, fill_holes = false;
  int64_t threads = 0, batch_size = 4, max_pixels = tl::data::kDefaultMaxImagePixels;
  flags.add("--checkpoint", &checkpoint, "model weights and config (.safetensors); required");
  flags.add("--input", &input, "a photo, or a folder: every .jpg/.jpeg/.png/.gif/.bmp in it, sorted; required");
  flags.add("--output", &output, "folder for the masks (created when missing)");
  flags.add("--threshold", &threshold, "a pixel is car when its probability is above this, 0 to 1");
  flags.add_switch("--overlay", &write_overlay, "also write <stem>_overlay.png: the photo, car tinted and outlined");
  flags.add("--rle", &rle, "also write this Kaggle submission CSV (img,rle_mask; one row per input)");
  flags.add_switch("--skip-bad", &skip_bad, "skip unreadable photos (each named on stderr, all listed at the end)");
  flags.add_switch("--tta", &tta,
                   "test-time augmentation: average the probabilities of each photo and its left-right mirror (2 forwards)");
  flags.add_switch("--largest-region", &largest_region,
                   "keep only the largest connected car region of each mask (drops blobs off the car)");
  flags.add_switch("--fill-holes", &fill_holes, "fill the background regions enclosed by car (holes not touching the border)");
  flags.add("--image-size", &image_size, "model input HxW; none: the checkpoint's image_size, else 160x240");
  flags.add("--batch-size", &batch_size, "photos per forward pass");
  flags.add("--threads", &threads, "compute threads; 0: all cores");
  flags.add("--device", &device, "auto (the GPU when there is one, else the CPU) | cpu | cuda | cuda:N");
  flags.add_switch("--tf32", &tf32, "TF32 GEMMs on the GPU (faster, 10-bit mantissa inputs; as TL_ALLOW_TF32=1)");
  flags.add("--max-pixels", &max_pixels, "refuse a photo whose header declares more pixels (H*W) than this, before decoding it");
  return tl::cli::run_main("predict_unet", [&] {
    if (!flags.parse(argc, argv)) return 0;
    if (checkpoint.empty()) throw tl::cli::UsageError("--checkpoint is required");
    if (input.empty()) throw tl::cli::UsageError("--input is required");
    if (!(threshold >= 0 && threshold <= 1))
      throw tl::cli::UsageError("--threshold: expected a number from 0 to 1, got " + std::to_string(threshold));
    if (threads < 0) throw tl::cli::UsageError("--threads: expected 0 (all cores) or more, got " + std::to_string(threads));
    if (batch_size < 1) throw tl::cli::UsageError("--batch-size: expected at least 1, got " + std::to_string(batch_size));
    if (max_pixels < 1) throw tl::cli::UsageError("--max-pixels: expected at least 1, got " + std::to_string(max_pixels));
    tl::data::set_max_image_pixels(max_pixels);
    int64_t height = 0, width = 0;
    if (!image_size.empty()) std::tie(height, width) = tl::cli::parse_size("--image-size", image_size);
    if (threads > 0) tl::set_num_threads(static_cast<int>(threads));
    tl::Device dev;
    try {
      dev = tl::nn::resolve_device(device);
    } catch (const std::invalid_argument& e) {
      throw tl::cli::UsageError(e.what());
    }
    if (tf32) tl::set_allow_tf32(true);

    const std::vector<std::string> photos = tl::train::list_photos(input);
    std::map<std::string, std::string> stems;  // stem -> the photo that has it
    for (const std::string& p : photos) {
      const std::string stem = fs::path(p).stem().string();
      if (auto [it, fresh] = stems.emplace(stem, p); !fresh)
        throw std::runtime_error(p + ": has the same stem as " + it->second + " (both would write " + stem + "_mask.png)");
    }
    // Every output is checked before the first photo is read (the folder after the checkpoint, so
    // that a wrong checkpoint creates nothing).
    if (!rle.empty()) tl::train::check_output_file(rle);
    const auto t0 = std::chrono::steady_clock::now();
    tl::train::Predictor predictor(checkpoint, height, width, dev);
    predictor.set_tta(tta);
    tl::train::check_output_folder(output);

    const tl::train::PredictReport report = tl::train::predict_files(
        predictor, photos, {output, rle, threshold, batch_size, write_overlay, skip_bad, largest_region, fill_holes},
        [](const std::string&, const std::string& why) { std::fprintf(stderr, "predict_unet: skipped %s\n", why.c_str()); });
    const int64_t done = report.done;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("predict_unet: %lld photo%s -> %s/ (masks%s%s%s), model %lldx%lld%s on %s, threshold %g, mean car %.1f%%, "
                "%.2f s (%.0f ms per photo)\n",
                static_cast<long long>(done), done == 1 ? "" : "s", output.c_str(), write_overlay ? ", overlays" : "",
                rle.empty() ? "" : "; RLE: ", rle.c_str(), static_cast<long long>(predictor.height()),
                static_cast<long long>(predictor.width()), tta ? " with flip TTA" : "", dev.str().c_str(), threshold, 100.0 * report.mean_car_fraction,
                seconds, 1000.0 * seconds / static_cast<double>(done));
    if (!report.skipped.empty()) {
      std::string list;
      for (const auto& [photo, why] : report.skipped) list += (list.empty() ? "" : ", ") + photo;
      std::fprintf(stderr, "predict_unet: skipped %zu unreadable photo%s of %zu (--skip-bad): %s\n",
                   report.skipped.size(), report.skipped.size() == 1 ? "" : "s", photos.size(), list.c_str());
    }
    return 0;
  });
}
