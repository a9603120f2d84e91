// data/augment and data/split: deterministic draws and their frequencies, the exact properties of
// rotation and flips, thread-count independence; the car split, split files, and the real sample.
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>

#include "data/augment.h"
#include "data/split.h"
#include "tests/test_util.h"

using namespace tl;
using namespace tl::data;
using tl::testing::error_of;
namespace fs = std::filesystem;

namespace {

struct TempDir : tl::testing::TempDir {
  TempDir() : tl::testing::TempDir("tl_test_data_augment") {}
};

// A smooth-ish image in [0, 1] (C, H, W) and a blob mask (1, H, W) of 0/1, from a fixed generator.
Tensor test_image(int64_t c, int64_t h, int64_t w, uint64_t seed = 7) {
  Generator g(seed);
  return rand({c, h, w}, {}, &g);
}
Tensor test_mask(int64_t h, int64_t w) {
  std::vector<float> v(static_cast<size_t>(h * w));
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      const double dy = (y - 0.4 * h) / (0.3 * h), dx = (x - 0.55 * w) / (0.35 * w);
      v[static_cast<size_t>(y * w + x)] = dx * dx + dy * dy < 1 ? 1.0f : 0.0f;
    }
  return from_vector(v, {1, h, w});
}

bool equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.to_vector<float>() == b.to_vector<float>();
}


std::vector<Sample> fake_samples(int cars, int angles) {
  std::vector<Sample> s;
  for (int c = 0; c < cars; ++c)
    for (int a = 1; a <= angles; ++a) {
      const std::string stem = "car" + std::to_string(100 + c) + (a < 10 ? "_0" : "_") + std::to_string(a);
      s.push_back({"data/train/" + stem + ".jpg", "data/train_masks/" + stem + "_mask.gif"});
    }
  return s;
}

std::set<std::string> cars_of(const std::vector<Sample>& s) {
  std::set<std::string> out;
  for (const Sample& x : s) out.insert(car_id(x.image));
  return out;
}

}  // namespace

TEST_CASE("augment: draws are a pure function of (seed, epoch, index), with the documented frequencies") {
  AugmentOptions opts;
  const AugmentDraw a = draw_augment(opts, 20, 3, 17), b = draw_augment(opts, 20, 3, 17);
  CHECK(a.angle_deg == b.angle_deg);
  CHECK(a.hflip == b.hflip);
  CHECK(a.vflip == b.vflip);
  CHECK(draw_augment(opts, 20, 4, 17).angle_deg != a.angle_deg);
  CHECK(draw_augment(opts, 20, 3, 18).angle_deg != a.angle_deg);
  CHECK(draw_augment(opts, 21, 3, 17).angle_deg != a.angle_deg);

  const int n = 20000;
  int h = 0, v = 0;
  double sum = 0, lo = 1e9, hi = -1e9;
  std::vector<int> bins(7, 0);
  for (int i = 0; i < n; ++i) {
    const AugmentDraw d = draw_augment(opts, 20, 1, i);
    h += d.hflip, v += d.vflip;
    sum += d.angle_deg, lo = std::min(lo, d.angle_deg), hi = std::max(hi, d.angle_deg);
    bins[static_cast<size_t>(std::clamp(static_cast<int>((d.angle_deg + 35) / 10), 0, 6))]++;
  }
  CHECK_MESSAGE(std::abs(h / double(n) - 0.5) < 0.02, "hflip rate " << h / double(n));
  CHECK_MESSAGE(std::abs(v / double(n) - 0.1) < 0.02, "vflip rate " << v / double(n));
  CHECK_MESSAGE(std::abs(sum / n) < 0.75, "mean angle " << sum / n);
  CHECK(lo >= -35.0);
  CHECK(hi < 35.0);
  CHECK(lo < -34.9);
  CHECK(hi > 34.9);
  for (int k : bins) CHECK_MESSAGE(std::abs(k / double(n) - 1.0 / 7) < 0.02, "angle bin share " << k / double(n));

  // Switches: off means the identity, and switching one transform off leaves the others' draws.
  AugmentOptions off = opts;
  off.enabled = false;
  CHECK(draw_augment(off, 20, 3, 17).is_identity());
  AugmentOptions no_rot = opts;
  no_rot.max_rotate_deg = 0;
  for (int i = 0; i < 50; ++i) {
    const AugmentDraw d = draw_augment(no_rot, 20, 0, i), full = draw_augment(opts, 20, 0, i);
    CHECK(d.angle_deg == 0);
    CHECK(d.hflip == full.hflip);
    CHECK(d.vflip == full.vflip);
  }
  CHECK_THROWS_AS(draw_augment(opts, 20, -1, 0), std::invalid_argument);
  CHECK_THROWS_AS(draw_augment(opts, 20, 0, int64_t{1} << 32), std::invalid_argument);
  AugmentOptions bad = opts;
  bad.p_vflip = 1.5;
  CHECK_THROWS_AS(draw_augment(bad, 20, 0, 0), std::invalid_argument);
}

