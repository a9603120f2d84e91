// data/dataset and data/loader: the Kaggle layout scan, the decoded cache and its errors, the epoch
// order, and batches that are the same whatever the worker count, prefetch depth or resume point.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <thread>

#include "data/dataset.h"
#include "data/loader.h"
#include "data/resize.h"
#include "tests/test_util.h"

#if TL_WITH_CUDA
#include "cuda/runtime.h"
#endif

using namespace tl;
using namespace tl::data;
using tl::testing::error_of;
namespace fs = std::filesystem;

namespace {

// A fresh folder per test case, removed at its end.
struct TempDir : tl::testing::TempDir {
  TempDir() : tl::testing::TempDir("tl_test_data_loader") {}
};


bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

// A picture with structure everywhere (so rotations and flips change it) and an elliptic "car" mask,
// both depending on k.
Image picture(int64_t h, int64_t w, int64_t k) {
  Image im = Image::blank(h, w, 3);
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      im.at(y, x, 0) = static_cast<uint8_t>((7 * x + 3 * y + 31 * k) % 256);
      im.at(y, x, 1) = static_cast<uint8_t>((11 * y + 17 * k + ((x / 4 + y / 4) % 2) * 90) % 256);
      im.at(y, x, 2) = static_cast<uint8_t>((5 * x * y + 13 * k) % 256);
    }
  return im;
}
Image blob(int64_t h, int64_t w, int64_t k, uint8_t on = 255) {
  Image m = Image::blank(h, w, 1);
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      const double dy = (double(y) - 0.45 * double(h)) / (0.3 * double(h));
      const double dx = (double(x) - (0.4 + 0.02 * double(k % 5)) * double(w)) / (0.3 * double(w));
      m.at(y, x) = dx * dx + dy * dy < 1 ? on : 0;
    }
  return m;
}

constexpr int64_t kH = 24, kW = 36;  // the size of the written samples

// The Kaggle layout: DIR/train/<car>_<NN>.<ext> and DIR/train_masks/<car>_<NN>_mask.png, 3 cars of
// 4 photos, written in a scrambled order with extensions of every case. Returns the image paths, sorted.
std::vector<std::string> make_kaggle(const fs::path& dir, int64_t cars = 3, int64_t per_car = 4) {
  fs::create_directories(dir / "train");
  fs::create_directories(dir / "train_masks");
  const char* exts[] = {".png", ".jpg", ".PNG", ".jpeg", ".JPG"};
  std::vector<std::string> images;
  const int64_t n = cars * per_car;
  for (int64_t j = 0; j < n; ++j) {
    const int64_t k = (j * 5) % n;  // scrambled: the scan must sort
    const std::string stem = "car" + std::string(1, static_cast<char>('a' + k / per_car)) + "_0" + std::to_string(k % per_car + 1);
    const std::string ext = exts[k % 5];
    const std::string path = (dir / "train" / (stem + ext)).string();
    if (ext == ".png" || ext == ".PNG") write_png(path, picture(kH, kW, k));
    else write_jpeg(path, picture(kH, kW, k), 95);
    write_png((dir / "train_masks" / (stem + "_mask.png")).string(), blob(kH, kW, k, k % 2 ? 255 : 1));
    images.push_back(path);
  }
  std::sort(images.begin(), images.end());
  return images;
}

std::string mask_of(const fs::path& dir, const std::string& image, const char* ext = ".png") {
  return (dir / "train_masks" / (fs::path(image).stem().string() + "_mask" + ext)).string();
}

bool same(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.to_vector<float>() == b.to_vector<float>();
}

// Every batch of epochs 0 and 1 (the loader restarted for each).
std::vector<Batch> two_epochs(const SegmentationDataset& ds, const LoaderOptions& opts) {
  BatchLoader loader(ds, opts);
  std::vector<Batch> out;
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    loader.start_epoch(epoch);
    Batch b;
    while (loader.next(b)) out.push_back(b);
  }
  return out;
}

void check_same_batches(const std::vector<Batch>& got, const std::vector<Batch>& want) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    CHECK(got[i].indices == want[i].indices);
    CHECK(same(got[i].images, want[i].images));
    CHECK(same(got[i].masks, want[i].masks));
  }
}

