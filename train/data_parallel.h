#pragma once
// The trainer's side of data-parallel training (dist/): what one step, one validation and one
// checkpoint need from the other ranks. With one process every call is a pass-through (no MPI).
//
// Under `mpirun -np N` every rank builds the same model, takes its shard of each epoch (the loader's
// shard_order) with --batch-size images per step, and:
//   - starts from rank 0's parameters and buffers (prepare);
//   - averages the gradients over the ranks in buckets during backward (dist::GradReducer);
//   - with --sync-bn normalizes each batch norm over the global batch (dist::SyncBatchNorm); without,
//     each rank normalizes over its own batch and takes rank 0's running statistics before every
//     forward (sync_buffers), as DDP's default;
//   - sums the metrics of its batches with the other ranks' (reduce), so each epoch's train and
//     validation numbers are those of the whole set;
//   - stops where every rank stops (any_stop), so that no rank waits in a collective for one gone.
// Rank 0 alone writes the run folder and the console.
#include <memory>
#include <string>

#include "dist/communicator.h"
#include "dist/ddp.h"
#include "nn/module.h"
#include "train/metrics.h"

namespace tl::train {

class DataParallel {
 public:
  DataParallel(dist::Communicator& comm, bool sync_bn);

  int rank() const { return comm_.rank(); }
  int size() const { return comm_.size(); }
  bool writer() const { return comm_.rank() == 0; }  // the rank that writes files and the console

  // After the model is built (and restored): rank 0's state everywhere, synchronized batch norm when
  // asked, and the gradient buckets. Throws for a model that is not on the CPU when size() > 1.
  void prepare(nn::Module& model);
  // Before a forward: rank 0's running statistics, when batch norm is per rank.
  void sync_buffers(nn::Module& model);
  // loss.backward(), with the gradients averaged over the ranks.
  void backward(const Tensor& loss);
  // The mean of `value` over the ranks.
  double mean(double value);
  // Whether any rank's `stop` is true.
  bool any_stop(bool stop);
  // Adds every rank's sums into `m` (the same result on every rank).
  void reduce(SegmentationMetrics& m);
  void barrier();
  // For the log: ", 2 ranks x batch 4 = global batch 8, synchronized batch norm"; empty for one process.
  std::string describe(int64_t batch_size) const;

 private:
  dist::Communicator& comm_;
  bool sync_bn_;
  std::unique_ptr<dist::GradReducer> reducer_;
};

}  // namespace tl::train
