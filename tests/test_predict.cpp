// train/predict: the Predictor on a tiny random UNet (sizes, odd sizes, thresholds, agreement with a
// plain forward), the float mapping back to the photo's frame, overlays, panels, the input listing,
// the submission CSV, the mask clean-ups (train/mask_cleanup.h), and the predict_unet / inference_panel apps
// end to end.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "autograd/grad_mode.h"
#include "data/image.h"
#include "data/rle.h"
#include "nn/checkpoint.h"
#include "tests/test_util.h"
#include "train/mask_cleanup.h"
#include "train/predict.h"

#if TL_WITH_CUDA
#include "cuda/runtime.h"
#endif

using namespace tl;
using namespace tl::train;
using data::Image;
namespace fs = std::filesystem;
using tl::testing::read_text;

namespace {

struct TempDir : tl::testing::TempDir {
  TempDir() : tl::testing::TempDir("tl_test_predict") {}
};

nn::UNetConfig tiny_config() {
  nn::UNetConfig c;
  c.features = {4, 8};
  return c;
}

// A tiny random UNet saved as a weights-only checkpoint, with the trainer's image_size metadata.
std::string save_tiny(const TempDir& dir, const std::string& name, const std::string& image_size = "40x56",
                      uint64_t seed = 7) {
  Generator g(seed);
  nn::UNet net(tiny_config(), &g);
  safetensors::Metadata extra;
  if (!image_size.empty()) extra["image_size"] = image_size;
  const std::string path = dir.file(name);
  nn::save_checkpoint(path, net, nullptr, {}, extra);
  return path;
}

Image random_photo(int64_t h, int64_t w, int64_t c, uint32_t seed) {
  std::mt19937 rng(seed);
  Image im = Image::blank(h, w, c);
  // Smooth-ish content: a gradient plus noise, so that resizing has something to do.
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int64_t k = 0; k < c; ++k)
        im.at(y, x, k) = static_cast<uint8_t>((y * 255 / h + x * 128 / w + (rng() % 64)) % 256);
  return im;
}

bool binary(const Image& m) {
  for (uint8_t v : m.pixels)
    if (v > 1) return false;
  return true;
}

int64_t count_ones(const Image& m) {
  int64_t n = 0;
  for (uint8_t v : m.pixels) n += v != 0;
  return n;
}