DatasetOptions small_options(int64_t threads = 2) {
  DatasetOptions o;
  o.height = 16;
  o.width = 20;
  o.threads = threads;
  return o;
}

}  // namespace

TEST_CASE("scan_kaggle_layout: sorted, paired by stem, any-case extensions; missing folders and masks are named") {
  TempDir tmp;
  const fs::path dir = tmp.path / "carvana";
  const std::vector<std::string> images = make_kaggle(dir);
  std::ofstream(dir / "train" / "notes.txt") << "not an image";
  fs::create_directories(dir / "train" / "sub.jpg");  // a folder, not an image

  std::vector<Sample> s = scan_kaggle_layout(dir.string());
  REQUIRE(s.size() == 12);
  for (size_t i = 0; i < s.size(); ++i) {
    CHECK(s[i].image == images[i]);
    CHECK(s[i].mask == mask_of(dir, images[i]));
  }
  CHECK(std::is_sorted(s.begin(), s.end(), [](const Sample& a, const Sample& b) { return a.image < b.image; }));
  std::set<std::string> cars;
  for (const Sample& x : s) cars.insert(car_id(x.image));
  CHECK(cars.size() == 3);

  // The GIF mask comes first when both exist (the scan does not decode).
  std::ofstream(mask_of(dir, images[4], ".gif")) << "GIF89a";
  CHECK(scan_kaggle_layout(dir.string())[4].mask == mask_of(dir, images[4], ".gif"));
  fs::remove(mask_of(dir, images[4], ".gif"));

  // A missing mask names the image and both paths tried, or is listed in `skipped`.
  fs::remove(mask_of(dir, images[7]));
  CHECK(error_of([&] { scan_kaggle_layout(dir.string()); }) ==
        images[7] + ": no mask (tried " + mask_of(dir, images[7], ".gif") + " and " + mask_of(dir, images[7]) + ")");
  std::vector<std::string> skipped;
  s = scan_kaggle_layout(dir.string(), &skipped);
  CHECK(s.size() == 11);
  CHECK(skipped == std::vector<std::string>{images[7]});
  CHECK(std::none_of(s.begin(), s.end(), [&](const Sample& x) { return x.image == images[7]; }));

  // Missing folders, and a train folder without images.
  const std::string nowhere = tmp.file("nowhere");
  CHECK(error_of([&] { scan_kaggle_layout(nowhere); }) == nowhere + ": no such folder");
  fs::create_directories(tmp.path / "empty");
  CHECK(error_of([&] { scan_kaggle_layout(tmp.file("empty")); }) == (tmp.path / "empty" / "train").string() + ": no such folder");
  fs::create_directories(tmp.path / "empty" / "train");
  std::ofstream(tmp.path / "empty" / "train" / "readme.md") << "x";
  const std::string e = error_of([&] { scan_kaggle_layout(tmp.file("empty")); });
  CHECK_MESSAGE(starts_with(e, (tmp.path / "empty" / "train").string() + ": no image"), e);
}

