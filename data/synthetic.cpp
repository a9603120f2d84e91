// Drawing the synthetic cars (see synthetic.h for what and why).
//
// Geometry lives in car-local units: the car is 1 long, x from -0.5 (rear) to 0.5 (front), y up
// from the ground at 0, where the tyres touch. Body and cabin are "skeleton" polygons grown by a
// rounding radius (the shape is {p : distance(p, polygon) < r}), which rounds every convex corner.
// A view maps a pixel centre to local coordinates (mirrored for a car facing left, squashed in x for
// the yaw); shapes are signed distances in local units, times the view's pixels per unit.
#include "data/synthetic.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "tensor/parallel.h"
#include "tensor/random.h"

namespace tl::data {

namespace {

namespace fs = std::filesystem;

constexpr int64_t kMaxIndex = int64_t{1} << 27;
constexpr int64_t kMinHeight = 32, kMinWidth = 48, kMaxSide = 16384;
constexpr double kPi = 3.14159265358979323846;

// The Philox streams of synthetic.h: 7 << 61 | stream << 59 | id << 32 | k.
enum class Stream : uint64_t { Car = 0, View = 1, Noise = 2, Lattice = 3 };

uint64_t counter(Stream s, int64_t id, uint64_t k) {
  return (uint64_t{7} << 61) | (static_cast<uint64_t>(s) << 59) | (static_cast<uint64_t>(id) << 32) | k;
}

// Successive uniform draws of one stream: draw n uses k = n. The order of the draws below is part of
// the output: appending a draw keeps earlier samples' parameters, reordering changes them.
class Draws {
 public:
  Draws(uint64_t seed, Stream s, int64_t id) : seed_(seed), base_(counter(s, id, 0)) {}
  double uniform(double lo = 0.0, double hi = 1.0) {
    const philox::Out o = philox::philox4x32_10(base_ | k_++, seed_);
    return lo + (hi - lo) * philox::to_unit(o.v[0], o.v[1]);
  }
  bool chance(double p) { return uniform() < p; }

