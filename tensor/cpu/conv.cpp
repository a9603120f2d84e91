// conv2d by im2col + GEMM (Eigen), and its two gradients: col2im + GEMM for the input, GEMM against
// the column matrix for the weight.
//
// For one image x[n] (C, H, W) the column matrix col (C*kh*kw, Ho*Wo) holds, in row (c, ki, kj) and
// column (oh, ow), the input pixel x[c, oh*sh - ph + ki, ow*sw - pw + kj] (0 in the padding). Then
//   forward:          out[n] (O, Ho*Wo)       = W (O, C*kh*kw) @ col
//   backward input:   colgrad (C*kh*kw, Ho*Wo) = W^T @ g[n],   dx[n] = col2im(colgrad)
//   backward weight:  dW (O, C*kh*kw)        += g[n] (O, Ho*Wo) @ col^T
// A 1x1 convolution with stride 1 and no padding has col == x[n] (C, H*W): no im2col at all.
//
// Each image is done in tiles of output rows (the columns of col for rows [oh0, oh1)), so the column
// tile is still in cache when the GEMM reads it. The tile buffer is allocated once per call and reused
// for every tile of every image; Eigen's GEMM uses the OpenMP threads, and im2col/col2im split their
// rows or channels over the same threads between the GEMMs.
//
// float32 runs on the engine's packed GEMM (gemm.h) instead of Eigen, with the weights packed once per
// call for all the images. 3x3 stride-1 convolutions with 64 (32 under the AVX2 micro-kernel) to 512
// input and output channels take Winograd F(2x2, 3x3) (conv_winograd.h: the forward, hence the
// stride-1 input gradient, and the weight gradient) unless TL_CONV_WINOGRAD=0. Stride-1 convolutions
// (all of the UNet's 3x3 ones) read the input in place from a zero-padded copy (conv_stride1.h: the
// forward pass, and a direct weight gradient for rows of 40+ pixels); convolutions whose windows tile
// the input (kernel == stride, no padding: the adjoints of the UNet's 2x2 stride-2 up-convolutions)
// build col by space-to-depth copies and their col2im is the inverse copy; other strides pack the
// input patches straight into the GEMM's B panels (PatchSource, an implicit im2col). float64 (the
// gradient checks' dtype) stays on the Eigen path above, which is the reference the float32 paths are
// tested against (tests/test_conv_pool.cpp, every micro-kernel).
#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "tensor/cpu/cpu_kernels.h"
#include "tensor/cpu/conv_stride1.h"
#include "tensor/cpu/conv_winograd.h"
#include "tensor/cpu/gemm.h"
#include "tensor/strided.h"

