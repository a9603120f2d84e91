// data/synthetic: determinism (by seed, not by thread count), mask statistics, what views of one car
// share, odd sizes, option errors, and the Kaggle layout that write_synthetic leaves on disk.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <vector>

#include "data/dataset.h"
#include "data/image.h"
#include "data/synthetic.h"
#include "tests/test_util.h"

using namespace tl;
using namespace tl::data;
using tl::testing::error_of;
namespace fs = std::filesystem;

namespace {

// A fresh folder per test case, removed at its end.
struct TempDir : tl::testing::TempDir {
  TempDir() : tl::testing::TempDir("tl_test_data_synthetic") {}
};


SyntheticOptions options(int64_t h, int64_t w, int64_t views = 8, uint64_t seed = 20) {
  SyntheticOptions o;
  o.height = h, o.width = w, o.views_per_car = views, o.seed = seed;
  return o;
}

double car_fraction(const Image& mask) {
  int64_t n = 0;
  for (uint8_t v : mask.pixels) n += v;
  return static_cast<double>(n) / static_cast<double>(mask.height * mask.width);
}

bool binary(const Image& mask) {
  return std::all_of(mask.pixels.begin(), mask.pixels.end(), [](uint8_t v) { return v <= 1; });
}

// The car's outline as a scale-free signature: the silhouette's height in 48 columns spread over its
// horizontal extent, divided by its largest height. Invariant to position, scale and squash.
std::vector<double> profile(const Image& m) {
  int64_t x0 = m.width, x1 = -1, bottom = -1;
  for (int64_t y = 0; y < m.height; ++y)
    for (int64_t x = 0; x < m.width; ++x)
      if (m.at(y, x)) x0 = std::min(x0, x), x1 = std::max(x1, x), bottom = std::max(bottom, y);
  REQUIRE(x1 >= x0);
  std::vector<double> p(48);
  double highest = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    const int64_t x = x0 + static_cast<int64_t>((static_cast<double>(i) + 0.5) * static_cast<double>(x1 - x0 + 1) / 48);
    int64_t top = bottom + 1;
    for (int64_t y = 0; y <= bottom; ++y)
      if (m.at(y, x)) {
        top = y;
        break;
      }
    p[i] = static_cast<double>(bottom + 1 - top);
    highest = std::max(highest, p[i]);
  }
  for (double& v : p) v /= highest;
  return p;
}

// Mean absolute difference of two profiles, the car facing either way.
double profile_distance(const std::vector<double>& a, const std::vector<double>& b) {
  double same = 0, mirrored = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    same += std::abs(a[i] - b[i]);
    mirrored += std::abs(a[i] - b[a.size() - 1 - i]);
  }
  return std::min(same, mirrored) / static_cast<double>(a.size());
}

// The median of each colour channel over the car's pixels.
std::array<double, 3> car_colour(const SyntheticSample& s) {
  std::array<double, 3> med{};
  for (int c = 0; c < 3; ++c) {
    std::vector<uint8_t> v;
    for (size_t k = 0; k < s.mask.pixels.size(); ++k)
      if (s.mask.pixels[k]) v.push_back(s.image.pixels[k * 3 + static_cast<size_t>(c)]);
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
    med[static_cast<size_t>(c)] = v[v.size() / 2];
  }
  return med;
}

double mean_abs_diff(const Image& a, const Image& b) {
  double s = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i) s += std::abs(double(a.pixels[i]) - double(b.pixels[i]));
  return s / static_cast<double>(a.pixels.size());
}

}  // namespace

