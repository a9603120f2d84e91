// A build without NCCL (no CUDA backend, or a toolkit without nccl.h): the NCCL communicator exists
// as a type and refuses to start, so that callers need no #ifdef.
#include <stdexcept>

#include "dist/nccl.h"

namespace tl::dist {

bool nccl_available() { return false; }

struct NcclCommunicator::Impl {};

namespace {
[[noreturn]] void absent() {
  throw std::runtime_error("NCCL: this build has no NCCL backend (it needs the CUDA backend and NCCL's nccl.h and libnccl)");
}
}  // namespace

NcclCommunicator::NcclCommunicator(Communicator&, int) { absent(); }
NcclCommunicator::~NcclCommunicator() = default;
int NcclCommunicator::rank() const { absent(); }
int NcclCommunicator::size() const { absent(); }
int NcclCommunicator::device() const { absent(); }
void NcclCommunicator::all_reduce_sum_(const Tensor&) { absent(); }
void NcclCommunicator::broadcast_(const Tensor&, int) { absent(); }
std::unique_ptr<Work> NcclCommunicator::all_reduce_async(const Tensor&) { absent(); }
void NcclCommunicator::synchronize() { absent(); }

}  // namespace tl::dist