namespace tl::cpu {

namespace {

template <typename T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using Mat = Eigen::Map<RowMatrix<T>>;
template <typename T>
using CMat = Eigen::Map<const RowMatrix<T>>;
// A block of columns of a wider row-major matrix (a tile of an image's (O, Ho*Wo) output or gradient).
template <typename T>
using SMat = Eigen::Map<RowMatrix<T>, 0, Eigen::OuterStride<>>;
template <typename T>
using CSMat = Eigen::Map<const RowMatrix<T>, 0, Eigen::OuterStride<>>;

// The sizes of one convolution: input image (C, H, W), kernel (kh, kw), output (Ho, Wo).
struct Geometry {
  int64_t C, H, W, kh, kw, Ho, Wo;
  Conv2dParams p;
  int64_t rows() const { return C * kh * kw; }  // K of the GEMM
  int64_t cols() const { return Ho * Wo; }      // L of the GEMM
  // col == the image itself (C, H*W): no im2col needed.
  bool is_pointwise() const {
    return kh == 1 && kw == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h == 0 && p.pad_w == 0;
  }
};

// The geometry of x_shape (N, C, H, W) convolved with a kernel of w_shape (O, C, kh, kw). When the
// caller also holds the output (or its gradient), its sizes must agree: a mismatch would make the
// loops below read or write outside the buffers, so it is checked here even though ops check first.
Geometry geometry(const char* op, const Shape& x_shape, const Shape& w_shape, Conv2dParams p,
                  const Shape* out_shape = nullptr) {
  Geometry g{x_shape[1], x_shape[2], x_shape[3], w_shape[2], w_shape[3], 0, 0, p};
  g.Ho = (g.H + 2 * p.pad_h - g.kh) / p.stride_h + 1;
  g.Wo = (g.W + 2 * p.pad_w - g.kw) / p.stride_w + 1;
  if (out_shape && ((*out_shape)[2] != g.Ho || (*out_shape)[3] != g.Wo))
    throw std::logic_error(std::string(op) + ": output " + shape_str(*out_shape) + " does not match input " +
                           shape_str(x_shape) + " and weight " + shape_str(w_shape));
  return g;
}

// Rows of col per thread chunk (or channels, for col2im): about kElementwiseGrain elements each.
int64_t row_grain(int64_t row_len) { return std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(row_len, 1)); }

// The column matrix is built a tile of output rows at a time, (C*kh*kw, rows*Wo) of about
// kTileElemsPerThread elements per thread: a tile is still in cache when the GEMM reads it (the whole
// matrix of a 64-channel 3x3 layer at 160x240 is 88 MB, and writing it out to memory cost more than
// the GEMM), and the buffer stays small. A tile is also at least kMinTileColsPerThread columns per
// thread wide, or the GEMM (which splits a tile's columns over the threads) gets too thin to run at
// full speed: deep layers have C*kh*kw in the thousands and short rows. Tuned on 2 threads, where
// tiling took a 64-channel 160x240 layer from 23 to 80 GFLOP/s forward.
constexpr int64_t kTileElemsPerThread = int64_t{1} << 17;
constexpr int64_t kMinTileColsPerThread = 256;

// Calls fn(oh0, oh1) for consecutive tiles of output rows [oh0, oh1). One tile when pointwise: then
// the image itself is the column matrix.
template <typename Fn>
void for_each_tile(const Geometry& g, const Fn& fn) {
  int64_t rows = g.Ho;
  if (!g.is_pointwise()) {
    const int64_t threads = get_num_threads(), wo = std::max<int64_t>(g.Wo, 1);
    const int64_t by_size = kTileElemsPerThread * threads / std::max<int64_t>(g.rows() * wo, 1);
    const int64_t by_width = (kMinTileColsPerThread * threads + wo - 1) / wo;
    rows = std::clamp<int64_t>(std::max(by_size, by_width), 1, std::max<int64_t>(g.Ho, 1));
  }
  for (int64_t oh0 = 0; oh0 < g.Ho; oh0 += rows) fn(oh0, std::min(g.Ho, oh0 + rows));
}

// Elements of the column buffer one tile needs (0 when pointwise).
int64_t tile_buffer_size(const Geometry& g) {
  if (g.is_pointwise()) return 0;
  int64_t most = 0;
  for_each_tile(g, [&](int64_t oh0, int64_t oh1) { most = std::max(most, (oh1 - oh0) * g.Wo); });
  return g.rows() * most;
}

// The output columns [lo, hi) whose input column ow*s - pad + k falls inside [0, size).
void valid_range(int64_t size, int64_t out, int64_t s, int64_t pad, int64_t k, int64_t& lo, int64_t& hi) {
  const int64_t first = pad - k;            // ow*s >= pad - k
  const int64_t last = size - 1 + pad - k;  // ow*s <= size - 1 + pad - k
  lo = first <= 0 ? 0 : (first + s - 1) / s;
  hi = last < 0 ? 0 : std::min(out, last / s + 1);
  lo = std::min(lo, hi);
}

// x (C, H, W) -> col (C*kh*kw, (oh1-oh0)*Wo): the columns of output rows [oh0, oh1). Each row of col
// is written by one thread.
template <typename T>
void im2col(const T* x, T* col, const Geometry& g, int64_t oh0, int64_t oh1) {
  const int64_t Lb = (oh1 - oh0) * g.Wo, kk = g.kh * g.kw;
  parallel_for(0, g.rows(), row_grain(Lb), [&](int64_t rb, int64_t re) {
    for (int64_t r = rb; r < re; ++r) {
      const int64_t c = r / kk, ki = (r / g.kw) % g.kh, kj = r % g.kw;
      const T* plane = x + c * g.H * g.W;  // (H, W)
      int64_t lo, hi;
      valid_range(g.W, g.Wo, g.p.stride_w, g.p.pad_w, kj, lo, hi);
      for (int64_t oh = oh0; oh < oh1; ++oh) {
        T* drow = col + r * Lb + (oh - oh0) * g.Wo;  // (Wo)
        const int64_t ih = oh * g.p.stride_h - g.p.pad_h + ki;
        if (ih < 0 || ih >= g.H) {
          std::fill(drow, drow + g.Wo, T(0));
          continue;
        }
        const int64_t base = ih * g.W - g.p.pad_w + kj;  // plane[base + ow*sw] is x[c, ih, ow*sw - pw + kj]
        std::fill(drow, drow + lo, T(0));
        if (g.p.stride_w == 1) std::copy(plane + base + lo, plane + base + hi, drow + lo);
        else for (int64_t ow = lo; ow < hi; ++ow) drow[ow] = plane[base + ow * g.p.stride_w];
        std::fill(drow + hi, drow + g.Wo, T(0));
      }
    }
  });
}

// col (C*kh*kw, (oh1-oh0)*Wo) accumulated into x (C, H, W): the adjoint of im2col. Overlapping
// windows add into the same pixel, so the work is split by channel (a channel's rows never cross
// threads).
template <typename T>
void col2im(const T* col, T* x, const Geometry& g, int64_t oh0, int64_t oh1) {
  const int64_t Lb = (oh1 - oh0) * g.Wo, kk = g.kh * g.kw;
  parallel_for(0, g.C, row_grain(kk * Lb), [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      T* plane = x + c * g.H * g.W;  // (H, W)
      for (int64_t ki = 0; ki < g.kh; ++ki)
        for (int64_t kj = 0; kj < g.kw; ++kj) {
          int64_t lo, hi;
          valid_range(g.W, g.Wo, g.p.stride_w, g.p.pad_w, kj, lo, hi);
          for (int64_t oh = oh0; oh < oh1; ++oh) {
            const int64_t ih = oh * g.p.stride_h - g.p.pad_h + ki;
            if (ih < 0 || ih >= g.H) continue;
            const T* srow = col + (c * kk + ki * g.kw + kj) * Lb + (oh - oh0) * g.Wo;  // (Wo)
            const int64_t base = ih * g.W - g.p.pad_w + kj;  // plane[base + ow*sw] is x[c, ih, ow*sw - pw + kj]
            for (int64_t ow = lo; ow < hi; ++ow) plane[base + ow * g.p.stride_w] += srow[ow];
          }
        }
    }
  });
}

