// The two clean-ups of mask_cleanup.h: flood fills over the pixels with an explicit stack.
#include "train/mask_cleanup.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

namespace tl::train {

using data::Image;

namespace {

void check_mask(const Image& mask, const char* what) {
  mask.check(what);
  if (mask.channels != 1)
    throw std::invalid_argument(std::string(what) + ": expected a one-channel mask, got " + data::image_str(mask));
}

// Visits the region of `seed` (pixels p with in(p) true, 4- or 8-connected), setting label[p] = id;
// returns its size. label[p] must be -1 for unvisited pixels.
template <class In>
int64_t flood(const Image& mask, int64_t seed, int32_t id, bool eight, In in, std::vector<int32_t>& label,
              std::vector<int64_t>& stack) {
  const int64_t h = mask.height, w = mask.width;
  int64_t size = 0;
  stack.clear();
  stack.push_back(seed);
  label[static_cast<size_t>(seed)] = id;
  while (!stack.empty()) {
    const int64_t p = stack.back();
    stack.pop_back();
    ++size;
    const int64_t y = p / w, x = p % w;
    for (int64_t dy = -1; dy <= 1; ++dy)
      for (int64_t dx = -1; dx <= 1; ++dx) {
        if ((dy == 0 && dx == 0) || (!eight && dy != 0 && dx != 0)) continue;
        const int64_t ny = y + dy, nx = x + dx;
        if (ny < 0 || ny >= h || nx < 0 || nx >= w) continue;
        const int64_t q = ny * w + nx;
        if (label[static_cast<size_t>(q)] != -1 || !in(q)) continue;
        label[static_cast<size_t>(q)] = id;
        stack.push_back(q);
      }
  }
  return size;
}

}  // namespace

int64_t keep_largest_region(Image& mask) {
  check_mask(mask, "keep_largest_region");
  const int64_t n = mask.numel();
  const auto car = [&](int64_t p) { return mask.pixels[static_cast<size_t>(p)] != 0; };
  std::vector<int32_t> label(static_cast<size_t>(n), -1);
  std::vector<int64_t> stack, sizes;
  for (int64_t p = 0; p < n; ++p)
    if (label[static_cast<size_t>(p)] == -1 && car(p))
      sizes.push_back(flood(mask, p, static_cast<int32_t>(sizes.size()), true, car, label, stack));
  if (sizes.size() <= 1) return 0;
  const auto keep = static_cast<int32_t>(std::max_element(sizes.begin(), sizes.end()) - sizes.begin());
  int64_t changed = 0;
  for (int64_t p = 0; p < n; ++p) {
    const int32_t l = label[static_cast<size_t>(p)];
    if (l != -1 && l != keep) mask.pixels[static_cast<size_t>(p)] = 0, ++changed;
  }
  return changed;
}

int64_t fill_holes(Image& mask) {
  check_mask(mask, "fill_holes");
  const int64_t n = mask.numel(), h = mask.height, w = mask.width;
  const auto background = [&](int64_t p) { return mask.pixels[static_cast<size_t>(p)] == 0; };
  uint8_t car_value = 1;  // what a filled pixel becomes: the mask's own "car" value
  for (uint8_t v : mask.pixels)
    if (v != 0) {
      car_value = v;
      break;
    }
  std::vector<int32_t> label(static_cast<size_t>(n), -1);
  std::vector<int64_t> stack;
  const auto from_border = [&](int64_t p) {
    if (label[static_cast<size_t>(p)] == -1 && background(p)) flood(mask, p, 0, false, background, label, stack);
  };
  for (int64_t x = 0; x < w; ++x) from_border(x), from_border((h - 1) * w + x);
  for (int64_t y = 0; y < h; ++y) from_border(y * w), from_border(y * w + w - 1);
  int64_t changed = 0;
  for (int64_t p = 0; p < n; ++p)
    if (label[static_cast<size_t>(p)] == -1 && background(p)) mask.pixels[static_cast<size_t>(p)] = car_value, ++changed;
  return changed;
}

}  // namespace tl::train