// Runs `command`, returns its exit status; stdout+stderr land in *output.
int run(const std::string& command, std::string* output) {
  TempDir dir;
  const std::string log = dir.file("log.txt");
  const int status = std::system((command + " > '" + log + "' 2>&1").c_str());
  std::ifstream in(log);
  std::stringstream ss;
  ss << in.rdbuf();
  *output = ss.str();
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

TEST_CASE("predict: the model size comes from the override, the checkpoint's image_size, or 160x240") {
  TempDir dir;
  const std::string a = save_tiny(dir, "a.safetensors", "40x56");
  const Predictor p(a);
  CHECK(p.height() == 40);
  CHECK(p.width() == 56);
  CHECK(p.config().features == std::vector<int64_t>{4, 8});
  const Predictor q(a, 32, 48);
  CHECK(q.height() == 32);
  CHECK(q.width() == 48);
  const Predictor d(save_tiny(dir, "plain.safetensors", ""));
  CHECK(d.height() == kDefaultPredictHeight);
  CHECK(d.width() == kDefaultPredictWidth);

  const std::string bad = save_tiny(dir, "bad.safetensors", "40by56");
  CHECK_THROWS_WITH_AS(Predictor{bad}, (bad + ": metadata 'image_size' = '40by56' is not HxW such as 160x240").c_str(),
                       std::runtime_error);
  const std::string missing = dir.file("missing.safetensors");
  try {
    Predictor{missing};
    FAIL("no error for a missing checkpoint");
  } catch (const std::exception& e) {
    CHECK_MESSAGE(std::string(e.what()).rfind(missing + ": ", 0) == 0, e.what());
  }
}

TEST_CASE("predict: masks have each photo's own size (odd sizes too) and hold 0/1; thresholds 0 and 1") {
  TempDir dir;
  const std::string ckpt = save_tiny(dir, "m.safetensors");
  for (const auto& [mh, mw] : std::vector<std::pair<int64_t, int64_t>>{{40, 56}, {42, 58}, {33, 47}}) {
    const Predictor p(ckpt, mh, mw);  // 42x58 and 33x47 are not multiples of 4: the output is cropped
    for (const auto& [h, w] : std::vector<std::pair<int64_t, int64_t>>{{97, 131}, {40, 56}, {13, 9}, {256, 383}}) {
      CAPTURE(mh);
      CAPTURE(mw);
      CAPTURE(h);
      CAPTURE(w);
      const Image photo = random_photo(h, w, 3, static_cast<uint32_t>(h * w));
      const Tensor prob = p.predict_probability(photo);
      REQUIRE(prob.shape() == Shape{h, w});
      float lo = 1, hi = 0;
      for (float v : prob.to_vector<float>()) lo = std::min(lo, v), hi = std::max(hi, v);
      CHECK(lo > 0.0f);
      CHECK(hi < 1.0f);
      const Image mask = p.predict_mask(photo, 0.5);
      CHECK(mask.height == h);
      CHECK(mask.width == w);
      CHECK(mask.channels == 1);
      CHECK(binary(mask));
      CHECK(count_ones(p.predict_mask(photo, 0.0)) == h * w);
      CHECK(count_ones(p.predict_mask(photo, 1.0)) == 0);
      // The mask is the thresholded probability map.
      CHECK(threshold_probability(prob, 0.5).pixels == mask.pixels);
    }
  }
}

TEST_CASE("predict: at the model size the probabilities are sigmoid(forward) exactly; batches agree") {
  TempDir dir;
  const std::string ckpt = save_tiny(dir, "m.safetensors");
  const Predictor p(ckpt);  // 40x56, a multiple of 4: no crop, no resize
  const Image photo = random_photo(40, 56, 3, 1);
  auto net = nn::unet_from_checkpoint(nn::load_checkpoint(ckpt));
  net->eval();
  Tensor want;
  {
    NoGradGuard ng;
    want = sigmoid(net->forward(data::image_to_tensor(photo).unsqueeze(0))).select(0, 0).select(0, 0).contiguous();
  }
  const Tensor got = p.predict_probability(photo);
  CHECK(got.to_vector<float>() == want.to_vector<float>());

  // One forward for photos of different sizes and channel counts gives what single forwards give.
  const std::vector<Image> photos = {random_photo(97, 131, 3, 2), photo, random_photo(50, 30, 1, 3),
                                     random_photo(64, 64, 4, 4)};
  const std::vector<Tensor> batch = p.predict_probability(photos);
  REQUIRE(batch.size() == photos.size());
  for (size_t k = 0; k < photos.size(); ++k) {
    CAPTURE(k);
    TL_CHECK_CLOSE(batch[k], p.predict_probability(photos[k]), 1e-5);
  }
  // A gray photo predicts as the same photo in RGB.
  const Image gray = photos[2];
  TL_CHECK_CLOSE(p.predict_probability(gray), p.predict_probability(to_rgb(gray)), 0.0);
}

TEST_CASE("predict: probability_to_frame is half-pixel bilinear, shifted by the UNet's crop") {
  const Tensor g = from_vector<float>({0, 1, 2, 3}, {2, 2});
  // Same size: the identity.
  CHECK(probability_to_frame(g, 2, 2, 2, 2).to_vector<float>() == g.to_vector<float>());
  // 2x2 -> 4x4 as torch.nn.functional.interpolate(mode="bilinear", align_corners=False).
  const std::vector<float> up = {0, 0.25f, 0.75f, 1, 0.5f, 0.75f, 1.25f, 1.5f, 1.5f, 1.75f, 2.25f, 2.5f, 2, 2.25f, 2.75f, 3};
  CHECK(probability_to_frame(g, 2, 2, 4, 4).to_vector<float>() == up);
  // A 2x2 output of a 3x3 input: skip crop floor(1/2) = 0, so output pixels sit on input pixels 0..1
  // and row/column 2 repeats 1.
  CHECK(probability_to_frame(g, 3, 3, 3, 3).to_vector<float>() == std::vector<float>{0, 1, 1, 2, 3, 3, 2, 3, 3});
  // Of a 4x4 input: skip crop 1, so output pixels sit half a pixel in, on input pixels 0.5 and 1.5.
  CHECK(probability_to_frame(g, 4, 4, 4, 4).to_vector<float>() ==
        std::vector<float>{0, 0.5f, 1, 1, 1, 1.5f, 2, 2, 2, 2.5f, 3, 3, 2, 2.5f, 3, 3});
  // Of a 6x6 input: skip crop 2, output pixels on input pixels 1 and 2.
  CHECK(probability_to_frame(g, 6, 6, 6, 6).to_vector<float>() ==
        std::vector<float>{0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 3, 3,
                           2, 2, 3, 3, 3, 3, 2, 2, 3, 3, 3, 3, 2, 2, 3, 3, 3, 3});
  // Values stay within their neighbours: an exact 1 never becomes more than 1.
  const Tensor e = from_vector<float>({1.0f, 0.1f}, {1, 2});
  for (float v : probability_to_frame(e, 1, 2, 3, 7).to_vector<float>()) CHECK(v <= 1.0f);
  CHECK_THROWS_AS(probability_to_frame(g, 1, 2, 4, 4), std::invalid_argument);  // output larger than the input
  CHECK_THROWS_AS(probability_to_frame(g, 2, 2, 0, 4), std::invalid_argument);
}

TEST_CASE("predict: overlay tints the car and outlines it; inference_panel lays tiles out side by side") {
  const int64_t H = 97, W = 131;
  Image photo = Image::blank(H, W, 3, 100);
  Image mask = Image::blank(H, W, 1, 0);
  for (int64_t y = 20; y < 70; ++y)
    for (int64_t x = 30; x < 100; ++x) mask.at(y, x) = 1;
  const Image ov = overlay(photo, mask);
  CHECK(ov.height == H);
  CHECK(ov.width == W);
  CHECK(ov.channels == 3);
  CHECK(ov.at(5, 5, 0) == 100);  // background untouched
  CHECK(ov.at(5, 5, 1) == 100);
  CHECK(ov.at(45, 60, 0) == 50);  // interior: halfway to (0, 255, 64)
  CHECK(ov.at(45, 60, 1) == 178);
  CHECK(ov.at(45, 60, 2) == 82);
  CHECK(ov.at(20, 60, 0) == 255);  // the outline, inside the car's edge
  CHECK(ov.at(45, 99, 1) == 220);
  CHECK(ov.at(45, 98, 0) == 50);   // one pixel wide at this size
  CHECK(overlay(Image::blank(H, W, 1, 100), mask).pixels == ov.pixels);  // gray photos are replicated
  CHECK_THROWS_AS(overlay(photo, Image::blank(H, W + 1, 1)), std::invalid_argument);

  const Image pred = mask;
  const Image panel = inference_panel(photo, &mask, {pred, pred}, {"best", "last"}, 64);
  const int64_t tile_w = 86;  // round(131 * 64 / 97)
  CHECK(panel.channels == 3);
  CHECK(panel.width == 4 + 4 * (tile_w + 4));
  CHECK(panel.height == 4 + 10 + 64 + 4);  // margin, label strip (8 + 2 at scale 1), tile, margin
  const Image bare = inference_panel(photo, nullptr, {pred}, {}, 240);
  CHECK(bare.width == 4 + 2 * (std::llround(131.0 * 240 / 97) + 4));
  CHECK(bare.height == 4 + 20 + 240 + 4);  // scale 2 labels
  CHECK_THROWS_AS(inference_panel(photo, nullptr, {pred}, {"a", "b"}), std::invalid_argument);

  CHECK(mask_dice(mask, mask) == 1.0);
  CHECK(mask_dice(Image::blank(2, 2, 1), Image::blank(2, 2, 1)) == 1.0);
  CHECK(mask_dice(Image{1, 4, 1, {1, 1, 0, 0}}, Image{1, 4, 1, {0, 1, 1, 0}}) == 0.5);
}

TEST_CASE("predict: list_photos and write_submission_csv") {
  TempDir dir;
  fs::create_directories(dir.path / "in");
  for (const char* name : {"b.png", "a.JPG", "c.txt", "d.jpeg", "e.gif", "f.bmp"}) std::ofstream(dir.path / "in" / name) << "x";
  fs::create_directories(dir.path / "in" / "sub.png");  // a folder, not a photo
  const std::vector<std::string> photos = list_photos((dir.path / "in").string());
  std::vector<std::string> names;
  for (const std::string& p : photos) names.push_back(fs::path(p).filename().string());
  CHECK(names == std::vector<std::string>{"a.JPG", "b.png", "d.jpeg", "e.gif", "f.bmp"});
  CHECK(list_photos(dir.file("in/c.txt")) == std::vector<std::string>{dir.file("in/c.txt")});  // a file is taken as given
  CHECK_THROWS_WITH_AS(list_photos(dir.file("nope")), (dir.file("nope") + ": no such file or folder").c_str(),
                       std::runtime_error);
  fs::create_directories(dir.path / "empty");
  CHECK_THROWS_AS(list_photos(dir.file("empty")), std::runtime_error);

  write_submission_csv(dir.file("sub.csv"), {{"a.jpg", "1 2 5 1"}, {"b.jpg", ""}});
  CHECK(read_text(dir.file("sub.csv")) == "img,rle_mask\na.jpg,1 2 5 1\nb.jpg,\n");
  CHECK_THROWS_AS(write_submission_csv(dir.file("bad.csv"), {{"a,b.jpg", ""}}), std::runtime_error);
}

#if defined(TL_PREDICT_UNET) && defined(TL_INFERENCE_PANEL)
TEST_CASE("predict: the predict_unet and inference_panel apps end to end, and their errors") {
  TempDir dir;
  const std::string ckpt = save_tiny(dir, "m.safetensors");
  const std::string app = TL_PREDICT_UNET, panel_app = TL_INFERENCE_PANEL;
  fs::create_directories(dir.path / "in");
  data::write_png(dir.file("in/b_2.png"), random_photo(97, 131, 3, 1));
  data::write_jpeg(dir.file("in/a_1.jpg"), random_photo(60, 90, 3, 2));
  data::write_png(dir.file("in/c_3.png"), random_photo(40, 56, 1, 3));
  std::string out;

  CHECK(run(app + " --bogus", &out) == 2);
  CHECK_MESSAGE(out == "predict_unet: unknown flag --bogus (see --help)\n", out);
  CHECK(run(app + " --input x", &out) == 2);
  CHECK_MESSAGE(out == "predict_unet: --checkpoint is required (see --help)\n", out);
  CHECK(run(app + " --checkpoint " + dir.file("nope.safetensors") + " --input " + dir.file("in"), &out) == 1);
  CHECK_MESSAGE(out.rfind("predict_unet: " + dir.file("nope.safetensors") + ": ", 0) == 0, out);
  CHECK(run(app + " --checkpoint " + ckpt + " --input " + dir.file("in") + " --device gpu", &out) == 2);
  CHECK_MESSAGE(out == "predict_unet: --device: expected auto, cpu, cuda or cuda:N, got 'gpu' (see --help)\n", out);
#if TL_WITH_CUDA
  if (cuda::device_count() == 0) {
    CHECK(run(app + " --checkpoint " + ckpt + " --input " + dir.file("in") + " --device cuda", &out) == 1);
    CHECK_MESSAGE(out == "predict_unet: --device cuda: no CUDA device is available\n", out);
  }
#else
  CHECK(run(app + " --checkpoint " + ckpt + " --input " + dir.file("in") + " --device cuda", &out) == 1);
  CHECK_MESSAGE(out.rfind("predict_unet: --device cuda: this build has no CUDA backend", 0) == 0, out);
#endif
  CHECK(run(app + " --checkpoint " + ckpt + " --input " + dir.file("in") + " --threshold 2", &out) == 2);

  const std::string o = dir.file("out");
  REQUIRE(run(app + " --checkpoint " + ckpt + " --input " + dir.file("in") + " --output " + o + " --overlay --rle " +
                  dir.file("sub.csv") + " --threads 2 --batch-size 2 --device cpu",
              &out) == 0);
  CHECK_MESSAGE(out.rfind("predict_unet: 3 photos -> " + o + "/ (masks, overlays; RLE: ", 0) == 0, out);
  const Predictor p(ckpt);
  const std::string csv = read_text(dir.file("sub.csv"));
  std::string want_csv = "img,rle_mask\n";
  for (const auto& [stem, file] : std::vector<std::pair<std::string, std::string>>{
           {"a_1", "a_1.jpg"}, {"b_2", "b_2.png"}, {"c_3", "c_3.png"}}) {
    CAPTURE(stem);
    const Image photo = data::read_image(dir.file("in/" + file));
    const Image mask = data::read_image(o + "/" + stem + "_mask.png");
    CHECK(mask.height == photo.height);
    CHECK(mask.width == photo.width);
    CHECK(mask.channels == 1);
    const Image want = p.predict_mask(photo, 0.5);
    Image want255 = want;
    for (uint8_t& v : want255.pixels) v = v ? 255 : 0;
    CHECK(mask.pixels == want255.pixels);
    const Image ov = data::read_image(o + "/" + stem + "_overlay.png");
    CHECK(ov.height == photo.height);
    CHECK(ov.channels == 3);
    want_csv += file + "," + data::rle_encode(want) + "\n";
  }
  CHECK(csv == want_csv);

  // A bad file in a folder run: an error naming it, and the masks before it stay.
  std::ofstream(dir.path / "in" / "bb.png") << "not a png";
  const std::string o2 = dir.file("out2");
  CHECK(run(app + " --checkpoint " + ckpt + " --input " + dir.file("in") + " --output " + o2 + " --batch-size 8", &out) == 1);
  CHECK_MESSAGE(out.rfind("predict_unet: " + dir.file("in/bb.png") + ": cannot decode image (", 0) == 0, out);
  CHECK(fs::exists(o2 + "/a_1_mask.png"));
  CHECK(fs::exists(o2 + "/b_2_mask.png"));
  CHECK(!fs::exists(o2 + "/c_3_mask.png"));

  // The panel app: image | true mask | two checkpoints.
  const std::string ckpt2 = save_tiny(dir, "n.safetensors", "32x48", 9);
  Image truth = Image::blank(97, 131, 1);
  for (int64_t y = 30; y < 60; ++y)
    for (int64_t x = 20; x < 110; ++x) truth.at(y, x) = 255;
  data::write_png(dir.file("truth.png"), truth);
  REQUIRE(run(panel_app + " --image " + dir.file("in/b_2.png") + " --mask " + dir.file("truth.png") +
                  " --checkpoints " + ckpt + " " + ckpt2 + " --out " + dir.file("panel.png") + " --tile-height 100",
              &out) == 0);
  CHECK_MESSAGE(out.find("inference_panel: wrote " + dir.file("panel.png") + " (2 checkpoints)") != std::string::npos, out);
  const Image panel = data::read_image(dir.file("panel.png"));
  CHECK(panel.height == 4 + 10 + 100 + 4);
  CHECK(panel.width == 4 + 4 * (135 + 4));  // round(131 * 100 / 97) = 135
  CHECK(run(panel_app + " --image " + dir.file("in/b_2.png") + " --checkpoints " + ckpt + " " + ckpt2 +
                " --labels one --out " + dir.file("p.png"),
            &out) == 2);
  CHECK_MESSAGE(out == "inference_panel: --labels: 1 labels for 2 checkpoints (see --help)\n", out);
}

TEST_CASE("predict: predict_unet checks its outputs first, --skip-bad, and a stop keeps what is done") {
  TempDir dir;
  const std::string ckpt = save_tiny(dir, "m.safetensors");
  const std::string app = TL_PREDICT_UNET;
  fs::create_directories(dir.path / "in");
  data::write_png(dir.file("in/b_2.png"), random_photo(97, 131, 3, 1));
  data::write_jpeg(dir.file("in/a_1.jpg"), random_photo(60, 90, 3, 2));
  data::write_png(dir.file("in/c_3.png"), random_photo(40, 56, 1, 3));
  std::ofstream(dir.path / "in" / "bb.png") << "not a png";
  const std::string base = app + " --checkpoint " + ckpt + " --input " + dir.file("in") + " --device cpu";
  auto rows_of = [](const std::string& csv) {
    std::vector<std::string> names;
    std::istringstream in(csv);
    for (std::string line; std::getline(in, line);) names.push_back(line.substr(0, line.find(',')));
    return names;
  };
  std::string out;

  // --rle in a folder that does not exist: refused before the first photo, nothing written.
  const std::string o1 = dir.file("o1");
  CHECK(run(base + " --output " + o1 + " --rle " + dir.file("no_such/sub.csv"), &out) == 1);
  MESSAGE(out);
  CHECK(out.rfind("predict_unet: " + dir.file("no_such/sub.csv") + ": cannot write there: the folder ", 0) == 0);
  CHECK(out.find("does not exist") != std::string::npos);
  CHECK(!fs::exists(o1));
  // --rle naming a folder, --output under a file: refused the same way.
  CHECK(run(base + " --output " + o1 + " --rle " + dir.file("in"), &out) == 1);
  MESSAGE(out);
  CHECK(out.rfind("predict_unet: " + dir.file("in") + ": is a folder; give a file name", 0) == 0);
  CHECK(run(base + " --output " + dir.file("m.safetensors/masks"), &out) == 1);
  MESSAGE(out);
  CHECK(out.rfind("predict_unet: " + dir.file("m.safetensors/masks") + ": cannot create the output folder", 0) == 0);
  CHECK(!fs::exists(o1));

  // A stop by error: the photos before the bad one are written, and so are their submission rows.
  const std::string o2 = dir.file("o2");
  CHECK(run(base + " --output " + o2 + " --batch-size 8 --rle " + dir.file("part.csv"), &out) == 1);
  MESSAGE(out);
  CHECK(out.rfind("predict_unet: " + dir.file("in/bb.png") + ": cannot decode image (", 0) == 0);
  CHECK(out.find("2 of 4 photos were written to " + o2 + "/, their 2 rows to " + dir.file("part.csv")) !=
        std::string::npos);
  CHECK(out.find("or add --skip-bad") != std::string::npos);
  CHECK(rows_of(read_text(dir.file("part.csv"))) == std::vector<std::string>{"img", "a_1.jpg", "b_2.png"});
  CHECK(fs::exists(o2 + "/b_2_mask.png"));

  // --skip-bad: the bad photo is named and listed, the others are done, the exit status is 0.
  const std::string o3 = dir.file("o3");
  CHECK(run(base + " --output " + o3 + " --batch-size 2 --skip-bad --rle " + dir.file("all.csv"), &out) == 0);
  MESSAGE(out);
  CHECK(out.find("predict_unet: skipped " + dir.file("in/bb.png") + ": cannot decode image (") != std::string::npos);
  CHECK(out.find("predict_unet: 3 photos -> " + o3 + "/") != std::string::npos);
  CHECK(out.find("predict_unet: skipped 1 unreadable photo of 4 (--skip-bad): " + dir.file("in/bb.png")) !=
        std::string::npos);
  CHECK(rows_of(read_text(dir.file("all.csv"))) == std::vector<std::string>{"img", "a_1.jpg", "b_2.png", "c_3.png"});
  for (const char* stem : {"a_1", "b_2", "c_3"}) CHECK(fs::exists(o3 + "/" + stem + "_mask.png"));

  // Every photo bad: a failure even with --skip-bad.
  fs::create_directories(dir.path / "bad");
  std::ofstream(dir.path / "bad" / "x.png") << "nope";
  std::ofstream(dir.path / "bad" / "y.jpg") << "nope";
  CHECK(run(app + " --checkpoint " + ckpt + " --input " + dir.file("bad") + " --output " + dir.file("o4") + " --skip-bad",
            &out) == 1);
  MESSAGE(out);
  CHECK(out.find("predict_unet: all 2 photos were unreadable; nothing was written\n") != std::string::npos);

  // --rle on character devices: /dev/null takes it; /dev/full fails clearly, the masks stay, and the
  // device stays a device.
  CHECK(run(base + " --output " + dir.file("o5") + " --skip-bad --rle /dev/null", &out) == 0);
  // /dev/stdout (here a log file): the CSV is written through the descriptor, before the summary.
  CHECK(run(base + " --output " + dir.file("o5") + " --skip-bad --rle /dev/stdout", &out) == 0);
  MESSAGE(out);
  CHECK(out.find("img,rle_mask\na_1.jpg,") != std::string::npos);
  CHECK(out.find("\npredict_unet: 3 photos -> ") != std::string::npos);
  CHECK(run(base + " --output " + dir.file("o6") + " --skip-bad --rle /dev/full", &out) == 1);
  MESSAGE(out);
  CHECK(out.find("/dev/full: cannot write (write to character device: " + std::string(std::strerror(ENOSPC))) !=
        std::string::npos);
  CHECK(out.find("3 of 4 photos were written to " + dir.file("o6") + "/") != std::string::npos);
  CHECK(fs::is_character_file("/dev/full"));
  CHECK(fs::exists(dir.file("o6/c_3_mask.png")));
}
#endif

namespace {

Image mirror(const Image& im) {
  Image out = im;
  for (int64_t y = 0; y < im.height; ++y)
    for (int64_t x = 0; x < im.width; ++x)
      for (int64_t c = 0; c < im.channels; ++c) out.at(y, im.width - 1 - x, c) = im.at(y, x, c);
  return out;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.to_vector<float>(), y = b.to_vector<float>();
  REQUIRE(x.size() == y.size());
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(static_cast<double>(x[i]) - y[i]));
  return m;
}

}  // namespace