 private:
  uint64_t seed_, base_, k_ = 0;
};

struct V2 {
  double x, y;
};
inline V2 operator-(V2 a, V2 b) { return {a.x - b.x, a.y - b.y}; }
inline double dot(V2 a, V2 b) { return a.x * b.x + a.y * b.y; }
inline double length(V2 a) { return std::sqrt(dot(a, a)); }

// A colour in 8-bit sRGB units (0..255), not clamped until the pixel is stored.
struct Col {
  double r, g, b;
};
inline Col operator+(Col a, Col b) { return {a.r + b.r, a.g + b.g, a.b + b.b}; }
inline Col operator*(Col a, double s) { return {a.r * s, a.g * s, a.b * s}; }
inline Col lerp(Col a, Col b, double t) {
  return {a.r + (b.r - a.r) * t, a.g + (b.g - a.g) * t, a.b + (b.b - a.b) * t};
}
inline Col grey(double v) { return {v, v, v}; }
inline Col clamp_col(Col c) {
  return {std::clamp(c.r, 0.0, 255.0), std::clamp(c.g, 0.0, 255.0), std::clamp(c.b, 0.0, 255.0)};
}

inline double clamp01(double v) { return std::clamp(v, 0.0, 1.0); }
// exp(-t^2), exactly 0 far out (libm's underflow path is slow, and most pixels are far out).
inline double gauss(double t) { return t * t < 50 ? std::exp(-t * t) : 0.0; }
inline double smoothstep(double e0, double e1, double x) {
  const double t = clamp01((x - e0) / (e1 - e0));
  return t * t * (3 - 2 * t);
}

// Signed distance to a simple polygon, negative inside: the nearest edge gives the magnitude, the
// crossing number of a ray towards +x the sign.
template <size_t N>
double sd_polygon(const std::array<V2, N>& v, V2 p) {
  double d2 = INFINITY;
  bool inside = false;
  for (size_t i = 0, j = N - 1; i < N; j = i++) {
    const V2 a = v[j], e = v[i] - a, w = p - a;
    const double t = std::clamp(dot(w, e) / dot(e, e), 0.0, 1.0);
    const V2 q = {w.x - e.x * t, w.y - e.y * t};
    d2 = std::min(d2, dot(q, q));
    if ((a.y > p.y) != (v[i].y > p.y) && p.x < a.x + (p.y - a.y) * e.x / e.y) inside = !inside;
  }
  return inside ? -std::sqrt(d2) : std::sqrt(d2);
}

// Union with a fillet of about k where the two shapes meet (polynomial smooth minimum).
inline double smooth_min(double a, double b, double k) {
  const double h = std::max(k - std::abs(a - b), 0.0) / k;
  return std::min(a, b) - h * h * k * 0.25;
}

// An ellipse's distance, approximate away from the boundary (exact enough for anti-aliasing).
inline double sd_ellipse(V2 p, V2 c, V2 axes) {
  const V2 q = {(p.x - c.x) / axes.x, (p.y - c.y) / axes.y};
  return (length(q) - 1) * std::min(axes.x, axes.y);
}

// A box centred at c with half sizes h and corner radius r.
inline double sd_round_box(V2 p, V2 c, V2 h, double r) {
  const double qx = std::abs(p.x - c.x) - h.x + r, qy = std::abs(p.y - c.y) - h.y + r;
  return length({std::max(qx, 0.0), std::max(qy, 0.0)}) + std::min(std::max(qx, qy), 0.0) - r;
}

// One car: what every view of it shares. Local units (see the top of the file).
struct Car {
  double wheel_r = 0, clearance = 0, belt = 0, roof = 0, nose = 0, tail = 0;
  double body_r = 0, cabin_r = 0;           // rounding radii of the skeletons
  double front_wheel = 0, rear_wheel = 0;   // x of the wheel centres (at height wheel_r)
  std::array<V2, 6> body{};   // rear bottom, front bottom, nose, hood front, deck rear, tail
  std::array<V2, 5> cabin{};  // rear base, front base, windshield top, mid roof, rear roof
  double glass_inset = 0, glass_bottom = 0, glass_rear = 0;
  double pillar_b = 0, pillar_b_half = 0, pillar_c = 0, pillar_c_half = 0;  // half 0: no pillar
  std::array<double, 3> seams{};    // door edges: front door front, B pillar, rear door rear
  std::array<double, 2> handles{};  // door handle centres (x)
  double cladding = 0;               // height of dark plastic above the sill (0: none)
  V2 mirror{}, mirror_half{};        // the door mirror, over the front window's lower front corner
  bool black_mirror = false;
  V2 head{}, head_axes{}, tail_light{}, tail_axes{};
  Col paint{}, rim{}, glass{}, head_col{}, tail_col{};
  double gloss = 0, spec = 0, refl_height = 0, streak = 0, streak_strength = 0;
  double rim_frac = 0, hole_half = 0;
  int spokes = 5;
  double top = 0;  // highest point, for the bounding box
};

Car make_car(uint64_t seed, int64_t car_no) {
  Draws d(seed, Stream::Car, car_no);
  Car c;
  const double kind = d.uniform();
  const bool sedan = kind < 0.5, suv = kind >= 0.75;  // else a hatchback
  c.wheel_r = suv ? d.uniform(0.072, 0.084) : d.uniform(0.060, 0.071);
  c.clearance = c.wheel_r * (suv ? d.uniform(0.62, 0.78) : d.uniform(0.45, 0.6));
  c.belt = c.clearance + (suv ? d.uniform(0.165, 0.2) : d.uniform(0.13, 0.165));
  c.roof = c.belt + (sedan ? d.uniform(0.095, 0.12) : suv ? d.uniform(0.105, 0.135) : d.uniform(0.1, 0.125));
  c.body_r = d.uniform(0.022, 0.04);
  c.cabin_r = d.uniform(0.018, 0.032);
  c.front_wheel = 0.5 - d.uniform(0.15, 0.2);
  c.rear_wheel = c.front_wheel - (sedan ? d.uniform(0.56, 0.62) : d.uniform(0.58, 0.65));
  c.nose = c.clearance + (c.belt - c.clearance) * d.uniform(0.58, 0.78);
  const double hood_front = c.belt - d.uniform(0.005, 0.03), hood_round = d.uniform(0.05, 0.12);
  c.tail = sedan ? c.belt + d.uniform(0.0, 0.01) : c.belt - d.uniform(0.0, 0.01);
  const double deck = sedan ? d.uniform(0.02, 0.06) : d.uniform(0.005, 0.02), tail_drop = d.uniform(0.01, 0.04);

  // Body skeleton: grown by body_r, it spans x in [-0.5, 0.5] and y from the clearance up.
  const double rb = c.body_r, bottom = c.clearance + rb;
  c.body = {V2{-0.5 + rb, bottom}, V2{0.5 - rb, bottom + 0.01},
            V2{0.5 - rb, std::max(c.nose - rb, bottom + 0.015)}, V2{0.5 - rb - hood_round, hood_front - rb},
            V2{-0.5 + rb + deck, c.tail - rb}, V2{-0.5 + rb, std::max(c.tail - tail_drop - rb, bottom + 0.015)}};

  // Cabin skeleton: the windshield and rear window are lines from the belt to the roof, extended
  // down into the body so that the union has no gap; grown by cabin_r.
  const double rc = c.cabin_r, roof_sk = c.roof - rc, base = c.belt - 0.04;
  const double ws_base = 0.5 - (sedan ? d.uniform(0.27, 0.34) : d.uniform(0.22, 0.3));
  const double ws_top = ws_base - (suv ? d.uniform(0.1, 0.15) : d.uniform(0.12, 0.18));
  double rr_top = 0, rr_base = 0;
  if (sedan) {
    rr_top = ws_top - d.uniform(0.22, 0.3);
    rr_base = std::max(rr_top - d.uniform(0.1, 0.15), -0.34);
  } else {
    rr_top = -0.5 + rc + d.uniform(0.03, 0.08);
    rr_base = -0.5 + rc + d.uniform(0.0, 0.02);
  }
  const double rise = roof_sk - c.belt;
  const double ws_slope = (ws_base - ws_top) / rise, rr_slope = (rr_top - rr_base) / rise;
  const double bulge = d.uniform(0.0, 0.012);
  c.cabin = {V2{std::max(rr_base - rr_slope * (c.belt - base), -0.5 + rc), base},
             V2{ws_base + ws_slope * (c.belt - base), base}, V2{ws_top, roof_sk},
             V2{0.5 * (ws_top + rr_top), roof_sk + bulge}, V2{rr_top, roof_sk}};
  c.top = c.roof + bulge;

  // Glass: the cabin shrunk by the pillars' width, above the belt, split by the B pillar (and a
  // C pillar before the rear quarter glass of a hatchback or SUV).
  c.glass_inset = d.uniform(0.011, 0.018);
  c.glass_bottom = c.belt + d.uniform(0.006, 0.014);
  c.pillar_b = ws_top + (rr_top - ws_top) * d.uniform(0.42, 0.55);
  c.pillar_b_half = d.uniform(0.006, 0.011);
  if (sedan) {
    c.glass_rear = rr_top - d.uniform(0.02, 0.07);
  } else {
    c.glass_rear = rr_top + d.uniform(0.0, 0.02);
    c.pillar_c = ws_top + (rr_top - ws_top) * d.uniform(0.74, 0.84);
    c.pillar_c_half = d.uniform(0.01, 0.02);
  }
  const double arch = 1.2 * c.wheel_r;
  c.seams = {std::min(ws_base + 0.01, c.front_wheel - arch), c.pillar_b, c.rear_wheel + arch + d.uniform(0.0, 0.02)};
  c.handles = {c.pillar_b + 0.035, c.seams[2] + 0.035};
  c.mirror_half = {d.uniform(0.014, 0.02), d.uniform(0.01, 0.014)};
  c.mirror = {ws_base - 0.045, c.belt + c.mirror_half.y + 0.003};
  c.black_mirror = d.chance(0.3);
  c.cladding = d.chance(suv ? 0.6 : 0.2) ? d.uniform(0.015, 0.035) : 0.0;

  c.head = {0.5 - d.uniform(0.03, 0.05), c.nose - d.uniform(0.0, 0.015)};
  c.head_axes = {d.uniform(0.03, 0.05), d.uniform(0.009, 0.014)};
  c.tail_light = {-0.5 + d.uniform(0.015, 0.03), c.tail - d.uniform(0.015, 0.03)};
  c.tail_axes = {d.uniform(0.02, 0.035), d.uniform(0.01, 0.016)};

  // Paint: common car colours, weighted roughly as on the road, each jittered.
  struct Paint {
    double weight;
    Col col;
  };
  static const Paint kPaints[] = {
      {0.22, {238, 238, 236}}, {0.14, {20, 20, 23}},   {0.14, {178, 181, 186}}, {0.10, {100, 103, 108}},
      {0.09, {170, 22, 28}},   {0.08, {28, 62, 150}},  {0.05, {22, 30, 62}},    {0.03, {30, 78, 48}},
      {0.03, {196, 180, 140}}, {0.03, {92, 62, 42}},   {0.02, {215, 105, 25}},  {0.02, {222, 190, 40}},
      {0.03, {120, 160, 200}}, {0.02, {100, 20, 30}}};
  double pick = d.uniform(), acc = 0;
  for (const Paint& p : kPaints) {
    c.paint = p.col;
    if (pick < (acc += p.weight)) break;
  }
  const double bright = d.uniform(0.9, 1.06);
  c.paint = clamp_col(Col{c.paint.r * bright + d.uniform(-10, 10), c.paint.g * bright + d.uniform(-10, 10),
                          c.paint.b * bright + d.uniform(-10, 10)});
  const double luma = 0.3 * c.paint.r + 0.59 * c.paint.g + 0.11 * c.paint.b;
  c.gloss = d.uniform(0.12, 0.3) + (luma < 80 ? 0.12 : 0.0);
  c.spec = d.uniform(0.08, 0.25);
  c.refl_height = d.uniform(0.4, 0.65);

  const double rim_kind = d.uniform();
  c.rim = rim_kind < 0.55 ? grey(d.uniform(170, 205)) : rim_kind < 0.8 ? grey(d.uniform(40, 70))
          : rim_kind < 0.9 ? Col{150, 122, 82} : c.paint * 0.9;
  const int kSpokes[] = {5, 5, 6, 7, 10};
  c.spokes = kSpokes[std::min(4, static_cast<int>(d.uniform() * 5))];
  c.hole_half = c.spokes == 10 ? d.uniform(0.18, 0.28) : d.uniform(0.22, 0.34);
  c.rim_frac = d.uniform(0.58, 0.7);
  const double g = d.uniform(32, 70);
  c.glass = {g * d.uniform(0.85, 1.0), g * d.uniform(0.9, 1.05), g * d.uniform(0.95, 1.15)};
  c.streak = d.uniform(-0.25, 0.25);
  c.streak_strength = d.uniform(0.0, 0.6);
  c.head_col = {d.uniform(215, 245), d.uniform(215, 240), d.uniform(200, 230)};
  c.tail_col = {d.uniform(150, 200), d.uniform(15, 40), d.uniform(15, 35)};
  return c;
}

// One photo: pose and studio.
struct View {
  double facing = 1, squash = 1, unit = 1;  // unit: pixels per local unit (vertically)
  double aa = 1;                             // pixels per local unit for anti-aliasing
  double cx = 0, ground = 0, horizon = 0;    // car centre x, ground line y, horizon y (pixels)
  Col wall_top{}, wall_bottom{}, floor_far{}, floor_near{};
  double line_dark = 0, vignette = 0, light_tilt = 0, texture = 0;
  double shadow_dark = 0, shadow_a = 0, shadow_b = 0, contact_dark = 0;
  double noise = 0, chroma = 0, wheel_turn = 0;
  int64_t x0 = 0, x1 = 0, y0 = 0, y1 = 0;  // the car's pixel bounding box, [x0, x1) x [y0, y1)
  int64_t cell = 1, grid_w = 0;           // low-frequency texture lattice: cell size, row length
  std::vector<float> lattice;             // (grid_h, grid_w) values in [-1, 1]
};

View make_view(const SyntheticOptions& o, int64_t index, const Car& car) {
  Draws d(o.seed, Stream::View, index);
  View v;
  const double H = static_cast<double>(o.height), W = static_cast<double>(o.width);
  v.facing = d.chance(0.5) ? 1.0 : -1.0;
  v.squash = d.uniform(0.8, 1.0);
  v.unit = d.uniform(0.72, 0.92) * std::min(W, 1.5 * H);
  v.aa = v.unit * 0.5 * (1 + v.squash);
  const double half_len = 0.5 * v.unit * v.squash, free = std::max(0.0, 0.5 * W - half_len - 0.02 * W);
  v.cx = 0.5 * W + free * d.uniform(-0.85, 0.85);
  const double lo = std::max(0.6 * H, car.top * v.unit + 0.05 * H), hi = 0.93 * H;
  v.ground = lo < hi ? d.uniform(lo, hi) : hi;
  v.horizon = std::max(0.1 * H, v.ground - v.unit * d.uniform(0.06, 0.3));

  // Studio: a light wall and a somewhat darker floor with a tint, as in the Carvana photos (a
  // white-grey turntable studio).
  const double level = d.uniform(160, 248);
  const Col tint = {d.uniform(-12, 12), d.uniform(-12, 12), d.uniform(-12, 12)};
  v.wall_bottom = grey(level) + tint;
  v.wall_top = v.wall_bottom * d.uniform(0.78, 1.0);
  v.floor_far = grey(level * d.uniform(0.7, 0.95)) + tint * 0.5;
  v.floor_near = v.floor_far * d.uniform(0.85, 1.08);
  v.wall_top = clamp_col(v.wall_top), v.wall_bottom = clamp_col(v.wall_bottom);
  v.floor_far = clamp_col(v.floor_far), v.floor_near = clamp_col(v.floor_near);
  v.line_dark = d.uniform(0.0, 0.12);
  v.vignette = d.uniform(0.0, 0.15);
  v.light_tilt = d.uniform(-0.12, 0.12);
  v.texture = d.uniform(1.0, 6.0);
  v.shadow_dark = d.uniform(0.25, 0.55);
  v.shadow_a = 0.56 * v.unit * v.squash * d.uniform(0.95, 1.1);
  v.shadow_b = v.unit * d.uniform(0.035, 0.06);
  v.contact_dark = d.uniform(0.35, 0.6);
  v.noise = d.uniform(1.5, 5.0);
  v.chroma = v.noise * d.uniform(0.2, 0.5);
  v.wheel_turn = d.uniform();

  // The car's pixels lie within its local box [-0.5, 0.5] x [0, top], plus the fillet and 2 pixels.
  const double margin = 0.02 * v.unit + 2;
  v.x0 = std::clamp(static_cast<int64_t>(std::floor(v.cx - half_len - margin)), int64_t{0}, o.width);
  v.x1 = std::clamp(static_cast<int64_t>(std::ceil(v.cx + half_len + margin)), int64_t{0}, o.width);
  v.y0 = std::clamp(static_cast<int64_t>(std::floor(v.ground - car.top * v.unit - margin)), int64_t{0}, o.height);
  v.y1 = std::clamp(static_cast<int64_t>(std::ceil(v.ground + margin)), int64_t{0}, o.height);

  v.cell = std::max<int64_t>(6, std::min(o.height, o.width) / 10);
  v.grid_w = o.width / v.cell + 2;
  const int64_t n = v.grid_w * (o.height / v.cell + 2);
  v.lattice.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; i += 4) {
    const philox::Out r = philox::philox4x32_10(counter(Stream::Lattice, index, static_cast<uint64_t>(i / 4)), o.seed);
    for (int64_t j = 0; j < 4 && i + j < n; ++j)
      v.lattice[static_cast<size_t>(i + j)] = static_cast<float>(r.v[j] * (2.0 / 4294967296.0) - 1.0);
  }
  return v;
}

// Smoothly interpolated lattice value at pixel position (px, py), in [-1, 1].
double texture_at(const View& v, double px, double py) {
  const double gx = px / static_cast<double>(v.cell), gy = py / static_cast<double>(v.cell);
  const int64_t ix = static_cast<int64_t>(gx), iy = static_cast<int64_t>(gy);
  double fx = gx - static_cast<double>(ix), fy = gy - static_cast<double>(iy);
  fx = fx * fx * (3 - 2 * fx), fy = fy * fy * (3 - 2 * fy);
  const float* r0 = v.lattice.data() + iy * v.grid_w + ix;
  const float* r1 = r0 + v.grid_w;
  return (r0[0] * (1 - fx) + r0[1] * fx) * (1 - fy) + (r1[0] * (1 - fx) + r1[1] * fx) * fy;
}

// The background's terms that are constant along a row: the wall or floor with the horizon line,
// and whether the row crosses the shadows at all.
struct BackgroundRow {
  Col base;
  bool shadowed;
};

BackgroundRow background_row(const View& v, const Car& car, double py, double H) {
  const Col wall = lerp(v.wall_top, v.wall_bottom, py / v.horizon);
  const Col floor = lerp(v.floor_far, v.floor_near, (py - v.horizon) / (H - v.horizon));
  const double line = 1 - v.line_dark * gauss((py - v.horizon) / 1.2);
  const double sy = (py - v.ground + 0.01 * v.unit) / v.shadow_b, cy = (py - v.ground) / (0.25 * car.wheel_r * v.unit);
  return {lerp(wall, floor, clamp01(py - v.horizon + 0.5)) * line, std::abs(sy) < 1 || std::abs(cy) < 1};
}

Col background(const View& v, const Car& car, const BackgroundRow& row, double px, double py, double W, double tex) {
  const double side = 2 * px / W - 1;
  double f = 1 - v.vignette * side * side;
  if (row.shadowed) {  // the soft shadow under the car, and the darker contact under each tyre
    const double sx = (px - v.cx) / v.shadow_a, sy = (py - v.ground + 0.01 * v.unit) / v.shadow_b;
    f *= 1 - v.shadow_dark * (1 - smoothstep(0.15, 1.0, std::sqrt(sx * sx + sy * sy)));
    for (double wx : {car.front_wheel, car.rear_wheel}) {
      const double cx = (px - (v.cx + v.facing * wx * v.unit * v.squash)) / (1.3 * car.wheel_r * v.unit * v.squash);
      const double cy = (py - v.ground) / (0.25 * car.wheel_r * v.unit);
      f *= 1 - v.contact_dark * (1 - smoothstep(0.0, 1.0, std::sqrt(cx * cx + cy * cy)));
    }
  }
  return row.base * f + grey(v.texture * tex);
}

// Colour of a wheel at p, whose centre is q (tyre, spoked rim, hub).
Col wheel_colour(const Car& car, const View& v, V2 p, V2 q, double aa) {
  const V2 r2 = p - q;
  const double r = length(r2), R = car.wheel_r, rim_r = car.rim_frac * R;
  Col c = grey(26 + 8 * r / R + 10 * gauss((r / R - 0.82) / 0.08));
  Col rim = car.rim * (0.72 + 0.35 * (1 - r / rim_r)) + grey(30 * clamp01(r2.y / rim_r));
  // Holes between the spokes: an annulus cut into angular sectors. The turn differs per view.
  const double turns = std::atan2(r2.y, r2.x) / (2 * kPi) * car.spokes + v.wheel_turn;
  const double frac = turns - std::floor(turns);
  const double arc = (std::abs(frac - 0.5) - car.hole_half) * 2 * kPi * r / car.spokes;
  const double hole = std::max({0.26 * R - r, r - (rim_r - 0.07 * R), arc});
  rim = lerp(rim, grey(38), clamp01(0.5 - hole * aa));
  rim = lerp(rim, car.rim * 0.75, clamp01(0.5 - (r - 0.13 * R) * aa));  // hub
  return lerp(c, rim, clamp01(0.5 - (r - rim_r) * aa));
}

// The car at local point p: its coverage of the pixel (0..1), its colour there, and whether the
// silhouette covers the pixel centre.
struct CarPixel {
  double alpha = 0;
  Col col{};
  bool inside = false;
};

CarPixel car_pixel(const Car& car, const View& v, V2 p, double tex) {
  const double aa = v.aa;
  auto cover = [aa](double d) { return clamp01(0.5 - d * aa); };
  const double d_body = sd_polygon(car.body, p) - car.body_r;
  const double d_cabin_sk = sd_polygon(car.cabin, p);
  const double d_shell = smooth_min(d_body, d_cabin_sk - car.cabin_r, 0.02);
  const V2 wf = {car.front_wheel, car.wheel_r}, wr = {car.rear_wheel, car.wheel_r};
  const double d_front = length(p - wf), d_rear = length(p - wr);
  const double d_tyre = std::min(d_front, d_rear) - car.wheel_r;
  const double d = std::min(d_shell, d_tyre);
  CarPixel out;
  out.alpha = cover(d);
  out.inside = d < 0;
  if (out.alpha <= 0) return out;

  // Paint: darker towards the sill, lit from one side of the studio, mirroring the wall above a soft
  // reflected horizon and the floor below it, with a highlight along the shoulder and the roof.
  const double h = (p.y - car.clearance) / (car.belt - car.clearance);
  double light = (0.62 + 0.38 * smoothstep(-0.1, 0.9, h)) * (1 + v.light_tilt * p.x * v.facing);
  Col col = car.paint * light;
  const double line = car.clearance + (car.belt - car.clearance) * car.refl_height - 0.03 * p.x;
  const double up = clamp01(0.5 + (p.y - line) * aa / 2);
  col = lerp(col, lerp(v.floor_far, v.wall_bottom, up), car.gloss * (0.5 + 0.5 * up));
  const double shoulder = gauss((p.y - (car.belt - 0.018)) / 0.007);
  col = col + grey(255 * car.spec * (shoulder + 0.6 * smoothstep(car.roof - 0.03, car.roof, p.y)));
  col = col * (1 + 0.04 * tex);
  if (car.cladding > 0) col = lerp(col, grey(38 + 6 * tex), cover(p.y - (car.clearance + car.cladding)));

  // Door seams (about one pixel wide) and handles, between the sill and the belt.
  const double door = cover(std::max(car.clearance + 0.015 - p.y, p.y - car.belt));
  for (double s : car.seams) col = col * (1 - 0.45 * door * clamp01(1 - std::abs(p.x - s) * aa));
  for (double hx : car.handles) {
    const double dh = sd_round_box(p, {hx, car.belt - 0.025}, {0.016, 0.0045}, 0.003);
    col = lerp(col, col * 0.6, cover(dh));
  }
  // Wheel wells: the dark inside of the body around each wheel.
  col = lerp(col, grey(18), cover(std::min(d_front, d_rear) - 1.12 * car.wheel_r));

  // Lights, clipped to the body.
  const double body_cover = cover(d_body);
  col = lerp(col, car.head_col * (0.9 + 0.1 * tex), cover(sd_ellipse(p, car.head, car.head_axes)) * body_cover);
  col = lerp(col, car.tail_col, cover(sd_ellipse(p, car.tail_light, car.tail_axes)) * body_cover);

  // Glass: brighter towards the top (the sky of the studio), with one diagonal reflection streak.
  double d_glass = std::max({d_cabin_sk - car.cabin_r + car.glass_inset, car.glass_bottom - p.y, car.glass_rear - p.x,
                             car.pillar_b_half - std::abs(p.x - car.pillar_b)});
  if (car.pillar_c_half > 0) d_glass = std::max(d_glass, car.pillar_c_half - std::abs(p.x - car.pillar_c));
  const double gh = clamp01((p.y - car.belt) / (car.roof - car.belt));
  const double streak = gauss(((p.x - car.streak) + 0.7 * (p.y - car.belt)) / 0.03);
  Col glass = car.glass * (0.75 + 0.5 * gh) + grey(40 * car.streak_strength * streak);
  col = lerp(col, glass, cover(d_glass));
  const Col mirror = car.black_mirror ? grey(30 + 20 * clamp01((p.y - car.mirror.y) / car.mirror_half.y))
                                      : car.paint * (0.85 + 0.3 * clamp01((p.y - car.mirror.y) / car.mirror_half.y));
  col = lerp(col, mirror, cover(sd_round_box(p, car.mirror, car.mirror_half, 0.008)));

  // The tyres stand in front of everything. Where a tyre is the only part of the car in the pixel
  // its colour must not be mixed with the body's, hence the coverage relative to the car's.
  const double tyre = std::min(1.0, cover(d_tyre) / out.alpha);
  if (tyre > 0) col = lerp(col, wheel_colour(car, v, p, d_front < d_rear ? wf : wr, aa), tyre);
  out.col = col;
  return out;
}

void render_rows(const SyntheticOptions& o, int64_t index, const Car& car, const View& v, int64_t y_begin,
                 int64_t y_end, Image& image, Image& mask) {
  const double W = static_cast<double>(o.width), H = static_cast<double>(o.height);
  constexpr double kU16 = 1.0 / 65536.0;
  for (int64_t y = y_begin; y < y_end; ++y) {
    uint8_t* rgb = image.row(y);
    uint8_t* m = mask.row(y);
    const double py = static_cast<double>(y) + 0.5;
    const bool car_row = y >= v.y0 && y < v.y1;
    const BackgroundRow bg = background_row(v, car, py, H);
    for (int64_t x = 0; x < o.width; ++x) {
      const double px = static_cast<double>(x) + 0.5;
      const double tex = texture_at(v, px, py);
      Col c = background(v, car, bg, px, py, W, tex);
      m[x] = 0;
      if (car_row && x >= v.x0 && x < v.x1) {
        const V2 p = {v.facing * (px - v.cx) / (v.unit * v.squash), (v.ground - py) / v.unit};
        const CarPixel cp = car_pixel(car, v, p, tex);
        if (cp.alpha > 0) c = lerp(c, cp.col, cp.alpha);
        m[x] = cp.inside ? 1 : 0;
      }
      // Sensor noise: luminance from the sum of four 16-bit uniforms (unit variance), a little chroma.
      const uint64_t pixel = static_cast<uint64_t>(y * o.width + x);
      const philox::Out n = philox::philox4x32_10(counter(Stream::Noise, index, pixel), o.seed);
      const double lum = ((n.v[0] >> 16) + (n.v[0] & 0xFFFF) + (n.v[1] >> 16) + (n.v[1] & 0xFFFF)) * kU16 - 2.0;
      const double g = v.noise * lum * 1.7320508075688772;
      const double chroma[3] = {(n.v[2] >> 16) * kU16 - 0.5, (n.v[2] & 0xFFFF) * kU16 - 0.5,
                                (n.v[3] >> 16) * kU16 - 0.5};
      const double ch = v.chroma * 3.4641016151377544;  // uniform(-0.5, 0.5) has variance 1/12
      const double vals[3] = {c.r, c.g, c.b};
      for (int k = 0; k < 3; ++k)
        rgb[x * 3 + k] = static_cast<uint8_t>(std::clamp(vals[k] + g + ch * chroma[k], 0.0, 255.0) + 0.5);
    }
  }
}

void check_index(int64_t index) {
  if (index < 0 || index >= kMaxIndex)
    throw std::invalid_argument("synthetic_sample: index must be 0 to 2^27 - 1, got " + std::to_string(index));
}

std::string car_name(int64_t car_no) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "synth%04lld", static_cast<long long>(car_no));
  return buf;
}

}  // namespace

