#pragma once
// The full-resolution score of predicted masks (behind apps/evaluate_masks): predict_unet's
// <stem>_mask.png files against the original masks (the Kaggle train_masks/<stem>_mask.gif), the
// thresholded dice of each photo at the masks' own resolution (Kaggle's: 2|P n T| / (|P| + |T|), 1
// when both are empty; a pixel is car when it is nonzero, data::read_mask), their mean and the worst.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tl::train {

struct MaskScore {
  std::string image;               // the photo's stem: the prediction's name without "_mask.png"
  std::string prediction, truth;   // the two files
  int64_t height = 0, width = 0;
  int64_t intersection = 0, predicted = 0, truth_pixels = 0;
  double dice = 0;
};

struct MaskEvaluation {
  std::vector<MaskScore> scores;   // one per prediction, sorted by image
  double mean_dice = 0;
  size_t worst = 0;                // index of the lowest dice in scores (the first on a tie)
  size_t unmatched_truth = 0;      // truth masks without a prediction (ignored: a subset was predicted)
};

// Pairs every <stem>_mask.* image in pred_dir (other files, such as _overlay.png, are ignored) with
// the truth of the same file stem in truth_dir (any extension list_photos takes: .gif, .png, ...).
// Errors are std::runtime_error naming the folder or file: a missing folder, a pred_dir without
// masks, a prediction without truth ("... and N more"), two truth files of one stem, and (from the
// headers, before any decoding) masks whose sizes differ.
std::vector<std::pair<std::string, std::string>> pair_masks(const std::string& pred_dir, const std::string& truth_dir,
                                                            size_t* unmatched_truth = nullptr);

// Scores every pair of pair_masks; photos are decoded in parallel. Errors name the file.
MaskEvaluation evaluate_masks(const std::string& pred_dir, const std::string& truth_dir);

// The per-photo CSV, header "image,dice,intersection,predicted,truth,height,width", one row per
// score in order, written atomically (tl::write_file_atomic). Errors name the file.
void write_evaluation_csv(const std::string& path, const MaskEvaluation& evaluation);

}  // namespace tl::train
