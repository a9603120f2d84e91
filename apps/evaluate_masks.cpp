// evaluate_masks --pred DIR --truth DIR [--csv scores.csv]
// The full-resolution thresholded dice of predict_unet's masks against the original masks: the mean,
// the worst photo, and optionally a CSV with one row per photo.
#include <cstdio>
#include <string>

#include "data/image.h"
#include "train/cli.h"
#include "train/evaluate.h"
#include "train/predict.h"

int main(int argc, char** argv) {
  tl::cli::Flags flags("evaluate_masks",
                       "Scores predicted masks against the true ones at full resolution: every <stem>_mask.png in\n"
                       "--pred (predict_unet's output) against the file of the same stem in --truth (the Kaggle\n"
                       "train_masks/<stem>_mask.gif). A pixel is car when nonzero; the dice of a photo is Kaggle's\n"
                       "thresholded dice 2|P n T| / (|P| + |T|). Prints the mean and the worst photo.");
  std::string pred, truth, csv;
  int64_t max_pixels = tl::data::kDefaultMaxImagePixels;
  flags.add("--pred", &pred, "folder of the predicted <stem>_mask.png files; required");
  flags.add("--truth", &truth, "folder of the true masks (<stem>_mask.gif or .png); required");
  flags.add("--csv", &csv, "also write one row per photo here (image,dice,intersection,predicted,truth,height,width)");
  flags.add("--max-pixels", &max_pixels, "refuse a mask whose header declares more pixels (H*W) than this");
  return tl::cli::run_main("evaluate_masks", [&] {
    if (!flags.parse(argc, argv)) return 0;
    if (pred.empty()) throw tl::cli::UsageError("--pred is required");
    if (truth.empty()) throw tl::cli::UsageError("--truth is required");
    if (max_pixels < 1) throw tl::cli::UsageError("--max-pixels: expected at least 1, got " + std::to_string(max_pixels));
    tl::data::set_max_image_pixels(max_pixels);
    if (!csv.empty()) tl::train::check_output_file(csv);  // before the work
    const tl::train::MaskEvaluation ev = tl::train::evaluate_masks(pred, truth);
    if (!csv.empty()) tl::train::write_evaluation_csv(csv, ev);
    const tl::train::MaskScore& worst = ev.scores[ev.worst];
    std::printf("evaluate_masks: %zu masks at full resolution (%lldx%lld first), mean dice %.5f, worst %.5f (%s)%s%s\n",
                ev.scores.size(), static_cast<long long>(ev.scores[0].height), static_cast<long long>(ev.scores[0].width),
                ev.mean_dice, worst.dice, worst.image.c_str(), csv.empty() ? "" : "; per photo: ", csv.c_str());
    if (ev.unmatched_truth > 0)
      std::printf("evaluate_masks: %zu true masks in %s have no prediction (not scored)\n", ev.unmatched_truth, truth.c_str());
    return 0;
  });
}
