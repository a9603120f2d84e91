#pragma once
// What every kernel file shares: launch sizes, the strided offset calculator, and the block-wide
// reduction. For .cu files only.
#include <array>
#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda/check.h"
#include "cuda/runtime.h"
#include "tensor/functors.h"  // TL_HD
#include "tensor/shape.h"

namespace tl::cuda {

constexpr int kMaxDims = 8;     // dims of a strided operand after merging (copy.h says the same)
constexpr int kThreads = 256;   // threads per block of the elementwise and reduction kernels

// Blocks for n threads' worth of work, one element per thread. Throws past one launch's grid.
inline unsigned blocks_for(int64_t n, int threads = kThreads) {
  const int64_t b = (n + threads - 1) / threads;
  if (b > INT_MAX) throw std::runtime_error("cuda: " + std::to_string(n) + " elements is more than one launch covers");
  return static_cast<unsigned>(b < 1 ? 1 : b);
}

// The device's multiprocessor count (queried once per device): kernels that split a reduction over
// blocks aim for a few blocks per multiprocessor.
int sm_count(int device);

// Checks the launch just queued (a bad configuration shows up here; faults in the kernel show up at
// the next synchronizing call).
inline void check_launch() { TL_CUDA_CHECK(cudaGetLastError()); }

// K input pointers, passed by value to a kernel (K = 0 keeps one unused slot).
template <typename T, int K>
struct Ptrs {
  const T* p[K > 0 ? K : 1];
};

// Element offsets of N operands over one iteration shape: offset[k] of linear index i is the dot
// product of i's multi-index with operand k's strides. Dims of size 1 are dropped and neighbours
// contiguous in every operand merged, so a contiguous tensor is one dim. Passed by value to kernels.
template <int N>
struct OffsetCalc {
  int ndim = 0;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[kMaxDims][N] = {};

  // Index math on host and device, so the CPU tests can check it.
  TL_HD void get(int64_t i, int64_t (&off)[N]) const {
    for (int k = 0; k < N; ++k) off[k] = 0;
    if (ndim == 0) return;
    for (int d = kMaxDims - 1; d >= 1; --d) {
      if (d >= ndim) continue;
      const int64_t c = i % sizes[d];
      i /= sizes[d];
      for (int k = 0; k < N; ++k) off[k] += c * strides[d][k];
    }
    for (int k = 0; k < N; ++k) off[k] += i * strides[0][k];  // i < sizes[0] is left: no division
  }
};

// The calculator for `shape` with each operand's element strides (broadcast dims have stride 0).
// `what` names the op in the error for a view that keeps more than kMaxDims dims after merging.
template <int N>
OffsetCalc<N> make_offset_calc(const Shape& shape, const std::array<const int64_t*, N>& strides, const char* what) {
  OffsetCalc<N> c;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    bool merge = c.ndim > 0;
    for (int k = 0; k < N && merge; ++k) merge = c.strides[c.ndim - 1][k] == strides[k][d] * shape[d];
    if (merge) {
      c.sizes[c.ndim - 1] *= shape[d];
      for (int k = 0; k < N; ++k) c.strides[c.ndim - 1][k] = strides[k][d];
      continue;
    }
    if (c.ndim == kMaxDims) {
      std::string dims;  // (no shape_str: this header also serves tl_cuda, below the tensor layer)
      for (size_t k = 0; k < shape.size(); ++k) {
        if (k) dims += ',';
        dims += std::to_string(shape[k]);
      }
      throw std::runtime_error(std::string(what) + ": the CUDA kernels handle at most " + std::to_string(kMaxDims) +
                               " non-mergeable dims, got a view of shape (" + dims + ")");
    }
    c.sizes[c.ndim] = shape[d];
    for (int k = 0; k < N; ++k) c.strides[c.ndim][k] = strides[k][d];
    ++c.ndim;
  }
  return c;
}

#if defined(__CUDACC__)
// The sum of every thread's v in a block of blockDim.x threads (a multiple of 32, at most 1024),
// returned to thread 0 (other threads get partial values). `shared` holds 32 values.
template <typename T, typename Op>
__device__ T block_reduce(T v, T* shared, Op op) {
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v = op(v, __shfl_down_sync(0xffffffffu, v, o));
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  const unsigned warps = blockDim.x / 32;
  if (warp == 0) {
    v = lane < warps ? shared[lane] : shared[0];
    // Lanes past `warps` hold a copy of shared[0]: combine only the first `warps` lanes.
#pragma unroll
    for (int o = 16; o > 0; o /= 2) {
      const T other = __shfl_down_sync(0xffffffffu, v, o);
      if (lane + o < warps) v = op(v, other);
    }
  }
  __syncthreads();  // `shared` may be reused by the caller
  return v;
}
#endif

}  // namespace tl::cuda
