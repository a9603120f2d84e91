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
#include "data/rle.h"
#include "tensor/parallel.h"
#include "tensor/precision.h"
#include "train/cli.h"
#include "train/predict.h"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  tl::cli::Flags flags("predict_unet",
                       "Segments photos with a trained UNet checkpoint. Writes <stem>_mask.png (0/255, at the photo's\n"
                       "own resolution) into --output for each input, and with --overlay also <stem>_overlay.png.\n"
                       "Stops at the first unreadable input, naming it (files already written are kept).");
  std::string checkpoint, input, output = "predictions", rle, image_size, device = "auto";
  double threshold = 0.5;
  bool write_overlay = false, tf32 = false;
  int64_t threads = 0, batch_size = 4;
  flags.add("--checkpoint", &checkpoint, "model weights and config (.safetensors); required");
  flags.add("--input", &input, "a photo, or a folder: every .jpg/.jpeg/.png/.gif/.bmp in it, sorted; required");
  flags.add("--output", &output, "folder for the masks (created when missing)");
  flags.add("--threshold", &threshold, "a pixel is car when its probability is above this, 0 to 1");
  flags.add_switch("--overlay", &write_overlay, "also write <stem>_overlay.png: the photo, car tinted and outlined");
  flags.add("--rle", &rle, "also write this Kaggle submission CSV (img,rle_mask; one row per input)");
  flags.add("--image-size", &image_size, "model input HxW; none: the checkpoint's image_size, else 160x240");
  flags.add("--batch-size", &batch_size, "photos per forward pass");
  flags.add("--threads", &threads, "compute threads; 0: all cores");
  flags.add("--device", &device, "auto (the GPU when there is one, else the CPU) | cpu | cuda | cuda:N");
  flags.add_switch("--tf32", &tf32, "TF32 GEMMs on the GPU (faster, 10-bit mantissa inputs; as TL_ALLOW_TF32=1)");
  return tl::cli::run_main("predict_unet", [&] {
    if (!flags.parse(argc, argv)) return 0;
    if (checkpoint.empty()) throw tl::cli::UsageError("--checkpoint is required");
    if (input.empty()) throw tl::cli::UsageError("--input is required");
    if (!(threshold >= 0 && threshold <= 1))
      throw tl::cli::UsageError("--threshold: expected a number from 0 to 1, got " + std::to_string(threshold));
    if (threads < 0) throw tl::cli::UsageError("--threads: expected 0 (all cores) or more, got " + std::to_string(threads));
    if (batch_size < 1) throw tl::cli::UsageError("--batch-size: expected at least 1, got " + std::to_string(batch_size));
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
    const auto t0 = std::chrono::steady_clock::now();
    const tl::train::Predictor predictor(checkpoint, height, width, dev);
    fs::create_directories(output);

    std::vector<std::pair<std::string, std::string>> rows;  // the submission
    int64_t done = 0;
    double car_fraction = 0;
    for (size_t b = 0; b < photos.size(); b += static_cast<size_t>(batch_size)) {
      // Decode the batch; a bad file stops the run after the photos before it are written.
      std::vector<tl::data::Image> images;
      std::string error;
      for (size_t i = b; i < photos.size() && i < b + static_cast<size_t>(batch_size); ++i) {
        try {
          images.push_back(tl::data::read_image(photos[i]));
        } catch (const std::exception& e) {
          error = e.what();
          break;
        }
      }
      const std::vector<tl::data::Image> masks = predictor.predict_mask(images, threshold);
      for (size_t k = 0; k < masks.size(); ++k) {
        const std::string& photo = photos[b + k];
        const std::string stem = (fs::path(output) / fs::path(photo).stem()).string();
        tl::data::Image out = masks[k];
        int64_t car = 0;
        for (uint8_t& v : out.pixels) car += v, v = v ? 255 : 0;
        car_fraction += static_cast<double>(car) / static_cast<double>(out.numel());
        tl::data::write_png(stem + "_mask.png", out);
        if (write_overlay) tl::data::write_png(stem + "_overlay.png", tl::train::overlay(images[k], masks[k]));
        if (!rle.empty()) rows.emplace_back(fs::path(photo).filename().string(), tl::data::rle_encode(masks[k]));
        ++done;
      }
      if (!error.empty())
        throw std::runtime_error(error + " (" + std::to_string(done) + " of " + std::to_string(photos.size()) +
                                 " photos were written before it)");
    }
    if (!rle.empty()) tl::train::write_submission_csv(rle, rows);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("predict_unet: %lld photo%s -> %s/ (masks%s%s%s), model %lldx%lld on %s, threshold %g, mean car %.1f%%, "
                "%.2f s (%.0f ms per photo)\n",
                static_cast<long long>(done), done == 1 ? "" : "s", output.c_str(), write_overlay ? ", overlays" : "",
                rle.empty() ? "" : "; RLE: ", rle.c_str(), static_cast<long long>(predictor.height()),
                static_cast<long long>(predictor.width()), dev.str().c_str(), threshold, 100.0 * car_fraction / static_cast<double>(done),
                seconds, 1000.0 * seconds / static_cast<double>(done));
    return 0;
  });
}