// col (C*kh*kw, Ho*Wo) of one image x (C, H, W), packed into the GEMM's B panels straight from the
// image: the implicit im2col of the float32 path. Row r = (c, ki, kj), column l = (oh, ow).
class PatchSource final : public gemm::PanelSource {
 public:
  PatchSource(const float* x, const Geometry& g) : x_(x), g_(g) {}
  void pack(int64_t k0, int64_t kc, int64_t n0, int64_t nc, int64_t nr, float* dst) const override {
    const Geometry& g = g_;
    const int64_t kk = g.kh * g.kw, sw = g.p.stride_w;
    for (int64_t k = 0; k < kc; ++k) {
      const int64_t r = k0 + k, c = r / kk, ki = (r / g.kw) % g.kh, kj = r % g.kw;
      const float* plane = x_ + c * g.H * g.W;  // (H, W)
      int64_t lo, hi;
      valid_range(g.W, g.Wo, sw, g.p.pad_w, kj, lo, hi);
      float* d = dst + k * nr;  // (nr) of the panel's row k
      // The columns [n0, n0 + nc) run along output rows: one segment per output row they touch.
      for (int64_t l = n0; l < n0 + nc;) {
        const int64_t oh = l / g.Wo, ow0 = l - oh * g.Wo, ow1 = std::min(g.Wo, ow0 + (n0 + nc - l));
        float* seg = d + (l - n0) - ow0;  // seg[ow] is column (oh, ow)
        const int64_t ih = oh * g.p.stride_h - g.p.pad_h + ki;
        if (ih < 0 || ih >= g.H) {
          std::fill(seg + ow0, seg + ow1, 0.0f);
        } else {
          const float* src = plane + ih * g.W - g.p.pad_w + kj;  // src[ow*sw] is x[c, ih, ow*sw - pw + kj]
          const int64_t a = std::clamp(lo, ow0, ow1), b = std::clamp(hi, a, ow1);
          std::fill(seg + ow0, seg + a, 0.0f);
          if (sw == 1) std::copy(src + a, src + b, seg + a);
          else for (int64_t ow = a; ow < b; ++ow) seg[ow] = src[ow * sw];
          std::fill(seg + b, seg + ow1, 0.0f);
        }
        l += ow1 - ow0;
      }
      std::fill(d + nc, d + nr, 0.0f);
    }
  }

 private:
  const float* x_;
  const Geometry& g_;
};

// A convolution whose windows tile the input, kernel == stride and no padding (the adjoint of the
// UNet's 2x2 stride-2 up-convolutions, and patch embeddings): col is then a permutation of the input,
// each pixel in exactly one row and column, so it is built by one pass of copies (space_to_depth)
// and col2im is the inverse copy (depth_to_space), with no zero fill and no additions.
bool is_patchwise(const Geometry& g) {
  return g.kh == g.p.stride_h && g.kw == g.p.stride_w && g.p.pad_h == 0 && g.p.pad_w == 0 && g.kh * g.kw > 1;
}

