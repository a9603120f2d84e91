// The NCCL backend (dist/nccl.h). Compiled only when the CUDA backend is built and NCCL is found.
#include "dist/nccl.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <stdexcept>
#include <string>

#include "cuda/check.h"
#include "cuda/runtime.h"

#define TL_NCCL_CHECK(call)                                                                             \
  do {                                                                                                  \
    ncclResult_t tl_r_ = (call);                                                                        \
    if (tl_r_ != ncclSuccess)                                                                           \
      throw std::runtime_error(std::string(#call) + " failed at " + __FILE__ + ":" + std::to_string(__LINE__) + \
                               ": " + ncclGetErrorString(tl_r_));                                       \
  } while (0)

namespace tl::dist {

bool nccl_available() { return true; }

struct NcclCommunicator::Impl {
  int rank = 0, size = 1, device = 0;
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;    // the collectives' own stream
  cudaEvent_t compute_done = nullptr;  // A: the compute stream's work so far
};

namespace {

ncclDataType_t nccl_type(const Tensor& t, const char* op) {
  if (t.dtype() == kFloat32) return ncclFloat32;
  if (t.dtype() == kFloat64) return ncclFloat64;
  throw std::invalid_argument(std::string(op) + ": dtype " + dtype_name(t.dtype()) + " is not supported");
}

void check_tensor(const Tensor& t, int device, const char* op) {
  if (!t.defined() || !t.device().is_cuda() || t.device().index != device || !t.is_contiguous())
    throw std::invalid_argument(std::string(op) + ": expected a contiguous tensor on cuda:" + std::to_string(device) + ", got " +
                                (t.defined() ? shape_str(t.shape()) + " on " + t.device().str() : std::string("none")));
}

// B: a collective's end, which the compute stream waits for.
class NcclWork final : public Work {
 public:
  NcclWork(int device, cudaEvent_t done) : device_(device), done_(done) {}
  ~NcclWork() override {
    if (done_) cudaEventDestroy(done_);
  }
  void wait() override {
    cuda::DeviceGuard guard(device_);
    TL_CUDA_CHECK(cudaStreamWaitEvent(cuda::stream(device_), done_, 0));
    finished = std::chrono::steady_clock::now();  // queued, not completed: the host does not wait
  }

 private:
  int device_;
  cudaEvent_t done_;
};

}  // namespace

NcclCommunicator::NcclCommunicator(Communicator& host, int device) : impl_(std::make_unique<Impl>()) {
  cuda::check_device(device);
  impl_->rank = host.rank();
  impl_->size = host.size();
  impl_->device = device;
  ncclUniqueId id;
  if (host.rank() == 0) TL_NCCL_CHECK(ncclGetUniqueId(&id));
  host.broadcast(&id, sizeof id, 0);
  cuda::DeviceGuard guard(device);
  TL_CUDA_CHECK(cudaStreamCreateWithFlags(&impl_->stream, cudaStreamNonBlocking));
  TL_CUDA_CHECK(cudaEventCreateWithFlags(&impl_->compute_done, cudaEventDisableTiming));
  TL_NCCL_CHECK(ncclCommInitRank(&impl_->comm, host.size(), id, host.rank()));
}

NcclCommunicator::~NcclCommunicator() {
  cuda::DeviceGuard guard(impl_->device);
  if (impl_->comm) ncclCommDestroy(impl_->comm);
  if (impl_->compute_done) cudaEventDestroy(impl_->compute_done);
  if (impl_->stream) cudaStreamDestroy(impl_->stream);
}

int NcclCommunicator::rank() const { return impl_->rank; }
int NcclCommunicator::size() const { return impl_->size; }
int NcclCommunicator::device() const { return impl_->device; }

std::unique_ptr<Work> NcclCommunicator::all_reduce_async(const Tensor& t) {
  check_tensor(t, impl_->device, "all_reduce_async");
  const ncclDataType_t type = nccl_type(t, "all_reduce_async");
  cuda::DeviceGuard guard(impl_->device);
  auto started = std::chrono::steady_clock::now();
  TL_CUDA_CHECK(cudaEventRecord(impl_->compute_done, cuda::stream(impl_->device)));  // A
  TL_CUDA_CHECK(cudaStreamWaitEvent(impl_->stream, impl_->compute_done, 0));
  TL_NCCL_CHECK(ncclAllReduce(t.raw_data(), t.raw_data(), static_cast<size_t>(t.numel()), type, ncclSum, impl_->comm,
                              impl_->stream));
  cudaEvent_t done = nullptr;
  TL_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  auto work = std::make_unique<NcclWork>(impl_->device, done);
  TL_CUDA_CHECK(cudaEventRecord(done, impl_->stream));  // B
  work->started = started;
  return work;
}

void NcclCommunicator::all_reduce_sum_(const Tensor& t) { all_reduce_async(t)->wait(); }

void NcclCommunicator::broadcast_(const Tensor& t, int root) {
  check_tensor(t, impl_->device, "broadcast_");
  if (root < 0 || root >= impl_->size)
    throw std::invalid_argument("broadcast_: root " + std::to_string(root) + " of a world of " + std::to_string(impl_->size));
  cuda::DeviceGuard guard(impl_->device);
  TL_CUDA_CHECK(cudaEventRecord(impl_->compute_done, cuda::stream(impl_->device)));
  TL_CUDA_CHECK(cudaStreamWaitEvent(impl_->stream, impl_->compute_done, 0));
  TL_NCCL_CHECK(ncclBroadcast(t.raw_data(), t.raw_data(), static_cast<size_t>(t.numel()) * dtype_size(t.dtype()), ncclUint8,
                              root, impl_->comm, impl_->stream));
  cudaEvent_t done = nullptr;
  TL_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  NcclWork work(impl_->device, done);
  TL_CUDA_CHECK(cudaEventRecord(done, impl_->stream));
  work.wait();
}

void NcclCommunicator::synchronize() {
  cuda::DeviceGuard guard(impl_->device);
  TL_CUDA_CHECK(cudaStreamSynchronize(impl_->stream));
}

}  // namespace tl::dist
