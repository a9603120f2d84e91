#include <mutex>
#include <vector>

#include "cuda/check.h"
#include "cuda/launch.cuh"
#include "cuda/runtime.h"

namespace tl::cuda {

namespace {

struct DeviceCount {
  int n = 0;
  const char* error = "";  // why there are none, when cudaGetDeviceCount failed
};

const DeviceCount& counted() {
  static const DeviceCount c = [] {
    DeviceCount r;
    const cudaError_t err = cudaGetDeviceCount(&r.n);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();  // clear the sticky "no device" / "no driver" error
      r.n = 0;
      r.error = cudaGetErrorName(err);
    }
    return r;
  }();
  return c;
}

}  // namespace

int device_count() { return counted().n; }
const char* device_count_error() { return counted().error; }

void check_device(int device) {
  const int n = device_count();
  if (device < 0 || device >= n)
    throw std::runtime_error("cuda: device cuda:" + std::to_string(device) + " is not available (" +
                             std::to_string(n) + " CUDA device" + (n == 1 ? "" : "s") + ")");
}

DeviceGuard::DeviceGuard(int device) {
  TL_CUDA_CHECK(cudaGetDevice(&prev_));
  if (prev_ != device) TL_CUDA_CHECK(cudaSetDevice(device));
}

DeviceGuard::~DeviceGuard() {
  int now = -1;
  if (cudaGetDevice(&now) == cudaSuccess && now != prev_) (void)cudaSetDevice(prev_);  // never throws
}

namespace {

// The per-device streams and cuBLAS handles, created on first use and kept for the process's life
// (destroying them during static destruction would race the driver's own teardown).
struct PerDevice {
  std::mutex mu;
  std::vector<cudaStream_t> streams;
  std::vector<cublasHandle_t> handles;
};

PerDevice& per_device() {
  static PerDevice* p = new PerDevice();
  return *p;
}

}  // namespace

cudaStream_t stream(int device) {
  check_device(device);
  PerDevice& pd = per_device();
  std::lock_guard<std::mutex> lock(pd.mu);
  if (pd.streams.empty()) pd.streams.assign(static_cast<size_t>(device_count()), nullptr);
  cudaStream_t& s = pd.streams[static_cast<size_t>(device)];
  if (!s) {
    DeviceGuard guard(device);
    TL_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamDefault));
  }
  return s;
}

cublasHandle_t cublas_handle(int device) {
  cudaStream_t s = stream(device);  // outside the lock below: stream() takes it too
  PerDevice& pd = per_device();
  std::lock_guard<std::mutex> lock(pd.mu);
  if (pd.handles.empty()) pd.handles.assign(static_cast<size_t>(device_count()), nullptr);
  cublasHandle_t& h = pd.handles[static_cast<size_t>(device)];
  if (!h) {
    DeviceGuard guard(device);
    cublasHandle_t created = nullptr;
    TL_CUBLAS_CHECK(cublasCreate(&created));
    TL_CUBLAS_CHECK(cublasSetStream(created, s));
    h = created;
  }
  return h;
}

void synchronize(int device) {
  cudaStream_t s = stream(device);
  DeviceGuard guard(device);
  TL_CUDA_CHECK(cudaStreamSynchronize(s));
}

int sm_count(int device) {
  check_device(device);
  static std::mutex mu;
  static std::vector<int> counts;
  std::lock_guard<std::mutex> lock(mu);
  if (counts.empty()) counts.assign(static_cast<size_t>(device_count()), 0);
  int& c = counts[static_cast<size_t>(device)];
  if (c == 0) TL_CUDA_CHECK(cudaDeviceGetAttribute(&c, cudaDevAttrMultiProcessorCount, device));
  return c;
}

}  // namespace tl::cuda