// d[j] = src[j * S] for j < n.
template <int S>
void strided_copy(const float* __restrict src, float* __restrict d, int64_t n) {
  for (int64_t j = 0; j < n; ++j) d[j] = src[j * S];
}

// row[2j] = a[j], row[2j + 1] = b[j] for j < n.
void interleave2(const float* __restrict a, const float* __restrict b, float* __restrict row, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    row[2 * j] = a[j];
    row[2 * j + 1] = b[j];
  }
}

// x (C, H, W) -> col (C*kh*kw, Ho*Wo) with rows ld floats apart, zero in [Ho*Wo, ld).
void space_to_depth(const float* x, float* col, const Geometry& g, int64_t ld) {
  const int64_t L = g.cols();
  parallel_for(0, g.C * g.kh, row_grain(g.kw * L), [&](int64_t rb, int64_t re) {
    for (int64_t r = rb; r < re; ++r) {
      const int64_t c = r / g.kh, a = r % g.kh;
      for (int64_t b = 0; b < g.kw; ++b) {
        float* dst = col + (r * g.kw + b) * ld;  // row (c, a, b)
        for (int64_t i = 0; i < g.Ho; ++i) {
          const float* src = x + (c * g.H + i * g.kh + a) * g.W + b;  // src[j * kw] is x[c, i*kh + a, j*kw + b]
          float* d = dst + i * g.Wo;
          if (g.kw == 2) strided_copy<2>(src, d, g.Wo);  // a constant stride the compiler vectorizes
          else for (int64_t j = 0; j < g.Wo; ++j) d[j] = src[j * g.kw];
        }
        std::fill(dst + L, dst + ld, 0.0f);
      }
    }
  });
}

// col (C*kh*kw, Ho*Wo) -> x (C, H, W), the inverse of space_to_depth; 0 in the rows and columns no
// window covers (when H or W is not a multiple of the kernel).
void depth_to_space(const float* col, float* x, const Geometry& g) {
  const int64_t L = g.cols();
  parallel_for(0, g.C, row_grain(g.H * g.W), [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c)
      for (int64_t h = 0; h < g.H; ++h) {
        float* row = x + (c * g.H + h) * g.W;
        const int64_t i = h / g.kh, a = h % g.kh;
        if (i >= g.Ho) {
          std::fill(row, row + g.W, 0.0f);
          continue;
        }
        const float* src = col + (c * g.kh + a) * g.kw * L + i * g.Wo;  // row (c, a, b) is src + b * L
        if (g.kw == 2) interleave2(src, src + L, row, g.Wo);  // both columns at once, vectorized as an interleave
        else
          for (int64_t b = 0; b < g.kw; ++b)
            for (int64_t j = 0; j < g.Wo; ++j) row[j * g.kw + b] = src[b * L + j];
        std::fill(row + g.Wo * g.kw, row + g.W, 0.0f);
      }
  });
}

// The float32 forward: out[n] (O, Ho*Wo) = W (O, C*kh*kw) @ col[n], W packed once for the batch.
void conv2d_f32(const float* x, const float* w, float* out, int64_t N, int64_t O, const Geometry& g) {
  const int64_t K = g.rows(), L = g.cols();
  if (g.p.stride_h == 1 && g.p.stride_w == 1 &&
      conv2d_winograd_forward(x, w, out, Stride1Conv{N, g.C, g.H, g.W, O, g.kh, g.kw, g.p.pad_h, g.p.pad_w}))
    return;
  const gemm::PackedA wp(gemm::View{w, K, 1}, O, K);
  if (is_patchwise(g)) {
    CpuBuffer<float> col(static_cast<size_t>(K * L));  // (C*kh*kw, Ho*Wo) of one image
    for (int64_t n = 0; n < N; ++n) {
      space_to_depth(x + n * g.C * g.H * g.W, col.data(), g, L);
      gemm::gemm(wp, gemm::MatrixSource(gemm::View{col.data(), L, 1}), L, out + n * O * L, L, false);
    }
    return;
  }
  if (g.p.stride_h == 1 && g.p.stride_w == 1 && !g.is_pointwise() &&
      conv2d_stride1_forward(x, wp, out, Stride1Conv{N, g.C, g.H, g.W, O, g.kh, g.kw, g.p.pad_h, g.p.pad_w}))
    return;
  for (int64_t n = 0; n < N; ++n) {
    const float* xn = x + n * g.C * g.H * g.W;  // (C, H, W)
    float* on = out + n * O * L;                // (O, Ho*Wo)
    if (g.is_pointwise()) gemm::gemm(wp, gemm::MatrixSource(gemm::View{xn, L, 1}), L, on, L, false);
    else gemm::gemm(wp, PatchSource(xn, g), L, on, L, false);
  }
}

