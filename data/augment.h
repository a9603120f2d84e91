#pragma once
// Training augmentations of the Carvana trainer, as the seed ran them with Albumentations:
// Rotate(limit=35, p=1, border_mode=BORDER_REFLECT_101), HorizontalFlip(p=0.5), VerticalFlip(p=0.1),
// applied in that order to an image and its mask with the same geometry. They work on float32 tensors
// that are already scaled to [0, 1] (image_to_tensor / mask_to_tensor of data/image.h).
//
// Randomness is a pure function of (seed, epoch, sample index): draw_augment keeps no state, so a
// sample gets the same augmentation whatever worker thread loads it and in whatever order.
#include <cstdint>

#include "tensor/tensor.h"

namespace tl::data {

// Each transform can be switched off on its own (max_rotate_deg = 0, p = 0); `enabled = false`
// switches all of them off. Switching one off does not change the draws of the others.
struct AugmentOptions {
  bool enabled = true;
  double max_rotate_deg = 35;  // angle uniform in [-max, max)
  double p_hflip = 0.5;
  double p_vflip = 0.1;
};

// One sample's augmentation. The identity is {0, false, false}.
struct AugmentDraw {
  double angle_deg = 0;  // positive = counter-clockwise as displayed (rows going down), as OpenCV
  bool hflip = false, vflip = false;
  bool is_identity() const { return angle_deg == 0 && !hflip && !vflip; }
};

// The random numbers come from Philox4x32-10 (tensor/random.h) with key = seed and the 64-bit counter
//   ctr(k) = 2^63 | epoch << 34 | index << 2 | k,   0 <= epoch < 2^28, 0 <= index < 2^32, k in {0, 1}
// (the top bit keeps these counters away from the small counters that tensor initialization draws
// from a Generator with the same seed). With o = philox4x32_10(ctr(0), seed) and
// p = philox4x32_10(ctr(1), seed):
//   angle = max_rotate_deg * (2 * to_unit(o[0], o[1]) - 1)
//   hflip = to_unit(o[2], o[3]) < p_hflip
//   vflip = to_unit(p[0], p[1]) < p_vflip
// Throws std::invalid_argument when epoch or index is out of range, or an option is negative or
// not finite, or a probability is above 1.
AugmentDraw draw_augment(const AugmentOptions& opts, uint64_t seed, int64_t epoch, int64_t index);

// Applies `draw` to image (C, H, W) and mask (M, H, W, normally M = 1), float32 CPU tensors of any
// strides: rotation about the image center by angle_deg, then the horizontal flip, then the vertical
// flip, all in one resampling pass. The center is ((W-1)/2, (H-1)/2) in pixel indices, the middle of
// the pixel grid, as recent Albumentations (older versions used (W/2, H/2), half a pixel off), so a
// 90-degree turn of a square image is exactly np.rot90.
// - image: bilinear sampling; outside the image, indices reflect without repeating the edge
//   (cv2.BORDER_REFLECT_101: ...dcb|abcd|cba...), so there are no black corners. The bilinear
//   weights are exact (double precision), not OpenCV's 1/32-pixel fixed-point tables, so values can
//   differ from cv2.warpAffine in the last bits of an 8-bit level; a constant image stays constant
//   and every value stays between its four neighbours.
// - mask: nearest sampling (the source index is the rounded source coordinate) with the same geometry
//   and the same reflect-101 border, as Albumentations' Rotate does for masks; a 0/1 mask stays 0/1.
// angle_deg == 0 skips the resampling (an exact copy); flips are exact. The inputs are never written:
// image and mask are replaced by new contiguous tensors (left as they are for the identity draw).
// Rows run in parallel (tl::parallel_for); the result does not depend on the thread count.
// Throws std::invalid_argument naming the shapes when the tensors do not fit these rules.
void apply_augment(const AugmentDraw& draw, Tensor& image, Tensor& mask);

}  // namespace tl::data
