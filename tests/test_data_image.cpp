// data/image and data/resize: decoding and encoding, clear errors, mask binarization, the exact
// properties of each resize mode, tensor conversions, and the real Carvana sample when present.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "data/image.h"
#include "data/resize.h"
#include "tests/test_util.h"

using namespace tl;
using namespace tl::data;
using tl::testing::error_of;
namespace fs = std::filesystem;

namespace {

// A fresh folder per test case, removed at its end.
struct TempDir : tl::testing::TempDir {
  TempDir() : tl::testing::TempDir("tl_test_data_image") {}
};

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}
std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}
void put_le(std::vector<uint8_t>& b, uint32_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

Image random_image(int64_t h, int64_t w, int64_t c, uint32_t seed) {
  std::mt19937 rng(seed);
  Image im = Image::blank(h, w, c);
  for (auto& p : im.pixels) p = static_cast<uint8_t>(rng() & 0xFF);
  return im;
}

// A 2x2 GIF89a with a two-colour global palette; pixel indices (row-major) are LZW-coded with a clear
// code before each one, so every code stays 3 bits wide (minimum code size 2: clear 4, end 5).
std::vector<uint8_t> tiny_gif(const std::array<uint8_t, 6>& palette, const std::array<uint8_t, 4>& indices) {
  std::vector<uint8_t> b = {'G', 'I', 'F', '8', '9', 'a'};
  put_le(b, 2, 2), put_le(b, 2, 2);
  b.insert(b.end(), {0x80, 0, 0});  // global colour table of 2 entries, background 0, no aspect
  b.insert(b.end(), palette.begin(), palette.end());
  b.push_back(0x2C);  // image descriptor: at (0, 0), 2x2, no local table, not interlaced
  put_le(b, 0, 2), put_le(b, 0, 2), put_le(b, 2, 2), put_le(b, 2, 2);
  b.push_back(0);
  b.push_back(2);  // LZW minimum code size
  std::vector<int> codes;
  for (uint8_t i : indices) codes.insert(codes.end(), {4, i});
  codes.push_back(5);
  std::vector<uint8_t> data;
  uint32_t bits = 0, nbits = 0;
  for (int code : codes) {
    bits |= static_cast<uint32_t>(code) << nbits;
    for (nbits += 3; nbits >= 8; nbits -= 8, bits >>= 8) data.push_back(static_cast<uint8_t>(bits));
  }
  if (nbits) data.push_back(static_cast<uint8_t>(bits));
  b.push_back(static_cast<uint8_t>(data.size()));
  b.insert(b.end(), data.begin(), data.end());
  b.insert(b.end(), {0, 0x3B});  // end of image data, trailer
  return b;
}

// A 24-bit bottom-up BMP of an RGB image (rows padded to 4 bytes).
std::vector<uint8_t> bmp24(const Image& im) {
  const uint32_t stride = static_cast<uint32_t>((im.width * 3 + 3) / 4 * 4), size = stride * static_cast<uint32_t>(im.height);
  std::vector<uint8_t> b = {'B', 'M'};
  put_le(b, 54 + size, 4), put_le(b, 0, 4), put_le(b, 54, 4);
  put_le(b, 40, 4), put_le(b, static_cast<uint32_t>(im.width), 4), put_le(b, static_cast<uint32_t>(im.height), 4);
  put_le(b, 1, 2), put_le(b, 24, 2), put_le(b, 0, 4), put_le(b, size, 4);
  put_le(b, 2835, 4), put_le(b, 2835, 4), put_le(b, 0, 4), put_le(b, 0, 4);
  for (int64_t y = im.height - 1; y >= 0; --y) {
    for (int64_t x = 0; x < im.width; ++x) b.insert(b.end(), {im.at(y, x, 2), im.at(y, x, 1), im.at(y, x, 0)});
    for (uint32_t p = static_cast<uint32_t>(im.width * 3); p < stride; ++p) b.push_back(0);
  }
  return b;
}

double mean_abs_diff(const Image& a, const Image& b) {
  double s = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i) s += std::abs(double(a.pixels[i]) - double(b.pixels[i]));
  return s / static_cast<double>(a.pixels.size());
}


}  // namespace

