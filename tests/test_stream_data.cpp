// Data sets larger than their cache budget: the samples outside the cache are decoded again each time
// a batch needs them, into the same bytes, so batches and whole training runs are bit-identical to the
// fully cached ones, with either decoder. (The peak memory of such a run: tests/stream_memory.py.)
#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/dataset.h"
#include "data/loader.h"
#include "data/synthetic.h"
#include "nn/safetensors.h"
#include "tests/test_util.h"
#include "train/data_cache.h"
#include "train/trainer.h"

using namespace tl;
namespace fs = std::filesystem;
using tl::testing::read_text;
using tl::testing::metrics_without_seconds;

namespace {

std::vector<data::PhotoDecoder> decoders() {
  std::vector<data::PhotoDecoder> d = {data::PhotoDecoder::Stb};
  if (data::turbo_jpeg_available()) d.push_back(data::PhotoDecoder::Turbo);
  else MESSAGE("libjpeg-turbo is not in this build: the turbo decoder is not covered here");
  return d;
}

}  // namespace

TEST_CASE("stream data: a data set over its cache budget serves the cached path's batches, bit for bit") {
  tl::testing::TempDir dir("tl_stream_data");
  data::SyntheticOptions so;
  so.height = 128;
  so.width = 192;
  data::write_synthetic(dir.path.string(), 24, so);
  const std::vector<data::Sample> samples = data::scan_kaggle_layout(dir.path.string());
  for (data::PhotoDecoder decoder : decoders()) {
    CAPTURE(data::photo_decoder_name(decoder));
    data::DatasetOptions all;
    all.height = 32;
    all.width = 48;
    all.decoder = decoder;
    data::DatasetOptions part = all, none = all;
    part.cache_bytes = 7 * 32 * 48 * 4 + 100;  // seven samples and a little
    none.cache_bytes = 0;
    const data::SegmentationDataset a(samples, all), b(samples, part), c(samples, none);
    CHECK(a.cached() == 24);
    CHECK(b.cached() == 7);
    CHECK(c.cached() == 0);
    CHECK(b.is_cached(6));
    CHECK_FALSE(b.is_cached(7));
    CHECK(tl::testing::error_of([&] { (void)b.image(7); }).find("sample 7 is outside the cache") != std::string::npos);
    for (const data::SegmentationDataset* ds : {&b, &c}) {
      data::LoaderOptions lo;
      lo.batch_size = 5;
      lo.workers = 2;
      lo.seed = 3;
      lo.augment.enabled = true;
      data::BatchLoader la(a, lo), lb(*ds, lo);
      for (int64_t epoch = 0; epoch < 2; ++epoch) {
        la.start_epoch(epoch);
        lb.start_epoch(epoch);
        int64_t batches = 0;
        data::Batch x, y;
        while (la.next(x)) {
          REQUIRE(lb.next(y));
          CHECK(x.images.to_vector<float>() == y.images.to_vector<float>());
          CHECK(x.masks.to_vector<float>() == y.masks.to_vector<float>());
          ++batches;
        }
        CHECK_FALSE(lb.next(y));
        CHECK(batches == 5);
      }
    }
  }
}

TEST_CASE("stream data: a training run with no sample cached is bit-identical to the cached run") {
  tl::testing::TempDir dir("tl_stream_train");
  for (data::PhotoDecoder decoder : decoders()) {
    CAPTURE(data::photo_decoder_name(decoder));
    const std::string name = data::photo_decoder_name(decoder);
    auto config = [&](const std::string& run, int64_t cache_mb) {
      train::TrainConfig c;
      c.synthetic_count = 24;
      c.val_fraction = 0.34;
      c.height = 64;
      c.width = 96;
      c.features = {4, 8};
      c.epochs = 2;
      c.batch_size = 4;
      c.workers = 2;
      c.threads = 1;
      c.device = "cpu";
      c.quiet = true;
      c.decoder = name;
      c.cache_mb = cache_mb;
      c.out = (dir.path / (name + "_" + run)).string();
      return c;
    };
    std::ostringstream console;
    train::train(config("cached", -1), console, false);
    train::train(config("streamed", 0), console, false);
    const fs::path cached = dir.path / (name + "_cached"), streamed = dir.path / (name + "_streamed");
    CHECK(read_text(cached / "log.txt").find("data cache: all 24 samples in memory") != std::string::npos);
    const std::string log = read_text(streamed / "log.txt");
    INFO(log);
    CHECK(log.find("data cache: streaming, 0 of 16 training and 0 of 8 validation samples in memory (0 MB, budget 0 MB); "
                   "the other 24 are decoded by the loader workers every epoch (" + name) != std::string::npos);
    const auto a = safetensors::load((cached / "last.safetensors").string());
    const auto b = safetensors::load((streamed / "last.safetensors").string());
    REQUIRE(a.tensors.size() == b.tensors.size());
    for (size_t i = 0; i < a.tensors.size(); ++i) {
      INFO(a.tensors[i].first);
      REQUIRE(a.tensors[i].first == b.tensors[i].first);
      if (a.tensors[i].second.dtype() == kFloat32)
        CHECK(a.tensors[i].second.to_vector<float>() == b.tensors[i].second.to_vector<float>());
    }
    CHECK(metrics_without_seconds(cached / "metrics.csv") == metrics_without_seconds(streamed / "metrics.csv"));
  }
}

TEST_CASE("stream data: the budget is split between the sets by their sizes, -1 is half the memory") {
  const train::CacheBudget b = train::split_cache_budget(100, 30, 10);
  CHECK(b.total == 100 << 20);
  CHECK(b.train == 75 << 20);
  CHECK(b.val == 25 << 20);
  CHECK(train::split_cache_budget(-1, 3, 1).total == data::default_cache_bytes());
  CHECK(data::default_cache_bytes() > 0);
  CHECK(tl::testing::error_of([] { train::split_cache_budget(-2, 3, 1); }).find("--cache-mb: must be -1") == 0);
  train::TrainConfig c;
  c.out = "x";
  c.cache_mb = -5;
  CHECK(tl::testing::error_of([&] { c.validate(); }).find("--cache-mb: must be -1") == 0);
  c.cache_mb = 10;
  c.decoder = "png";
  CHECK(tl::testing::error_of([&] { c.validate(); }) == "--decoder: expected stb or turbo, got 'png'");
  c.decoder = "stb";
  CHECK(train::TrainConfig::from_json(c.to_json()).cache_mb == 10);
}
