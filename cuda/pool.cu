// max_pool2d (no padding) and its backward.
//
// Forward: one thread per output, which scans its window in row-major order and keeps the first
// maximum (a NaN wins and the first NaN stays), with its index in the input's H*W plane. Backward: one
// thread per input pixel, which gathers the gradient of every output whose window holds it and chose
// it, in (oh, ow) order: overlapping windows need no atomics and the sum is deterministic.
#include "cuda/conv_index.h"
#include "cuda/launch.cuh"
#include "cuda/ops.h"

namespace tl::cuda {

namespace {

struct Pool {
  int64_t C, H, W, kh, kw, sh, sw, Ho, Wo;
};

struct Strides4 {
  int64_t s[4];
};

template <typename T>
__global__ void max_pool_kernel(const T* x, Strides4 xs, T* out, int64_t* indices, Pool p, int64_t total) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int64_t ow = i % p.Wo, oh = (i / p.Wo) % p.Ho, plane = i / (p.Ho * p.Wo);
  const T* xpl = x + (plane / p.C) * xs.s[0] + (plane % p.C) * xs.s[1];
  const int64_t h0 = oh * p.sh, w0 = ow * p.sw;
  T best = xpl[h0 * xs.s[2] + w0 * xs.s[3]];
  int64_t best_i = h0 * p.W + w0;
  for (int64_t r = h0; r < h0 + p.kh; ++r)
    for (int64_t c = w0; c < w0 + p.kw; ++c) {
      const T v = xpl[r * xs.s[2] + c * xs.s[3]];
      if (v > best || (v != v && best == best)) {
        best = v;
        best_i = r * p.W + c;
      }
    }
  out[i] = best;
  indices[i] = best_i;
}

template <typename T>
__global__ void max_pool_backward_kernel(const T* grad, Strides4 gs, const int64_t* indices, Strides4 is, T* dx, Pool p,
                                         int64_t total) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int64_t iw = i % p.W, ih = (i / p.W) % p.H, plane = i / (p.H * p.W);
  const int64_t n = plane / p.C, c = plane % p.C;
  const T* gpl = grad + n * gs.s[0] + c * gs.s[1];
  const int64_t* ipl = indices + n * is.s[0] + c * is.s[1];
  const int64_t self = ih * p.W + iw;
  const int64_t oh1 = last_window(ih, p.sh, p.Ho), ow1 = last_window(iw, p.sw, p.Wo);
  T acc = T(0);
  for (int64_t oh = first_window(ih, p.kh, p.sh); oh <= oh1; ++oh)
    for (int64_t ow = first_window(iw, p.kw, p.sw); ow <= ow1; ++ow)
      if (ipl[oh * is.s[2] + ow * is.s[3]] == self) acc += gpl[oh * gs.s[2] + ow * gs.s[3]];
  dx[i] = acc;
}

Strides4 strides4(const Tensor& t) { return {{t.stride(0), t.stride(1), t.stride(2), t.stride(3)}}; }

}  // namespace

std::pair<Tensor, Tensor> max_pool2d(const Tensor& x, kernels::Pool2dParams pp) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const Pool p{C, H, W, pp.kernel_h, pp.kernel_w, pp.stride_h, pp.stride_w, (H - pp.kernel_h) / pp.stride_h + 1,
               (W - pp.kernel_w) / pp.stride_w + 1};
  Tensor out = empty({N, C, p.Ho, p.Wo}, x.options());
  Tensor indices = empty({N, C, p.Ho, p.Wo}, TensorOptions(kInt64).with_device(x.device()));
  const int64_t total = out.numel();
  if (total == 0) return {out, indices};
  const int device = x.device().index;
  cudaStream_t s = stream(device);
  DeviceGuard guard(device);
  dispatch_floating(x.dtype(), "max_pool2d", [&]<typename T>() {
    max_pool_kernel<T><<<blocks_for(total), kThreads, 0, s>>>(x.data_ptr<T>(), strides4(x), out.data_ptr<T>(),
                                                              indices.data_ptr<int64_t>(), p, total);
  });
  check_launch();
  return {out, indices};
}

Tensor max_pool2d_backward(const Tensor& grad, const Tensor& indices, const Shape& x_shape, kernels::Pool2dParams pp) {
  const Pool p{grad.size(1), x_shape[2], x_shape[3], pp.kernel_h, pp.kernel_w, pp.stride_h, pp.stride_w,
               grad.size(2), grad.size(3)};
  Tensor dx = empty(x_shape, grad.options());
  const int64_t total = dx.numel();
  if (total == 0) return dx;
  if (grad.numel() == 0) {
    fill_(dx, 0.0);
    return dx;
  }
  const int device = grad.device().index;
  cudaStream_t s = stream(device);
  DeviceGuard guard(device);
  dispatch_floating(grad.dtype(), "max_pool2d_backward", [&]<typename T>() {
    max_pool_backward_kernel<T><<<blocks_for(total), kThreads, 0, s>>>(
        grad.data_ptr<T>(), strides4(grad), indices.data_ptr<int64_t>(), strides4(indices), dx.data_ptr<T>(), p, total);
  });
  check_launch();
  return dx;
}

}  // namespace tl::cuda
