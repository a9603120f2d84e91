// data/rle: Kaggle's run-length encoding on hand-made masks with known strings, round trips on random
// masks, every decode error, and the real Carvana masks when the sample is present (compared with
// the competition's train_masks.csv string by string when the sample has that file).
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>

#include "data/image.h"
#include "data/rle.h"
#include "tests/test_util.h"

using namespace tl;
using namespace tl::data;
namespace fs = std::filesystem;

namespace {

// rows of '0'/'1' -> a {0, 1} mask
Image mask_of(const std::vector<std::string>& rows) {
  Image m = Image::blank(static_cast<int64_t>(rows.size()), static_cast<int64_t>(rows[0].size()), 1);
  for (size_t y = 0; y < rows.size(); ++y)
    for (size_t x = 0; x < rows[y].size(); ++x) m.at(static_cast<int64_t>(y), static_cast<int64_t>(x)) = rows[y][x] == '1';
  return m;
}

std::string decode_error(const std::string& rle, int64_t h, int64_t w) {
  try {
    rle_decode(rle, h, w);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(no error)";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("rle: hand-made masks encode to their known Kaggle strings and back") {
  struct Case {
    std::vector<std::string> rows;
    std::string rle;
  };
  const std::vector<Case> cases = {
      {{"0110", "0111", "0000"}, "2 2 6 3"},  // numbered along rows, 1-indexed
      {{"0000", "1000", "0000"}, "5 1"},      // (y=1, x=0) is pixel 1*4+0+1
      {{"001", "110"}, "3 3"},                // a run continues across the row end
      {{"11", "11"}, "1 4"},
      {{"000", "001"}, "6 1"},                // the last pixel
      {{"1"}, "1 1"},
      {{"000", "000"}, ""},                   // empty mask: empty string
      {{"10101"}, "1 1 3 1 5 1"},
  };
  for (const Case& c : cases) {
    const Image m = mask_of(c.rows);
    CAPTURE(c.rle);
    CHECK(rle_encode(m) == c.rle);
    const Image back = rle_decode(c.rle, m.height, m.width);
    CHECK(back.height == m.height);
    CHECK(back.width == m.width);
    CHECK(back.channels == 1);
    CHECK(back.pixels == m.pixels);
  }
  // {0, 255} masks (as written by predict_unet) encode as {0, 1} ones.
  Image m = mask_of({"0110", "0111", "0000"});
  for (uint8_t& v : m.pixels) v = v ? 255 : 0;
  CHECK(rle_encode(m) == "2 2 6 3");
  // The decoder tolerates extra blanks and touching runs (which the encoder would merge).
  CHECK(rle_decode("  2 2   6\t3 ", 3, 4).pixels == mask_of({"0110", "0111", "0000"}).pixels);
  CHECK(rle_decode("1 2 3 2", 1, 4).pixels == mask_of({"1111"}).pixels);
  CHECK(rle_encode(rle_decode("1 2 3 2", 1, 4)) == "1 4");
}

TEST_CASE("rle: random masks round-trip, and re-encoding a decoded string gives it back") {
  std::mt19937 rng(20);
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t h = 1 + static_cast<int64_t>(rng() % 40), w = 1 + static_cast<int64_t>(rng() % 40);
    const double density = (rng() % 101) / 100.0;
    // Blobby masks: runs of random lengths, so runs of every size appear.
    Image m = Image::blank(h, w, 1);
    bool on = rng() % 2 == 0;
    for (int64_t i = 0; i < m.numel();) {
      const int64_t len = 1 + static_cast<int64_t>(rng() % 7);
      for (int64_t k = 0; k < len && i < m.numel(); ++k, ++i) m.pixels[static_cast<size_t>(i)] = on;
      on = (rng() % 1000) < density * 1000;
    }
    const std::string rle = rle_encode(m);
    CAPTURE(h);
    CAPTURE(w);
    CAPTURE(rle);
    const Image back = rle_decode(rle, h, w);
    REQUIRE(back.pixels == m.pixels);
    CHECK(rle_encode(back) == rle);
  }
}

TEST_CASE("rle: decode errors name the problem and the token") {
  struct Case {
    std::string rle;
    std::vector<std::string> parts;
  };
  const std::vector<Case> cases = {
      {"2 2 6", {"odd number of tokens (3)", "token 3 ('6')"}},
      {"2 2 x 3", {"token 3 ('x')", "not a non-negative decimal integer"}},
      {"2 2 6 -3", {"token 4 ('-3')", "not a non-negative decimal integer"}},
      {"2 2.5", {"token 2 ('2.5')"}},
      {"2 0", {"token 2 ('0')", "run length of 0"}},
      {"0 2", {"token 1 ('0')", "start of 0"}},
      {"6 2 2 2", {"token 3 ('2')", "previous run ends at pixel 7"}},  // not increasing
      {"2 3 4 1", {"token 3 ('4')", "overlap"}},                       // overlapping
      {"2 2 12 2", {"token 4 ('2')", "12..13", "past the end", "3x4 mask (12 pixels)"}},
      {"99999999999999999999 1", {"token 1", "too large"}},
  };
  for (const Case& c : cases) {
    const std::string e = decode_error(c.rle, 3, 4);
    CAPTURE(c.rle);
    CHECK_MESSAGE(e.rfind("rle_decode: ", 0) == 0, e);
    for (const std::string& part : c.parts) CHECK_MESSAGE(contains(e, part), e);
  }
  CHECK(contains(decode_error("1 1", 0, 4), "mask size must be positive"));
  CHECK_THROWS_AS(rle_encode(Image::blank(2, 2, 3)), std::invalid_argument);  // not one channel
  CHECK_THROWS_AS(rle_encode(Image{}), std::invalid_argument);
}

TEST_CASE("rle: the real Carvana masks round-trip (and match train_masks.csv when the sample has it)") {
  const fs::path dir = tl::testing::carvana_sample_dir();
  if (dir.empty()) return;
  std::vector<fs::path> gifs;
  for (const auto& e : fs::directory_iterator(dir / "train_masks"))
    if (e.path().extension() == ".gif") gifs.push_back(e.path());
  std::sort(gifs.begin(), gifs.end());
  REQUIRE(!gifs.empty());

  // Kaggle's own strings, keyed by image name ("<car>_<angle>.jpg"), when the file is there.
  std::map<std::string, std::string> kaggle;
  const fs::path csv = dir / "train_masks.csv";
  if (std::ifstream in(csv); in) {
    std::string line;
    std::getline(in, line);
    CHECK(line.rfind("img,rle_mask", 0) == 0);
    while (std::getline(in, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      const auto comma = line.find(',');
      if (comma != std::string::npos) kaggle[line.substr(0, comma)] = line.substr(comma + 1);
    }
  }
  int64_t compared = 0;
  for (const fs::path& gif : gifs) {
    CAPTURE(gif.string());
    const Image mask = read_mask(gif.string());
    const std::string rle = rle_encode(mask);
    CHECK(!rle.empty());
    const Image back = rle_decode(rle, mask.height, mask.width);
    CHECK(back.pixels == mask.pixels);
    std::string name = gif.stem().string();  // "<car>_<angle>_mask"
    name = name.substr(0, name.size() - 5) + ".jpg";
    if (auto it = kaggle.find(name); it != kaggle.end()) {
      CHECK(rle == it->second);
      CHECK(rle_decode(it->second, mask.height, mask.width).pixels == mask.pixels);
      ++compared;
    }
  }
  MESSAGE(gifs.size() << " real masks round-tripped; " << compared << " compared with Kaggle's train_masks.csv"
                      << std::string(kaggle.empty() ? " (the sample has no train_masks.csv)" : ""));
}