TEST_CASE("image: PNG round trip is exact for 1, 3 and 4 channels; JPEG is close; writes are atomic") {
  TempDir dir;
  for (int64_t c : {1, 3, 4}) {
    Image im = random_image(17, 23, c, 7 + static_cast<uint32_t>(c));
    write_png(dir.file("a.png"), im);
    Image back = read_image(dir.file("a.png"));
    CHECK(back.height == 17);
    CHECK(back.width == 23);
    CHECK(back.channels == c);
    CHECK(back.pixels == im.pixels);
  }
  Image grad = Image::blank(48, 64, 3);  // a smooth gradient: JPEG's easy case
  for (int64_t y = 0; y < 48; ++y)
    for (int64_t x = 0; x < 64; ++x) {
      grad.at(y, x, 0) = static_cast<uint8_t>(40 + 2 * x), grad.at(y, x, 1) = static_cast<uint8_t>(30 + 3 * y),
      grad.at(y, x, 2) = static_cast<uint8_t>(100 + x + y);
    }
  write_jpeg(dir.file("g.jpg"), grad, 90);
  Image back = read_image(dir.file("g.jpg"));
  REQUIRE(back.channels == 3);
  const double err = mean_abs_diff(back, grad);
  CHECK_MESSAGE(err < 3.0, "JPEG mean abs error " << err);
  CHECK(read_image(dir.file("g.jpg"), 1).channels == 1);

  // Only the final files are left: no temporaries beside them.
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir.path)) files += e.is_regular_file() ? 1 : 0;
  CHECK(files == 2);
  // A folder that does not exist: the error names the path; a bad image or quality: nothing written.
  const std::string nowhere = dir.file("no_such_dir/x.png");
  CHECK(error_of([&] { write_png(nowhere, grad); }).find(nowhere) != std::string::npos);
  CHECK_THROWS_AS(write_png(dir.file("bad.png"), Image{2, 2, 3, {1, 2, 3}}), std::invalid_argument);
  CHECK_THROWS_AS(write_jpeg(dir.file("bad.jpg"), grad, 0), std::invalid_argument);
  CHECK_FALSE(fs::exists(dir.file("bad.png")));
  CHECK_FALSE(fs::exists(dir.file("bad.jpg")));
}

TEST_CASE("image: BMP and GIF decode; masks binarize whatever the palette's colours") {
  TempDir dir;
  Image rgb = Image::blank(2, 3, 3);
  const uint8_t px[2][3][3] = {{{255, 0, 0}, {0, 255, 0}, {0, 0, 255}}, {{10, 20, 30}, {77, 77, 77}, {200, 100, 50}}};
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 3; ++x)
      for (int c = 0; c < 3; ++c) rgb.at(y, x, c) = px[y][x][c];
  write_bytes(dir.file("a.bmp"), bmp24(rgb));
  Image bmp = read_image(dir.file("a.bmp"));
  CHECK(bmp.channels == 3);
  CHECK(bmp.pixels == rgb.pixels);  // rows in the right order, BGR swapped, padding skipped
  CHECK(read_image(dir.file("a.bmp"), 1).at(1, 1) == 77);  // gray stays gray when forced to 1 channel

  // Black/white (the Kaggle GIFs rendered), raw-index-like {0, 1}, and a dark blue that a
  // luminance conversion would round to 0: every one reads as a {0, 1} mask.
  const std::array<uint8_t, 4> idx = {0, 1, 1, 0};
  for (auto palette : {std::array<uint8_t, 6>{0, 0, 0, 255, 255, 255}, std::array<uint8_t, 6>{0, 0, 0, 1, 1, 1},
                       std::array<uint8_t, 6>{0, 0, 0, 0, 0, 1}}) {
    write_bytes(dir.file("m.gif"), tiny_gif(palette, idx));
    Image mask = read_mask(dir.file("m.gif"));
    CHECK(mask.height == 2);
    CHECK(mask.width == 2);
    CHECK(mask.channels == 1);
    CHECK(mask.pixels == std::vector<uint8_t>{0, 1, 1, 0});
    Image raw = read_image(dir.file("m.gif"));  // stb decodes a GIF as RGBA, through the palette
    CHECK(raw.channels == 4);
    CHECK(raw.at(0, 1, 2) == palette[5]);
    CHECK(raw.at(0, 1, 3) == 255);
  }
  // Gray PNG masks: any value above 0 is 1.
  write_png(dir.file("m.png"), Image{1, 4, 1, {0, 1, 128, 255}});
  CHECK(read_mask(dir.file("m.png")).pixels == std::vector<uint8_t>{0, 1, 1, 1});
}

