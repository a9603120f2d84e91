// Host<->device and device<->device byte copies, and the strided (broadcasting, casting) copy kernel.
#include <climits>
#include <vector>

#include "cuda/check.h"
#include "cuda/copy.h"
#include "cuda/runtime.h"

namespace tl::cuda {

void copy_host_to_device(void* dst, const void* src, size_t nbytes, int device) {
  if (nbytes == 0) return;
  cudaStream_t s = stream(device);
  DeviceGuard guard(device);
  TL_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, s));
}

void copy_device_to_host(void* dst, const void* src, size_t nbytes, int device) {
  if (nbytes == 0) return;
  cudaStream_t s = stream(device);
  DeviceGuard guard(device);
  TL_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, s));
  TL_CUDA_CHECK(cudaStreamSynchronize(s));
}

void copy_device_to_device(void* dst, int dst_device, const void* src, int src_device, size_t nbytes) {
  if (nbytes == 0) return;
  cudaStream_t s = stream(dst_device);
  if (src_device == dst_device) {
    DeviceGuard guard(dst_device);
    TL_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, s));
    return;
  }
  synchronize(src_device);  // the source's producers ran on the source device's stream
  DeviceGuard guard(dst_device);
  TL_CUDA_CHECK(cudaMemcpyPeerAsync(dst, dst_device, src, src_device, nbytes, s));
}

namespace {

struct StridedLayout {  // passed by value to the kernel (200 bytes of parameters)
  int ndim;
  int64_t sizes[kMaxCopyDims];
  int64_t dst_strides[kMaxCopyDims];
  int64_t src_strides[kMaxCopyDims];
};

template <typename D, typename S>
__global__ void strided_copy_kernel(D* dst, const S* src, int64_t n, StridedLayout l) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  int64_t rest = i, od = 0, os = 0;
#pragma unroll
  for (int d = kMaxCopyDims - 1; d >= 0; --d) {
    if (d >= l.ndim) continue;
    const int64_t c = rest % l.sizes[d];
    rest /= l.sizes[d];
    od += c * l.dst_strides[d];
    os += c * l.src_strides[d];
  }
  dst[od] = static_cast<D>(src[os]);
}

// Drops size-1 dims and merges neighbours that are contiguous in both operands, so that most views
// fit in kMaxCopyDims and the kernel divides less. Returns the number of elements.
int64_t coalesce(const int64_t* sizes, const int64_t* dst_st, const int64_t* src_st, int ndim, std::vector<int64_t>& sz,
                 std::vector<int64_t>& ds, std::vector<int64_t>& ss) {
  int64_t n = 1;
  for (int d = 0; d < ndim; ++d) {
    n *= sizes[d];
    if (sizes[d] == 1) continue;
    if (!sz.empty() && ds.back() == dst_st[d] * sizes[d] && ss.back() == src_st[d] * sizes[d]) {
      sz.back() *= sizes[d];
      ds.back() = dst_st[d];
      ss.back() = src_st[d];
      continue;
    }
    sz.push_back(sizes[d]);
    ds.push_back(dst_st[d]);
    ss.push_back(src_st[d]);
  }
  return n;
}

}  // namespace

void copy_strided(void* dst, DType dst_dtype, const int64_t* dst_strides, const void* src, DType src_dtype,
                  const int64_t* src_strides, const int64_t* sizes, int ndim, int device) {
  std::vector<int64_t> sz, ds, ss;
  const int64_t n = coalesce(sizes, dst_strides, src_strides, ndim, sz, ds, ss);
  if (n == 0) return;
  if (sz.size() > static_cast<size_t>(kMaxCopyDims))
    throw std::runtime_error("copy_: the CUDA strided copy handles at most " + std::to_string(kMaxCopyDims) +
                             " non-mergeable dims, got " + std::to_string(sz.size()));
  StridedLayout l{};
  l.ndim = static_cast<int>(sz.size());
  for (size_t d = 0; d < sz.size(); ++d) {
    l.sizes[d] = sz[d];
    l.dst_strides[d] = ds[d];
    l.src_strides[d] = ss[d];
  }
  constexpr int kThreads = 256;
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  if (blocks > INT_MAX)
    throw std::runtime_error("copy_: " + std::to_string(n) + " elements is more than one CUDA launch covers");
  cudaStream_t s = stream(device);
  DeviceGuard guard(device);
  dispatch_all(dst_dtype, [&]<typename D>() {
    dispatch_all(src_dtype, [&]<typename S>() {
      strided_copy_kernel<D, S><<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(
          static_cast<D*>(dst), static_cast<const S*>(src), n, l);
    });
  });
  TL_CUDA_CHECK(cudaGetLastError());
}

}  // namespace tl::cuda
