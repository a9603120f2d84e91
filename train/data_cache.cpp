#include "train/data_cache.h"

#include <stdexcept>

namespace tl::train {

namespace {
std::string mb(int64_t bytes) { return std::to_string((bytes + (1 << 19)) >> 20) + " MB"; }
}  // namespace

CacheBudget split_cache_budget(int64_t cache_mb, int64_t train_samples, int64_t val_samples) {
  if (cache_mb < -1) throw std::invalid_argument("--cache-mb: must be -1 (half the memory) or >= 0, got " + std::to_string(cache_mb));
  CacheBudget b;
  b.total = cache_mb < 0 ? data::default_cache_bytes() : cache_mb << 20;
  const int64_t n = train_samples + val_samples;
  b.train = n > 0 ? static_cast<int64_t>(static_cast<double>(b.total) * static_cast<double>(train_samples) / static_cast<double>(n)) : 0;
  b.val = b.total - b.train;
  return b;
}

int64_t decode_working_bytes(int64_t photo_h, int64_t photo_w) { return photo_h * photo_w * (3 + 4 + 1); }

std::string describe_cache(const data::SegmentationDataset& train_set, const data::SegmentationDataset& val_set,
                           const CacheBudget& budget, int64_t workers) {
  const int64_t n = train_set.size() + val_set.size(), cached = train_set.cached() + val_set.cached();
  const int64_t held = cached * train_set.sample_bytes();
  if (cached == n)
    return "data cache: all " + std::to_string(n) + " samples in memory (" + mb(held) + ", budget " + mb(budget.total) + ")";
  const data::ImageInfo photo = data::read_image_info(train_set.samples().front().image);
  const int64_t decoding = std::max<int64_t>(workers, 1) * decode_working_bytes(photo.height, photo.width);
  return "data cache: streaming, " + std::to_string(train_set.cached()) + " of " + std::to_string(train_set.size()) +
         " training and " + std::to_string(val_set.cached()) + " of " + std::to_string(val_set.size()) +
         " validation samples in memory (" + mb(held) + ", budget " + mb(budget.total) + "); the other " +
         std::to_string(n - cached) + " are decoded by the loader workers every epoch (" + data::photo_decoder_name(train_set.options().decoder) +
         ", about " + mb(decoding) + " while decoding)";
}

}  // namespace tl::train
