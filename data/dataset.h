#pragma once
// The Carvana segmentation dataset: finding the samples (the Kaggle layout or split CSVs), decoding
// and resizing them once into an in-memory cache, and serving (image, mask) tensors with the
// per-(seed, epoch, index) augmentation of data/augment.h.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/augment.h"
#include "data/image.h"
#include "data/photo_decode.h"
#include "data/split.h"

namespace tl::data {

// The samples of the Kaggle layout: every DIR/train/<stem>.jpg (also .jpeg/.png, any case) with its
// mask DIR/train_masks/<stem>_mask.gif (or _mask.png), sorted by image path.
// Throws std::runtime_error naming the folder when DIR or DIR/train is missing or holds no image.
// A missing mask throws naming the image and the mask paths tried, unless `skipped` is given: then
// the image is left out and its path appended to *skipped.
std::vector<Sample> scan_kaggle_layout(const std::string& dir, std::vector<std::string>* skipped = nullptr);

struct DatasetOptions {
  int64_t height = 160, width = 240;  // every sample is resized to this (area/bilinear; nearest for masks)
  bool skip_bad = false;              // leave out unreadable or mismatched samples instead of throwing
  int64_t threads = 0;                // decoding threads; 0 = tl::get_num_threads()
  PhotoDecoder decoder = PhotoDecoder::Stb;  // how photos are decoded (data/photo_decode.h)
  // Bytes the cache of decoded samples may hold; -1: no limit. Samples are cached in index order while
  // they fit (sample_bytes() each); the others are decoded again by every get() that asks for them
  // (the loader's workers), into the same bytes as a cached copy.
  int64_t cache_bytes = -1;
};

// Half of the machine's physical memory: the default budget of a training run's sample cache.
int64_t default_cache_bytes();

// One sample as tensors: image (3, H, W) float32 in [0, 1], mask (1, H, W) float32 in {0, 1}.
struct Example {
  Tensor image, mask;
};

class SegmentationDataset {
 public:
  // Decodes and resizes every sample now, in parallel, into a uint8 cache (3 + 1 bytes per pixel)
  // that keeps the samples within options.cache_bytes (all of them by default).
  // Photos become RGB (gray replicated, alpha dropped). Both headers are read before either file is
  // decoded, so an image or mask above data::max_image_pixels(), or a pair of different sizes, costs
  // no pixel memory. Without skip_bad, the first bad sample (unreadable image or mask, image or mask
  // above the pixel limit, image and mask of different sizes) throws std::runtime_error naming the
  // file and the reason; with skip_bad it is left out and listed in skipped(). Throws too when no
  // sample is left. `progress(done, total)` is called from the calling thread as samples finish (may
  // be empty).
  SegmentationDataset(std::vector<Sample> samples, const DatasetOptions& options,
                      const std::function<void(int64_t, int64_t)>& progress = {});

  int64_t size() const;
  const DatasetOptions& options() const { return options_; }
  const std::vector<Sample>& samples() const { return samples_; }  // the kept ones, in order
  const std::vector<std::string>& skipped() const { return skipped_; }  // "path: reason"

  // The cached, resized sample `index`, as uint8 images (image HxWx3, mask HxWx1 of 0/1). Throws
  // std::logic_error for a sample outside the cache (is_cached false): get() decodes those.
  const Image& image(int64_t index) const;
  const Image& mask(int64_t index) const;
  bool is_cached(int64_t index) const;
  int64_t cached() const { return cached_; }  // samples held in memory
  // The memory one cached sample takes: height * width * (3 + 1) bytes.
  int64_t sample_bytes() const { return options_.height * options_.width * 4; }

  // Sample `index` as tensors, augmented with draw_augment(augment, seed, epoch, index) when
  // augment.enabled. Thread-safe (reads the cache, or decodes a sample outside it). Throws
  // std::out_of_range on a bad index.
  Example get(int64_t index, const AugmentOptions& augment = {false}, uint64_t seed = 0, int64_t epoch = 0) const;

 private:
  std::vector<Sample> samples_;
  DatasetOptions options_;
  std::vector<std::string> skipped_;
  std::vector<Image> images_, masks_;  // one per kept sample; empty for one outside the cache
  int64_t cached_ = 0;
};

}  // namespace tl::data
