// Host<->device and device<->device byte copies, and the strided (broadcasting, casting) copy kernel.
#include "cuda/check.h"
#include "cuda/copy.h"
#include "cuda/launch.cuh"
#include "cuda/runtime.h"

namespace tl::cuda {

void copy_host_to_device(void* dst, const void* src, size_t nbytes, int device) {
  if (nbytes == 0) return;
  cudaStream_t s = stream(device);
  DeviceGuard guard(device);
  TL_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, s));
  // From pageable memory the driver may read the source after the call returns; the caller may free
  // or reuse it at once. (Batches take the pinned path, data::DeviceStager, not this one.)
  TL_CUDA_CHECK(cudaStreamSynchronize(s));
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
  // src is in the source device's stream order: later work there (a kernel reusing src's freed block)
  // must wait until this copy has read it.
  cudaEvent_t read;
  TL_CUDA_CHECK(cudaEventCreateWithFlags(&read, cudaEventDisableTiming));
  TL_CUDA_CHECK(cudaEventRecord(read, s));
  TL_CUDA_CHECK(cudaStreamWaitEvent(stream(src_device), read, 0));
  TL_CUDA_CHECK(cudaEventDestroy(read));  // released once it completes
}

namespace {

template <typename D, typename S>
__global__ void strided_copy_kernel(D* dst, const S* src, int64_t n, OffsetCalc<2> oc) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  int64_t off[2];
  oc.get(i, off);
  dst[off[0]] = static_cast<D>(src[off[1]]);
}

}  // namespace

void copy_strided(void* dst, DType dst_dtype, const int64_t* dst_strides, const void* src, DType src_dtype,
                  const int64_t* src_strides, const int64_t* sizes, int ndim, int device) {
  const Shape shape(sizes, sizes + ndim);
  int64_t n = 1;
  for (int64_t v : shape) n *= v;
  if (n == 0) return;
  // Size-1 dims dropped and neighbours contiguous in both operands merged, so that most views fit.
  const OffsetCalc<2> oc = make_offset_calc<2>(shape, {dst_strides, src_strides}, "copy_");
  cudaStream_t s = stream(device);
  DeviceGuard guard(device);
  dispatch_all(dst_dtype, [&]<typename D>() {
    dispatch_all(src_dtype, [&]<typename S>() {
      strided_copy_kernel<D, S><<<blocks_for(n), kThreads, 0, s>>>(static_cast<D*>(dst), static_cast<const S*>(src), n, oc);
    });
  });
  check_launch();
}

}  // namespace tl::cuda