TEST_CASE("dataset: shapes and value ranges; the cache matches resize() and does not depend on the thread count") {
  TempDir tmp;
  make_kaggle(tmp.path);
  const std::vector<Sample> samples = scan_kaggle_layout(tmp.path.string());

  std::vector<std::pair<int64_t, int64_t>> calls;
  const auto caller = std::this_thread::get_id();
  bool other_thread = false;
  SegmentationDataset ds(samples, small_options(3), [&](int64_t done, int64_t total) {
    calls.emplace_back(done, total);
    other_thread |= std::this_thread::get_id() != caller;
  });
  REQUIRE(ds.size() == 12);
  CHECK(ds.samples() == samples);
  CHECK(ds.skipped().empty());
  CHECK_FALSE(other_thread);
  REQUIRE_FALSE(calls.empty());
  CHECK(calls.back() == std::pair<int64_t, int64_t>{12, 12});
  for (size_t i = 1; i < calls.size(); ++i) CHECK(calls[i].first > calls[i - 1].first);

  for (int64_t threads : {1, 4, 0}) {
    CAPTURE(threads);
    SegmentationDataset other(samples, small_options(threads));
    REQUIRE(other.size() == 12);
    for (int64_t i = 0; i < 12; ++i) {
      CHECK(other.image(i).pixels == ds.image(i).pixels);
      CHECK(other.mask(i).pixels == ds.mask(i).pixels);
    }
  }

  for (int64_t i = 0; i < ds.size(); ++i) {
    CAPTURE(i);
    const Image& im = ds.image(i);
    const Image& m = ds.mask(i);
    CHECK(image_str(im) == "16x20x3");
    CHECK(image_str(m) == "16x20x1");
    CHECK(im.pixels == resize(read_image(samples[static_cast<size_t>(i)].image), 16, 20, Interp::Auto).pixels);
    CHECK(m.pixels == resize_mask(read_mask(samples[static_cast<size_t>(i)].mask), 16, 20).pixels);
    int64_t car = 0;
    for (uint8_t v : m.pixels) {
      CHECK(v <= 1);
      car += v;
    }
    CHECK(car > 0);  // masks written as {0, 1} and as {0, 255} both read as car
    CHECK(car < m.numel());

    Example ex = ds.get(i);
    REQUIRE(ex.image.shape() == Shape{3, 16, 20});
    REQUIRE(ex.mask.shape() == Shape{1, 16, 20});
    CHECK(ex.image.dtype() == kFloat32);
    CHECK(same(ex.image, image_to_tensor(im)));
    CHECK(same(ex.mask, mask_to_tensor(m)));
  }
  CHECK_THROWS_AS(ds.get(12), std::out_of_range);
  CHECK_THROWS_AS(ds.get(-1), std::out_of_range);
  CHECK_THROWS_AS(ds.image(12), std::out_of_range);
  CHECK_THROWS_AS(ds.mask(-1), std::out_of_range);
  CHECK_THROWS_AS(SegmentationDataset({}, small_options()), std::runtime_error);
  DatasetOptions zero = small_options();
  zero.width = 0;
  CHECK_THROWS_AS(SegmentationDataset(samples, zero), std::invalid_argument);
}

TEST_CASE("dataset: a bad sample names its file; skip_bad leaves it out and lists why") {
  TempDir tmp;
  const std::vector<std::string> images = make_kaggle(tmp.path);
  // images[2]: not an image; images[5]: the mask is one column short; images[9]: gray, which is
  // not bad: it trains as RGB, gray replicated (as Pillow's convert("RGB")).
  const std::string corrupt = images[2], mismatched = images[5], gray = images[9];
  std::ofstream(corrupt, std::ios::binary) << "definitely not a JPEG or PNG";
  write_png(mask_of(tmp.path, mismatched), blob(kH, kW - 1, 0));
  fs::remove(gray);
  const std::string gray_png = (fs::path(gray).replace_extension(".png")).string();
  Image g = Image::blank(kH, kW, 1, 99);
  write_png(gray_png, g);
  const std::vector<Sample> samples = scan_kaggle_layout(tmp.path.string());
  REQUIRE(samples.size() == 12);

  // The first bad sample in order is reported, whatever the thread count.
  for (int64_t threads : {1, 2, 5}) {
    CAPTURE(threads);
    const std::string e = error_of([&] { SegmentationDataset(samples, small_options(threads)); });
    CHECK_MESSAGE(starts_with(e, corrupt + ": cannot decode image ("), e);
  }
  std::vector<Sample> rest(samples.begin() + 3, samples.end());
  CHECK(error_of([&] { SegmentationDataset(rest, small_options()); }) ==
        mismatched + ": image is 36x24 but its mask " + mask_of(tmp.path, mismatched) + " is 35x24");
  std::vector<Sample> last(samples.begin() + 6, samples.end());
  const SegmentationDataset with_gray(last, small_options());
  REQUIRE(with_gray.size() == 6);
  CHECK(with_gray.samples()[3].image == gray_png);
  CHECK(with_gray.image(3).pixels == std::vector<uint8_t>(16 * 20 * 3, 99));
  std::vector<Sample> missing = {{tmp.file("gone.jpg"), samples[0].mask}};
  CHECK(error_of([&] { SegmentationDataset(missing, small_options()); }) == tmp.file("gone.jpg") + ": no such file");

  DatasetOptions skip = small_options(3);
  skip.skip_bad = true;
  int64_t last_done = 0, total = 0;
  SegmentationDataset ds(samples, skip, [&](int64_t d, int64_t t) { last_done = d, total = t; });
  CHECK(last_done == 12);
  CHECK(total == 12);
  REQUIRE(ds.size() == 10);
  REQUIRE(ds.skipped().size() == 2);
  CHECK(starts_with(ds.skipped()[0], corrupt + ": cannot decode image ("));
  CHECK(starts_with(ds.skipped()[1], mismatched + ": image is 36x24"));
  std::vector<Sample> kept;
  for (const Sample& s : samples)
    if (s.image != corrupt && s.image != mismatched) kept.push_back(s);
  CHECK(ds.samples() == kept);
  for (int64_t i = 0; i < ds.size(); ++i)
    CHECK(ds.image(i).pixels == resize(read_image(kept[static_cast<size_t>(i)].image, 3), 16, 20).pixels);

  // Nothing usable: an error even with skip_bad, naming the first reason.
  std::vector<Sample> bad = {samples[2], samples[5]};
  const std::string e = error_of([&] { SegmentationDataset(bad, skip); });
  CHECK_MESSAGE(e.find("no usable sample") != std::string::npos, e);
  CHECK_MESSAGE(e.find(corrupt) != std::string::npos, e);
}