TEST_CASE("predict: flip_width mirrors the last axis") {
  Tensor t = empty({2, 3});
  float* p = t.data_ptr<float>();
  for (int i = 0; i < 6; ++i) p[i] = static_cast<float>(i);
  CHECK(flip_width(t).to_vector<float>() == std::vector<float>{2, 1, 0, 5, 4, 3});
  CHECK(flip_width(flip_width(t)).to_vector<float>() == t.to_vector<float>());
  CHECK_THROWS_AS(flip_width(Tensor()), std::invalid_argument);
}

TEST_CASE("predict: --tta is the mean of the photo's pass and its mirror's pass mirrored back") {
  TempDir dir;
  const std::string ckpt = save_tiny(dir, "m.safetensors");
  const Predictor plain(ckpt);  // 40x56: photos at the model size go through no resize, no crop
  Predictor tta(ckpt);
  tta.set_tta(true);
  CHECK(tta.tta());
  for (uint32_t seed : {11u, 12u}) {
    CAPTURE(seed);
    const Image photo = random_photo(40, 56, 3, seed);
    const Tensor a = plain.predict_probability(photo);
    const Tensor b = flip_width(plain.predict_probability(mirror(photo)));
    // The random model is not mirror-symmetric, so the two passes differ and the check below can fail.
    const double gap = max_abs_diff(a, b);
    MESSAGE("plain pass vs mirrored pass: max abs difference " << gap);
    CHECK(gap > 1e-4);  // far above the tolerance below
    TL_CHECK_CLOSE(tta.predict_probability(photo), ((a + b) * 0.5).contiguous(), 1e-6);
  }
  // A batch of photos of other sizes: each photo's TTA probability is what it gets alone.
  const std::vector<Image> photos = {random_photo(97, 131, 3, 13), random_photo(40, 56, 3, 14)};
  const std::vector<Tensor> batch = tta.predict_probability(photos);
  for (size_t k = 0; k < photos.size(); ++k) TL_CHECK_CLOSE(batch[k], tta.predict_probability(photos[k]), 1e-5);

  // predict_unet --tta writes the TTA masks.
  fs::create_directories(dir.path / "in");
  const Image photo = random_photo(40, 56, 3, 15);
  data::write_png(dir.file("in/p_1.png"), photo);
  std::string out;
  REQUIRE(run(std::string(TL_PREDICT_UNET) + " --checkpoint " + ckpt + " --input " + dir.file("in") + " --output " +
                  dir.file("out") + " --tta --device cpu",
              &out) == 0);
  CHECK_MESSAGE(out.find("model 40x56 with flip TTA on cpu") != std::string::npos, out);
  const Image written = data::read_mask(dir.file("out/p_1_mask.png"));
  CHECK(written.pixels == tta.predict_mask(photo).pixels);
}

