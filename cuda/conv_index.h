#pragma once
// The index math of the CUDA convolution's im2col, col2im and weight-gradient layouts, as
// host-and-device functions: the kernels in conv.cu call them per element, and
// tests/test_cuda_index.cpp runs them on the CPU against the CPU backend's kernels, so the mapping is
// checked on machines without a GPU.
//
// For one image x (C, H, W) the column matrix col (K = C*kh*kw, L = Ho*Wo) holds, in row r = (c, ki, kj)
// and column l = (oh, ow), the pixel x[c, oh*sh - ph + ki, ow*sw - pw + kj], or 0 in the padding: the
// same layout as tensor/cpu/conv.cpp's.
#include <cstdint>

#include "tensor/functors.h"  // TL_HD

namespace tl::cuda {

struct ConvGeometry {
  int64_t C, H, W;     // one input image
  int64_t kh, kw;      // kernel
  int64_t sh, sw, ph, pw;
  int64_t Ho, Wo;      // one output image
  TL_HD int64_t K() const { return C * kh * kw; }
  TL_HD int64_t L() const { return Ho * Wo; }
  TL_HD int64_t image() const { return C * H * W; }
  // col == the image itself: a 1x1 kernel with stride 1 and no padding.
  TL_HD bool pointwise() const { return kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0; }
};

// The index into the image (C, H, W) that col[r, l] copies, or -1 where it is padding.
TL_HD int64_t im2col_source(const ConvGeometry& g, int64_t r, int64_t l) {
  const int64_t kj = r % g.kw, ki = (r / g.kw) % g.kh, c = r / (g.kh * g.kw);
  const int64_t ow = l % g.Wo, oh = l / g.Wo;
  const int64_t ih = oh * g.sh - g.ph + ki, iw = ow * g.sw - g.pw + kj;
  if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) return -1;
  return (c * g.H + ih) * g.W + iw;
}

// The value col2im gives image pixel `pixel` (an index into (C, H, W)): the sum of every col entry
// im2col copied from it, in a fixed (ki, kj) order. A gather, so each pixel is written by one thread
// with no atomics and the result does not depend on scheduling.
template <typename T>
TL_HD T col2im_gather(const ConvGeometry& g, const T* col, int64_t pixel) {
  const int64_t iw = pixel % g.W, ih = (pixel / g.W) % g.H, c = pixel / (g.H * g.W);
  const int64_t L = g.L();
  T acc = T(0);
  for (int64_t ki = 0; ki < g.kh; ++ki) {
    const int64_t th = ih + g.ph - ki;  // oh * sh
    if (th < 0 || th % g.sh != 0) continue;
    const int64_t oh = th / g.sh;
    if (oh >= g.Ho) continue;
    for (int64_t kj = 0; kj < g.kw; ++kj) {
      const int64_t tw = iw + g.pw - kj;  // ow * sw
      if (tw < 0 || tw % g.sw != 0) continue;
      const int64_t ow = tw / g.sw;
      if (ow >= g.Wo) continue;
      acc += col[((c * g.kh + ki) * g.kw + kj) * L + oh * g.Wo + ow];
    }
  }
  return acc;
}

// The weight gradient's layouts. For a chunk of nb images it is one GEMM,
//   dW (O, K) (+)= G (O, nb*L) @ Col^T (nb*L, K),
// over two row-major matrices whose columns run over (image n, output pixel l) of the chunk:
//   Col (K, nb*L): element (k, n, l) at k*nb*L + n*L + l, the im2col of image n (row k, column l);
//   G (O, nb*L):   element (o, n, l) at o*nb*L + n*L + l, the chunk's gradient (nb, O, L) permuted.
// For a pointwise convolution Col is the chunk's images (nb, C, L) permuted to (C, nb, L).
// Each returns the source of element i of its matrix; the kernels run one thread per element.

// The index into the chunk's images (nb, C, H, W) that Col element i copies, or -1 where it is padding.
TL_HD int64_t batched_im2col_source(const ConvGeometry& g, int64_t nb, int64_t i) {
  const int64_t L = g.L(), nL = nb * L;
  const int64_t k = i / nL, n = (i % nL) / L, l = i % L;
  const int64_t src = im2col_source(g, k, l);
  return src < 0 ? -1 : n * g.image() + src;
}

// The index into the chunk's gradient (nb, O, L) that G element i copies.
TL_HD int64_t batched_grad_source(int64_t O, int64_t L, int64_t nb, int64_t i) {
  const int64_t nL = nb * L;
  const int64_t o = i / nL, n = (i % nL) / L, l = i % L;
  return (n * O + o) * L + l;
}

// Max pooling without padding, plane (H, W) -> (Ho, Wo). The window of output (oh, ow) starts at
// (oh*sh, ow*sw). For the backward gather: the outputs whose window holds input row ih are
// oh in [first_window(ih, kh, sh), last_window(ih, sh, Ho)].
TL_HD int64_t first_window(int64_t i, int64_t k, int64_t s) {
  const int64_t t = i - k + 1;  // oh*s >= i - k + 1
  return t <= 0 ? 0 : (t + s - 1) / s;
}
TL_HD int64_t last_window(int64_t i, int64_t s, int64_t out) {
  const int64_t o = i / s;  // oh*s <= i
  return o < out - 1 ? o : out - 1;
}

}  // namespace tl::cuda
