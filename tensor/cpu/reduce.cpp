// Sum, mean and max over any set of dims, any strides. Each output element is reduced by one thread
// in a fixed order, in double precision for float32 (each contiguous run as lane_sum's interleaved
// sums), so results do not depend on the thread count.
#include <cmath>
#include <limits>

#include "tensor/cpu/cpu_kernels.h"
#include "tensor/cpu/lane_sum.h"
#include "tensor/strided.h"

namespace tl::cpu {

Tensor reduce(Reduce op, const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  const kernels::ReducePlan plan = kernels::reduce_plan(x, dims, keepdim);
  const Shape& outer_shape = plan.outer_shape;
  const Strides& outer_strides = plan.outer_strides;
  const int64_t count = plan.count;
  if (op == Reduce::Max && count == 0)
    throw_op_error("max", "cannot reduce over an empty dimension of " + shape_str(x.shape()));

  Tensor out = empty(plan.out_shape, x.options());
  const auto inner = make_strided_plan<1>(plan.inner_shape, {plan.inner_strides});
  const int64_t n_out = out.numel();
  const int64_t nouter = static_cast<int64_t>(outer_shape.size());

  dispatch_floating(x.dtype(), "reduce", [&]<typename T>() {
    const T* xp = x.data_ptr<T>();
    T* o = out.data_ptr<T>();
    const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(count, 1));
    parallel_for(0, n_out, grain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        int64_t base = 0, r = i;
        for (int64_t d = nouter - 1; d >= 0; --d) {
          base += (r % outer_shape[d]) * outer_strides[d];
          r /= outer_shape[d];
        }
        const T* p = xp + base;
        if (op == Reduce::Max) {
          T acc = -std::numeric_limits<T>::infinity();
          for_each_row(inner, [&](const auto& off, int64_t n, const auto& st) {
            for (int64_t k = 0; k < n; ++k) {
              const T v = p[off[0] + k * st[0]];
              if (v > acc || std::isnan(v)) acc = v;
              if (std::isnan(acc)) break;
            }
          }, std::numeric_limits<int64_t>::max());
          o[i] = acc;
        } else {
          double acc = 0;
          for_each_row(inner, [&](const auto& off, int64_t n, const auto& st) {
            const T* q = p + off[0];
            const int64_t s = st[0];
            acc += s == 1 ? lane_sum(n, [&](int64_t k) { return static_cast<double>(q[k]); })
                          : lane_sum(n, [&](int64_t k) { return static_cast<double>(q[k * s]); });
          }, std::numeric_limits<int64_t>::max());
          o[i] = static_cast<T>(op == Reduce::Mean ? acc / static_cast<double>(count) : acc);
        }
      }
    });
  });
  return out;
}

}  // namespace tl::cpu