TEST_CASE("augment: identities, exact flips, and inputs never written") {
  const Tensor im0 = test_image(3, 9, 13), m0 = test_mask(9, 13);
  Tensor im = im0.clone(), m = m0.clone();
  apply_augment({0.0, false, false}, im, m);
  CHECK(equal(im, im0));
  CHECK(equal(m, m0));

  apply_augment({0.0, true, false}, im, m);
  CHECK(!equal(im, im0));
  const std::vector<float> src = im0.to_vector<float>(), got = im.to_vector<float>();
  CHECK(got[0 * 117 + 2 * 13 + 0] == src[0 * 117 + 2 * 13 + 12]);  // (c=0, y=2, x=0) <- x=12
  apply_augment({0.0, true, false}, im, m);
  CHECK(equal(im, im0));
  CHECK(equal(m, m0));
  apply_augment({0.0, false, true}, im, m);
  CHECK(im.to_vector<float>()[2 * 117 + 0 * 13 + 5] == src[2 * 117 + 8 * 13 + 5]);  // (2, 0, 5) <- y=8
  apply_augment({0.0, false, true}, im, m);
  CHECK(equal(im, im0));
  CHECK(equal(m, m0));

  // The caller's tensors keep their values: a dataset may cache them.
  const Tensor keep = im0.clone();
  Tensor alias = keep, malias = m0.clone();
  apply_augment({12.5, true, true}, alias, malias);
  CHECK(!alias.is_same(keep));
  CHECK(equal(keep, im0));

  // Non-contiguous input (a transposed view) is read through its strides.
  Tensor tv = test_image(2, 11, 11).transpose(1, 2), tm = test_mask(11, 11);
  const Tensor tc = tv.contiguous();
  Tensor a1 = tv, b1 = tm.clone(), a2 = tc, b2 = tm.clone();
  apply_augment({-20.0, true, false}, a1, b1);
  apply_augment({-20.0, true, false}, a2, b2);
  CHECK(equal(a1, a2));

  Tensor bad_mask = zeros({1, 9, 12});
  const std::string e = error_of([&] { apply_augment({5.0, false, false}, im, bad_mask); });
  CHECK_MESSAGE(e.find("(1,9,12)") != std::string::npos, e);
  CHECK_MESSAGE(e.find("(3,9,13)") != std::string::npos, e);
  Tensor int_im = zeros({3, 9, 13}, kInt64);
  CHECK_THROWS_AS(apply_augment({5.0, false, false}, int_im, m), std::invalid_argument);
}

TEST_CASE("augment: rotation keeps masks binary, constants constant, and turns counter-clockwise") {
  for (double angle : {0.5, -1.0, 3.0, 17.0, -34.9}) {
    CAPTURE(angle);
    Tensor im = full({3, 40, 60}, 0.625), m = test_mask(40, 60);
    apply_augment({angle, false, false}, im, m);
    for (float x : im.to_vector<float>()) REQUIRE(x == 0.625f);  // reflect border: no black corners
    int64_t ones = 0;
    for (float x : m.to_vector<float>()) {
      REQUIRE((x == 0.0f || x == 1.0f));
      ones += x == 1.0f;
    }
    CHECK(ones > 0);
  }

  // 90 degrees counter-clockwise on a square: out(y, x) = in(x, N-1-y), i.e. flip rows of the transpose
  // (the top-right corner comes to the top-left), as np.rot90 and cv2.getRotationMatrix2D(+90).
  const int64_t N = 7;
  const Tensor im0 = test_image(2, N, N);
  std::vector<float> bits = test_image(1, N, N, 3).to_vector<float>();
  for (float& b : bits) b = b > 0.5f ? 1.0f : 0.0f;
  const Tensor m0 = from_vector(bits, {1, N, N});
  Tensor im = im0, m = m0;
  apply_augment({90.0, false, false}, im, m);
  const std::vector<float> a = im0.to_vector<float>(), am = m0.to_vector<float>();
  const std::vector<float> g = im.to_vector<float>(), gm = m.to_vector<float>();
  double worst = 0;
  int mask_mismatch = 0;
  for (int64_t c = 0; c < 2; ++c)
    for (int64_t y = 0; y < N; ++y)
      for (int64_t x = 0; x < N; ++x) {
        worst = std::max(worst, double(std::abs(g[size_t(c * N * N + y * N + x)] - a[size_t(c * N * N + x * N + N - 1 - y)])));
        if (c == 0) mask_mismatch += gm[size_t(y * N + x)] != am[size_t(x * N + N - 1 - y)];
      }
  CHECK_MESSAGE(worst <= 1e-5, "max abs error " << worst);
  CHECK(mask_mismatch == 0);
}

