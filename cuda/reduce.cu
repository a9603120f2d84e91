// Sum, mean and max over any set of dims, any strides.
//
// The input is read as (outputs, count): each output reduces `count` elements found through an
// OffsetCalc over the reduced dims, from a base found through one over the kept dims. Few, long
// reductions are split over `splits` blocks per output, each writing a partial that a second kernel
// combines in order; many short ones get one thread each. Sums accumulate in double, as the CPU
// kernel's do, and every order is fixed by the shapes alone: results are deterministic.
//
// Dispatch, with target = 4 blocks per multiprocessor:
// - count <= 64, or n_out >= target * kThreads / 4 (many outputs): one thread per output, except that
//   when each output's elements are contiguous (the inner plan is one dim of stride 1) and count > 32
//   a warp takes each output: its 32 lanes stride over the row (neighbouring lanes read neighbouring
//   addresses, where a thread per output would read addresses `count` apart) and combine in a fixed
//   __shfl_down_sync tree;
// - otherwise `splits` blocks per output (enough to fill the device, a few elements per thread each).
// The max op keeps NaN (NaN wins) in every path. On a tie of -0.0 and +0.0 the thread path keeps the
// earlier element; the warp and block paths keep the one their fixed tree keeps (lane or thread j
// holds elements j, j + 32 or j + blockDim, ...), which is not always the earlier: which zero comes out
// then depends only on the shapes.
#include <cmath>

#include "cuda/launch.cuh"
#include "cuda/ops.h"

