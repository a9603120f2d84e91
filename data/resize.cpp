// Separable resizing in exact integer arithmetic. Each axis is described by its taps: output index o
// reads source indices first[o] .. first[o] + n - 1 with integer weights that sum to the axis's
// denominator. An output byte is sum(v * wy * wx) / (Dy * Dx), rounded half up: one rounding, no
// floating point, so the properties in resize.h hold exactly.
#include "data/resize.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "tensor/parallel.h"

namespace tl::data {

namespace {

constexpr int64_t kMaxSide = int64_t{1} << 24;  // keeps 255 * Dy * Dx (<= 2^58) inside int64

struct AxisTaps {
  std::vector<int64_t> first;  // (out,) first source index of each output index
  std::vector<int64_t> begin;  // (out + 1,) output o's weights are w[begin[o] .. begin[o + 1])
  std::vector<int64_t> w;
  int64_t denom = 1;

  void add(int64_t source_first, std::initializer_list<int64_t> weights) {
    first.push_back(source_first);
    w.insert(w.end(), weights);
    begin.push_back(static_cast<int64_t>(w.size()));
  }
  int64_t count(int64_t o) const { return begin[o + 1] - begin[o]; }
  int64_t weight(int64_t o, int64_t k) const { return w[begin[o] + k]; }
};

AxisTaps make_taps(int64_t denom) {
  AxisTaps t;
  t.denom = denom;
  t.begin.push_back(0);
  return t;
}

// In units of 1/out source pixels, output o covers [o*in, (o+1)*in) and source i covers
// [i*out, (i+1)*out); the weight of i is their overlap, and the overlaps of one output sum to `in`.
AxisTaps area_taps(int64_t in, int64_t out) {
  AxisTaps t = make_taps(in);
  for (int64_t o = 0; o < out; ++o) {
    const int64_t lo = o * in, hi = (o + 1) * in;
    const int64_t i0 = lo / out, i1 = (hi + out - 1) / out - 1;  // the sources with a positive overlap
    t.first.push_back(i0);
    for (int64_t i = i0; i <= i1; ++i) t.w.push_back(std::min(hi, (i + 1) * out) - std::max(lo, i * out));
    t.begin.push_back(static_cast<int64_t>(t.w.size()));
  }
  return t;
}

// src = (o + 0.5) * in / out - 0.5 = ((2o + 1) * in - out) / (2 * out): exact as a fraction of 2*out.
AxisTaps bilinear_taps(int64_t in, int64_t out) {
  const int64_t d = 2 * out;
  AxisTaps t = make_taps(d);
  for (int64_t o = 0; o < out; ++o) {
    const int64_t num = (2 * o + 1) * in - out;
    if (num <= 0) {
      t.add(0, {d});  // left of the first pixel's center: clamped to it
      continue;
    }
    const int64_t i0 = num / d, frac = num % d;
    if (i0 >= in - 1 || frac == 0) t.add(std::min(i0, in - 1), {d});  // on a center, or clamped right
    else t.add(i0, {d - frac, frac});
  }
  return t;
}

// src = floor((o + 0.5) * in / out) = floor((2o + 1) * in / (2 * out)).
AxisTaps nearest_taps(int64_t in, int64_t out) {
  AxisTaps t = make_taps(1);
  for (int64_t o = 0; o < out; ++o) t.add(std::min((2 * o + 1) * in / (2 * out), in - 1), {1});
  return t;
}

AxisTaps axis_taps(int64_t in, int64_t out, Interp mode) {
  switch (mode) {
    case Interp::Area: return area_taps(in, out);
    case Interp::Bilinear: return bilinear_taps(in, out);
    case Interp::Nearest: return nearest_taps(in, out);
    case Interp::Auto:
      if (out < in) return area_taps(in, out);
      if (out > in) return bilinear_taps(in, out);
      return nearest_taps(in, out);  // same size: one tap of weight 1 per pixel, a copy
  }
  throw std::invalid_argument("resize: bad interpolation mode");
}

// One source row (W_in, C) -> its horizontal pass (W_out, C), weights not yet divided.
void horizontal(const uint8_t* src, const AxisTaps& tx, int64_t channels, int64_t* dst) {
  const int64_t out_w = static_cast<int64_t>(tx.first.size());
  for (int64_t ox = 0; ox < out_w; ++ox) {
    int64_t* d = dst + ox * channels;
    std::fill(d, d + channels, 0);
    const uint8_t* s = src + tx.first[ox] * channels;
    for (int64_t k = 0, n = tx.count(ox); k < n; ++k) {
      const int64_t wk = tx.weight(ox, k);
      for (int64_t c = 0; c < channels; ++c) d[c] += wk * s[k * channels + c];
    }
  }
}

}  // namespace

const char* interp_name(Interp mode) {
  switch (mode) {
    case Interp::Area: return "area";
    case Interp::Bilinear: return "bilinear";
    case Interp::Nearest: return "nearest";
    case Interp::Auto: return "auto";
  }
  return "?";
}

Image resize(const Image& image, int64_t height, int64_t width, Interp mode) {
  image.check("resize");
  if (height < 1 || width < 1 || height > kMaxSide || width > kMaxSide || image.height > kMaxSide ||
      image.width > kMaxSide)
    throw std::invalid_argument("resize: cannot resize " + image_str(image) + " to " + std::to_string(height) + "x" +
                                std::to_string(width) + " (sizes must be 1 to " + std::to_string(kMaxSide) + ")");
  const AxisTaps ty = axis_taps(image.height, height, mode), tx = axis_taps(image.width, width, mode);
  const int64_t C = image.channels, row_len = width * C;  // an output row: (W_out, C)
  const int64_t denom = ty.denom * tx.denom, half = denom / 2;
  Image out = Image::blank(height, width, C);
  parallel_for(0, height, std::max<int64_t>(1, 16384 / row_len), [&](int64_t y0, int64_t y1) {
    std::vector<int64_t> hrow(static_cast<size_t>(row_len)), acc(static_cast<size_t>(row_len));
    for (int64_t oy = y0; oy < y1; ++oy) {
      std::fill(acc.begin(), acc.end(), 0);
      for (int64_t k = 0, n = ty.count(oy); k < n; ++k) {
        horizontal(image.row(ty.first[oy] + k), tx, C, hrow.data());
        const int64_t wy = ty.weight(oy, k);
        for (int64_t i = 0; i < row_len; ++i) acc[i] += wy * hrow[i];
      }
      uint8_t* dst = out.row(oy);
      for (int64_t i = 0; i < row_len; ++i) dst[i] = static_cast<uint8_t>(std::min<int64_t>(255, (acc[i] + half) / denom));
    }
  });
  return out;
}

}  // namespace tl::data