TEST_CASE("augment: the result does not depend on the thread count") {
  const int before = get_num_threads();
  const Tensor im0 = test_image(3, 200, 300), m0 = test_mask(200, 300);
  std::vector<Tensor> ims, masks;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    Tensor im = im0, m = m0;
    apply_augment({-23.25, true, true}, im, m);
    ims.push_back(im), masks.push_back(m);
  }
  set_num_threads(before);
  CHECK(equal(ims[0], ims[1]));
  CHECK(equal(masks[0], masks[1]));
}

TEST_CASE("split: car ids, no car on both sides, reproducible, independent of the input order") {
  CHECK(car_id("0cdf5b5d0ce1_07.jpg") == "0cdf5b5d0ce1");
  CHECK(car_id("/data/train/0cdf5b5d0ce1_07.jpg") == "0cdf5b5d0ce1");
  CHECK(car_id("a_b_c_16.png") == "a_b_c");
  CHECK(car_id("dir_x/plain.jpg") == "plain");

  const std::vector<Sample> all = fake_samples(10, 4);
  const auto [train, val] = split_by_car(all, 0.3, 20);
  CHECK(cars_of(val).size() == 3);
  CHECK(cars_of(train).size() == 7);
  CHECK(val.size() == 12);
  CHECK(train.size() == 28);
  for (const std::string& c : cars_of(val)) CHECK(cars_of(train).count(c) == 0);
  std::vector<Sample> both = train;
  both.insert(both.end(), val.begin(), val.end());
  auto by_path = [](const Sample& x, const Sample& y) { return x.image < y.image; };
  CHECK(std::is_sorted(train.begin(), train.end(), by_path));
  CHECK(std::is_sorted(val.begin(), val.end(), by_path));
  std::sort(both.begin(), both.end(), by_path);
  CHECK(both == all);

  std::vector<Sample> shuffled = all;
  std::reverse(shuffled.begin(), shuffled.end());
  std::rotate(shuffled.begin(), shuffled.begin() + 13, shuffled.end());
  CHECK(split_by_car(shuffled, 0.3, 20) == split_by_car(all, 0.3, 20));
  bool differs = false;
  for (uint64_t seed = 21; seed < 25; ++seed) differs |= split_by_car(all, 0.3, seed).second != val;
  CHECK(differs);

  CHECK(split_by_car(all, 0.0, 20).second.empty());
  CHECK(cars_of(split_by_car(all, 0.01, 20).second).size() == 1);  // rounds to 0, at least one car
  CHECK(cars_of(split_by_car(all, 1.0, 20).first).size() == 1);    // never all cars
  CHECK(split_by_car(fake_samples(1, 3), 0.5, 20).second.empty());  // one car stays in training
  CHECK_THROWS_AS(split_by_car(all, -0.1, 20), std::invalid_argument);
}

