// The epoch order and the batch loader. Workers take batch numbers from one counter and file the
// finished batches under their number; next() waits for its number, so the batches come out in order
// whatever thread made them, and a batch's content (its samples and their augmentation) is fixed by
// (dataset, options, epoch, batch number) alone.
#include "data/loader.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "tensor/random.h"

#if TL_WITH_CUDA
#include "cuda/pinned.h"
#include "cuda/runtime.h"
#endif

namespace tl::data {

std::vector<int64_t> epoch_order(int64_t n, bool shuffle, uint64_t seed, int64_t epoch) {
  // The counter 1 << 62 | epoch << 32 | i needs i < 2^32 and epoch < 2^30 to keep its fields apart.
  if (n < 0 || n > (int64_t{1} << 32))
    throw std::invalid_argument("epoch_order: n must be in [0, 2^32], got " + std::to_string(n));
  if (epoch < 0 || epoch >= (int64_t{1} << 30))
    throw std::invalid_argument("epoch_order: epoch must be in [0, 2^30), got " + std::to_string(epoch));
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  if (!shuffle) return order;
  const uint64_t base = (uint64_t{1} << 62) | (static_cast<uint64_t>(epoch) << 32);
  for (int64_t i = n - 1; i >= 1; --i) {
    const philox::Out o = philox::philox4x32_10(base | static_cast<uint64_t>(i), seed);
    const auto j = std::min(i, static_cast<int64_t>(philox::to_unit(o.v[0], o.v[1]) * static_cast<double>(i + 1)));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  return order;
}

std::vector<int64_t> shard_order(const std::vector<int64_t>& order, int64_t num_replicas, int64_t rank, bool pad) {
  if (num_replicas < 1 || rank < 0 || rank >= num_replicas)
    throw std::invalid_argument("shard_order: rank " + std::to_string(rank) + " of " + std::to_string(num_replicas) +
                                " replicas is out of range");
  const auto n = static_cast<int64_t>(order.size());
  const int64_t total = pad && n > 0 ? (n + num_replicas - 1) / num_replicas * num_replicas : n;
  std::vector<int64_t> shard;
  for (int64_t i = rank; i < total; i += num_replicas) shard.push_back(order[static_cast<size_t>(i % n)]);
  return shard;
}

BatchLoader::BatchLoader(const SegmentationDataset& dataset, const LoaderOptions& options)
    : dataset_(dataset), options_(options) {
  if (options.batch_size < 1)
    throw std::invalid_argument("BatchLoader: batch_size must be >= 1, got " + std::to_string(options.batch_size));
  if (options.workers < 0)
    throw std::invalid_argument("BatchLoader: workers must be >= 0, got " + std::to_string(options.workers));
  if (options.prefetch < 1)
    throw std::invalid_argument("BatchLoader: prefetch must be >= 1, got " + std::to_string(options.prefetch));
  shard_order({}, options.num_replicas, options.rank, options.pad_shards);  // checks the shard's range
  workers_.reserve(static_cast<size_t>(options.workers));
  try {
    for (int64_t w = 0; w < options.workers; ++w) workers_.emplace_back([this] { work(); });
  } catch (...) {  // could not start a thread: join the ones started (the destructor will not run)
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    work_cv_.notify_all();
    for (std::thread& t : workers_) t.join();
    throw;
  }
}

BatchLoader::~BatchLoader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : workers_) t.join();  // a worker finishes at most the batch it holds
}

int64_t BatchLoader::batches_per_epoch() const {
  const int64_t all = dataset_.size(), r = options_.num_replicas, b = options_.batch_size;
  const int64_t n = options_.pad_shards ? (all + r - 1) / r : (all - options_.rank + r - 1) / r;  // shard_order's length
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

void BatchLoader::start_epoch(int64_t epoch, int64_t first_batch) {
  const int64_t batches = batches_per_epoch();
  if (first_batch < 0 || first_batch > batches)
    throw std::invalid_argument("BatchLoader::start_epoch: first_batch must be in [0, " + std::to_string(batches) +
                                "], got " + std::to_string(first_batch));
  auto order = std::make_shared<const std::vector<int64_t>>(
      shard_order(epoch_order(dataset_.size(), options_.shuffle, options_.seed, epoch), options_.num_replicas,
                  options_.rank, options_.pad_shards));
  std::map<int64_t, Done> abandoned;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++generation_;
    abandoned.swap(ready_);
    order_ = std::move(order);
    epoch_ = epoch;
    next_job_ = next_out_ = first_batch;
    end_ = batches;
    started_ = true;
  }
  work_cv_.notify_all();
}  // the abandoned batches are freed here, outside the lock

bool BatchLoader::next(Batch& batch) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!started_) throw std::logic_error("BatchLoader::next: no epoch started (call start_epoch first)");
  if (next_out_ >= end_) return false;
  const int64_t k = next_out_;
  if (workers_.empty()) {  // assemble here; a failed batch is consumed too, as with workers
    ++next_out_;
    const std::shared_ptr<const std::vector<int64_t>> order = order_;
    const int64_t epoch = epoch_;
    lock.unlock();
    batch = assemble(*order, epoch, k);
    return true;
  }
  ready_cv_.wait(lock, [&] { return ready_.count(k) != 0; });
  auto node = ready_.extract(k);
  ++next_out_;
  lock.unlock();
  work_cv_.notify_all();  // room for one more job
  if (node.mapped().error) std::rethrow_exception(node.mapped().error);
  batch = std::move(node.mapped().batch);
  return true;
}

