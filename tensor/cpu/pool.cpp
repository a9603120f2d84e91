// max_pool2d (no padding) and its backward.
//
// The forward keeps, per output, the index of its maximum inside the input's H*W plane: the backward
// is then a scatter-add of the gradient into those positions, with no second look at the input.
// Both loops run over (n, c) planes, one plane per thread at a time: with stride < kernel two windows
// can pick the same input pixel, and their gradients must add without a race.
#include <algorithm>
#include <cmath>

#include "tensor/cpu/cpu_kernels.h"
#include "tensor/strided.h"

namespace tl::cpu {

namespace {

// Planes per thread chunk: about kElementwiseGrain elements of work each.
int64_t plane_grain(int64_t plane_work) {
  return std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(plane_work, 1));
}

// The 2x2 window at stride 2 of rows r0, r1 (contiguous) at column 2*ow, as the general scan sees
// it: the first maximum in row-major order wins, a NaN wins over any number and the first NaN stays.
// Written without branches, so that the compiler vectorizes the row (the UNet's every pooling).
template <typename T>
void max_pool_2x2_row(const T* r0, const T* r1, int64_t row0, int64_t W, int64_t Wo, T* out, int64_t* idx) {
  for (int64_t ow = 0; ow < Wo; ++ow) {
    const T v[4] = {r0[2 * ow], r0[2 * ow + 1], r1[2 * ow], r1[2 * ow + 1]};
    T best = v[0];
    int64_t k = 0;
    for (int64_t j = 1; j < 4; ++j) {
      const bool take = v[j] > best || (v[j] != v[j] && best == best);
      best = take ? v[j] : best;
      k = take ? j : k;
    }
    out[ow] = best;
    idx[ow] = row0 + (k >> 1) * W + 2 * ow + (k & 1);
  }
}

}  // namespace

// x (N, C, H, W), any strides -> out (N, C, Ho, Wo), indices (N, C, Ho, Wo) int64 into each H*W plane.
// The first maximum in row-major window order wins a tie; a NaN wins over any number (it propagates,
// as in torch), and the first NaN stays.
std::pair<Tensor, Tensor> max_pool2d(const Tensor& x, kernels::Pool2dParams p) {
  const int64_t kh = p.kernel_h, kw = p.kernel_w, sh = p.stride_h, sw = p.stride_w;
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Ho = (H - kh) / sh + 1, Wo = (W - kw) / sw + 1;
  Tensor out = empty({N, C, Ho, Wo}, x.options());
  Tensor indices = empty({N, C, Ho, Wo}, TensorOptions(kInt64).with_device(x.device()));
  if (out.numel() == 0) return {out, indices};
  const int64_t s0 = x.stride(0), s1 = x.stride(1), s2 = x.stride(2), s3 = x.stride(3);

  dispatch_floating(x.dtype(), "max_pool2d", [&]<typename T>() {
    const T* xp = x.data_ptr<T>();
    T* op = out.data_ptr<T>();
    int64_t* ip = indices.data_ptr<int64_t>();
    parallel_for(0, N * C, plane_grain(Ho * Wo * kh * kw), [&](int64_t pb, int64_t pe) {
      for (int64_t plane = pb; plane < pe; ++plane) {
        const T* xpl = xp + (plane / C) * s0 + (plane % C) * s1;  // (H, W) with strides (s2, s3)
        T* opl = op + plane * Ho * Wo;                             // (Ho, Wo)
        int64_t* ipl = ip + plane * Ho * Wo;                       // (Ho, Wo)
        if (kh == 2 && kw == 2 && sh == 2 && sw == 2 && s3 == 1) {
          for (int64_t oh = 0; oh < Ho; ++oh)
            max_pool_2x2_row(xpl + 2 * oh * s2, xpl + (2 * oh + 1) * s2, 2 * oh * W, W, Wo, opl + oh * Wo,
                             ipl + oh * Wo);
          continue;
        }
        for (int64_t oh = 0; oh < Ho; ++oh)
          for (int64_t ow = 0; ow < Wo; ++ow) {
            const int64_t h0 = oh * sh, w0 = ow * sw;
            T best = xpl[h0 * s2 + w0 * s3];
            int64_t best_i = h0 * W + w0;
            for (int64_t i = h0; i < h0 + kh; ++i)
              for (int64_t j = w0; j < w0 + kw; ++j) {
                const T v = xpl[i * s2 + j * s3];
                if (v > best || (std::isnan(v) && !std::isnan(best))) {
                  best = v;
                  best_i = i * W + j;
                }
              }
            opl[oh * Wo + ow] = best;
            ipl[oh * Wo + ow] = best_i;
          }
      }
    });
  });
  return {out, indices};
}

// grad (N, C, Ho, Wo), indices (N, C, Ho, Wo) int64, any strides -> dx (N, C, H, W) with x_shape
// The CPU scatters through the indices alone: the window geometry is not needed.
Tensor max_pool2d_backward(const Tensor& grad, const Tensor& indices, const Shape& x_shape, kernels::Pool2dParams) {
  Tensor dx = zeros(x_shape, grad.options());
  const int64_t C = grad.size(1), Ho = grad.size(2), Wo = grad.size(3), HW = x_shape[2] * x_shape[3];
  const int64_t planes = grad.size(0) * C;
  if (grad.numel() == 0) return dx;
  const Strides& gs = grad.strides();
  const Strides& is = indices.strides();

  dispatch_floating(grad.dtype(), "max_pool2d_backward", [&]<typename T>() {
    const T* gp = grad.data_ptr<T>();
    const int64_t* ip = indices.data_ptr<int64_t>();
    T* dxp = dx.data_ptr<T>();
    parallel_for(0, planes, plane_grain(Ho * Wo), [&](int64_t pb, int64_t pe) {
      for (int64_t plane = pb; plane < pe; ++plane) {
        const int64_t n = plane / C, c = plane % C;
        const T* gpl = gp + n * gs[0] + c * gs[1];           // (Ho, Wo) with strides (gs[2], gs[3])
        const int64_t* ipl = ip + n * is[0] + c * is[1];     // (Ho, Wo) with strides (is[2], is[3])
        T* dpl = dxp + plane * HW;                           // (H, W) contiguous
        for (int64_t oh = 0; oh < Ho; ++oh)
          for (int64_t ow = 0; ow < Wo; ++ow)
            dpl[ipl[oh * is[2] + ow * is[3]]] += gpl[oh * gs[2] + ow * gs[3]];
      }
    });
  });
  return dx;
}

}  // namespace tl::cpu
