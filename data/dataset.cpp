// Finding the Kaggle samples, and the decoded, resized in-memory cache of the dataset.
//
// Decoding runs on std::threads that take sample indices in increasing order from one counter. Each
// thread sets its own OpenMP thread count to 1, so the resize inside does not start a team per
// decoder. Every sample's result lands in its own slot, so the cache does not depend on the thread
// count; and because indices are claimed in order and a claimed sample is always finished, when the
// loading stops at an error every earlier sample has been looked at: the error reported is the first
// bad sample in order, whatever the thread count.
#include "data/dataset.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <exception>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "data/resize.h"
#include "tensor/parallel.h"

namespace tl::data {

namespace fs = std::filesystem;

namespace {

bool is_image_name(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

std::string wxh(int64_t width, int64_t height) { return std::to_string(width) + "x" + std::to_string(height); }

// One decoded sample, or why it is bad ("<path>: <reason>").
struct Loaded {
  Image image, mask;
  std::string error;
};

Loaded load_sample(const Sample& s, int64_t height, int64_t width, PhotoDecoder decoder) {
  Loaded out;
  try {
    // Both headers first: an image above the pixel limit, or a pair of different sizes, is refused
    // before either file is decoded.
    const ImageInfo image_info = read_image_info(s.image), mask_info = read_image_info(s.mask);
    if (mask_info.height != image_info.height || mask_info.width != image_info.width)
      throw std::runtime_error(s.image + ": image is " + wxh(image_info.width, image_info.height) + " but its mask " +
                               s.mask + " is " + wxh(mask_info.width, mask_info.height));
    if (decoder != PhotoDecoder::Stb) {  // decoded straight to the training size (data/photo_decode.h)
      out.image = read_photo_resized(s.image, height, width, decoder);
      Image mask = read_mask(s.mask);
      if (mask.height != image_info.height || mask.width != image_info.width)
        throw std::runtime_error(s.image + ": image is " + wxh(image_info.width, image_info.height) + " but its mask " +
                                 s.mask + " is " + wxh(mask.width, mask.height));
      out.mask = resize_mask(mask, height, width);
      return out;
    }
    // Gray, gray + alpha and RGBA photos become RGB as Pillow's convert("RGB") makes them.
    Image image = read_image(s.image, 3);
    Image mask = read_mask(s.mask);
    if (mask.height != image.height || mask.width != image.width)  // a header that lied about its size
      throw std::runtime_error(s.image + ": image is " + wxh(image.width, image.height) + " but its mask " + s.mask +
                               " is " + wxh(mask.width, mask.height));
    out.image = resize(image, height, width, Interp::Auto);
    out.mask = resize_mask(mask, height, width);
  } catch (const std::exception& e) {
    out.error = e.what();
  } catch (...) {
    out.error = s.image + ": unknown error while loading";
  }
  return out;
}

}  // namespace

std::vector<Sample> scan_kaggle_layout(const std::string& dir, std::vector<std::string>* skipped) {
  const fs::path root(dir), train = root / "train", masks = root / "train_masks";
  if (!fs::is_directory(root)) throw std::runtime_error(dir + ": no such folder");
  if (!fs::is_directory(train)) throw std::runtime_error(train.string() + ": no such folder");
  std::vector<std::string> images;
  for (const auto& e : fs::directory_iterator(train))
    if (e.is_regular_file() && is_image_name(e.path())) images.push_back(e.path().string());
  if (images.empty()) throw std::runtime_error(train.string() + ": no image (.jpg, .jpeg or .png)");
  std::sort(images.begin(), images.end());

  std::vector<Sample> out;
  for (const std::string& image : images) {
    const std::string stem = fs::path(image).stem().string();
    const std::string gif = (masks / (stem + "_mask.gif")).string(), png = (masks / (stem + "_mask.png")).string();
    if (fs::is_regular_file(gif)) {
      out.push_back({image, gif});
    } else if (fs::is_regular_file(png)) {
      out.push_back({image, png});
    } else if (skipped) {
      skipped->push_back(image);
    } else {
      throw std::runtime_error(image + ": no mask (tried " + gif + " and " + png + ")");
    }
  }
  return out;
}

SegmentationDataset::SegmentationDataset(std::vector<Sample> samples, const DatasetOptions& options,
                                         const std::function<void(int64_t, int64_t)>& progress)
    : options_(options) {
  if (options.height < 1 || options.width < 1)
    throw std::invalid_argument("SegmentationDataset: height and width must be >= 1, got " +
                                std::to_string(options.height) + "x" + std::to_string(options.width));
  if (options.threads < 0)
    throw std::invalid_argument("SegmentationDataset: threads must be >= 0, got " + std::to_string(options.threads));
  if (options.cache_bytes < -1)
    throw std::invalid_argument("SegmentationDataset: cache_bytes must be -1 (no limit) or >= 0, got " +
                                std::to_string(options.cache_bytes));
  if (samples.empty()) throw std::runtime_error("SegmentationDataset: no samples");

  const auto n = static_cast<int64_t>(samples.size());
  // Samples [0, keep) stay in memory; the others are decoded once here (to check them, as every
  // sample is) and dropped at once, so the decoding never holds more than the budget either.
  const int64_t keep = options.cache_bytes < 0 ? n : std::min(n, options.cache_bytes / sample_bytes());
  const int64_t threads = std::min<int64_t>(options.threads > 0 ? options.threads : get_num_threads(), n);
  std::vector<Loaded> loaded(samples.size());
  std::atomic<int64_t> next{0};
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::condition_variable cv;
  int64_t done = 0, running = threads;  // guarded by mu

  auto work = [&] {
    omp_set_num_threads(1);  // per-thread ICV: the resize's parallel_for stays on this thread
    for (;;) {
      if (stop.load()) break;
      const int64_t i = next.fetch_add(1);
      if (i >= n) break;
      Loaded& slot = loaded[static_cast<size_t>(i)];
      slot = load_sample(samples[static_cast<size_t>(i)], options.height, options.width, options.decoder);
      if (i >= keep) {  // outside the cache: dropped now (move-assigned, so the pixel buffers are freed)
        slot.image = Image{};
        slot.mask = Image{};
      }
      if (!slot.error.empty() && !options.skip_bad) stop.store(true);
      std::lock_guard<std::mutex> lock(mu);
      ++done;
      cv.notify_one();
    }
    std::lock_guard<std::mutex> lock(mu);
    --running;
    cv.notify_one();
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads));
  try {
    for (int64_t t = 0; t < threads; ++t) pool.emplace_back(work);
  } catch (...) {  // no thread left to start: stop the ones running, then report
    stop.store(true);
    for (std::thread& t : pool) t.join();
    throw;
  }