TEST_CASE("image: missing, corrupt and truncated files give one clear error naming the path") {
  TempDir dir;
  const std::string missing = dir.file("missing.jpg");
  CHECK(error_of([&] { read_image(missing); }) == missing + ": no such file");
  CHECK(error_of([&] { read_mask(missing); }) == missing + ": no such file");

  const std::string junk = dir.file("junk.jpg");
  write_bytes(junk, {'n', 'o', 't', ' ', 'a', 'n', ' ', 'i', 'm', 'a', 'g', 'e'});
  const std::string e1 = error_of([&] { read_image(junk); });
  CHECK_MESSAGE(e1.rfind(junk + ": cannot decode image (", 0) == 0, e1);

  Image im = random_image(32, 32, 3, 1);
  write_png(dir.file("t.png"), im);
  std::vector<uint8_t> bytes = read_bytes(dir.file("t.png"));
  bytes.resize(bytes.size() / 2);
  const std::string cut = dir.file("cut.png");
  write_bytes(cut, bytes);
  const std::string e2 = error_of([&] { read_mask(cut); });
  CHECK_MESSAGE(e2.rfind(cut + ": cannot decode image (", 0) == 0, e2);
  CHECK_THROWS_AS(read_image(junk, 5), std::invalid_argument);
}

TEST_CASE("resize: same size is the identity in every mode; sizes below 1 are refused") {
  Image im = random_image(13, 29, 3, 3);
  for (Interp m : {Interp::Area, Interp::Bilinear, Interp::Nearest, Interp::Auto}) {
    CAPTURE(interp_name(m));
    CHECK(resize(im, 13, 29, m).pixels == im.pixels);
  }
  const std::string e = error_of([&] { resize(im, 0, 5); });
  CHECK_MESSAGE(e.find("13x29x3 to 0x5") != std::string::npos, e);
  CHECK_THROWS_AS(resize(im, 4, -1, Interp::Nearest), std::invalid_argument);
  CHECK_THROWS_AS(resize(Image{}, 4, 4), std::invalid_argument);
}

TEST_CASE("resize: area averaging is exact and does not alias") {
  CHECK(resize(Image::blank(37, 53, 3, 201), 10, 7, Interp::Area).pixels == Image::blank(10, 7, 3, 201).pixels);

  Image im = random_image(12, 18, 2, 5);  // a 3x shrink: each output is its rounded 3x3 block mean
  Image small = resize(im, 4, 6, Interp::Area);
  for (int64_t y = 0; y < 4; ++y)
    for (int64_t x = 0; x < 6; ++x)
      for (int64_t c = 0; c < 2; ++c) {
        int sum = 0;
        for (int64_t dy = 0; dy < 3; ++dy)
          for (int64_t dx = 0; dx < 3; ++dx) sum += im.at(3 * y + dy, 3 * x + dx, c);
        CHECK(small.at(y, x, c) == (sum * 2 + 9) / 18);  // round half up of sum / 9
      }

  Image board = Image::blank(64, 64, 1);  // a 1-pixel checkerboard shrunk 8x
  for (int64_t y = 0; y < 64; ++y)
    for (int64_t x = 0; x < 64; ++x) board.at(y, x) = (x + y) % 2 ? 255 : 0;
  for (uint8_t v : resize(board, 8, 8, Interp::Area).pixels) CHECK(v == 128);  // 127.5, rounded half up
  for (uint8_t v : resize(board, 8, 8, Interp::Auto).pixels) CHECK(v == 128);
  Image aliased = resize(board, 8, 8, Interp::Nearest);  // samples one phase of the pattern: all one colour
  for (uint8_t v : aliased.pixels) CHECK(v == aliased.pixels[0]);
  CHECK(std::abs(aliased.pixels[0] - 127.5) > 127);
}

