#pragma once
// The training run's decoded-sample cache: one budget (--cache-mb) shared by the training and the
// validation set, and the log line that says which mode the run is in and what it will hold.
#include <cstdint>
#include <string>

#include "data/dataset.h"

namespace tl::train {

// cache_mb MiB (-1: data::default_cache_bytes(), half the machine's memory) split between the two sets
// in proportion to their sample counts.
struct CacheBudget {
  int64_t total = 0, train = 0, val = 0;  // bytes
};
CacheBudget split_cache_budget(int64_t cache_mb, int64_t train_samples, int64_t val_samples);

// The bytes one loader worker holds while it decodes a photo of photo_h x photo_w and its mask at full
// size (stb: RGB photo, RGBA mask as decoded, its one-channel form; libjpeg-turbo decodes less).
int64_t decode_working_bytes(int64_t photo_h, int64_t photo_w);

// "data cache: ..." — every sample cached, or how many are and how many the workers decode each epoch,
// with the memory each part takes.
std::string describe_cache(const data::SegmentationDataset& train_set, const data::SegmentationDataset& val_set,
                           const CacheBudget& budget, int64_t workers);

}  // namespace tl::train