TEST_CASE("dataset: augmentation is a pure function of (seed, epoch, index); masks stay binary, images in [0, 1]") {
  TempDir tmp;
  make_kaggle(tmp.path);
  SegmentationDataset ds(scan_kaggle_layout(tmp.path.string()), small_options());
  const AugmentOptions aug;  // rotate 35, hflip 0.5, vflip 0.1
  int64_t changed = 0, differs_by_epoch = 0;
  for (int64_t i = 0; i < ds.size(); ++i) {
    CAPTURE(i);
    const Example plain = ds.get(i);
    const Example a = ds.get(i, aug, 20, 3), b = ds.get(i, aug, 20, 3), c = ds.get(i, aug, 20, 4);
    CHECK(same(a.image, b.image));
    CHECK(same(a.mask, b.mask));
    REQUIRE(a.image.shape() == Shape{3, 16, 20});
    REQUIRE(a.mask.shape() == Shape{1, 16, 20});
    changed += !same(a.image, plain.image);
    differs_by_epoch += !same(a.image, c.image);
    for (float v : a.image.to_vector<float>()) CHECK((v >= 0.0f && v <= 1.0f));
    for (float v : c.mask.to_vector<float>()) CHECK((v == 0.0f || v == 1.0f));
    for (float v : a.mask.to_vector<float>()) CHECK((v == 0.0f || v == 1.0f));
    // Identical to applying the documented draw by hand.
    Example hand = ds.get(i);
    apply_augment(draw_augment(aug, 20, 3, i), hand.image, hand.mask);
    CHECK(same(hand.image, a.image));
    CHECK(same(hand.mask, a.mask));
  }
  CHECK(changed == ds.size());  // a random angle is never exactly 0
  CHECK(differs_by_epoch == ds.size());
  AugmentOptions off = aug;
  off.enabled = false;
  CHECK(same(ds.get(3, off, 20, 3).image, ds.get(3).image));
}

