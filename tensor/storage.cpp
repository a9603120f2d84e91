#include "tensor/storage.h"

#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>

#if TL_WITH_CUDA
#include "cuda/runtime.h"
#endif

namespace tl {

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  if (device.is_cpu()) {
    size_t rounded = (nbytes + 63) / 64 * 64;
    data_ = rounded ? std::aligned_alloc(64, rounded) : nullptr;
    if (rounded && !data_) throw std::bad_alloc();
    return;
  }
#if TL_WITH_CUDA
  data_ = cuda::device_malloc(nbytes, device.index);
#else
  throw std::runtime_error("Storage: cannot allocate on " + device.str() +
                           ": this build has no CUDA backend (configure with nvcc present)");
#endif
}

Storage::~Storage() {
  if (device_.is_cpu()) {
    std::free(data_);
    return;
  }
#if TL_WITH_CUDA
  cuda::device_free(data_, device_.index);
#endif
}

}  // namespace tl