  // Report progress from this thread until every decoder has finished (done is final once running
  // is 0). A throwing callback stops the decoders; its exception propagates once they are joined.
  std::exception_ptr progress_error;
  {
    std::unique_lock<std::mutex> lock(mu);
    int64_t reported = 0;
    for (;;) {
      cv.wait(lock, [&] { return done != reported || running == 0; });
      if (done != reported) {
        reported = done;
        if (progress && !progress_error) {
          lock.unlock();
          try {
            progress(reported, n);
          } catch (...) {
            progress_error = std::current_exception();
            stop.store(true);
          }
          lock.lock();
        }
        continue;
      }
      if (running == 0) break;
    }
  }
  for (std::thread& t : pool) t.join();
  if (progress_error) std::rethrow_exception(progress_error);

  // Only the claimed samples were looked at; when loading stopped early, the first error in order
  // is among them and comes before any unclaimed sample.
  const int64_t looked = std::min(next.load(), n);
  for (int64_t i = 0; i < looked; ++i) {
    Loaded& r = loaded[static_cast<size_t>(i)];
    if (!r.error.empty()) {
      if (!options.skip_bad) throw std::runtime_error(r.error);
      skipped_.push_back(std::move(r.error));
      continue;
    }
    samples_.push_back(std::move(samples[static_cast<size_t>(i)]));
    if (!r.image.empty()) ++cached_;
    images_.push_back(std::move(r.image));
    masks_.push_back(std::move(r.mask));
  }
  if (samples_.empty())
    throw std::runtime_error("SegmentationDataset: no usable sample among " + std::to_string(n) + " (" +
                             std::to_string(skipped_.size()) + " skipped, the first: " + skipped_.front() + ")");
}

int64_t SegmentationDataset::size() const { return static_cast<int64_t>(samples_.size()); }

namespace {
void check_index(int64_t index, int64_t size, const char* op) {
  if (index < 0 || index >= size)
    throw std::out_of_range(std::string(op) + ": index " + std::to_string(index) + " out of range [0, " +
                            std::to_string(size) + ")");
}
}  // namespace

bool SegmentationDataset::is_cached(int64_t index) const {
  check_index(index, size(), "SegmentationDataset::is_cached");
  return !images_[static_cast<size_t>(index)].empty();
}

const Image& SegmentationDataset::image(int64_t index) const {
  if (!is_cached(index))
    throw std::logic_error("SegmentationDataset::image: sample " + std::to_string(index) +
                           " is outside the cache (cache_bytes); get() decodes it");
  return images_[static_cast<size_t>(index)];
}

const Image& SegmentationDataset::mask(int64_t index) const {
  if (!is_cached(index))
    throw std::logic_error("SegmentationDataset::mask: sample " + std::to_string(index) +
                           " is outside the cache (cache_bytes); get() decodes it");
  return masks_[static_cast<size_t>(index)];
}

Example SegmentationDataset::get(int64_t index, const AugmentOptions& augment, uint64_t seed, int64_t epoch) const {
  Example ex;
  if (is_cached(index)) {
    ex = {image_to_tensor(images_[static_cast<size_t>(index)]), mask_to_tensor(masks_[static_cast<size_t>(index)])};
  } else {  // decoded as the constructor did: the same bytes a cached copy would hold
    const Loaded l = load_sample(samples_[static_cast<size_t>(index)], options_.height, options_.width, options_.decoder);
    if (!l.error.empty()) throw std::runtime_error(l.error + " (the file changed since the data set was loaded)");
    ex = {image_to_tensor(l.image), mask_to_tensor(l.mask)};
  }
  if (augment.enabled) apply_augment(draw_augment(augment, seed, epoch, index), ex.image, ex.mask);
  return ex;
}

int64_t default_cache_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return int64_t{4} << 30;  // unknown: 4 GiB
  return static_cast<int64_t>(pages) * page / 2;
}

}  // namespace tl::data