// The direct weight-gradient kernel runs over padded-width rows; below this width the rows' padding
// (2 of every Wo + 2 positions) and the short blocks cost more than the transposition it saves
// (measured on the UNet at 160x240, one thread: faster at 60 pixels a row and up, about even at 30,
// 2-3x slower at 15), and the GEMM path is used.
constexpr int64_t kDirectMinWidth = 40;
// The direct kernel keeps 16 float lanes per weight across the whole sum, (O, C*kh*kw, 16), read and
// written once per band of rows: past this many weights (16 MB of lanes) that traffic outweighs the
// transposition it saves, and the lanes add to the step's peak memory (a 1024 -> 512 layer's are
// 302 MB; at 40x60, batch 1, it ran at 113 GFLOP/s against the GEMM path's 190-210, 2 threads,
// AVX-512), so the GEMM path is used.
constexpr int64_t kDirectMaxWeights = int64_t{1} << 18;

// Windows that tile the input take the dot-product kernel for the weight gradient from this many
// output pixels an image, up to this many weights (measured on the UNet's up-convolutions, 2 threads:
// 1.2-2.5x faster at 80x120 to 160x240 and at 40x60 with up to 64 x 128 weights; even at 20x30, 2.5x
// slower at 10x15, and 10% slower with 256 x 512 weights at 40x60, where the GEMM's tiles are many
// and full).
constexpr int64_t kPatchDotMinCols = 2048;
constexpr int64_t kPatchDotMaxWeights = 128 * 256;

// The float32 weight gradient, dW (O, C*kh*kw) = sum over images n of g[n] (O, L) @ col[n]^T, a tile
// of output rows at a time. When dW has enough tiles of the micro-kernel for every thread, each
// product is split over the threads by the GEMM itself. The small layers (16 or 32 channels: dW is
// 2 x 3 tiles) would leave a thread idle that way, so there the sum over (image, output row) is split
// instead: each thread takes a contiguous share of the rows into a private dW, and the shares are
// added in thread order (the same bits for the same thread count).
void conv2d_backward_weight_f32(const float* grad, const float* x, float* dw, int64_t N, int64_t O, const Geometry& g) {
  const int64_t K = g.rows(), L = g.cols();
  // 3x3 at stride 1 with 64 (AVX2: 32) to 512 channels: Winograd F(2x2, 3x3).
  if (g.p.stride_h == 1 && g.p.stride_w == 1 &&
      conv2d_winograd_backward_weight(grad, x, dw, Stride1Conv{N, g.C, g.H, g.W, O, g.kh, g.kw, g.p.pad_h, g.p.pad_w}))
    return;
  // Stride 1 with output rows of at least kDirectMinWidth pixels and at most kDirectMaxWeights
  // weights: the direct dot-product kernel.
  if (g.p.stride_h == 1 && g.p.stride_w == 1 && g.Wo >= kDirectMinWidth && O * K <= kDirectMaxWeights &&
      conv2d_stride1_backward_weight(grad, x, dw, Stride1Conv{N, g.C, g.H, g.W, O, g.kh, g.kw, g.p.pad_h, g.p.pad_w}))
    return;
  // Windows that tile the input: the direct kernel's dot products, over the pixels, of g[n]'s rows
  // and space_to_depth(x[n])'s, both laid out in rows padded to a multiple of 16 floats.
  if (is_patchwise(g) && L >= kPatchDotMinCols && O * K <= kPatchDotMaxWeights && dot_lanes_supported(O)) {
    const int64_t Q = (L + 15) / 16 * 16, Kp = (K + 2) / 3 * 3;  // the kernel's units: 16 lanes, 3 rows
    // g[n] is read in place when its rows are already whole vectors on 64-byte boundaries (L a
    // multiple of 16, as at every UNet level but the deepest), else copied into padded rows.
    const bool in_place = Q == L && reinterpret_cast<uintptr_t>(grad) % 64 == 0;
    CpuBuffer<float> acc(static_cast<size_t>(O * Kp * 16)), col(static_cast<size_t>(Kp * Q)),
        gq(static_cast<size_t>(in_place ? 0 : O * Q));
    std::fill(acc.data(), acc.data() + acc.size(), 0.0f);
    std::fill(col.data() + K * Q, col.data() + Kp * Q, 0.0f);  // the rows past K
    for (int64_t n = 0; n < N; ++n) {
      space_to_depth(x + n * g.C * g.H * g.W, col.data(), g, Q);
      const float* gn = grad + n * O * L;
      if (!in_place)
        parallel_for(0, O, row_grain(Q), [&](int64_t ob, int64_t oe) {
          for (int64_t o = ob; o < oe; ++o) {
            std::copy_n(gn + o * L, L, gq.data() + o * Q);
            std::fill(gq.data() + o * Q + L, gq.data() + (o + 1) * Q, 0.0f);
          }
        });
      accumulate_dot_lanes(in_place ? gn : gq.data(), col.data(), O, Kp, Q, acc.data());
    }
    add_lanes(acc.data(), O, K, Kp, dw);
    return;
  }
  const gemm::Blocking bl = gemm::blocking();
  const int64_t threads = get_num_threads();
  // Accumulates the rows [r0, r1) of the flattened (image, output row) space into acc (O, K).
  auto accumulate_rows = [&](int64_t r0, int64_t r1, float* acc, float* col) {
    for (int64_t r = r0; r < r1;) {
      const int64_t n = r / g.Ho, oh0 = r - n * g.Ho;
      const float* xn = x + n * g.C * g.H * g.W;  // (C, H, W)
      const int64_t oh_end = std::min(g.Ho, oh0 + (r1 - r));
      for_each_tile(g, [&](int64_t t0, int64_t t1) {
        const int64_t a = std::max(t0, oh0), b = std::min(t1, oh_end);
        if (a >= b) return;
        const int64_t Lb = (b - a) * g.Wo;
        const float* cm = xn + a * g.Wo;  // pointwise: the image itself, (C, Lb) of (C, H*W)
        int64_t ld = L;
        if (!g.is_pointwise()) {
          im2col(xn, col, g, a, b);
          cm = col;
          ld = Lb;
        }
        const gemm::PackedA gb(gemm::View{grad + n * O * L + a * g.Wo, L, 1}, O, Lb);  // (O, Lb) of (O, L)
        gemm::gemm(gb, gemm::MatrixSource(gemm::View{cm, 1, ld}), K, acc, K, true);    // col^T (Lb, K)
      });
      r += oh_end - oh0;
    }
  };
  const int64_t tiles = ((O + bl.mr - 1) / bl.mr) * ((K + bl.nr - 1) / bl.nr);
  const int64_t rows = N * g.Ho;
  if (threads <= 1 || tiles >= 4 * threads || rows < threads) {
    CpuBuffer<float> col(static_cast<size_t>(tile_buffer_size(g)));
    accumulate_rows(0, rows, dw, col.data());
    return;
  }
  CpuBuffer<float> partial(static_cast<size_t>(threads * O * K));  // (threads, O, K)
  parallel_for(0, threads, 1, [&](int64_t tb, int64_t te) {
    for (int64_t t = tb; t < te; ++t) {
      float* acc = partial.data() + t * O * K;
      std::fill(acc, acc + O * K, 0.0f);
      CpuBuffer<float> col(static_cast<size_t>(tile_buffer_size(g)));
      accumulate_rows(rows * t / threads, rows * (t + 1) / threads, acc, col.data());
    }
  });
  parallel_for(0, O * K, kElementwiseGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      for (int64_t t = 0; t < threads; ++t) dw[i] += partial.data()[t * O * K + i];
  });
}

}  // namespace