TEST_CASE("split: CSV round trip, relative paths, and errors that name the file and line") {
  TempDir dir;
  const std::vector<Sample> s = {{"/data/a,b_01.jpg", "/data/a,b_01_mask.gif"},
                                 {"/data/say \"hi\"_02.jpg", "/data/m.gif"},
                                 {"/data/plain_03.jpg", "/data/plain_03_mask.png"}};
  const std::string path = dir.file("split.csv");
  write_split_csv(path, s);
  CHECK(read_split_csv(path) == s);
  std::ifstream in(path);
  std::string header;
  std::getline(in, header);
  CHECK(header == "image,mask");
  for (const auto& e : fs::directory_iterator(dir.path)) CHECK(e.path().filename() == "split.csv");  // no temp left

  std::ofstream(dir.file("rel.csv")) << "image,mask\r\ntrain/x_01.jpg,train_masks/x_01_mask.gif\r\n\r\n\"q,1.jpg\",/abs/m.gif\n";
  const std::vector<Sample> rel = read_split_csv(dir.file("rel.csv"));
  REQUIRE(rel.size() == 2);
  CHECK(rel[0].image == (dir.path / "train/x_01.jpg").string());
  CHECK(rel[0].mask == (dir.path / "train_masks/x_01_mask.gif").string());
  CHECK(rel[1].image == (dir.path / "q,1.jpg").string());
  CHECK(rel[1].mask == "/abs/m.gif");

  std::ofstream(dir.file("header.csv")) << "img,mask\na.jpg,b.gif\n";
  std::string e = error_of([&] { read_split_csv(dir.file("header.csv")); });
  CHECK_MESSAGE(e == dir.file("header.csv") + ":1: expected the header 'image,mask', got 'img,mask'", e);
  std::ofstream(dir.file("short.csv")) << "image,mask\na.jpg,b.gif\nc.jpg\n";
  e = error_of([&] { read_split_csv(dir.file("short.csv")); });
  CHECK_MESSAGE(e == dir.file("short.csv") + ":3: expected 2 fields, got 1", e);
  std::ofstream(dir.file("open.csv")) << "image,mask\na.jpg,\"b.gif\n";
  e = error_of([&] { read_split_csv(dir.file("open.csv")); });
  CHECK_MESSAGE(e == dir.file("open.csv") + ":2: unterminated quoted field", e);
  e = error_of([&] { read_split_csv(dir.file("missing.csv")); });
  CHECK_MESSAGE(e == dir.file("missing.csv") + ": no such file", e);
  e = error_of([&] { write_split_csv(dir.file("no_dir/x.csv"), s); });
  CHECK_MESSAGE(e.rfind(dir.file("no_dir/x.csv") + ": cannot write", 0) == 0, e);
}

TEST_CASE("split: the real Carvana sample puts 3 of its 12 cars in validation") {
  const fs::path dir = tl::testing::carvana_sample_dir();
  if (dir.empty()) return;
  std::vector<Sample> all;
  for (const auto& e : fs::directory_iterator(dir / "train"))
    if (e.path().extension() == ".jpg")
      all.push_back({e.path().string(), (dir / "train_masks" / (e.path().stem().string() + "_mask.gif")).string()});
  REQUIRE(all.size() == 192);
  for (const Sample& x : all) CHECK_MESSAGE(fs::exists(x.mask), x.mask);
  const auto [train, val] = split_by_car(all, 0.25, 20);
  CHECK(cars_of(all).size() == 12);
  CHECK(cars_of(val).size() == 3);
  CHECK(cars_of(train).size() == 9);
  CHECK(val.size() == 48);
  CHECK(train.size() == 144);
  for (const std::string& c : cars_of(val)) CHECK(cars_of(train).count(c) == 0);
  std::string names;
  for (const std::string& c : cars_of(val)) names += " " + c;
  MESSAGE("validation cars (seed 20):" << names);
}

TEST_CASE("split: the seed's bare names resolve against data_dir/train and data_dir/train_masks") {
  TempDir dir;
  std::ofstream(dir.file("seed.csv")) << "image,mask\n0cdf5b5d0ce1_01.jpg,0cdf5b5d0ce1_01_mask.gif\n"
                                         "sub/x_02.jpg,sub/x_02_mask.gif\n/abs/y_03.jpg,/abs/y_03_mask.gif\n";
  const fs::path data = dir.path / "carvana";
  const std::vector<Sample> with = read_split_csv(dir.file("seed.csv"), data.string());
  REQUIRE(with.size() == 3);
  CHECK(with[0].image == (data / "train" / "0cdf5b5d0ce1_01.jpg").string());
  CHECK(with[0].mask == (data / "train_masks" / "0cdf5b5d0ce1_01_mask.gif").string());
  CHECK(with[1].image == (dir.path / "sub/x_02.jpg").string());  // a path with a folder: relative to the CSV
  CHECK(with[1].mask == (dir.path / "sub/x_02_mask.gif").string());
  CHECK(with[2].image == "/abs/y_03.jpg");
  const std::vector<Sample> without = read_split_csv(dir.file("seed.csv"));
  CHECK(without[0].image == (dir.path / "0cdf5b5d0ce1_01.jpg").string());
  CHECK(without[0].mask == (dir.path / "0cdf5b5d0ce1_01_mask.gif").string());
  CHECK(without[1] == with[1]);

  // Relative CSV and data paths resolve to absolute ones: the run folder's copy names the same files.
  const fs::path cwd = fs::current_path();
  fs::current_path(dir.path);
  const std::vector<Sample> rel = read_split_csv("seed.csv", "carvana");
  const std::vector<Sample> rel_csv = read_split_csv("seed.csv");
  fs::current_path(cwd);
  CHECK(rel == with);
  CHECK(rel_csv == without);
}
