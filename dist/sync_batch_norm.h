#pragma once
// Batch norm over the global batch, as torch.nn.SyncBatchNorm: in training mode each BatchNorm2d's
// statistics are those of every rank's batch together, and its backward all-reduces the two
// per-channel gradient sums, so that N ranks with batch B compute what one process computes with
// batch N*B (up to float32 summation order).
//
// Forward, per channel c over the M = sum of the ranks' N*H*W values:
//   1. all-reduce (sum_x, M): mean = sum_x / M
//   2. all-reduce sum((x - mean)^2): var = that / M (biased, normalizes the batch; the running
//      variance gets the unbiased var * M / (M - 1), as PyTorch). Two passes rather than one of
//      sum and sum of squares, for the reason the CPU kernel gives: E[x^2] - E[x]^2 cancels.
//   3. y = act(w (x - mean) / sqrt(var + eps) + b), the kernel's evaluation-mode formula with these
//      statistics.
// Backward: the local sums sum(g) and sum(g xhat) (g the gradient at the pre-activation) are
// all-reduced; dx = w invstd (g - sum(g) / M - xhat sum(g xhat) / M) with the global sums, while
// dweight and dbias stay local (the gradient reducer averages them with the other parameters).
// CPU float32 tensors; every rank must run the same layers in the same order.
#include "dist/communicator.h"
#include "nn/layers.h"

namespace tl::dist {

class SyncBatchNorm final : public nn::BatchNormTrainingOp {
 public:
  explicit SyncBatchNorm(Communicator& comm) : comm_(comm) {}
  Tensor forward(const nn::BatchNorm2d& bn, const Tensor& x, Activation act) override;

 private:
  Communicator& comm_;
};

// Makes every BatchNorm2d in `module` synchronize its training statistics over `comm`; returns how
// many it converted (torch.nn.SyncBatchNorm.convert_sync_batchnorm).
int convert_sync_batchnorm(nn::Module& module, Communicator& comm);

}  // namespace tl::dist