namespace tl::cuda {

namespace {

template <typename T>
struct SumOp {
  using Acc = double;
  TL_HD Acc identity() const { return 0.0; }
  TL_HD Acc from(T v) const { return static_cast<double>(v); }
  TL_HD Acc operator()(Acc a, Acc b) const { return a + b; }
};

// NaN wins, as in the CPU kernel and torch.
template <typename T>
struct MaxOp {
  using Acc = T;
  TL_HD Acc identity() const { return -INFINITY; }
  TL_HD Acc from(T v) const { return v; }
  TL_HD Acc operator()(Acc a, Acc b) const {
    if (a != a) return a;
    if (b != b) return b;
    return b > a ? b : a;  // on a tie (-0.0 and +0.0) the earlier element, as on the CPU
  }
};

// The reduction of output o's elements [begin, end), strided over the block's threads (or over one
// thread when the block is one thread), combined in a fixed tree.
template <typename T, typename Op>
__device__ typename Op::Acc reduce_range(const T* x, int64_t base, const OffsetCalc<1>& inner, int64_t begin,
                                         int64_t end, int64_t step, Op op) {
  typename Op::Acc acc = op.identity();
  for (int64_t k = begin; k < end; k += step) {
    int64_t off[1];
    inner.get(k, off);
    acc = op(acc, op.from(x[base + off[0]]));
  }
  return acc;
}

template <typename T, typename Acc>
struct Finish {
  bool mean;
  double count;
  TL_HD T operator()(Acc a) const { return mean ? static_cast<T>(static_cast<double>(a) / count) : static_cast<T>(a); }
};

// Many short reductions: one thread per output.
template <typename T, typename Op>
__global__ void reduce_thread_kernel(const T* x, T* out, int64_t n_out, OffsetCalc<1> outer, OffsetCalc<1> inner,
                                     int64_t count, Op op, Finish<T, typename Op::Acc> fin) {
  const int64_t o = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (o >= n_out) return;
  int64_t base[1];
  outer.get(o, base);
  out[o] = fin(reduce_range(x, base[0], inner, 0, count, 1, op));
}

// Many outputs, each a contiguous row of count elements at x + base: a warp per output. The lanes
// stride over the row, then a fixed shuffle tree combines them with the same Op. blockDim.x is a
// multiple of 32, so all lanes of a warp have the same o and leave together (the full-mask shuffle
// needs every lane).
template <typename T, typename Op>
__global__ void reduce_warp_kernel(const T* x, T* out, int64_t n_out, OffsetCalc<1> outer, int64_t count, Op op,
                                   Finish<T, typename Op::Acc> fin) {
  const int64_t o = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x % 32);
  if (o >= n_out) return;
  int64_t base[1];
  outer.get(o, base);
  const T* row = x + base[0];
  typename Op::Acc acc = op.identity();
  for (int64_t k = lane; k < count; k += 32) acc = op(acc, op.from(row[k]));
#pragma unroll
  for (int off = 16; off > 0; off /= 2) acc = op(acc, __shfl_down_sync(0xffffffffu, acc, off));
  if (lane == 0) out[o] = fin(acc);
}

// Long reductions: block (o, split) reduces a contiguous slice of output o's elements. With one split
// the block writes the output; otherwise a partial.
template <typename T, typename Op>
__global__ void reduce_block_kernel(const T* x, T* out, typename Op::Acc* partial, OffsetCalc<1> outer,
                                    OffsetCalc<1> inner, int64_t count, int64_t splits, Op op,
                                    Finish<T, typename Op::Acc> fin) {
  using Acc = typename Op::Acc;
  __shared__ Acc shared[32];
  const int64_t o = blockIdx.x / splits, split = blockIdx.x % splits;
  const int64_t per = (count + splits - 1) / splits;
  const int64_t begin = split * per, end = begin + per < count ? begin + per : count;
  int64_t base[1];
  outer.get(o, base);
  Acc acc = reduce_range(x, base[0], inner, begin + threadIdx.x, end, blockDim.x, op);
  acc = block_reduce(acc, shared, op);
  if (threadIdx.x != 0) return;
  if (splits == 1) out[o] = fin(acc);
  else partial[blockIdx.x] = acc;
}

template <typename T, typename Op>
__global__ void reduce_partials_kernel(const typename Op::Acc* partial, T* out, int64_t n_out, int64_t splits, Op op,
                                       Finish<T, typename Op::Acc> fin) {
  const int64_t o = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (o >= n_out) return;
  typename Op::Acc acc = op.identity();
  for (int64_t k = 0; k < splits; ++k) acc = op(acc, partial[o * splits + k]);
  out[o] = fin(acc);
}

template <typename T, typename Op>
void run(const Tensor& x, const Tensor& out, const kernels::ReducePlan& plan, Op op, Finish<T, typename Op::Acc> fin) {
  using Acc = typename Op::Acc;
  const int64_t n_out = out.numel();
  const int device = x.device().index;
  const int64_t count = plan.count;
  const OffsetCalc<1> outer = make_offset_calc<1>(plan.outer_shape, {plan.outer_strides.data()}, "reduce");
  const OffsetCalc<1> inner = make_offset_calc<1>(plan.inner_shape, {plan.inner_strides.data()}, "reduce");
  cudaStream_t s = stream(device);
  const int64_t target_blocks = 4 * static_cast<int64_t>(sm_count(device));
  DeviceGuard guard(device);
  const bool thread_per_output = count <= 64 || n_out >= target_blocks * kThreads / 4;
  const bool contiguous_rows = inner.ndim == 1 && inner.strides[0][0] == 1;
  if (thread_per_output && contiguous_rows && count > 32) {
    reduce_warp_kernel<T, Op><<<blocks_for(n_out * 32), kThreads, 0, s>>>(x.data_ptr<T>(), out.data_ptr<T>(), n_out,
                                                                          outer, count, op, fin);
    check_launch();
    return;
  }
  if (thread_per_output) {
    reduce_thread_kernel<T, Op><<<blocks_for(n_out), kThreads, 0, s>>>(x.data_ptr<T>(), out.data_ptr<T>(), n_out, outer,
                                                                      inner, count, op, fin);
    check_launch();
    return;
  }
  // Enough blocks to fill the device, each with at least a few elements per thread.
  const int64_t by_device = (target_blocks + n_out - 1) / n_out;
  const int64_t by_work = (count + 4 * kThreads - 1) / (4 * kThreads);
  const int64_t splits = std::max<int64_t>(1, std::min(by_device, by_work));
  Tensor partial;
  Acc* pp = nullptr;
  if (splits > 1) {
    partial = empty({n_out * splits * static_cast<int64_t>(sizeof(Acc))}, TensorOptions(kUInt8).with_device(x.device()));
    pp = static_cast<Acc*>(partial.raw_data());
  }
  reduce_block_kernel<T, Op><<<blocks_for(n_out * splits, 1), kThreads, 0, s>>>(x.data_ptr<T>(), out.data_ptr<T>(), pp,
                                                                                 outer, inner, count, splits, op, fin);
  check_launch();
  if (splits > 1) {
    reduce_partials_kernel<T, Op><<<blocks_for(n_out), kThreads, 0, s>>>(pp, out.data_ptr<T>(), n_out, splits, op, fin);
    check_launch();
  }
}

}  // namespace

Tensor reduce(Reduce op, const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  const kernels::ReducePlan plan = kernels::reduce_plan(x, dims, keepdim);
  const int64_t count = plan.count;
  if (op == Reduce::Max && count == 0)
    throw_op_error("max", "cannot reduce over an empty dimension of " + shape_str(x.shape()));
  if (!is_floating(x.dtype()))  // the CPU's error, also for an empty result
    throw std::invalid_argument(std::string("reduce: expected a floating dtype (float32 or float64), got ") +
                                dtype_name(x.dtype()));
  Tensor out = empty(plan.out_shape, x.options());
  if (out.numel() == 0) return out;
  dispatch_floating(x.dtype(), "reduce", [&]<typename T>() {
    if (op == Reduce::Max)
      run<T>(x, out, plan, MaxOp<T>{},
             Finish<T, T>{false, 1.0});
    else  // an empty sum is 0, an empty mean 0 / 0 = NaN, as on the CPU
      run<T>(x, out, plan, SumOp<T>{},
             Finish<T, double>{op == Reduce::Mean, static_cast<double>(count)});
  });
  return out;
}

}  // namespace tl::cuda
