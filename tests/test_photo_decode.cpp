// The libjpeg-turbo decode path (data/photo_decode.h) against stb: the scale it picks, how far its
// resized images are from stb's, and that the header checks still come first. Built only with
// libjpeg-turbo; ctest reports the test skipped without it.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "data/photo_decode.h"
#include "data/resize.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace tl::data;

namespace {

// The bounds the turbo path is held to against stb + area resize, over the RGB bytes (0..255) of the
// resized images. A reduced DCT scale is a different low-pass than the box filter: the mean stays
// below one grey level, single pixels at sharp edges and highlights move more.
constexpr double kMeanBound = 1.0;
constexpr int kMaxBound = 64;
// At full scale (1/1) only the decoders' rounding differs.
constexpr double kMeanBoundFull = 0.1;
constexpr int kMaxBoundFull = 4;

struct Diff {
  int max = 0;
  double sum = 0, count = 0;
  void add(const Image& a, const Image& b) {
    REQUIRE(a.height == b.height);
    REQUIRE(a.width == b.width);
    REQUIRE(a.channels == b.channels);
    for (size_t i = 0; i < a.pixels.size(); ++i) {
      const int d = std::abs(int{a.pixels[i]} - int{b.pixels[i]});
      max = std::max(max, d);
      sum += d;
    }
    count += static_cast<double>(a.pixels.size());
  }
  double mean() const { return sum / count; }
};

// A photo-like picture: smooth gradients, a few hard-edged shapes, mild noise.
Image synthetic_photo(int64_t h, int64_t w) {
  Image im = Image::blank(h, w, 3);
  uint32_t state = 17;
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      state = state * 1664525u + 1013904223u;
      const int noise = static_cast<int>(state >> 29) - 4;
      const bool car = std::hypot(double(y - h / 2) / (h / 3.0), double(x - w / 2) / (w / 3.0)) < 1.0;
      const int base[3] = {car ? 200 : static_cast<int>(40 + 150 * y / h), car ? 30 : static_cast<int>(60 + 120 * x / w),
                           car ? 40 : 120};
      for (int c = 0; c < 3; ++c) im.at(y, x, c) = static_cast<uint8_t>(std::clamp(base[c] + noise, 0, 255));
    }
  return im;
}

}  // namespace

TEST_CASE("photo decode: the DCT scale keeps at least twice the target on both axes") {
  CHECK(turbo_scale_denominator(1280, 1918, 160, 240) == 4);   // 320x480 >= 2 x 160x240
  CHECK(turbo_scale_denominator(1280, 1918, 80, 120) == 8);    // 160x240
  CHECK(turbo_scale_denominator(1280, 1918, 320, 480) == 1);   // 1/2 gives 640x959 < 640x960
  CHECK(turbo_scale_denominator(1280, 1918, 640, 960) == 1);
  CHECK(turbo_scale_denominator(1280, 1918, 40, 60) == 8);     // never below 1/8
  CHECK(turbo_scale_denominator(1277, 1918, 160, 240) == 4);   // ceil(1277 / 4) = 320, as libjpeg rounds
  CHECK(turbo_scale_denominator(1276, 1918, 160, 240) == 2);   // 319 rows at 1/4: one short
  CHECK(parse_photo_decoder("stb") == PhotoDecoder::Stb);
  CHECK(parse_photo_decoder("turbo") == PhotoDecoder::Turbo);
  CHECK(tl::testing::error_of([] { parse_photo_decoder("libjpeg"); }) == "decoder: expected stb or turbo, got 'libjpeg'");
  CHECK(tl::testing::error_of([] { read_photo_resized("x.jpg", 10, 10, PhotoDecoder::Turbo, 3); })
            .find("denominator must be 0 (automatic), 1, 2, 4 or 8, got 3") != std::string::npos);
}

