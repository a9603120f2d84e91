#pragma once
// Data-parallel gradients, as PyTorch's DistributedDataParallel: every rank holds the whole model
// and runs its own share of the batch; after backward each parameter's gradient is the average of
// the ranks' gradients, so the optimizer step is the same everywhere and the ranks stay identical.
//
// The parameters are grouped into buckets of about `bucket_mb` megabytes in reverse registration
// order (the order backward produces them in a chain of layers). After the first backward the buckets
// are rebuilt in the order that backward actually finished the gradients, rank 0's order on every
// rank (as DDP's rebuilt buckets): a model that registers its modules in another order than it runs
// them (the UNet registers its decoder first) then starts its all-reduces as early as it can. During
// backward the autograd engine's grad-ready hook
// (autograd/grad_hooks.h) copies each final gradient into its bucket's flat buffer; when a bucket is
// complete, and every bucket before it has been started, its all-reduce starts on the communicator's
// communication thread while backward goes on. backward() returns when every bucket has been
// reduced and written back, divided by the world size, into the parameters' .grad.
//
// CPU float32 parameters (the MPI backend). A parameter no gradient reached on this rank
// contributes zeros; after backward every parameter has a gradient.
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "dist/communicator.h"
#include "nn/module.h"

namespace tl::dist {

// Copies rank 0's parameters and buffers into every rank's module (through load_state_dict, so a
// module's host-side copies of its state follow).
void broadcast_module(Communicator& comm, nn::Module& module, int root = 0);
// Broadcasts the module's floating-point buffers (BatchNorm's running statistics) from `root`, in
// place, in one message: DDP's buffer broadcast before each forward when batch norm is per rank.
void broadcast_buffers(Communicator& comm, nn::Module& module, int root = 0);

struct BucketTiming {
  size_t params = 0;
  size_t bytes = 0;
  double ready_ms = 0;     // since backward started: its last gradient arrived and it was queued
  double started_ms = 0;   // its all-reduce began on the communication thread
  double finished_ms = 0;  // and ended
};

struct StepTiming {
  double backward_ms = 0;  // loss.backward() (local compute, with the overlapped communication)
  double wait_ms = 0;      // after that: waiting for the all-reduces still running, and the copy back
  std::vector<BucketTiming> buckets;
};

class GradReducer {
 public:
  // `params` in registration order (Module::named_parameters()). Throws for a parameter that is not a
  // CPU float32 tensor.
  GradReducer(Communicator& comm, const nn::NamedTensors& params, double bucket_mb = 25);

  // loss.backward() with the gradient all-reduce overlapped; returns with averaged gradients.
  void backward(const Tensor& loss);

  size_t num_buckets() const { return buckets_.size(); }
  bool rebuilt() const { return rebuilt_; }  // the buckets follow the first backward's order
  const std::vector<std::vector<size_t>>& bucket_params() const { return bucket_params_; }  // indices into params
  const StepTiming& last_step() const { return timing_; }

 private:
  struct Bucket {
    std::vector<float> flat;     // the bucket's gradients, back to back
    size_t pending = 0;          // gradients still to arrive in this backward
    std::unique_ptr<Work> work;  // its all-reduce, once started
  };
  void on_grad_ready(TensorImpl& leaf);
  void mark_ready(size_t param);
  void launch_ready_buckets();  // starts, in order, every bucket that is complete
  void assign_buckets(const std::vector<size_t>& order);  // parameters in bucket order
  void rebuild_buckets();       // after the first backward: its order, rank 0's everywhere

  Communicator& comm_;
  std::vector<Tensor> params_;
  std::vector<size_t> bucket_of_, offset_of_;  // per parameter
  std::vector<bool> ready_;                    // per parameter, this backward
  std::unordered_map<const TensorImpl*, size_t> index_;
  std::vector<Bucket> buckets_;
  std::vector<std::vector<size_t>> bucket_params_;
  size_t next_launch_ = 0;
  size_t cap_bytes_ = 0;
  std::vector<size_t> ready_order_;  // the first backward's order of final gradients
  bool rebuilt_ = false;
  std::chrono::steady_clock::time_point t0_;
  StepTiming timing_;
};

}  // namespace tl::dist
