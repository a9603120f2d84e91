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
#include <Eigen/Core>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "tensor/cpu/cpu_kernels.h"
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

}  // namespace

// x (N, C, H, W), w (O, C, kh, kw), bias (O) or undefined -> (N, O, Ho, Wo)
Tensor conv2d(const Tensor& x_in, const Tensor& w_in, const Tensor& bias_in, Conv2dParams p) {
  const Tensor x = contiguous_copy(x_in), w = contiguous_copy(w_in);
  const Tensor bias = bias_in.defined() ? contiguous_copy(bias_in) : Tensor();
  const Geometry g = geometry("conv2d", x.shape(), w.shape(), p);
  const int64_t N = x.size(0), O = w.size(0), K = g.rows(), L = g.cols();
  Tensor out = empty({N, O, g.Ho, g.Wo}, x.options());
  if (out.numel() == 0) return out;
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
  // Few input channels make the rotated convolution's GEMM a thin one (C rows): col2im wins there.
  if (C < 32 || p.stride_h != 1 || p.stride_w != 1 || p.pad_h > kh - 1 || p.pad_w > kw - 1 || (kh == 1 && kw == 1))
    return {};
  if (grad.size(2) + kh - 1 - 2 * p.pad_h != x_shape[2] || grad.size(3) + kw - 1 - 2 * p.pad_w != x_shape[3]) return {};
  Tensor wr = empty({C, O, kh, kw}, w.options());  // (C, O, kh, kw), rotated
  dispatch_floating(w.dtype(), "conv2d_backward_input", [&]<typename T>() {
    const T* src = w.data_ptr<T>();
    T* dst = wr.data_ptr<T>();
    for (int64_t o = 0; o < O; ++o)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t i = 0; i < kh; ++i)
          for (int64_t j = 0; j < kw; ++j)
            dst[((c * O + o) * kh + i) * kw + j] = src[((o * C + c) * kh + (kh - 1 - i)) * kw + (kw - 1 - j)];
  });
  return cpu::conv2d(grad, wr, Tensor(), Conv2dParams{1, 1, kh - 1 - p.pad_h, kw - 1 - p.pad_w});
}

}  // namespace

Tensor conv2d_backward_input(const Tensor& grad_in, const Tensor& w_in, const Shape& x_shape, Conv2dParams p) {
  const Tensor gr = contiguous_copy(grad_in), w = contiguous_copy(w_in);
  const Geometry g = geometry("conv2d_backward_input", x_shape, w.shape(), p, &gr.shape());
  if (Tensor dx = backward_input_as_conv(gr, w, x_shape, p); dx.defined()) return dx;
  const int64_t N = x_shape[0], O = w.size(0), K = g.rows(), L = g.cols();
  // Pointwise: dx[n] is exactly W^T g[n], written whole, so no zero fill is needed.
  Tensor dx = g.is_pointwise() ? empty(x_shape, gr.options()) : zeros(x_shape, gr.options());
  if (dx.numel() == 0) return dx;
  Tensor col = empty({tile_buffer_size(g)}, gr.options());  // (C*kh*kw, rows*Wo) per tile

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
