// inference_panel --image FILE [--mask FILE] --checkpoints A.safetensors B... [--labels a b ...] --out PANEL.png
// One picture comparing checkpoints on a photo: image | true mask | the prediction of each checkpoint.
#include <cstdio>
#include <filesystem>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "data/image.h"
#include "tensor/parallel.h"
#include "train/cli.h"
#include "train/predict.h"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  tl::cli::Flags flags("inference_panel",
                       "Draws image | true mask | prediction of each checkpoint side by side, each tile labelled\n"
                       "(with --mask, each prediction's label ends with its dice against the true mask).");
  std::string image, mask, out, image_size;
  std::vector<std::string> checkpoints, labels;
  double threshold = 0.5;
  int64_t tile_height = 320, threads = 0, max_pixels = tl::data::kDefaultMaxImagePixels;
  flags.add("--image", &image, "the photo; required");
  flags.add("--mask", &mask, "its true mask (GIF/PNG/BMP, nonzero = car)");
  flags.add_list("--checkpoints", &checkpoints, "one or more checkpoints to compare; required");
  flags.add_list("--labels", &labels, "one label per checkpoint; none: the checkpoint file names");
  flags.add("--out", &out, "the panel PNG to write; required");
  flags.add("--threshold", &threshold, "a pixel is car when its probability is above this, 0 to 1");
  flags.add("--image-size", &image_size, "model input HxW; none: each checkpoint's image_size, else 160x240");
  flags.add("--tile-height", &tile_height, "height of each tile in the panel, pixels");
  flags.add("--threads", &threads, "compute threads; 0: all cores");
  flags.add("--max-pixels", &max_pixels,
            "refuse a photo or mask whose header declares more pixels (H*W) than this, before decoding it");
  return tl::cli::run_main("inference_panel", [&] {
    if (!flags.parse(argc, argv)) return 0;
    if (image.empty()) throw tl::cli::UsageError("--image is required");
    if (checkpoints.empty()) throw tl::cli::UsageError("--checkpoints is required");
    if (out.empty()) throw tl::cli::UsageError("--out is required");
    if (!labels.empty() && labels.size() != checkpoints.size())
      throw tl::cli::UsageError("--labels: " + std::to_string(labels.size()) + " labels for " +
                                std::to_string(checkpoints.size()) + " checkpoints");
    if (!(threshold >= 0 && threshold <= 1))
      throw tl::cli::UsageError("--threshold: expected a number from 0 to 1, got " + std::to_string(threshold));
    if (tile_height < 16 || tile_height > 4096)
      throw tl::cli::UsageError("--tile-height: expected 16 to 4096, got " + std::to_string(tile_height));
    if (threads < 0) throw tl::cli::UsageError("--threads: expected 0 (all cores) or more, got " + std::to_string(threads));
    if (max_pixels < 1) throw tl::cli::UsageError("--max-pixels: expected at least 1, got " + std::to_string(max_pixels));
    tl::data::set_max_image_pixels(max_pixels);
    int64_t height = 0, width = 0;
    if (!image_size.empty()) std::tie(height, width) = tl::cli::parse_size("--image-size", image_size);
    if (threads > 0) tl::set_num_threads(static_cast<int>(threads));

    if (labels.empty()) {  // file stems, or parent/stem when two checkpoints share a stem
      std::set<std::string> stems;
      bool clash = false;
      for (const std::string& c : checkpoints) clash |= !stems.insert(fs::path(c).stem().string()).second;
      for (const std::string& c : checkpoints) {
        const fs::path p(c);
        labels.push_back(clash ? (p.parent_path().filename() / p.stem()).string() : p.stem().string());
      }
    }
    if (!mask.empty()) {  // the sizes from the headers, before either file is decoded
      const tl::data::ImageInfo pi = tl::data::read_image_info(image), mi = tl::data::read_image_info(mask);
      if (pi.height != mi.height || pi.width != mi.width)
        throw std::runtime_error(mask + ": mask " + std::to_string(mi.height) + "x" + std::to_string(mi.width) +
                                 " does not match the photo " + std::to_string(pi.height) + "x" + std::to_string(pi.width));
    }
    const tl::data::Image photo = tl::data::read_image(image);
    tl::data::Image truth;
    if (!mask.empty()) {
      truth = tl::data::read_mask(mask);
      if (truth.height != photo.height || truth.width != photo.width)
        throw std::runtime_error(mask + ": mask " + tl::data::image_str(truth) + " does not match the photo " +
                                 tl::data::image_str(photo));
    }
    std::vector<tl::data::Image> predictions;
    for (size_t k = 0; k < checkpoints.size(); ++k) {
      const tl::train::Predictor predictor(checkpoints[k], height, width);
      predictions.push_back(predictor.predict_mask(photo, threshold));
      if (!mask.empty()) {
        const double dice = tl::train::mask_dice(predictions.back(), truth);
        std::printf("%s: dice %.4f\n", checkpoints[k].c_str(), dice);
        char buf[32];
        std::snprintf(buf, sizeof buf, " dice %.3f", dice);
        labels[k] += buf;
      }
    }
    tl::data::write_png(out, tl::train::inference_panel(photo, mask.empty() ? nullptr : &truth, predictions, labels,
                                                        tile_height));
    std::printf("inference_panel: wrote %s (%zu checkpoint%s)\n", out.c_str(), checkpoints.size(),
                checkpoints.size() == 1 ? "" : "s");
    return 0;
  });
}