TEST_CASE("resize: bilinear growth matches hand-computed half-pixel values") {
  Image two{1, 2, 1, {10, 200}};
  // Sources at (x + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25, clamped to [0, 1].
  CHECK(resize(two, 1, 4, Interp::Bilinear).pixels == std::vector<uint8_t>{10, 58, 153, 200});
  // Growing by 3: sources -1/3, 0, 1/3, 2/3, 1, 4/3.
  std::vector<uint8_t> want;
  for (double s : {0.0, 0.0, 1.0 / 3, 2.0 / 3, 1.0, 1.0}) want.push_back(static_cast<uint8_t>(std::lround(10 + s * 190)));
  CHECK(resize(two, 1, 6, Interp::Bilinear).pixels == want);
  Image col{2, 1, 1, {10, 200}};  // the same along y
  CHECK(resize(col, 4, 1, Interp::Auto).pixels == std::vector<uint8_t>{10, 58, 153, 200});
}

TEST_CASE("resize: Auto chooses per axis; nearest keeps masks binary") {
  // Rows constant along x: the result is the area shrink along y; columns constant along y: the
  // bilinear growth along x.
  Image rows = Image::blank(8, 3, 1), cols = Image::blank(8, 3, 1);
  for (int64_t y = 0; y < 8; ++y)
    for (int64_t x = 0; x < 3; ++x) rows.at(y, x) = static_cast<uint8_t>(y * 30), cols.at(y, x) = static_cast<uint8_t>(x * 100);
  Image r = resize(rows, 2, 6, Interp::Auto), c = resize(cols, 2, 6, Interp::Auto);
  for (int64_t x = 0; x < 6; ++x) {
    CHECK(r.at(0, x) == 45);  // mean of 0, 30, 60, 90
    CHECK(r.at(1, x) == 165);
    CHECK(c.at(0, x) == resize(Image{1, 3, 1, {0, 100, 200}}, 1, 6, Interp::Bilinear).at(0, x));
  }
  Image mask = Image::blank(50, 70, 1);
  std::mt19937 rng(9);
  for (auto& p : mask.pixels) p = rng() % 3 == 0;
  for (auto [h, w] : {std::pair<int64_t, int64_t>{13, 17}, {160, 240}, {50, 71}}) {
    Image m = resize_mask(mask, h, w);
    CHECK(m.height == h);
    CHECK(m.width == w);
    for (uint8_t v : m.pixels) CHECK(v <= 1);
  }
  CHECK(resize_mask(Image{1, 4, 1, {0, 1, 2, 3}}, 1, 2).pixels == std::vector<uint8_t>{1, 3});  // centers 1, 3
}

TEST_CASE("image: tensor conversions round-trip; tensor_to_image clamps, rounds and checks shapes") {
  Image im = random_image(5, 7, 3, 11);
  Tensor t = image_to_tensor(im);
  REQUIRE(t.shape() == Shape{3, 5, 7});
  CHECK(t.dtype() == kFloat32);
  CHECK(t.to_vector<float>()[static_cast<size_t>((2 * 5 + 4) * 7 + 6)] == im.at(4, 6, 2) / 255.0f);
  CHECK(tensor_to_image(t).pixels == im.pixels);
  CHECK(tensor_to_image(t.permute({1, 2, 0}).contiguous().permute({2, 0, 1})).pixels == im.pixels);  // any strides
  CHECK(tensor_to_image(t.to(kFloat64)).pixels == im.pixels);

  Image two_d = tensor_to_image(tensor({-0.5, 0.0, 0.5, 1.0, 1.5, NAN}).view({2, 3}));
  CHECK(two_d.channels == 1);
  CHECK(two_d.pixels == std::vector<uint8_t>{0, 0, 128, 255, 255, 0});

  Tensor m = mask_to_tensor(Image{2, 2, 1, {0, 1, 255, 0}});
  REQUIRE(m.shape() == Shape{1, 2, 2});
  CHECK(m.to_vector<float>() == std::vector<float>{0, 1, 1, 0});
  CHECK_THROWS_AS(mask_to_tensor(im), std::invalid_argument);
  CHECK_THROWS_AS(tensor_to_image(zeros({5, 2, 2})), std::invalid_argument);
  CHECK_THROWS_AS(tensor_to_image(zeros({2, 2}, kInt64)), std::invalid_argument);
}