// x (N, C, H, W), w (O, C, kh, kw), bias (O) or undefined -> (N, O, Ho, Wo)
Tensor conv2d(const Tensor& x_in, const Tensor& w_in, const Tensor& bias_in, Conv2dParams p) {
  const Tensor x = contiguous_copy(x_in), w = contiguous_copy(w_in);
  const Tensor bias = bias_in.defined() ? contiguous_copy(bias_in) : Tensor();
  const Geometry g = geometry("conv2d", x.shape(), w.shape(), p);
  const int64_t N = x.size(0), O = w.size(0), K = g.rows(), L = g.cols();
  Tensor out = empty({N, O, g.Ho, g.Wo}, x.options());
  if (out.numel() == 0) return out;

  if (x.dtype() == kFloat32) {
    conv2d_f32(x.data_ptr<float>(), w.data_ptr<float>(), out.data_ptr<float>(), N, O, g);
    if (bias.defined()) {
      const float* b = bias.data_ptr<float>();
      float* o = out.data_ptr<float>();
      parallel_for(0, N * O, row_grain(L), [&](int64_t rb, int64_t re) {
        for (int64_t r = rb; r < re; ++r) {
          const float v = b[r % O];
          for (float* q = o + r * L; q < o + (r + 1) * L; ++q) *q += v;
        }
      });
    }
    return out;
  }

  Tensor col = empty({tile_buffer_size(g)}, x.options());  // (C*kh*kw, rows*Wo) per tile
  dispatch_floating(x.dtype(), "conv2d", [&]<typename T>() {
    CMat<T> Wm(w.data_ptr<T>(), O, K);  // (O, C*kh*kw)
    using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;
    for (int64_t n = 0; n < N; ++n) {
      const T* xn = x.data_ptr<T>() + n * g.C * g.H * g.W;  // (C, H, W)
      for_each_tile(g, [&](int64_t oh0, int64_t oh1) {
        const int64_t Lb = (oh1 - oh0) * g.Wo;
        if (!g.is_pointwise()) im2col(xn, col.data_ptr<T>(), g, oh0, oh1);
        CMat<T> Cm(g.is_pointwise() ? xn : col.data_ptr<T>(), K, Lb);                          // (C*kh*kw, Lb)
        SMat<T> Ob(out.data_ptr<T>() + n * O * L + oh0 * g.Wo, O, Lb, Eigen::OuterStride<>(L));  // (O, Lb) of (O, L)
        Ob.noalias() = Wm * Cm;
        if (bias.defined()) Ob.colwise() += Eigen::Map<const Vec>(bias.data_ptr<T>(), O);
      });
    }
  });
  return out;
}