TEST_CASE("predict: with a mirror-symmetric model --tta changes nothing") {
  TempDir dir;
  Generator g(21);
  nn::UNet net(tiny_config(), &g);
  // Every kernel averaged with its own left-right mirror: the model then commutes with the mirror
  // (at sizes that need no crop), so the mirrored pass mirrored back is the plain pass.
  int64_t kernels = 0;
  for (auto& [name, param] : net.named_parameters()) {
    if (param.dim() != 4 || param.size(3) == 1) continue;
    const Tensor sym = ((param + flip_width(param)) * 0.5).contiguous();
    std::memcpy(param.data_ptr<float>(), sym.data_ptr<float>(), static_cast<size_t>(sym.numel()) * sizeof(float));
    ++kernels;
  }
  CHECK(kernels > 0);
  safetensors::Metadata extra;
  extra["image_size"] = "40x56";
  const std::string ckpt = dir.file("sym.safetensors");
  nn::save_checkpoint(ckpt, net, nullptr, {}, extra);
  const Predictor plain(ckpt);
  Predictor tta(ckpt);
  tta.set_tta(true);
  for (uint32_t seed : {31u, 32u}) {
    CAPTURE(seed);
    const Image photo = random_photo(40, 56, 3, seed);
    const Tensor a = plain.predict_probability(photo);
    // Float sums run in another order on the mirrored photo: equal up to rounding.
    TL_CHECK_CLOSE(flip_width(plain.predict_probability(mirror(photo))), a, 1e-5);
    TL_CHECK_CLOSE(tta.predict_probability(photo), a, 1e-5);
    CHECK(tta.predict_mask(photo).pixels == plain.predict_mask(photo).pixels);
  }
}