void BatchLoader::work() {
  omp_set_num_threads(1);  // per-thread ICV: the resize/augment parallel_for stays on this thread
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [&] { return stop_ || (started_ && next_job_ < end_ && next_job_ < next_out_ + options_.prefetch); });
    if (stop_) return;
    const int64_t k = next_job_++;
    const uint64_t generation = generation_;
    const std::shared_ptr<const std::vector<int64_t>> order = order_;
    const int64_t epoch = epoch_;
    lock.unlock();
    Done done;
    try {
      done.batch = assemble(*order, epoch, k);
    } catch (...) {
      done.error = std::current_exception();
    }
    lock.lock();
    if (generation == generation_ && !stop_) {
      ready_.emplace(k, std::move(done));
      ready_cv_.notify_all();
    }
  }
}

Batch BatchLoader::assemble(const std::vector<int64_t>& order, int64_t epoch, int64_t k) const {
  const auto n = static_cast<int64_t>(order.size());
  const int64_t begin = k * options_.batch_size, end = std::min(begin + options_.batch_size, n);
  const int64_t B = end - begin, H = dataset_.options().height, W = dataset_.options().width;
  Batch batch;
  batch.images = empty({B, 3, H, W});  // (B, 3, H, W)
  batch.masks = empty({B, 1, H, W});   // (B, 1, H, W)
  float* images = batch.images.data_ptr<float>();
  float* masks = batch.masks.data_ptr<float>();
  const auto image_numel = static_cast<size_t>(3 * H * W), mask_numel = static_cast<size_t>(H * W);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t index = order[static_cast<size_t>(begin + b)];
    const Example ex = dataset_.get(index, options_.augment, options_.seed, epoch);
    const Tensor image = ex.image.contiguous(), mask = ex.mask.contiguous();
    if (image.shape() != Shape{3, H, W} || mask.shape() != Shape{1, H, W})
      throw std::logic_error("BatchLoader: sample " + std::to_string(index) + " is image " + shape_str(image.shape()) +
                             ", mask " + shape_str(mask.shape()) + "; expected " + shape_str({3, H, W}) + ", " +
                             shape_str({1, H, W}));
    std::memcpy(images + static_cast<size_t>(b) * image_numel, image.data_ptr<float>(), image_numel * sizeof(float));
    std::memcpy(masks + static_cast<size_t>(b) * mask_numel, mask.data_ptr<float>(), mask_numel * sizeof(float));
    batch.indices.push_back(index);
  }
  return batch;
}

// ---- the device stager --------------------------------------------------------------------------

struct DeviceStager::Ring {
#if TL_WITH_CUDA
  std::vector<std::unique_ptr<cuda::PinnedBuffer>> slots;
  size_t next = 0;
#endif
};

DeviceStager::DeviceStager(Device device, int64_t slots) : device_(device), ring_(std::make_unique<Ring>()) {
  if (slots < 1) throw std::invalid_argument("DeviceStager: slots must be >= 1, got " + std::to_string(slots));
  if (device.is_cpu()) return;
#if TL_WITH_CUDA
  cuda::check_device(device.index);
  ring_->slots.resize(static_cast<size_t>(slots));
#else
  throw std::runtime_error("DeviceStager: cannot stage batches on " + device.str() + ": this build has no CUDA backend");
#endif
}

DeviceStager::~DeviceStager() = default;  // each PinnedBuffer waits for its own pending copy

Batch DeviceStager::to_device(const Batch& host) {
  if (device_.is_cpu()) {
    Batch out = host;
    if (!out.images.device().is_cpu() || !out.masks.device().is_cpu())
      throw std::invalid_argument("DeviceStager: expected a batch on the CPU, got images on " + out.images.device().str());
    return out;
  }
  if (!host.images.device().is_cpu() || !host.masks.device().is_cpu())
    throw std::invalid_argument("DeviceStager: expected a batch on the CPU, got images on " + host.images.device().str() +
                                ", masks on " + host.masks.device().str());
  Batch out;
  out.indices = host.indices;
#if TL_WITH_CUDA
  const Tensor images = host.images.contiguous(), masks = host.masks.contiguous();
  const auto image_bytes = static_cast<size_t>(images.numel()) * dtype_size(images.dtype());
  const auto mask_bytes = static_cast<size_t>(masks.numel()) * dtype_size(masks.dtype());
  auto& slot = ring_->slots[ring_->next];
  ring_->next = (ring_->next + 1) % ring_->slots.size();
  if (!slot || slot->nbytes() < image_bytes + mask_bytes) {
    slot.reset();  // waits for its pending copy before the old buffer is freed
    slot = std::make_unique<cuda::PinnedBuffer>(image_bytes + mask_bytes, device_.index);
  }
  slot->wait_copied();  // the copy queued out of this slot `slots` batches ago has read it
  auto* staged = static_cast<char*>(slot->data());
  std::memcpy(staged, images.raw_data(), image_bytes);
  std::memcpy(staged + image_bytes, masks.raw_data(), mask_bytes);
  out.images = empty(images.shape(), TensorOptions(images.dtype()).with_device(device_));
  out.masks = empty(masks.shape(), TensorOptions(masks.dtype()).with_device(device_));
  slot->copy_to_device_async(0, out.images.raw_data(), image_bytes);
  slot->copy_to_device_async(image_bytes, out.masks.raw_data(), mask_bytes);
#endif
  return out;
}

}  // namespace tl::data