// grad (N, O, Ho, Wo), w (O, C, kh, kw) -> dx (N, C, H, W) with H, W from x_shape
namespace {

// For stride 1, the input gradient is itself a convolution: dx = conv2d(grad, w', padding k - 1 - p)
// with w'[c, o, i, j] = w[o, c, kh-1-i, kw-1-j] (channels swapped, kernel rotated 180 degrees). That
// runs on the im2col + GEMM path, which is faster than GEMM + col2im (col2im's scatter-add is the
// slow half), and writes dx directly. Returns an undefined tensor when it does not apply.
Tensor backward_input_as_conv(const Tensor& grad, const Tensor& w, const Shape& x_shape, Conv2dParams p) {
  const int64_t O = w.size(0), C = w.size(1), kh = w.size(2), kw = w.size(3);
  // Few input channels make the rotated convolution's GEMM a thin one (C rows): col2im wins below 16
  // (with the packed GEMM, 16 rows already run 1.3-2.4x faster this way than GEMM + col2im).
  if (C < 16 || p.stride_h != 1 || p.stride_w != 1 || p.pad_h > kh - 1 || p.pad_w > kw - 1 || (kh == 1 && kw == 1))
    return {};
  if (grad.size(2) + kh - 1 - 2 * p.pad_h != x_shape[2] || grad.size(3) + kw - 1 - 2 * p.pad_w != x_shape[3]) return {};
  Tensor wr = empty({C, O, kh, kw}, w.options());  // (C, O, kh, kw), rotated
  dispatch_floating(w.dtype(), "conv2d_backward_input", [&]<typename T>() {
    const T* src = w.data_ptr<T>();
    T* dst = wr.data_ptr<T>();
    // The deep layers' kernels are 0.3-2.4 M values: split by output channel over the threads.
    parallel_for(0, O, row_grain(C * kh * kw), [&](int64_t ob, int64_t oe) {
      for (int64_t o = ob; o < oe; ++o)
        for (int64_t c = 0; c < C; ++c)
          for (int64_t i = 0; i < kh; ++i)
            for (int64_t j = 0; j < kw; ++j)
              dst[((c * O + o) * kh + i) * kw + j] = src[((o * C + c) * kh + (kh - 1 - i)) * kw + (kw - 1 - j)];
    });
  });
  return cpu::conv2d(grad, wr, Tensor(), Conv2dParams{1, 1, kh - 1 - p.pad_h, kw - 1 - p.pad_w});
}

}  // namespace