TEST_CASE("synthetic: a sample is a function of (seed, index); seeds and indices differ") {
  const SyntheticOptions o;  // 320x480, seed 20, 8 views per car
  const SyntheticSample a = synthetic_sample(o, 11), b = synthetic_sample(o, 11);
  REQUIRE(a.image.height == 320);
  REQUIRE(a.image.width == 480);
  REQUIRE(a.image.channels == 3);
  REQUIRE(a.mask.channels == 1);
  CHECK(a.image.pixels == b.image.pixels);
  CHECK(a.mask.pixels == b.mask.pixels);
  CHECK(a.car == "synth0001");
  CHECK(a.view == 4);

  const SyntheticSample other_seed = synthetic_sample(options(320, 480, 8, 21), 11);
  const SyntheticSample other_index = synthetic_sample(o, 12);
  CHECK(mean_abs_diff(a.image, other_seed.image) > 5);
  CHECK(a.mask.pixels != other_seed.mask.pixels);
  CHECK(mean_abs_diff(a.image, other_index.image) > 5);
  CHECK(a.mask.pixels != other_index.mask.pixels);
}

TEST_CASE("synthetic: masks are {0, 1}, and the car covers 8% to 45% of the frame, inside it") {
  const SyntheticOptions o;
  double sum = 0;
  for (int64_t i = 0; i < 64; ++i) {
    const SyntheticSample s = synthetic_sample(o, i);
    REQUIRE(binary(s.mask));
    const double f = car_fraction(s.mask);
    CHECK_MESSAGE((f >= 0.08 && f <= 0.45), "sample " << i << ": car fraction " << f);
    sum += f;
    // The whole car is in the picture: no car pixel on the left, right or top border.
    int64_t border = 0;
    for (int64_t y = 0; y < o.height; ++y) border += s.mask.at(y, 0) + s.mask.at(y, o.width - 1);
    for (int64_t x = 0; x < o.width; ++x) border += s.mask.at(0, x);
    CHECK_MESSAGE(border == 0, "sample " << i << " touches the frame's border");
  }
  const double mean = sum / 64;
  CHECK_MESSAGE((mean > 0.12 && mean < 0.32), "mean car fraction " << mean);
}

TEST_CASE("synthetic: the views of a car share its shape and paint; different cars differ") {
  const SyntheticOptions o = options(160, 240, 4);
  const int64_t cars = 10, views = 4;
  std::vector<std::vector<double>> shapes;
  std::vector<std::array<double, 3>> colours;
  for (int64_t i = 0; i < cars * views; ++i) {
    const SyntheticSample s = synthetic_sample(o, i);
    CHECK(s.car == "synth000" + std::to_string(i / views));
    CHECK(s.view == i % views + 1);
    shapes.push_back(profile(s.mask));
    colours.push_back(car_colour(s));
  }
  double shape_within = 0, shape_between = 0, colour_within = 0, colour_between = 0;
  int64_t n_within = 0, n_between = 0;
  for (int64_t i = 0; i < cars * views; ++i)
    for (int64_t j = i + 1; j < cars * views; ++j) {
      const double ds = profile_distance(shapes[size_t(i)], shapes[size_t(j)]);
      double dc = 0;
      for (size_t c = 0; c < 3; ++c) dc += std::abs(colours[size_t(i)][c] - colours[size_t(j)][c]) / 3;
      if (i / views == j / views) {
        shape_within = std::max(shape_within, ds);  // the worst pair of views of one car
        colour_within += dc, ++n_within;
      } else {
        shape_between += ds, colour_between += dc, ++n_between;
      }
    }
  shape_between /= double(n_between), colour_within /= double(n_within), colour_between /= double(n_between);
  CHECK_MESSAGE(shape_within < 0.03, "views of one car: outline distance up to " << shape_within);
  CHECK_MESSAGE(shape_between > 2 * shape_within,
                "outline distance within a car up to " << shape_within << ", between cars " << shape_between
                                                       << " on average");
  CHECK_MESSAGE(colour_between > 3 * colour_within,
                "median car colour distance within a car " << colour_within << ", between cars " << colour_between);
}