void SyntheticOptions::check() const {
  auto range = [](const char* field, int64_t value, int64_t lo, int64_t hi) {
    if (value < lo || value > hi)
      throw std::invalid_argument(std::string("synthetic: ") + field + " must be " + std::to_string(lo) + " to " +
                                  std::to_string(hi) + ", got " + std::to_string(value));
  };
  range("height", height, kMinHeight, kMaxSide);
  range("width", width, kMinWidth, kMaxSide);
  range("views_per_car", views_per_car, 1, 99);
}

std::string synthetic_stem(const SyntheticOptions& options, int64_t index) {
  options.check();
  check_index(index);
  char nn[8];
  std::snprintf(nn, sizeof nn, "_%02d", static_cast<int>(index % options.views_per_car + 1));
  return car_name(index / options.views_per_car) + nn;
}

SyntheticSample synthetic_sample(const SyntheticOptions& options, int64_t index) {
  options.check();
  check_index(index);
  const Car car = make_car(options.seed, index / options.views_per_car);
  const View view = make_view(options, index, car);
  SyntheticSample s;
  s.image = Image::blank(options.height, options.width, 3);
  s.mask = Image::blank(options.height, options.width, 1);
  parallel_for(0, options.height, 8, [&](int64_t y0, int64_t y1) {
    render_rows(options, index, car, view, y0, y1, s.image, s.mask);
  });
  s.car = car_name(index / options.views_per_car);
  s.view = index % options.views_per_car + 1;
  return s;
}