TEST_CASE("epoch_order: identity without shuffle; a seeded Fisher-Yates permutation per epoch") {
  CHECK(epoch_order(5, false, 1, 7) == std::vector<int64_t>{0, 1, 2, 3, 4});
  CHECK(epoch_order(0, true, 1, 0).empty());
  CHECK(epoch_order(1, true, 1, 0) == std::vector<int64_t>{0});

  const int64_t n = 50;
  const std::vector<int64_t> e0 = epoch_order(n, true, 20, 0), e1 = epoch_order(n, true, 20, 1);
  std::vector<int64_t> sorted = e0;
  std::sort(sorted.begin(), sorted.end());
  CHECK(sorted == epoch_order(n, false, 20, 0));
  sorted = e1;
  std::sort(sorted.begin(), sorted.end());
  CHECK(sorted == epoch_order(n, false, 20, 0));
  CHECK(e0 != e1);
  CHECK(e0 != epoch_order(n, false, 20, 0));
  CHECK(e0 == epoch_order(n, true, 20, 0));   // reproducible
  CHECK(e0 != epoch_order(n, true, 21, 0));   // seed-dependent

  // The documented draw, written out.
  std::vector<int64_t> want(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) want[static_cast<size_t>(i)] = i;
  for (int64_t i = n - 1; i >= 1; --i) {
    const philox::Out o = philox::philox4x32_10((uint64_t{1} << 62) | (uint64_t{1} << 32) | uint64_t(i), 20);
    const auto j = static_cast<int64_t>(philox::to_unit(o.v[0], o.v[1]) * double(i + 1));
    std::swap(want[static_cast<size_t>(i)], want[static_cast<size_t>(j)]);
  }
  CHECK(e1 == want);

  CHECK_THROWS_AS(epoch_order(-1, true, 0, 0), std::invalid_argument);
  CHECK_THROWS_AS(epoch_order(3, true, 0, -1), std::invalid_argument);
  CHECK_THROWS_AS(epoch_order(3, true, 0, int64_t{1} << 30), std::invalid_argument);
}

TEST_CASE("loader: batches are bit-identical for 0, 1 and 3 workers and for prefetch 1 and 4 (augmentation on)") {
  TempDir tmp;
  make_kaggle(tmp.path);
  SegmentationDataset ds(scan_kaggle_layout(tmp.path.string()), small_options());
  LoaderOptions opts;
  opts.batch_size = 5;  // batches of 5, 5, 2
  opts.seed = 7;
  opts.workers = 0;
  const std::vector<Batch> ref = two_epochs(ds, opts);
  REQUIRE(ref.size() == 6);

  // The reference itself: the epoch order cut into batches, each sample as the dataset serves it.
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    const std::vector<int64_t> order = epoch_order(12, true, 7, epoch);
    for (int64_t k = 0; k < 3; ++k) {
      const Batch& b = ref[static_cast<size_t>(epoch * 3 + k)];
      const int64_t B = k < 2 ? 5 : 2;
      CHECK(b.indices == std::vector<int64_t>(order.begin() + k * 5, order.begin() + k * 5 + B));
      REQUIRE(b.images.shape() == Shape{B, 3, 16, 20});
      REQUIRE(b.masks.shape() == Shape{B, 1, 16, 20});
      CHECK(b.images.is_contiguous());
      CHECK(b.images.dtype() == kFloat32);
      CHECK_FALSE(b.images.requires_grad());
      for (int64_t j = 0; j < B; ++j) {
        const Example ex = ds.get(b.indices[static_cast<size_t>(j)], opts.augment, 7, epoch);
        CHECK(same(b.images.select(0, j), ex.image));
        CHECK(same(b.masks.select(0, j), ex.mask));
      }
      for (float v : b.masks.to_vector<float>()) CHECK((v == 0.0f || v == 1.0f));
    }
  }
  CHECK(ref[0].indices != ref[3].indices);  // epochs differ

  for (auto [workers, prefetch] : {std::pair<int64_t, int64_t>{1, 1}, {1, 4}, {3, 1}, {3, 4}, {0, 1}}) {
    CAPTURE(workers);
    CAPTURE(prefetch);
    opts.workers = workers;
    opts.prefetch = prefetch;
    check_same_batches(two_epochs(ds, opts), ref);
  }
}

