#pragma once
// CUDA runtime entry points used by the tensor layer: devices, the one stream per device, the cuBLAS
// handle per device. Plain C++ declarations: no CUDA headers leak into the rest of the engine. The
// handle types are the CUDA ones, declared opaquely: in a .cu file `stream(d)` is a cudaStream_t and
// `cublas_handle(d)` a cublasHandle_t, with no cast.
#include <cstddef>

struct CUstream_st;    // cudaStream_t is CUstream_st*
struct cublasContext;  // cublasHandle_t is cublasContext*

namespace tl::cuda {

int device_count();           // 0 when there is no GPU or no driver (counted once)
const char* device_count_error();  // CUDA's error name when counting failed (no driver...), else ""
void check_device(int device);  // throws "cuda: device cuda:N is not available (K CUDA devices)"

// The stream all work on `device` is queued on, created on first use. Blocking with respect to the
// legacy default stream, so a stray synchronous CUDA call is still ordered with our work.
CUstream_st* stream(int device);
// The cuBLAS handle of `device`, created on first use and bound to stream(device).
cublasContext* cublas_handle(int device);
// Waits for everything queued on stream(device).
void synchronize(int device);

// Makes `device` current for its lifetime; restores the previous one on exit.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
};

}  // namespace tl::cuda