namespace {

// A mask from rows of '#' (car, stored as `car`) and '.' (background).
Image mask_from(const std::vector<std::string>& rows, uint8_t car = 1) {
  Image m = Image::blank(static_cast<int64_t>(rows.size()), static_cast<int64_t>(rows[0].size()), 1);
  for (int64_t y = 0; y < m.height; ++y)
    for (int64_t x = 0; x < m.width; ++x) m.at(y, x) = rows[static_cast<size_t>(y)][static_cast<size_t>(x)] == '#' ? car : 0;
  return m;
}

}  // namespace

TEST_CASE("predict: keep_largest_region keeps the largest 8-connected region, fill_holes the enclosed background") {
  // Regions: the big one (with a pixel joined only by a corner), a 3-pixel blob, a 1-pixel blob.
  Image m = mask_from({"........##",
                       ".####...#.",
                       ".####.....",
                       ".####.....",
                       ".....#....",
                       "..........",
                       "#........."},
                      255);
  CHECK(keep_largest_region(m) == 4);
  CHECK(m.pixels == mask_from({"..........",
                               ".####.....",
                               ".####.....",
                               ".####.....",
                               ".....#....",
                               "..........",
                               ".........."},
                              255)
                        .pixels);
  CHECK(keep_largest_region(m) == 0);  // one region left: nothing to do
  // A tie keeps the first region in row-major order.
  Image tie = mask_from({"##..", "....", "..##"});
  CHECK(keep_largest_region(tie) == 2);
  CHECK(tie.pixels == mask_from({"##..", "....", "...."}).pixels);
  Image empty = mask_from({"...", "..."});
  CHECK(keep_largest_region(empty) == 0);
  CHECK(fill_holes(empty) == 0);

  // Holes: a 2-pixel window, a 1-pixel one, and a pixel that meets the outside only by its corners
  // (background is 4-connected, so it is enclosed) are filled; a notch open to the border stays.
  Image h = mask_from({"#######.....",
                       "#..#.#..##..",
                       "#######.#.#.",
                       "..#......##.",
                       "..#........."},
                      255);
  CHECK(fill_holes(h) == 4);
  CHECK(h.pixels == mask_from({"#######.....",
                               "######..##..",
                               "#######.###.",
                               "..#......##.",
                               "..#........."},
                              255)
                        .pixels);
  CHECK(fill_holes(h) == 0);
  Image rgb = Image::blank(2, 2, 3);
  CHECK_THROWS_AS(fill_holes(rgb), std::invalid_argument);
  CHECK_THROWS_AS(keep_largest_region(rgb), std::invalid_argument);
}

