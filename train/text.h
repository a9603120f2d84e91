#pragma once
// Small text labels drawn into images: a 5x7 bitmap font of our own (digits, capitals and common
// punctuation; lower-case letters are drawn as capitals, any other character as a hollow box).
// Each glyph takes a 6x8 cell (one column and one row of spacing), times `scale`.
#include <array>
#include <cstdint>
#include <string>

#include "data/image.h"

namespace tl::train {

inline constexpr int64_t kGlyphCellWidth = 6, kGlyphCellHeight = 8;

// The size in pixels of `text` drawn at `scale` (the last cell's spacing column included).
inline int64_t text_width(const std::string& text, int64_t scale) {
  return static_cast<int64_t>(text.size()) * kGlyphCellWidth * scale;
}
inline int64_t text_height(int64_t scale) { return kGlyphCellHeight * scale; }

// Draws `text` with its top-left corner at (x, y), each font pixel a scale x scale square of `color`
// (RGB; a 1-channel image gets the colour's first byte, an alpha channel is set opaque). Pixels that
// fall outside the image are clipped.
void draw_text(data::Image& image, int64_t x, int64_t y, const std::string& text, int64_t scale,
               const std::array<uint8_t, 3>& color);

}  // namespace tl::train
