#pragma once
// Resizing 8-bit images: area averaging for shrinking, bilinear for growing, nearest for masks.
//
// Every mode is separable and computed exactly: each axis has integer weights over a common
// denominator, the sums are exact integers, and each output byte is rounded once, half up. So
// resizing to the same size is the identity, an integer-factor area shrink equals the rounded
// block means, and results do not depend on the thread count.
#include <cstdint>

#include "data/image.h"

namespace tl::data {

enum class Interp {
  // Exact box filter: an output pixel is the mean of the source area it covers, partial source
  // pixels weighted by the fraction covered (OpenCV's INTER_AREA when shrinking, PIL's BOX). Shrinking
  // a 1918x1280 photo to 240x160 this way does not alias. When growing it replicates pixels,
  // blending the two source pixels at each boundary.
  Area,
  // Half-pixel centers (align_corners=false), as cv2.resize INTER_LINEAR and PyTorch's
  // interpolate(mode="bilinear"): src = (dst + 0.5) * in / out - 0.5, clamped to the edges. Two taps,
  // so it aliases when shrinking by more than 2x.
  Bilinear,
  // src = floor((dst + 0.5) * in / out): the source pixel under the output pixel's center (PIL's
  // NEAREST, OpenCV's INTER_NEAREST_EXACT). Never invents values: masks stay binary.
  Nearest,
  // Per axis: Area where that axis shrinks, Bilinear where it grows, a copy where it keeps its size.
  Auto,
};

const char* interp_name(Interp mode);  // "area", "bilinear", "nearest", "auto"

// `image` resized to height x width (channels kept). Rows run in parallel (tl::parallel_for).
// Sizes must be 1 to 2^24; otherwise std::invalid_argument naming both geometries.
Image resize(const Image& image, int64_t height, int64_t width, Interp mode = Interp::Auto);

// Nearest-neighbour resize, for label masks (values are copied, never blended).
inline Image resize_mask(const Image& mask, int64_t height, int64_t width) {
  return resize(mask, height, width, Interp::Nearest);
}

}  // namespace tl::data
