#pragma once
// Synthetic Carvana-like data: studio photos of cars seen from the side, with their exact masks,
// drawn procedurally so that the trainer can be exercised end to end without the Kaggle download.
//
// A sample is a pure function of (options, index). Sample `index` shows car `index / views_per_car`:
// every view of a car has the same body type, proportions, paint, rims and glass; the views differ in
// pose (facing left or right, a yaw-like horizontal squash, position and scale), in the wheels' turn,
// and in the studio (wall and floor colours, horizon, light, shadow, noise). Sometimes the studio is
// nearly the colour of the car, so a colour threshold does not solve the task.
//
// What is drawn, back to front: a wall with a vertical gradient meeting a floor at a horizon line,
// with a light tint, vignette and low-frequency texture; a soft shadow under the car with darker
// contact shadows under the tyres; the car: a rounded body (a rounded polygon with a sloped hood and
// a trunk or a hatch), a cabin (a rounded trapezoid) blended into it, tinted windows split by pillars,
// door seams and handles, wheel wells, head and tail lights, shading and environment reflections on
// the paint, and two wheels (tyres with spoked rims) protruding below the body. Every edge is
// anti-aliased by analytic coverage: a shape's signed distance d (in pixels, at the pixel centre)
// gives it coverage clamp(0.5 - d, 0, 1). Last, per-pixel noise (luminance and a little chroma).
//
// The mask is 1 exactly where the car's silhouette (body, cabin and windows, wheels) covers the pixel
// centre (d < 0, the pixels where the car's coverage is above one half); the shadow is not car.
//
// Randomness: Philox4x32-10 (tensor/random.h) with key = seed and the 64-bit counter
//   7 << 61 | stream << 59 | id << 32 | k,   stream in 0..3, 0 <= id < 2^27, 0 <= k < 2^32
//   stream 0: the car's parameters,    id = car number,   k = the k-th draw
//   stream 1: the view's parameters,   id = sample index, k = the k-th draw
//   stream 2: per-pixel noise,         id = sample index, k = y * width + x
//   stream 3: the texture lattice,     id = sample index, k = lattice point
// The top three bits 111 keep these counters apart from the other users of a seed: tensor
// initialization counts up from 0, the loader uses 1 << 62 | ..., augmentation 1 << 63 | epoch << 34
// with epoch < 2^28, the split 3 << 62 | i with i a car count.
// Rows are drawn in parallel (tl::parallel_for); each pixel depends on nothing but its own position,
// so the result does not depend on the thread count.
#include <cstdint>
#include <functional>
#include <string>

#include "data/image.h"

namespace tl::data {

struct SyntheticOptions {
  int64_t height = 320, width = 480;  // the frame: 2:3 like Kaggle's 1280x1918 by default; 32..16384 x 48..16384
  uint64_t seed = 20;
  int64_t views_per_car = 8;  // 1..99 (the file stem's view number has two digits)

  // Throws std::invalid_argument "synthetic: <field> must be ..., got <value>" naming the field.
  void check() const;
};

struct SyntheticSample {
  Image image;      // (H, W, 3) RGB
  Image mask;       // (H, W, 1) of {0, 1}
  std::string car;  // "synth0003": car index / views_per_car, at least four digits
  int64_t view = 0;  // 1-based view of the car: index % views_per_car + 1, the NN of the stem
};

// Sample `index` (0 <= index < 2^27, std::invalid_argument otherwise).
SyntheticSample synthetic_sample(const SyntheticOptions& options, int64_t index);

// The Kaggle-style file stem of sample `index`: "<car>_<NN>", e.g. "synth0003_05".
std::string synthetic_stem(const SyntheticOptions& options, int64_t index);

// Writes samples 0..count-1 in the Kaggle layout: DIR/train/<stem>.jpg (JPEG, quality 95) and
// DIR/train_masks/<stem>_mask.png (one channel, 0 or 255), creating the folders. Existing files of the
// same names are replaced (each write is atomic); nothing else in DIR is touched. Samples are drawn
// and encoded in parallel; `progress(done, count)` is called from the calling thread as they finish
// (may be empty). Errors: std::invalid_argument for bad options or count (0 <= count <= 2^27),
// std::runtime_error naming the path that could not be created or written.
void write_synthetic(const std::string& dir, int64_t count, const SyntheticOptions& options,
                     const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace tl::data
