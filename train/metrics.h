#pragma once
// Segmentation metrics of the trainer, accumulated over an epoch (definitions in the README):
//   dice       thresholded dice over all pixels seen: 2|P ∩ T| / (|P| + |T|), P = {sigmoid(logit) > 0.5}
//              (logit > 0), T = {mask = 1}; 1 when both are empty. This is Kaggle's score computed
//              over the whole set rather than averaged per image.
//   dice_soft  the seed's soft dice, 1 - dice_loss over all pixels seen: (2 Σ p t + 1) / (Σ p + Σ t + 1),
//              p = sigmoid(logit) (no threshold).
//   acc        pixel accuracy of the thresholded prediction.
//   loss       the mean of the per-batch losses, weighted by batch size.
// Sums are kept in double and integer counts, so the result does not depend on how the pixels were
// split into batches.
#include <cstdint>

#include "tensor/tensor.h"

namespace tl::train {

struct SegmentationMetrics {
  double loss_sum = 0;       // Σ batch loss * batch size
  int64_t samples = 0;
  int64_t intersection = 0;  // |P ∩ T|
  int64_t predicted = 0;     // |P|
  int64_t truth = 0;         // |T|
  int64_t correct = 0;       // pixels where P and T agree
  int64_t pixels = 0;
  double soft_intersection = 0, soft_predicted = 0;  // Σ p t, Σ p

  // logits and masks of one batch, same shape (N, 1, H, W), any device; loss = the batch's mean loss.
  void add(const Tensor& logits, const Tensor& masks, double loss);
  void merge(const SegmentationMetrics& other);

  double loss() const;
  double dice() const;
  double dice_soft() const;
  double accuracy() const;
};

}  // namespace tl::train
