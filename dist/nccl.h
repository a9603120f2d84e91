#pragma once
// NCCL collectives on CUDA tensors, one process per GPU (llm.c's layout): the NCCL communicator is
// bootstrapped through the host communicator (rank 0's ncclUniqueId broadcast over MPI), and its
// collectives run on a stream of their own, ordered against the device's compute stream
// (cuda/runtime.h) with events, so the host never waits for them:
//
//   compute stream:  ... backward kernels ... [record A]                 [wait B] optimizer step ...
//   NCCL stream:                              [wait A] ncclAllReduce [record B]
//
// Built when the CUDA backend is and the toolkit has NCCL (nccl.h, libnccl); nccl_available() says so.
// Tested at world size 1 on one GPU (the code path); several GPUs were not available to test on.
#include <memory>

#include "dist/communicator.h"

namespace tl::dist {

bool nccl_available();

class NcclCommunicator {
 public:
  // On device cuda:`device` (the local rank, usually); every rank of `host` must construct one.
  // Throws when the build has no NCCL or the device is absent.
  NcclCommunicator(Communicator& host, int device);
  ~NcclCommunicator();
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const;
  int size() const;
  int device() const;

  // In place on contiguous CUDA float32/float64 tensors of this device; queued, ordered as above.
  void all_reduce_sum_(const Tensor& t);
  void broadcast_(const Tensor& t, int root);
  // The same all-reduce, with a Work whose wait() orders the compute stream after it (no host wait).
  std::unique_ptr<Work> all_reduce_async(const Tensor& t);
  // Blocks the host until everything queued on the NCCL stream has finished.
  void synchronize();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tl::dist
