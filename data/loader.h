#pragma once
// The batch loader: worker threads assemble batches ahead of the training loop (prefetch), with a
// seeded shuffle per epoch. The batches are a pure function of (dataset, options, epoch): the same
// whatever the number of workers, because each batch's sample list and each sample's augmentation
// are fixed before any worker touches it, and batches are handed out in order.
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "data/dataset.h"

namespace tl::data {

struct LoaderOptions {
  int64_t batch_size = 4;
  bool shuffle = true;
  bool drop_last = false;   // leave out the last, smaller batch
  int64_t workers = 2;      // 0 = assemble each batch in next(), on the calling thread
  int64_t prefetch = 2;     // batches ready ahead of the consumer, per loader (>= 1)
  uint64_t seed = 20;       // shuffle and augmentation seed
  AugmentOptions augment{}; // applied per sample; augment.enabled = false for validation
  // Data-parallel training: this process takes shard `rank` of `num_replicas` of each epoch's order
  // (shard_order); pad_shards makes every shard equally long.
  int64_t num_replicas = 1, rank = 0;
  bool pad_shards = true;
};

struct Batch {
  Tensor images;                 // (B, 3, H, W) float32 in [0, 1]
  Tensor masks;                  // (B, 1, H, W) float32 in {0, 1}
  std::vector<int64_t> indices;  // dataset indices, in batch order
};

// The order of epoch `epoch`: 0..n-1 when not shuffling, otherwise a Fisher-Yates permutation drawn
// with Philox counters 1 << 62 | epoch << 32 | i under key `seed` (tensor/random.h), in the style of
// split_by_car: for i = n-1 down to 1, swap order[i] with order[floor(to_unit(o[0], o[1]) * (i + 1))].
// n must be in [0, 2^32] and epoch in [0, 2^30) (std::invalid_argument otherwise).
std::vector<int64_t> epoch_order(int64_t n, bool shuffle, uint64_t seed, int64_t epoch);

// Shard `rank` of `num_replicas` of an epoch's order, as torch's DistributedSampler: every rank
// computes the same order, then takes order[rank], order[rank + R], order[rank + 2R], ... With `pad`
// the order is first extended by repeating its start up to a multiple of R, so that every shard has
// ceil(n / R) samples (and each rank runs the same number of steps); without it (validation) the
// shards partition the order exactly. Throws std::invalid_argument unless 0 <= rank < num_replicas.
std::vector<int64_t> shard_order(const std::vector<int64_t>& order, int64_t num_replicas, int64_t rank, bool pad);

class BatchLoader {
 public:
  // Throws std::invalid_argument on batch_size < 1, workers < 0 or prefetch < 1. The dataset must
  // outlive the loader.
  BatchLoader(const SegmentationDataset& dataset, const LoaderOptions& options);
  ~BatchLoader();  // stops and joins the workers
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  int64_t batches_per_epoch() const;

  // Starts epoch `epoch` (any previous one is abandoned), beginning at batch `first_batch` (to
  // resume in the middle of an epoch). The workers start filling the prefetch queue at once.
  // Throws std::invalid_argument unless 0 <= first_batch <= batches_per_epoch() and the epoch is in
  // epoch_order's range.
  void start_epoch(int64_t epoch, int64_t first_batch = 0);

  // The next batch of the current epoch, in order; false at the end of the epoch. An exception
  // thrown while assembling a batch is rethrown here (that batch counts as consumed). Throws
  // std::logic_error before the first start_epoch.
  bool next(Batch& batch);

 private:
  // A finished batch job: the batch, or the exception that assembling it threw.
  struct Done {
    Batch batch;
    std::exception_ptr error;
  };

  Batch assemble(const std::vector<int64_t>& order, int64_t epoch, int64_t k) const;  // batch k of `order`
  void work();  // a worker thread's loop

  const SegmentationDataset& dataset_;
  LoaderOptions options_;
  std::vector<std::thread> workers_;

  // Everything below is guarded by mu_. Jobs next_out_ .. next_job_-1 are in flight or in ready_;
  // workers take a job only while next_job_ < next_out_ + prefetch, which bounds the memory.
  // start_epoch bumps generation_, so a job of an abandoned epoch is dropped when it finishes.
  std::mutex mu_;
  std::condition_variable work_cv_;   // workers: a job may be available, or stop_
  std::condition_variable ready_cv_;  // the consumer: a batch arrived in ready_
  bool stop_ = false, started_ = false;
  uint64_t generation_ = 0;
  int64_t epoch_ = 0, next_job_ = 0, next_out_ = 0, end_ = 0;
  std::shared_ptr<const std::vector<int64_t>> order_;  // shared with workers still finishing old jobs
  std::map<int64_t, Done> ready_;                      // batch number -> finished job
};

// Puts loader batches on the device the model runs on.
//
// On the CPU, to_device hands the batch through (same tensors). On a CUDA device each batch goes
// through a ring of `slots` pinned host buffers:
//   1. the next slot in the ring is taken; its event says whether the copy queued out of it `slots`
//      batches ago has finished (it always has in a training loop, which reads the loss back every
//      step; the wait is there so that the buffer is never overwritten while a DMA still reads it);
//   2. images and masks are copied (memcpy) into the slot, one after the other;
//   3. two asynchronous copies into fresh device tensors are queued on the device's stream, then the
//      slot's event; to_device returns at once.
// Every op runs on that same stream, so the forward that reads the batch is ordered after its copy
// without a host wait, and the host is free while the copy and the compute run. Overlap comes from
// that: the loader's workers assemble the next batches on their threads while the GPU computes, and
// the host stages batch k+1 (steps 1-3) while the GPU still runs the backward and the optimizer step
// of batch k. Pinned memory is what makes the copy a true asynchronous DMA (from pageable memory the
// driver first copies through its own staging buffer, synchronously). Slots are allocated on first use
// at the first batch's size and grow if a later batch is larger; nothing is allocated in a steady state.
class DeviceStager {
 public:
  // Throws when `device` is a CUDA device and the build has no CUDA backend or the device is absent,
  // and for slots < 1.
  explicit DeviceStager(Device device, int64_t slots = 2);
  ~DeviceStager();  // waits for copies still reading the pinned buffers
  DeviceStager(const DeviceStager&) = delete;
  DeviceStager& operator=(const DeviceStager&) = delete;

  Device device() const { return device_; }
  // The batch with images and masks on device() (the same shapes and dtypes; contiguous), indices
  // copied. The host batch may be reused or freed as soon as this returns.
  Batch to_device(const Batch& host);

 private:
  struct Ring;  // the pinned buffers (CUDA builds), defined in loader.cpp
  Device device_;
  std::unique_ptr<Ring> ring_;
};

}  // namespace tl::data