void write_synthetic(const std::string& dir, int64_t count, const SyntheticOptions& options,
                     const std::function<void(int64_t, int64_t)>& progress) {
  options.check();
  if (count < 0 || count > kMaxIndex)
    throw std::invalid_argument("write_synthetic: count must be 0 to 2^27, got " + std::to_string(count));
  const fs::path images = fs::path(dir) / "train", masks = fs::path(dir) / "train_masks";
  for (const fs::path& folder : {images, masks}) {
    std::error_code ec;
    fs::create_directories(folder, ec);
    if (ec || !fs::is_directory(folder))
      throw std::runtime_error(folder.string() + ": cannot create folder (" + (ec ? ec.message() : "not a folder") +
                               ")");
  }
  // Batches of samples are drawn and encoded in parallel, one sample per task (the rows of each
  // sample then run inline); errors are rethrown in sample order after the batch.
  const int64_t batch = 4 * static_cast<int64_t>(get_num_threads());
  std::vector<std::exception_ptr> errors(static_cast<size_t>(batch));
  for (int64_t start = 0; start < count; start += batch) {
    const int64_t n = std::min(batch, count - start);
    std::fill(errors.begin(), errors.end(), nullptr);
    parallel_for(0, n, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        try {
          SyntheticSample s = synthetic_sample(options, start + i);
          const std::string stem = synthetic_stem(options, start + i);
          write_jpeg((images / (stem + ".jpg")).string(), s.image, 95);
          for (uint8_t& m : s.mask.pixels) m = m ? 255 : 0;
          write_png((masks / (stem + "_mask.png")).string(), s.mask);
        } catch (...) {
          errors[static_cast<size_t>(i)] = std::current_exception();
        }
      }
    });
    for (int64_t i = 0; i < n; ++i)
      if (errors[static_cast<size_t>(i)]) std::rethrow_exception(errors[static_cast<size_t>(i)]);
    if (progress) progress(start + n, count);
  }
}

}  // namespace tl::data