TEST_CASE("predict: predict_unet --largest-region --fill-holes writes the cleaned masks") {
  TempDir dir;
  const std::string ckpt = save_tiny(dir, "m.safetensors");
  const Predictor predictor(ckpt);
  fs::create_directories(dir.path / "in");
  // The threshold: the first of the photos' probability quantiles at which the clean-up changes
  // something (a random model's map is nearly flat, so no fixed threshold would do).
  std::vector<Image> photos;
  for (uint32_t seed : {41u, 42u, 43u}) {
    photos.push_back(random_photo(40, 56, 3, seed));
    data::write_png(dir.file("in/p_" + std::to_string(seed) + ".png"), photos.back());
  }
  const Tensor p0 = predictor.predict_probability(photos[0]).contiguous();
  std::vector<float> sorted(p0.data_ptr<float>(), p0.data_ptr<float>() + p0.numel());
  std::sort(sorted.begin(), sorted.end());
  double threshold = -1;
  int64_t changed = 0;
  std::vector<Image> expected;
  for (int q = 1; q < 40 && changed == 0; ++q) {
    threshold = sorted[sorted.size() * static_cast<size_t>(q) / 40];
    expected.clear();
    for (const Image& photo : photos) {
      Image m = predictor.predict_mask(photo, threshold);
      changed += keep_largest_region(m);
      changed += fill_holes(m);
      expected.push_back(m);
    }
  }
  MESSAGE("threshold " << threshold << ": pixels changed by the clean-up: " << changed);
  REQUIRE(changed > 0);
  char threshold_text[32];
  std::snprintf(threshold_text, sizeof threshold_text, "%.17g", threshold);
  std::string out;
  REQUIRE(run(std::string(TL_PREDICT_UNET) + " --checkpoint " + ckpt + " --input " + dir.file("in") + " --output " +
                  dir.file("out") + " --threshold " + threshold_text + " --largest-region --fill-holes --device cpu",
              &out) == 0);
  size_t k = 0;
  for (uint32_t seed : {41u, 42u, 43u})
    CHECK(data::read_mask(dir.file("out/p_" + std::to_string(seed) + "_mask.png")).pixels == expected[k++].pixels);
}
