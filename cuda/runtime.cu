#include "cuda/check.h"
#include "cuda/runtime.h"

namespace tl::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

void* device_malloc(size_t nbytes, int device) {
  if (device < 0 || device >= device_count())
    throw std::runtime_error("cuda: device cuda:" + std::to_string(device) + " is not available (" +
                             std::to_string(device_count()) + " CUDA devices)");
  TL_CUDA_CHECK(cudaSetDevice(device));
  void* p = nullptr;
  if (nbytes) TL_CUDA_CHECK(cudaMalloc(&p, nbytes));
  return p;
}

void device_free(void* p, int device) {
  if (!p) return;
  cudaSetDevice(device);
  cudaFree(p);  // never throws from a destructor path
}

}  // namespace tl::cuda
