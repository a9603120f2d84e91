// copy_ (strided, broadcasting, casting), fill_ and the random fill.
#include <cstring>

#include "tensor/cpu/cpu_kernels.h"
#include "tensor/random.h"
#include "tensor/strided.h"

namespace tl::cpu {

void copy_(const Tensor& dst, const Tensor& src) {
  const Shape& shape = dst.shape();
  if (broadcast_shapes(src.shape(), shape, "copy_") != shape)
    throw_op_error("copy_", "source " + shape_str(src.shape()) + " does not broadcast to destination " +
                                shape_str(shape));
  if (dst.numel() == 0) return;
  // Same dtype, both contiguous, same shape: one memcpy.
  if (dst.dtype() == src.dtype() && dst.is_contiguous() && src.is_contiguous() && src.shape() == shape) {
    if (dst.raw_data() != src.raw_data())
      std::memmove(dst.raw_data(), src.raw_data(), static_cast<size_t>(dst.numel()) * dtype_size(dst.dtype()));
    return;
  }
  auto plan = make_strided_plan<2>(shape, {dst.strides(), broadcast_strides(src.shape(), src.strides(), shape)});
  dispatch_all(dst.dtype(), [&]<typename D>() {
    dispatch_all(src.dtype(), [&]<typename S>() {
      D* d = dst.data_ptr<D>();
      const S* s = src.data_ptr<S>();
      for_each_row(plan, [&](const auto& off, int64_t n, const auto& st) {
        D* dp = d + off[0];
        const S* sp = s + off[1];
        if (st[0] == 1 && st[1] == 1)
          for (int64_t i = 0; i < n; ++i) dp[i] = static_cast<D>(sp[i]);
        else
          for (int64_t i = 0; i < n; ++i) dp[i * st[0]] = static_cast<D>(sp[i * st[1]]);
      });
    });
  });
}

Tensor contiguous_copy(const Tensor& x) {
  if (x.is_contiguous()) return x;
  Tensor c = empty(x.shape(), x.options());
  copy_(c, x);
  return c;
}

void fill_(const Tensor& dst, double value) {
  if (dst.numel() == 0) return;
  auto plan = make_strided_plan<1>(dst.shape(), {dst.strides()});
  dispatch_all(dst.dtype(), [&]<typename T>() {
    const T v = static_cast<T>(value);
    T* d = dst.data_ptr<T>();
    for_each_row(plan, [&](const auto& off, int64_t n, const auto& st) {
      T* p = d + off[0];
      for (int64_t i = 0; i < n; ++i) p[i * st[0]] = v;
    });
  });
}

void fill_random_(const Tensor& dst, kernels::Distribution d, double a, double b, uint64_t seed, uint64_t offset) {
  const bool normal = d == kernels::Distribution::Normal;
  dispatch_floating(dst.dtype(), "random", [&]<typename T>() {
    T* p = dst.data_ptr<T>();
    parallel_for(0, dst.numel(), 4096, [&](int64_t b0, int64_t e0) {
      for (int64_t i = b0; i < e0; ++i)
        p[i] = static_cast<T>(philox::sample(seed, offset, static_cast<uint64_t>(i), normal, a, b));
    });
  });
}

}  // namespace tl::cpu