TEST_CASE("synthetic: the result does not depend on the thread count") {
  const int saved = get_num_threads();
  const SyntheticOptions o = options(123, 211);
  set_num_threads(1);
  const SyntheticSample one = synthetic_sample(o, 5);
  set_num_threads(2);
  const SyntheticSample two = synthetic_sample(o, 5);
  set_num_threads(3);
  const SyntheticSample three = synthetic_sample(o, 5);
  set_num_threads(saved);
  CHECK(one.image.pixels == two.image.pixels);
  CHECK(one.mask.pixels == two.mask.pixels);
  CHECK(one.image.pixels == three.image.pixels);
  CHECK(one.mask.pixels == three.mask.pixels);
}

TEST_CASE("synthetic: odd and small frame sizes work") {
  for (auto [h, w] : {std::pair<int64_t, int64_t>{32, 48}, {33, 49}, {47, 301}, {240, 160}, {101, 77}, {57, 1000}}) {
    for (int64_t i : {0, 9}) {
      const SyntheticSample s = synthetic_sample(options(h, w), i);
      CAPTURE(h);
      CAPTURE(w);
      CAPTURE(i);
      CHECK(s.image.height == h);
      CHECK(s.image.width == w);
      CHECK(s.mask.height == h);
      CHECK(s.mask.width == w);
      CHECK(binary(s.mask));
      const double f = car_fraction(s.mask);
      CHECK_MESSAGE((f > 0.01 && f < 0.6), "car fraction " << f);  // very wide frames: the car fits 1.5 heights
      int64_t top = 0;
      for (int64_t x = 0; x < w; ++x) top += s.mask.at(0, x);
      CHECK(top == 0);
    }
  }
}

TEST_CASE("synthetic: bad options and indices throw, naming the field") {
  CHECK(error_of([] { synthetic_sample(options(31, 480), 0); }) == "synthetic: height must be 32 to 16384, got 31");
  CHECK(error_of([] { synthetic_sample(options(320, 47), 0); }) == "synthetic: width must be 48 to 16384, got 47");
  CHECK(error_of([] { synthetic_sample(options(320, 480, 0), 0); }) == "synthetic: views_per_car must be 1 to 99, got 0");
  CHECK(error_of([] { options(320, 480, 100).check(); }) == "synthetic: views_per_car must be 1 to 99, got 100");
  CHECK(error_of([] { synthetic_sample(options(20000, 480), 0); }).find("height") != std::string::npos);
  CHECK(error_of([] { synthetic_sample({}, -1); }).find("index") != std::string::npos);
  CHECK(error_of([] { synthetic_sample({}, int64_t{1} << 27); }).find("index") != std::string::npos);
  CHECK_THROWS_AS(synthetic_sample(options(31, 480), 0), std::invalid_argument);
  CHECK_THROWS_AS(write_synthetic("unused", -1, {}), std::invalid_argument);
  CHECK_THROWS_AS(write_synthetic("unused", 1, options(10, 10)), std::invalid_argument);
  CHECK_FALSE(fs::exists("unused"));
}

TEST_CASE("synthetic: stems are Kaggle-style <car>_<NN>") {
  CHECK(synthetic_stem({}, 0) == "synth0000_01");
  CHECK(synthetic_stem({}, 13) == "synth0001_06");
  CHECK(synthetic_stem(options(320, 480, 16), 16 * 10000 + 15) == "synth10000_16");
  CHECK(synthetic_stem(options(320, 480, 1), 42) == "synth0042_01");
}