TEST_CASE("image: the real Carvana sample decodes, its masks are binary, it shrinks to 240x160") {
  const fs::path dir = tl::testing::carvana_sample_dir();
  if (dir.empty()) return;
  std::vector<fs::path> jpgs;
  for (const auto& e : fs::directory_iterator(dir / "train"))
    if (e.path().extension() == ".jpg") jpgs.push_back(e.path());
  std::sort(jpgs.begin(), jpgs.end());
  REQUIRE(jpgs.size() >= 3);
  for (size_t i = 0; i < 3; ++i) {
    const fs::path mask_path = dir / "train_masks" / (jpgs[i].stem().string() + "_mask.gif");
    CAPTURE(jpgs[i].string());
    Image im = read_image(jpgs[i].string()), mask = read_mask(mask_path.string());
    CHECK(im.width == 1918);
    CHECK(im.height == 1280);
    CHECK(im.channels == 3);
    REQUIRE(mask.height == im.height);
    REQUIRE(mask.width == im.width);
    int64_t car = 0, bad = 0;
    for (uint8_t v : mask.pixels) car += v == 1, bad += v > 1;
    CHECK(bad == 0);
    const double frac = double(car) / double(mask.numel());
    CHECK_MESSAGE(frac > 0.12, frac);
    CHECK_MESSAGE(frac < 0.28, frac);

    Image small = resize(im, 160, 240, Interp::Area);  // area averaging keeps each channel's mean
    CHECK(small.height == 160);
    CHECK(small.width == 240);
    for (int64_t c = 0; c < 3; ++c) {
      double a = 0, b = 0;
      for (int64_t p = 0; p < im.height * im.width; ++p) a += im.pixels[static_cast<size_t>(p * 3 + c)];
      for (int64_t p = 0; p < 160 * 240; ++p) b += small.pixels[static_cast<size_t>(p * 3 + c)];
      CHECK(std::abs(a / double(im.height * im.width) - b / (160.0 * 240.0)) < 0.5);
    }
    Image small_mask = resize_mask(mask, 160, 240);
    int64_t small_car = 0;
    for (uint8_t v : small_mask.pixels) small_car += v;
    CHECK(std::abs(double(small_car) / (160.0 * 240.0) - frac) < 0.01);
  }
}

TEST_CASE("read_image refuses the headers that fuzz/fuzz_image found stb mishandling") {
  // Each would reach undefined behaviour inside stb_image (an out-of-bounds write, an int overflow),
  // return an image without pixels, or be taken for another format; each is refused from its header
  // with one clear error.
  const fs::path corpus = fs::path(TL_SOURCE_DIR) / "fuzz" / "corpus" / "image";
  const struct {
    const char* file;
    const char* error;
  } found[] = {
      {"crash_jpeg_dht_over_256.jpg", "cannot decode image (corrupt JPEG: a Huffman table declares more than 256 codes)"},
      {"crash_jpeg_dht_fill_before_soi.jpg",
       "cannot decode image (corrupt JPEG: a Huffman table declares more than 256 codes)"},
      {"crash_pnm_width_overflow.pgm", "cannot decode image (corrupt PNM: a number in its header is too large)"},
      {"crash_pnm_zero_height.pgm", "cannot decode image (its header declares 0x3 pixels, HxW: an empty image)"},
      // stb's file reader took this broken JPEG for the PNM at its byte 128 (3x555); read from memory.
      {"crash_jpeg_then_pnm_at_128.jpg", "cannot decode image (its JPEG header is unreadable: truncated or corrupt)"},
      // A chunk length near 2^32: stb forms a pointer past its buffer to compare with the end.
      {"crash_png_chunk_length_overflow.png",
       "cannot decode image (truncated or corrupt PNG: chunk ????: 4174368960 bytes run past the end of the file, 71 bytes)"},
  };
  for (const auto& f : found) {
    const std::string path = (corpus / f.file).string();
    const std::string e = error_of([&] { read_image(path); });
    MESSAGE(e);
    CHECK(e == path + ": " + f.error);
    // The header alone is refused the same way, except a PNG whose chunks only the decoder walks.
    if (std::string(f.file).find("png_chunk") == std::string::npos) CHECK(error_of([&] { read_image_info(path); }) == e);
  }
  // The seeds beside them still decode.
  CHECK(read_image((corpus / "tiny.jpg").string()).height == 4);
  CHECK(read_image((corpus / "gray.pgm").string()).width == 3);
}
