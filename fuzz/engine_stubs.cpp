// The engine functions that tensor/tensor.cpp and the writers reference for copies, fills and
// device moves. The readers under test never reach them (they only create contiguous CPU tensors and fill their
// bytes); reaching one is a finding, so each stops the run loudly. Linking the real ones would pull
// in the kernels, Eigen and autograd: minutes of sanitized compilation for code the readers do not run.
#include <cstdio>
#include <cstdlib>

#include "tensor/kernels.h"
#include "tensor/tensor.h"

namespace {
[[noreturn]] void unreachable(const char* what) {
  std::fprintf(stderr, "fuzz: the reader reached %s, which the fuzz build does not link\n", what);
  std::abort();
}
}  // namespace

namespace tl {
namespace kernels {
void copy_(const Tensor&, const Tensor&) { unreachable("kernels::copy_"); }
void fill_(const Tensor&, double) { unreachable("kernels::fill_"); }
}  // namespace kernels
Tensor Tensor::to(Device) const { unreachable("Tensor::to"); }
Tensor Tensor::detach() const { unreachable("Tensor::detach"); }
Tensor Tensor::contiguous() const { unreachable("Tensor::contiguous"); }
}  // namespace tl