TEST_CASE("synthetic: write_synthetic writes the Kaggle layout that scan_kaggle_layout reads") {
  TempDir dir;
  const SyntheticOptions o = options(64, 96, 4, 7);
  // Something already there: an unrelated file stays, a file of the same name is replaced.
  fs::create_directories(dir.path / "train");
  std::ofstream(dir.path / "train" / "keep.txt") << "mine";
  std::ofstream(dir.path / "train" / "synth0000_01.jpg") << "not a jpeg";

  std::vector<std::pair<int64_t, int64_t>> calls;
  write_synthetic(dir.path.string(), 10, o, [&](int64_t done, int64_t total) { calls.emplace_back(done, total); });
  REQUIRE_FALSE(calls.empty());
  CHECK(calls.back() == std::pair<int64_t, int64_t>{10, 10});
  for (size_t i = 1; i < calls.size(); ++i) CHECK(calls[i].first > calls[i - 1].first);

  std::set<std::string> images, masks;
  for (const auto& e : fs::directory_iterator(dir.path / "train")) images.insert(e.path().filename().string());
  for (const auto& e : fs::directory_iterator(dir.path / "train_masks")) masks.insert(e.path().filename().string());
  std::set<std::string> want_images = {"keep.txt"}, want_masks;
  for (const char* stem : {"synth0000_01", "synth0000_02", "synth0000_03", "synth0000_04", "synth0001_01",
                           "synth0001_02", "synth0001_03", "synth0001_04", "synth0002_01", "synth0002_02"}) {
    want_images.insert(std::string(stem) + ".jpg");
    want_masks.insert(std::string(stem) + "_mask.png");
  }
  CHECK(images == want_images);  // no temporary files left behind either
  CHECK(masks == want_masks);
  {
    std::ifstream keep(dir.path / "train" / "keep.txt");
    std::string text;
    keep >> text;
    CHECK(text == "mine");
  }

  for (int64_t i = 0; i < 10; ++i) {
    const SyntheticSample s = synthetic_sample(o, i);
    const std::string stem = synthetic_stem(o, i);
    const Image mask = read_mask((dir.path / "train_masks" / (stem + "_mask.png")).string());
    CHECK(mask.pixels == s.mask.pixels);
    const Image raw = read_image((dir.path / "train_masks" / (stem + "_mask.png")).string());
    CHECK(raw.channels == 1);
    CHECK(std::all_of(raw.pixels.begin(), raw.pixels.end(), [](uint8_t v) { return v == 0 || v == 255; }));
    const Image image = read_image((dir.path / "train" / (stem + ".jpg")).string());
    REQUIRE(image.channels == 3);
    REQUIRE(image.height == 64);
    const double err = mean_abs_diff(image, s.image);
    CHECK_MESSAGE(err < 4.0, stem << ": JPEG mean abs error " << err);
  }

  // The trainer's reader finds every pair.
  const std::vector<Sample> found = scan_kaggle_layout(dir.path.string());
  CHECK(found.size() == 10);

  // A folder that cannot be created: the error names it.
  const fs::path blocked = dir.path / "file";
  std::ofstream(blocked) << "x";
  const std::string e = error_of([&] { write_synthetic(blocked.string(), 1, o); });
  CHECK_MESSAGE(e.find((blocked / "train").string()) != std::string::npos, e);
}

TEST_CASE("synthetic: no global luminance threshold separates car from background") {
  // Over many samples, the best single threshold on luminance (car below or above it) reaches a low
  // IoU: paint colours span the range, studios are light or dark, sometimes close to the paint.
  const SyntheticOptions o = options(80, 120);
  std::array<int64_t, 256> car{}, bg{};
  for (int64_t i = 0; i < 64; ++i) {
    const SyntheticSample s = synthetic_sample(o, 1000 + i * 3);
    for (size_t k = 0; k < s.mask.pixels.size(); ++k) {
      const uint8_t* p = &s.image.pixels[k * 3];
      (s.mask.pixels[k] ? car : bg)[size_t((3 * p[0] + 6 * p[1] + p[2]) / 10)]++;
    }
  }
  int64_t total_car = 0, total_bg = 0, car_below = 0, bg_below = 0;
  for (size_t l = 0; l < 256; ++l) total_car += car[l], total_bg += bg[l];
  double best = 0;
  for (size_t t = 0; t < 256; ++t) {
    car_below += car[t], bg_below += bg[t];
    best = std::max(best, double(car_below) / double(total_car + bg_below));                            // dark = car
    best = std::max(best, double(total_car - car_below) / double(total_car + total_bg - bg_below));  // light = car
  }
  CHECK_MESSAGE(best < 0.6, "best luminance threshold IoU " << best);
}
