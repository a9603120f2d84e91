#include "train/metrics.h"

#include <cmath>
#include <stdexcept>
#include <vector>

namespace tl::train {

void SegmentationMetrics::add(const Tensor& logits, const Tensor& masks, double loss) {
  if (logits.shape() != masks.shape())
    throw std::invalid_argument("metrics: logits " + shape_str(logits.shape()) + " and masks " +
                                shape_str(masks.shape()) + " differ in shape");
  const std::vector<float> z = logits.to_vector<float>();
  const std::vector<float> t = masks.to_vector<float>();
  int64_t inter = 0, pred = 0, truth_n = 0, agree = 0;
  double soft_i = 0, soft_p = 0;
  for (size_t i = 0; i < z.size(); ++i) {
    const bool p = z[i] > 0.f;  // sigmoid(z) > 0.5
    const bool y = t[i] > 0.5f;
    inter += p && y;
    pred += p;
    truth_n += y;
    agree += p == y;
    const double prob = 1.0 / (1.0 + std::exp(-static_cast<double>(z[i])));
    soft_p += prob;
    soft_i += prob * t[i];
  }
  const int64_t n = logits.dim() > 0 ? logits.size(0) : 1;
  loss_sum += loss * static_cast<double>(n);
  samples += n;
  intersection += inter;
  predicted += pred;
  truth += truth_n;
  correct += agree;
  pixels += static_cast<int64_t>(z.size());
  soft_intersection += soft_i;
  soft_predicted += soft_p;
}

void SegmentationMetrics::merge(const SegmentationMetrics& o) {
  loss_sum += o.loss_sum;
  samples += o.samples;
  intersection += o.intersection;
  predicted += o.predicted;
  truth += o.truth;
  correct += o.correct;
  pixels += o.pixels;
  soft_intersection += o.soft_intersection;
  soft_predicted += o.soft_predicted;
}

double SegmentationMetrics::loss() const { return samples ? loss_sum / static_cast<double>(samples) : 0.0; }

double SegmentationMetrics::dice() const {
  const int64_t denom = predicted + truth;
  return denom ? 2.0 * static_cast<double>(intersection) / static_cast<double>(denom) : 1.0;
}

double SegmentationMetrics::dice_soft() const {
  return (2.0 * soft_intersection + 1.0) / (soft_predicted + static_cast<double>(truth) + 1.0);
}

double SegmentationMetrics::accuracy() const {
  return pixels ? static_cast<double>(correct) / static_cast<double>(pixels) : 0.0;
}

}  // namespace tl::train