Tensor conv2d_backward_input(const Tensor& grad_in, const Tensor& w_in, const Shape& x_shape, Conv2dParams p) {
  const Tensor gr = contiguous_copy(grad_in), w = contiguous_copy(w_in);
  const Geometry g = geometry("conv2d_backward_input", x_shape, w.shape(), p, &gr.shape());
  if (Tensor dx = backward_input_as_conv(gr, w, x_shape, p); dx.defined()) return dx;
  const int64_t N = x_shape[0], O = w.size(0), K = g.rows(), L = g.cols();
  // Pointwise: dx[n] is exactly W^T g[n], written whole, so no zero fill is needed; nor with windows
  // that tile the input, where depth_to_space writes every pixel.
  const bool whole = g.is_pointwise() || (gr.dtype() == kFloat32 && is_patchwise(g));
  Tensor dx = whole ? empty(x_shape, gr.options()) : zeros(x_shape, gr.options());
  if (dx.numel() == 0) return dx;
  Tensor col = empty({tile_buffer_size(g)}, gr.options());  // (C*kh*kw, rows*Wo) per tile

  if (gr.dtype() == kFloat32) {
    const gemm::PackedA wt(gemm::View{w.data_ptr<float>(), 1, K}, K, O);  // W^T (C*kh*kw, O)
    if (is_patchwise(g)) {
      CpuBuffer<float> cb(static_cast<size_t>(K * L));  // (C*kh*kw, Ho*Wo) of one image
      for (int64_t n = 0; n < N; ++n) {
        gemm::gemm(wt, gemm::MatrixSource(gemm::View{gr.data_ptr<float>() + n * O * L, L, 1}), L, cb.data(), L, false);
        depth_to_space(cb.data(), dx.data_ptr<float>() + n * g.C * g.H * g.W, g);
      }
      return dx;
    }
    for (int64_t n = 0; n < N; ++n) {
      float* dxn = dx.data_ptr<float>() + n * g.C * g.H * g.W;  // (C, H, W)
      for_each_tile(g, [&](int64_t oh0, int64_t oh1) {
        const int64_t Lb = (oh1 - oh0) * g.Wo;
        const gemm::MatrixSource gb(gemm::View{gr.data_ptr<float>() + n * O * L + oh0 * g.Wo, L, 1});  // (O, Lb) of (O, L)
        float* cm = g.is_pointwise() ? dxn : col.data_ptr<float>();                                  // (C*kh*kw, Lb)
        gemm::gemm(wt, gb, Lb, cm, Lb, false);
        if (!g.is_pointwise()) col2im(cm, dxn, g, oh0, oh1);
      });
    }
    return dx;
  }

  dispatch_floating(gr.dtype(), "conv2d_backward_input", [&]<typename T>() {
    CMat<T> Wm(w.data_ptr<T>(), O, K);  // (O, C*kh*kw)
    for (int64_t n = 0; n < N; ++n) {
      T* dxn = dx.data_ptr<T>() + n * g.C * g.H * g.W;  // (C, H, W)
      for_each_tile(g, [&](int64_t oh0, int64_t oh1) {
        const int64_t Lb = (oh1 - oh0) * g.Wo;
        CSMat<T> Gb(gr.data_ptr<T>() + n * O * L + oh0 * g.Wo, O, Lb, Eigen::OuterStride<>(L));  // (O, Lb) of (O, L)
        Mat<T> Cm(g.is_pointwise() ? dxn : col.data_ptr<T>(), K, Lb);                          // (C*kh*kw, Lb)
        Cm.noalias() = Wm.transpose() * Gb;
        if (!g.is_pointwise()) col2im(col.data_ptr<T>(), dxn, g, oh0, oh1);
      });
    }
  });
  return dx;
}

// grad (N, O, Ho, Wo), x (N, C, H, W) -> dW (O, C, kh, kw) with kh, kw from w_shape
Tensor conv2d_backward_weight(const Tensor& grad_in, const Tensor& x_in, const Shape& w_shape, Conv2dParams p) {
  const Tensor gr = contiguous_copy(grad_in), x = contiguous_copy(x_in);
  const Geometry g = geometry("conv2d_backward_weight", x.shape(), w_shape, p, &gr.shape());
  const int64_t N = x.size(0), O = w_shape[0], K = g.rows(), L = g.cols();
  Tensor dw = zeros(w_shape, x.options());
  if (dw.numel() == 0 || N == 0 || L == 0) return dw;
  if (x.dtype() == kFloat32) {
    conv2d_backward_weight_f32(gr.data_ptr<float>(), x.data_ptr<float>(), dw.data_ptr<float>(), N, O, g);
    return dw;
  }
  Tensor col = empty({tile_buffer_size(g)}, x.options());  // (C*kh*kw, rows*Wo) per tile

  dispatch_floating(x.dtype(), "conv2d_backward_weight", [&]<typename T>() {
    Mat<T> dW(dw.data_ptr<T>(), O, K);  // (O, C*kh*kw)
    for (int64_t n = 0; n < N; ++n) {
      const T* xn = x.data_ptr<T>() + n * g.C * g.H * g.W;  // (C, H, W)
      for_each_tile(g, [&](int64_t oh0, int64_t oh1) {
        const int64_t Lb = (oh1 - oh0) * g.Wo;
        if (!g.is_pointwise()) im2col(xn, col.data_ptr<T>(), g, oh0, oh1);
        CMat<T> Cm(g.is_pointwise() ? xn : col.data_ptr<T>(), K, Lb);                          // (C*kh*kw, Lb)
        CSMat<T> Gb(gr.data_ptr<T>() + n * O * L + oh0 * g.Wo, O, Lb, Eigen::OuterStride<>(L));  // (O, Lb) of (O, L)
        dW.noalias() += Gb * Cm.transpose();
      });
    }
  });
  return dw;
}

}  // namespace tl::cpu