TEST_CASE("loader: batch counts with and without drop_last; no shuffle is 0..n-1; bad options") {
  TempDir tmp;
  make_kaggle(tmp.path);
  SegmentationDataset ds(scan_kaggle_layout(tmp.path.string()), small_options());
  struct Row {
    int64_t batch_size;
    bool drop_last;
    int64_t batches, last_size;
  };
  for (const Row& r : {Row{5, false, 3, 2}, Row{5, true, 2, 5}, Row{4, false, 3, 4}, Row{4, true, 3, 4},
                       Row{12, true, 1, 12}, Row{13, false, 1, 12}, Row{13, true, 0, 0}, Row{1, false, 12, 1}}) {
    CAPTURE(r.batch_size);
    CAPTURE(r.drop_last);
    for (int64_t workers : {0, 2}) {
      CAPTURE(workers);
      LoaderOptions opts;
      opts.batch_size = r.batch_size;
      opts.drop_last = r.drop_last;
      opts.shuffle = false;
      opts.workers = workers;
      opts.augment.enabled = false;
      BatchLoader loader(ds, opts);
      CHECK(loader.batches_per_epoch() == r.batches);
      loader.start_epoch(0);
      Batch b;
      int64_t count = 0, last = 0;
      std::vector<int64_t> seen;
      while (loader.next(b)) {
        ++count;
        last = b.images.size(0);
        seen.insert(seen.end(), b.indices.begin(), b.indices.end());
      }
      CHECK(count == r.batches);
      CHECK(last == r.last_size);
      std::vector<int64_t> want(static_cast<size_t>(r.drop_last ? r.batches * r.batch_size : 12));
      for (size_t i = 0; i < want.size(); ++i) want[i] = static_cast<int64_t>(i);
      CHECK(seen == want);
      CHECK_FALSE(loader.next(b));  // stays at the end
    }
  }
  LoaderOptions bad;
  bad.batch_size = 0;
  CHECK_THROWS_AS(BatchLoader(ds, bad), std::invalid_argument);
  bad = {};
  bad.workers = -1;
  CHECK_THROWS_AS(BatchLoader(ds, bad), std::invalid_argument);
  bad = {};
  bad.prefetch = 0;
  CHECK_THROWS_AS(BatchLoader(ds, bad), std::invalid_argument);
  BatchLoader loader(ds, {});
  Batch b;
  CHECK_THROWS_AS(loader.next(b), std::logic_error);
  CHECK_THROWS_AS(loader.start_epoch(0, -1), std::invalid_argument);
  CHECK_THROWS_AS(loader.start_epoch(0, loader.batches_per_epoch() + 1), std::invalid_argument);
  loader.start_epoch(0, loader.batches_per_epoch());  // resuming at the end: an empty epoch
  CHECK_FALSE(loader.next(b));
}

TEST_CASE("loader: start_epoch(e, first_batch) gives the tail of the full epoch; a restart abandons the old epoch") {
  TempDir tmp;
  make_kaggle(tmp.path);
  SegmentationDataset ds(scan_kaggle_layout(tmp.path.string()), small_options());
  LoaderOptions opts;
  opts.batch_size = 2;  // 6 batches
  opts.workers = 3;
  opts.prefetch = 4;
  const std::vector<Batch> full = two_epochs(ds, opts);  // epochs 0 and 1
  REQUIRE(full.size() == 12);

  for (int64_t workers : {0, 1, 3}) {
    CAPTURE(workers);
    opts.workers = workers;
    BatchLoader loader(ds, opts);
    for (int64_t first : {0, 2, 5}) {
      CAPTURE(first);
      loader.start_epoch(1, first);
      std::vector<Batch> tail;
      Batch b;
      while (loader.next(b)) tail.push_back(b);
      check_same_batches(tail, std::vector<Batch>(full.begin() + 6 + first, full.end()));
    }
    // Mid-epoch restarts, with batches in flight: the new epoch comes out whole and unmixed.
    loader.start_epoch(0);
    Batch b;
    REQUIRE(loader.next(b));
    loader.start_epoch(1, 1);
    REQUIRE(loader.next(b));
    loader.start_epoch(0);
    std::vector<Batch> again;
    while (loader.next(b)) again.push_back(b);
    check_same_batches(again, std::vector<Batch>(full.begin(), full.begin() + 6));
  }
}

