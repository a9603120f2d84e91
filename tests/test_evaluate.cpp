// train/evaluate and apps/evaluate_masks: predict_unet-style masks (PNG, 0/255) scored against true
// masks (GIF, as Kaggle ships them, written here by a minimal encoder; PNG too) at full resolution:
// the dice of each photo by its definition, the mean and the worst, the CSV, and the errors.
#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "data/image.h"
#include "tests/test_util.h"
#include "train/evaluate.h"

using namespace tl;
using namespace tl::train;
using data::Image;
namespace fs = std::filesystem;
using tl::testing::read_text;

namespace {

struct TempDir : tl::testing::TempDir {
  TempDir() : tl::testing::TempDir("tl_test_evaluate") {}
};

int run(const std::string& command, std::string* output, const fs::path& log) {
  const int status = std::system((command + " > '" + log.string() + "' 2>&1").c_str());
  *output = read_text(log);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// A two-colour GIF89a of a {0, 1} mask (black, white). LZW with a minimum code size of 2 keeps every
// code 3 bits wide by sending a clear code before each pair of pixels, so no dictionary is needed.
void write_gif(const fs::path& path, const Image& mask) {
  std::string g = "GIF89a";
  auto u16 = [&](int64_t v) { g += static_cast<char>(v & 255), g += static_cast<char>((v >> 8) & 255); };
  u16(mask.width), u16(mask.height);
  g += static_cast<char>(0x80), g += '\0', g += '\0';            // a global table of 2 colours
  g += std::string("\0\0\0\xff\xff\xff", 6);
  g += ',', u16(0), u16(0), u16(mask.width), u16(mask.height), g += '\0';
  g += '\2';                                                       // minimum code size
  std::string bits;  // LSB first
  uint32_t acc = 0;
  int n = 0;
  auto code = [&](uint32_t c) {
    acc |= c << n;
    n += 3;
    while (n >= 8) bits += static_cast<char>(acc & 255), acc >>= 8, n -= 8;
  };
  for (size_t i = 0; i < mask.pixels.size(); ++i) {
    if (i % 2 == 0) code(4);  // clear
    code(mask.pixels[i] ? 1 : 0);
  }
  code(5);  // end of information
  if (n > 0) bits += static_cast<char>(acc & 255);
  for (size_t i = 0; i < bits.size(); i += 255) {
    const std::string block = bits.substr(i, 255);
    g += static_cast<char>(block.size()), g += block;
  }
  g += '\0', g += ';';
  std::ofstream(path, std::ios::binary) << g;
}

// A {0, 1} mask with the rectangle [y0, y1) x [x0, x1) set.
Image rect(int64_t h, int64_t w, int64_t y0, int64_t y1, int64_t x0, int64_t x1) {
  Image m = Image::blank(h, w, 1);
  for (int64_t y = y0; y < y1; ++y)
    for (int64_t x = x0; x < x1; ++x) m.at(y, x) = 1;
  return m;
}

// predict_unet's mask format: 0/255 PNG.
void write_prediction(const fs::path& path, Image m) {
  for (uint8_t& v : m.pixels) v = v ? 255 : 0;
  data::write_png(path.string(), m);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("evaluate: the test's GIF encoder writes masks that read back exactly") {
  TempDir dir;
  const Image m = rect(7, 9, 1, 5, 2, 8);
  write_gif(dir.path / "m_mask.gif", m);
  const Image back = data::read_mask((dir.path / "m_mask.gif").string());
  CHECK(back.height == 7);
  CHECK(back.width == 9);
  CHECK(back.pixels == m.pixels);
}

TEST_CASE("evaluate: per-photo dice by its definition, the mean, the worst, and the CSV") {
  TempDir dir;
  const fs::path pred = dir.path / "pred", truth = dir.path / "truth";
  fs::create_directories(pred), fs::create_directories(truth);
  // a: perfect (dice 1); b: truth 4x5 = 20 pixels, prediction 4x4 inside it plus 4 outside:
  // |P n T| = 16, |P| = 20, dice = 32 / 40 = 0.8; c: both empty (dice 1, by convention).
  write_gif(truth / "car_01_mask.gif", rect(12, 18, 2, 8, 3, 11));
  write_prediction(pred / "car_01_mask.png", rect(12, 18, 2, 8, 3, 11));
  write_gif(truth / "car_02_mask.gif", rect(10, 16, 2, 6, 4, 9));
  Image b = rect(10, 16, 2, 6, 4, 8);
  for (int64_t y = 2; y < 6; ++y) b.at(y, 12) = 1;
  write_prediction(pred / "car_02_mask.png", b);
  data::write_png((truth / "car_03_mask.png").string(), Image::blank(5, 6, 1));
  write_prediction(pred / "car_03_mask.png", Image::blank(5, 6, 1));
  write_gif(truth / "car_04_mask.gif", rect(4, 4, 0, 2, 0, 2));  // not predicted: ignored, counted
  data::write_png((pred / "car_01_overlay.png").string(), Image::blank(12, 18, 3));  // not a mask: ignored

  const MaskEvaluation ev = evaluate_masks(pred.string(), truth.string());
  REQUIRE(ev.scores.size() == 3);
  CHECK(ev.scores[0].image == "car_01");
  CHECK(ev.scores[0].dice == 1.0);
  CHECK(ev.scores[0].intersection == 48);
  CHECK(ev.scores[1].image == "car_02");
  CHECK(ev.scores[1].intersection == 16);
  CHECK(ev.scores[1].predicted == 20);
  CHECK(ev.scores[1].truth_pixels == 20);
  CHECK(ev.scores[1].dice == doctest::Approx(0.8).epsilon(1e-12));
  CHECK(ev.scores[1].truth == (truth / "car_02_mask.gif").string());
  CHECK(ev.scores[2].dice == 1.0);
  CHECK(ev.scores[2].height == 5);
  CHECK(ev.mean_dice == doctest::Approx(2.8 / 3).epsilon(1e-12));
  CHECK(ev.worst == 1);
  CHECK(ev.unmatched_truth == 1);

  write_evaluation_csv((dir.path / "scores.csv").string(), ev);
  CHECK(read_text(dir.path / "scores.csv") ==
        "image,dice,intersection,predicted,truth,height,width\n"
        "car_01,1.000000,48,48,48,12,18\n"
        "car_02,0.800000,16,20,20,10,16\n"
        "car_03,1.000000,0,0,0,5,6\n");

  // The app: the summary line, the CSV, and its errors.
  const std::string app = TL_EVALUATE_MASKS;
  std::string out;
  const fs::path log = dir.path / "log.txt";
  REQUIRE(run(app + " --pred " + pred.string() + " --truth " + truth.string() + " --csv " + (dir.path / "app.csv").string(),
              &out, log) == 0);
  CHECK_MESSAGE(out.find("evaluate_masks: 3 masks at full resolution (12x18 first), mean dice 0.93333, worst 0.80000 (car_02)") == 0, out);
  CHECK_MESSAGE(out.find("1 true masks in " + truth.string() + " have no prediction") != std::string::npos, out);
  CHECK(read_text(dir.path / "app.csv") == read_text(dir.path / "scores.csv"));
  CHECK(run(app + " --truth " + truth.string(), &out, log) == 2);
  CHECK_MESSAGE(out == "evaluate_masks: --pred is required (see --help)\n", out);
  CHECK(run(app + " --pred " + (dir.path / "nope").string() + " --truth " + truth.string(), &out, log) == 1);
  CHECK_MESSAGE(out == "evaluate_masks: --pred " + (dir.path / "nope").string() + ": no such folder\n", out);
}

TEST_CASE("evaluate: a missing truth, sizes that differ, an empty folder and two truths of one stem are errors") {
  TempDir dir;
  const fs::path pred = dir.path / "pred", truth = dir.path / "truth";
  fs::create_directories(pred), fs::create_directories(truth);
  CHECK(error_of([&] { evaluate_masks(pred.string(), truth.string()); }) ==
        "--pred " + pred.string() + ": no .jpg, .jpeg, .png, .gif or .bmp files in this folder");
  data::write_png((pred / "x_overlay.png").string(), Image::blank(4, 4, 3));
  CHECK(error_of([&] { evaluate_masks(pred.string(), truth.string()); }) ==
        "--pred " + pred.string() + ": holds no <stem>_mask.png file (predict_unet's masks)");
  write_prediction(pred / "a_1_mask.png", rect(8, 8, 0, 4, 0, 4));
  write_prediction(pred / "a_2_mask.png", rect(8, 8, 0, 4, 0, 4));
  write_gif(truth / "zzz_mask.gif", rect(8, 8, 0, 4, 0, 4));
  CHECK(error_of([&] { evaluate_masks(pred.string(), truth.string()); }) ==
        (pred / "a_1_mask.png").string() + ": no truth mask a_1_mask.gif (or .png) in " + truth.string() + " (and 1 more)");
  write_gif(truth / "a_1_mask.gif", rect(8, 8, 0, 4, 0, 4));
  write_gif(truth / "a_2_mask.gif", rect(8, 10, 0, 4, 0, 4));
  CHECK(error_of([&] { evaluate_masks(pred.string(), truth.string()); }) ==
        (pred / "a_2_mask.png").string() + ": the prediction is 8x8, its truth " + (truth / "a_2_mask.gif").string() +
            " is 8x10 (predict_unet writes masks at the photo's own size)");
  write_gif(truth / "a_2_mask.gif", rect(8, 8, 0, 4, 0, 4));
  data::write_png((truth / "a_2_mask.png").string(), rect(8, 8, 0, 4, 0, 4));
  CHECK(error_of([&] { evaluate_masks(pred.string(), truth.string()); }) ==
        "--truth " + truth.string() + ": two masks for a_2_mask: " + (truth / "a_2_mask.gif").string() + " and " +
            (truth / "a_2_mask.png").string());
  fs::remove(truth / "a_2_mask.png");
  std::ofstream(truth / "a_2_mask.gif") << "not a gif";
  const std::string e = error_of([&] { evaluate_masks(pred.string(), truth.string()); });
  CHECK_MESSAGE(e.rfind((truth / "a_2_mask.gif").string() + ": ", 0) == 0, e);
  CHECK(error_of([&] { evaluate_masks((pred / "a_1_mask.png").string(), truth.string()); }) ==
        "--pred " + (pred / "a_1_mask.png").string() + ": is a file, not a folder");
}

TEST_CASE("evaluate: real Carvana masks (GIF, 1918x1280) scored against themselves and a shifted copy") {
  const fs::path sample = tl::testing::carvana_sample_dir();
  if (sample.empty()) return;
  TempDir dir;
  const fs::path pred = dir.path / "pred";
  fs::create_directories(pred);
  std::vector<fs::path> gifs;
  for (const auto& e : fs::directory_iterator(sample / "train_masks"))
    if (e.path().extension() == ".gif") gifs.push_back(e.path());
  std::sort(gifs.begin(), gifs.end());
  REQUIRE(gifs.size() >= 2);
  const Image a = data::read_mask(gifs[0].string());
  write_prediction(pred / (gifs[0].stem().string() + ".png"), a);
  Image shifted = Image::blank(a.height, a.width, 1);  // the car moved 10 pixels right
  const Image b = data::read_mask(gifs[1].string());
  int64_t inter = 0, pb = 0, tb = 0;
  for (int64_t y = 0; y < b.height; ++y)
    for (int64_t x = 10; x < b.width; ++x) shifted.at(y, x) = b.at(y, x - 10);
  for (size_t i = 0; i < b.pixels.size(); ++i) inter += b.pixels[i] && shifted.pixels[i], pb += shifted.pixels[i] != 0, tb += b.pixels[i] != 0;
  write_prediction(pred / (gifs[1].stem().string() + ".png"), shifted);
  const MaskEvaluation ev = evaluate_masks(pred.string(), (sample / "train_masks").string());
  REQUIRE(ev.scores.size() == 2);
  CHECK(ev.scores[0].height == 1280);
  CHECK(ev.scores[0].width == 1918);
  CHECK(ev.scores[0].dice == 1.0);
  CHECK(ev.scores[1].dice == doctest::Approx(2.0 * static_cast<double>(inter) / static_cast<double>(pb + tb)).epsilon(1e-12));
  CHECK(ev.scores[1].dice < 0.999);
  CHECK(ev.worst == 1);
  MESSAGE("a real mask shifted by 10 pixels: dice " << ev.scores[1].dice << "; " << ev.unmatched_truth << " masks not predicted");
}
