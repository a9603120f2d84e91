#include "train/evaluate.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <stdexcept>

#include "data/image.h"
#include "tensor/file_util.h"
#include "tensor/parallel.h"
#include "train/predict.h"

namespace tl::train {

namespace fs = std::filesystem;

namespace {

constexpr const char* kMaskSuffix = "_mask";

std::vector<std::string> list_folder(const std::string& dir, const char* flag) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) throw std::runtime_error(std::string(flag) + " " + dir + ": no such folder");
  if (!fs::is_directory(dir, ec)) throw std::runtime_error(std::string(flag) + " " + dir + ": is a file, not a folder");
  try {
    return list_photos(dir);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string(flag) + " " + e.what());
  }
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> pair_masks(const std::string& pred_dir, const std::string& truth_dir,
                                                            size_t* unmatched_truth) {
  std::vector<std::string> preds;
  for (const std::string& p : list_folder(pred_dir, "--pred"))
    if (ends_with(fs::path(p).stem().string(), kMaskSuffix)) preds.push_back(p);
  if (preds.empty())
    throw std::runtime_error("--pred " + pred_dir + ": holds no <stem>_mask.png file (predict_unet's masks)");
  std::map<std::string, std::string> truth;  // stem -> file
  for (const std::string& t : list_folder(truth_dir, "--truth")) {
    const std::string stem = fs::path(t).stem().string();
    if (auto [it, fresh] = truth.emplace(stem, t); !fresh)
      throw std::runtime_error("--truth " + truth_dir + ": two masks for " + stem + ": " + it->second + " and " + t);
  }
  std::vector<std::pair<std::string, std::string>> pairs;
  std::vector<std::string> missing;
  for (const std::string& p : preds) {
    const auto it = truth.find(fs::path(p).stem().string());
    if (it == truth.end()) missing.push_back(p);
    else pairs.emplace_back(p, it->second);
  }
  if (!missing.empty())
    throw std::runtime_error(missing[0] + ": no truth mask " + fs::path(missing[0]).stem().string() + ".gif (or .png) in " +
                             truth_dir + (missing.size() > 1 ? " (and " + std::to_string(missing.size() - 1) + " more)" : ""));
  for (const auto& [p, t] : pairs) {  // sizes from the headers, before decoding anything
    const data::ImageInfo a = data::read_image_info(p), b = data::read_image_info(t);
    if (a.height != b.height || a.width != b.width)
      throw std::runtime_error(p + ": the prediction is " + std::to_string(a.height) + "x" + std::to_string(a.width) +
                               ", its truth " + t + " is " + std::to_string(b.height) + "x" + std::to_string(b.width) +
                               " (predict_unet writes masks at the photo's own size)");
  }
  if (unmatched_truth) *unmatched_truth = truth.size() - pairs.size();
  return pairs;
}

MaskEvaluation evaluate_masks(const std::string& pred_dir, const std::string& truth_dir) {
  MaskEvaluation ev;
  const auto pairs = pair_masks(pred_dir, truth_dir, &ev.unmatched_truth);
  ev.scores.resize(pairs.size());
  std::vector<std::string> errors(pairs.size());
  parallel_for(0, static_cast<int64_t>(pairs.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const auto& [p, t] = pairs[static_cast<size_t>(i)];
      MaskScore& s = ev.scores[static_cast<size_t>(i)];
      try {
        const data::Image pred = data::read_mask(p), truth = data::read_mask(t);
        s.image = fs::path(p).stem().string();
        s.image.resize(s.image.size() - std::string(kMaskSuffix).size());
        s.prediction = p;
        s.truth = t;
        s.height = pred.height;
        s.width = pred.width;
        for (size_t k = 0; k < pred.pixels.size(); ++k) {
          const bool a = pred.pixels[k] != 0, c = truth.pixels[k] != 0;
          s.intersection += a && c;
          s.predicted += a;
          s.truth_pixels += c;
        }
        s.dice = mask_dice(pred, truth);
      } catch (const std::exception& ex) {
        errors[static_cast<size_t>(i)] = ex.what();
      }
    }
  });
  for (const std::string& e : errors)
    if (!e.empty()) throw std::runtime_error(e);
  double sum = 0;
  for (size_t i = 0; i < ev.scores.size(); ++i) {
    sum += ev.scores[i].dice;
    if (ev.scores[i].dice < ev.scores[ev.worst].dice) ev.worst = i;
  }
  ev.mean_dice = sum / static_cast<double>(ev.scores.size());
  return ev;
}

void write_evaluation_csv(const std::string& path, const MaskEvaluation& ev) {
  std::string text = "image,dice,intersection,predicted,truth,height,width\n";
  char buf[64];
  for (const MaskScore& s : ev.scores) {
    if (s.image.find_first_of(",\"\r\n") != std::string::npos)
      throw std::runtime_error(path + ": image name '" + s.image + "' cannot be written as a CSV field");
    std::snprintf(buf, sizeof buf, "%.6f", s.dice);
    text += s.image + "," + buf + "," + std::to_string(s.intersection) + "," + std::to_string(s.predicted) + "," +
            std::to_string(s.truth_pixels) + "," + std::to_string(s.height) + "," + std::to_string(s.width) + "\n";
  }
  write_file_atomic(path, text);
}

}  // namespace tl::train