TEST_CASE("loader: an exception while assembling a batch surfaces in next(); destroying a loader mid-epoch does not hang") {
  TempDir tmp;
  make_kaggle(tmp.path);
  SegmentationDataset ds(scan_kaggle_layout(tmp.path.string()), small_options());
  LoaderOptions opts;
  opts.batch_size = 3;
  opts.augment.p_hflip = 1.5;  // draw_augment refuses it, inside the worker
  for (int64_t workers : {0, 2}) {
    CAPTURE(workers);
    opts.workers = workers;
    BatchLoader loader(ds, opts);
    loader.start_epoch(0);
    Batch b;
    const std::string e = error_of([&] { loader.next(b); });
    CHECK_MESSAGE(starts_with(e, "draw_augment:"), e);
    CHECK_THROWS_AS(loader.next(b), std::invalid_argument);  // the next batch fails the same way
    int64_t rest = 0;
    for (;;) {
      try {
        if (!loader.next(b)) break;
      } catch (const std::invalid_argument&) {
        ++rest;
      }
    }
    CHECK(rest == 2);  // 4 batches, each failing once, then the end
  }

  const auto t0 = std::chrono::steady_clock::now();
  LoaderOptions fast;
  fast.batch_size = 2;
  fast.workers = 3;
  fast.prefetch = 4;
  for (int rep = 0; rep < 20; ++rep) {
    BatchLoader loader(ds, fast);
    if (rep % 4 == 0) continue;  // never started
    loader.start_epoch(rep);
    Batch b;
    for (int k = 0; k < rep % 3; ++k) REQUIRE(loader.next(b));
    if (rep % 5 == 0) loader.start_epoch(rep + 1, 2);
  }  // each destructor joins workers that may hold a batch or wait for room
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK_MESSAGE(seconds < 30, seconds);
}

TEST_CASE("DeviceStager: the CPU is a pass-through; a GPU that is not there is an error") {
  Batch b;
  b.images = randn({2, 3, 4, 6});
  b.masks = zeros({2, 1, 4, 6});
  b.indices = {5, 1};
  DeviceStager cpu(Device::cpu());
  const Batch out = cpu.to_device(b);
  CHECK(out.images.is_same(b.images));
  CHECK(out.masks.is_same(b.masks));
  CHECK(out.indices == b.indices);
  CHECK_THROWS_AS(DeviceStager(Device::cpu(), 0), std::invalid_argument);
#if TL_WITH_CUDA
  if (cuda::device_count() == 0) CHECK_THROWS_AS(DeviceStager(Device::cuda(0)), std::runtime_error);
  // With a GPU, test_cuda checks the staged bytes.
#else
  CHECK_THROWS_WITH_AS(DeviceStager(Device::cuda(0)), doctest::Contains("this build has no CUDA backend"), std::runtime_error);
#endif
}

TEST_CASE("dataset and loader: the first 16 samples of the real Carvana sample at 160x240") {
  const fs::path dir = tl::testing::carvana_sample_dir();
  if (dir.empty()) return;
  std::vector<std::string> skipped;
  std::vector<Sample> all = scan_kaggle_layout(dir.string(), &skipped);
  CHECK(skipped.empty());
  CHECK(all.size() >= 16);
  for (const Sample& s : all) CHECK(s.mask == mask_of(dir, s.image, ".gif"));
  REQUIRE(all.size() >= 16);
  std::vector<Sample> first(all.begin(), all.begin() + 16);

  DatasetOptions o;  // 160x240, threads = tl::get_num_threads()
  SegmentationDataset ds(first, o);
  REQUIRE(ds.size() == 16);
  for (int64_t i = 0; i < ds.size(); ++i) {
    CHECK(image_str(ds.image(i)) == "160x240x3");
    int64_t car = 0;
    for (uint8_t v : ds.mask(i).pixels) car += v;
    const double frac = double(car) / (160.0 * 240.0);
    CHECK_MESSAGE((frac > 0.12 && frac < 0.28), frac);
  }
  LoaderOptions lo;  // batch 4, 2 workers, augmentation on
  BatchLoader loader(ds, lo);
  loader.start_epoch(0);
  Batch b;
  int64_t batches = 0;
  while (loader.next(b)) {
    ++batches;
    REQUIRE(b.images.shape() == Shape{4, 3, 160, 240});
    REQUIRE(b.masks.shape() == Shape{4, 1, 160, 240});
    int64_t bad = 0;
    for (float v : b.masks.to_vector<float>()) bad += !(v == 0.0f || v == 1.0f);
    for (float v : b.images.to_vector<float>()) bad += !(v >= 0.0f && v <= 1.0f);
    CHECK(bad == 0);
  }
  CHECK(batches == 4);
}