TEST_CASE("photo decode: turbo at a reduced scale stays within the bound of stb + area resize") {
  tl::testing::TempDir dir("tl_photo_decode");
  const std::string jpg = (dir.path / "photo.jpg").string(), png = (dir.path / "photo.png").string();
  const Image photo = synthetic_photo(640, 960);
  write_jpeg(jpg, photo, 92);
  write_png(png, photo);
  for (int64_t denom : {0, 1, 2, 4, 8}) {
    Diff d;
    d.add(read_photo_resized(jpg, 80, 120, PhotoDecoder::Stb), read_photo_resized(jpg, 80, 120, PhotoDecoder::Turbo, denom));
    MESSAGE("scale 1/" << (denom ? denom : turbo_scale_denominator(640, 960, 80, 120)) << ": max abs diff " << d.max
                       << ", mean " << d.mean());
    const bool full = denom == 1;
    CHECK(d.max <= (full ? kMaxBoundFull : kMaxBound));
    CHECK(d.mean() <= (full ? kMeanBoundFull : kMeanBound));
  }
  // Not a JPEG: the stb path, byte for byte.
  const Image a = read_photo_resized(png, 80, 120, PhotoDecoder::Stb), b = read_photo_resized(png, 80, 120, PhotoDecoder::Turbo);
  CHECK(a.pixels == b.pixels);
  CHECK(a.pixels == resize(photo, 80, 120, Interp::Auto).pixels);
}

TEST_CASE("photo decode: turbo refuses what stb refuses, naming the file") {
  tl::testing::TempDir dir("tl_photo_decode_bad");
  const std::string jpg = (dir.path / "photo.jpg").string(), cut = (dir.path / "cut.jpg").string();
  write_jpeg(jpg, synthetic_photo(256, 384), 90);
  {  // the first half of the file: the header is intact, the scan data ends early
    std::ifstream in(jpg, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(cut, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  }
  const std::string e = tl::testing::error_of([&] { read_photo_resized(cut, 32, 48, PhotoDecoder::Turbo); });
  MESSAGE(e);
  CHECK(e.rfind(cut + ": cannot decode image", 0) == 0);
  CHECK(tl::testing::error_of([&] { read_photo_resized((dir.path / "none.jpg").string(), 32, 48, PhotoDecoder::Turbo); })
            .find("none.jpg: no such file") != std::string::npos);
  const int64_t limit = max_image_pixels();
  set_max_image_pixels(1000);  // the header check comes before the decoder
  const std::string big = tl::testing::error_of([&] { read_photo_resized(jpg, 32, 48, PhotoDecoder::Turbo); });
  set_max_image_pixels(limit);
  CHECK(big.rfind(jpg + ": declares 256x384 pixels", 0) == 0);
}

TEST_CASE("photo decode: the real Carvana sample, turbo against stb at 160x240 and 640x960") {
  const fs::path dir = tl::testing::carvana_sample_dir();
  if (dir.empty()) return;
  std::vector<fs::path> jpgs;
  for (const auto& e : fs::directory_iterator(dir / "train"))
    if (e.path().extension() == ".jpg") jpgs.push_back(e.path());
  std::sort(jpgs.begin(), jpgs.end());
  REQUIRE(jpgs.size() >= 12);
  jpgs.resize(12);
  for (auto [h, w] : {std::pair<int64_t, int64_t>{160, 240}, {640, 960}}) {
    Diff d;
    for (const fs::path& p : jpgs)
      d.add(read_photo_resized(p.string(), h, w, PhotoDecoder::Stb), read_photo_resized(p.string(), h, w, PhotoDecoder::Turbo));
    const int64_t denom = turbo_scale_denominator(1280, 1918, h, w);
    MESSAGE(h << "x" << w << " (scale 1/" << denom << "), 12 photos: max abs diff " << d.max << ", mean " << d.mean());
    CHECK(d.max <= (denom == 1 ? kMaxBoundFull : kMaxBound));
    CHECK(d.mean() <= (denom == 1 ? kMeanBoundFull : kMeanBound));
  }
}
