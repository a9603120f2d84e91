#pragma once
// Copies to, from and on CUDA devices, on raw pointers. The tensor-level plan (broadcasting, casting,
// staging through contiguous blocks) is the copy_ dispatch in tensor/kernels.cpp. Plain C++ header.
#include <cstddef>
#include <cstdint>

#include "tensor/dtype.h"

namespace tl::cuda {

constexpr int kMaxCopyDims = 8;  // after merging dims that are contiguous in both operands

// Byte copies on the device's stream. The host-to-device copy stages src through a per-device ring
// of pinned slots (4 of 4 MiB): it has read src when it returns, so the caller may free or reuse it at
// once, but it does not wait for the stream; dst is written in stream order. It waits only when a
// slot's previous copy is still queued (an upload of more than the ring). Thread-safe.
void copy_host_to_device(void* dst, const void* src, size_t nbytes, int device);
// Synchronizes: dst holds the bytes on return.
void copy_device_to_host(void* dst, const void* src, size_t nbytes, int device);
// Same device: queued on its stream. Two devices: waits for src_device's stream, then a peer copy on
// dst_device's stream.
void copy_device_to_device(void* dst, int dst_device, const void* src, int src_device, size_t nbytes);

// dst[i] = cast(src[i]) for every index i of `sizes` (ndim dims), element strides per operand (a
// stride of 0 broadcasts). Both pointers on `device`; one thread per element, queued on its stream.
void copy_strided(void* dst, DType dst_dtype, const int64_t* dst_strides, const void* src, DType src_dtype,
                  const int64_t* src_strides, const int64_t* sizes, int ndim, int device);

}  // namespace tl::cuda
