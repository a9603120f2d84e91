// Rotation and flips in one resampling pass. Output pixel (y, x) after rotate -> hflip -> vflip reads
// the rotated image at (y', x') = (vflip ? H-1-y : y, hflip ? W-1-x : x), and the rotated image at
// (y', x') reads the source at the inverse rotation of (y', x') about the center (cx, cy):
//   sx = cx + cos(a) (x' - cx) - sin(a) (y' - cy)
//   sy = cy + sin(a) (x' - cx) + cos(a) (y' - cy)
// which is cv2.warpAffine with cv2.getRotationMatrix2D((cx, cy), a, 1): positive a turns the picture
// counter-clockwise on screen (a 90-degree turn sends the top-right corner to the top-left).
#include "data/augment.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "tensor/parallel.h"
#include "tensor/random.h"

namespace tl::data {

namespace {

constexpr int64_t kMaxEpoch = int64_t{1} << 28;
constexpr int64_t kMaxIndex = int64_t{1} << 32;

void check_option(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("draw_augment: " + what);
}

// cv2.BORDER_REFLECT_101: ...dcb|abcd|cba... (the edge pixel is not repeated), for any distance.
inline int64_t reflect101(int64_t i, int64_t n) {
  if (n == 1) return 0;
  const int64_t period = 2 * (n - 1);
  i %= period;
  if (i < 0) i += period;
  return i < n ? i : period - i;
}

// The source taps of one output pixel: bilinear (x0, x1, y0, y1 with fractions fx, fy) for the
// image, the nearest (xn, yn) for the mask. Indices are already reflected into the image.
struct Tap {
  int64_t x0, x1, y0, y1, xn, yn;
  double fx, fy;
};

// Fills taps[x] for output row y. Without rotation the taps are the (flipped) pixel itself.
void row_taps(const AugmentDraw& d, double cosa, double sina, int64_t H, int64_t W, int64_t y, std::vector<Tap>& taps) {
  const double cx = 0.5 * static_cast<double>(W - 1), cy = 0.5 * static_cast<double>(H - 1);
  const int64_t yr = d.vflip ? H - 1 - y : y;
  for (int64_t x = 0; x < W; ++x) {
    const int64_t xr = d.hflip ? W - 1 - x : x;
    Tap& t = taps[static_cast<size_t>(x)];
    if (d.angle_deg == 0) {
      t = {xr, xr, yr, yr, xr, yr, 0.0, 0.0};
      continue;
    }
    const double dx = static_cast<double>(xr) - cx, dy = static_cast<double>(yr) - cy;
    const double sx = cx + cosa * dx - sina * dy, sy = cy + sina * dx + cosa * dy;
    const double fx0 = std::floor(sx), fy0 = std::floor(sy);
    const auto ix = static_cast<int64_t>(fx0), iy = static_cast<int64_t>(fy0);
    t.fx = sx - fx0;
    t.fy = sy - fy0;
    t.x0 = reflect101(ix, W);
    t.x1 = reflect101(ix + 1, W);
    t.y0 = reflect101(iy, H);
    t.y1 = reflect101(iy + 1, H);
    t.xn = reflect101(static_cast<int64_t>(std::floor(sx + 0.5)), W);
    t.yn = reflect101(static_cast<int64_t>(std::floor(sy + 0.5)), H);
  }
}

std::string shape_of(const Tensor& t) { return t.defined() ? shape_str(t.shape()) : std::string("undefined"); }

void check_inputs(const Tensor& image, const Tensor& mask) {
  auto fits = [](const Tensor& t) {
    return t.defined() && t.dim() == 3 && t.dtype() == kFloat32 && t.device().is_cpu() && t.numel() > 0;
  };
  std::ostringstream os;
  if (!fits(image))
    os << "image must be a non-empty float32 (C, H, W) CPU tensor, got " << shape_of(image)
       << (image.defined() ? " " + std::string(dtype_name(image.dtype())) : "");
  else if (!fits(mask))
    os << "mask must be a non-empty float32 (1, H, W) CPU tensor, got " << shape_of(mask)
       << (mask.defined() ? " " + std::string(dtype_name(mask.dtype())) : "");
  else if (mask.size(1) != image.size(1) || mask.size(2) != image.size(2))
    os << "mask " << shape_of(mask) << " does not match image " << shape_of(image) << " in height and width";
  else
    return;
  throw std::invalid_argument("apply_augment: " + os.str());
}

}  // namespace

AugmentDraw draw_augment(const AugmentOptions& opts, uint64_t seed, int64_t epoch, int64_t index) {
  if (epoch < 0 || epoch >= kMaxEpoch)
    throw std::invalid_argument("draw_augment: epoch " + std::to_string(epoch) + " outside [0, 2^28)");
  if (index < 0 || index >= kMaxIndex)
    throw std::invalid_argument("draw_augment: sample index " + std::to_string(index) + " outside [0, 2^32)");
  check_option(std::isfinite(opts.max_rotate_deg) && opts.max_rotate_deg >= 0,
               "max_rotate_deg must be finite and >= 0, got " + std::to_string(opts.max_rotate_deg));
  check_option(opts.p_hflip >= 0 && opts.p_hflip <= 1, "p_hflip must be in [0, 1], got " + std::to_string(opts.p_hflip));
  check_option(opts.p_vflip >= 0 && opts.p_vflip <= 1, "p_vflip must be in [0, 1], got " + std::to_string(opts.p_vflip));
  AugmentDraw d;
  if (!opts.enabled) return d;

  const uint64_t ctr = (uint64_t{1} << 63) | (static_cast<uint64_t>(epoch) << 34) | (static_cast<uint64_t>(index) << 2);
  const philox::Out o = philox::philox4x32_10(ctr, seed), p = philox::philox4x32_10(ctr | 1, seed);
  if (opts.max_rotate_deg > 0) d.angle_deg = opts.max_rotate_deg * (2.0 * philox::to_unit(o.v[0], o.v[1]) - 1.0);
  d.hflip = philox::to_unit(o.v[2], o.v[3]) < opts.p_hflip;
  d.vflip = philox::to_unit(p.v[0], p.v[1]) < opts.p_vflip;
  return d;
}

void apply_augment(const AugmentDraw& draw, Tensor& image, Tensor& mask) {
  check_inputs(image, mask);
  if (draw.is_identity()) return;
  if (!std::isfinite(draw.angle_deg))
    throw std::invalid_argument("apply_augment: angle " + std::to_string(draw.angle_deg) + " is not finite");

  const Tensor src = image.detach().contiguous(), msrc = mask.detach().contiguous();
  const int64_t C = src.size(0), H = src.size(1), W = src.size(2), M = msrc.size(0);
  Tensor out = empty({C, H, W}), mout = empty({M, H, W});
  const float* in = src.data_ptr<float>();      // (C, H, W)
  const float* mk = msrc.data_ptr<float>();     // (M, H, W)
  float* o = out.data_ptr<float>();             // (C, H, W)
  float* mo = mout.data_ptr<float>();           // (M, H, W)
  const double rad = draw.angle_deg * (3.14159265358979323846 / 180.0);
  const double cosa = std::cos(rad), sina = std::sin(rad);
  const int64_t plane = H * W;

  const int64_t grain = std::max<int64_t>(1, 16384 / (W * (C + M)));
  parallel_for(0, H, grain, [&](int64_t y_begin, int64_t y_end) {
    std::vector<Tap> taps(static_cast<size_t>(W));
    for (int64_t y = y_begin; y < y_end; ++y) {
      row_taps(draw, cosa, sina, H, W, y, taps);
      for (int64_t c = 0; c < C; ++c) {
        const float* s = in + c * plane;
        float* dst = o + c * plane + y * W;
        for (int64_t x = 0; x < W; ++x) {
          const Tap& t = taps[static_cast<size_t>(x)];
          // Lerps in double: a constant neighbourhood gives exactly that constant, and the result,
          // rounded once to float, stays within the four neighbours' range.
          const double a = s[t.y0 * W + t.x0], b = s[t.y0 * W + t.x1];
          const double cc = s[t.y1 * W + t.x0], dd = s[t.y1 * W + t.x1];
          const double top = a + t.fx * (b - a), bottom = cc + t.fx * (dd - cc);
          dst[x] = static_cast<float>(top + t.fy * (bottom - top));
        }
      }
      for (int64_t c = 0; c < M; ++c) {
        const float* s = mk + c * plane;
        float* dst = mo + c * plane + y * W;
        for (int64_t x = 0; x < W; ++x) dst[x] = s[taps[static_cast<size_t>(x)].yn * W + taps[static_cast<size_t>(x)].xn];
      }
    }
  });
  image = out;
  mask = mout;
}

}  // namespace tl::data
