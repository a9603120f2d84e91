#pragma once
// float32 stride-1 convolutions read straight from a zero-padded copy of the input, with no column
// matrix and no packing of the input: the forward pass (and so the stride-1 input gradient, which is
// a forward convolution with the rotated kernel) and the weight gradient. See conv_stride1.cpp.
//
// Both return false, computing nothing, where they do not apply: the active GEMM micro-kernel is the
// portable reference (they have AVX-512 and AVX2 kernels only), or the shape is outside what they
// handle (said at each); the caller then takes the general im2col path.
#include <cstdint>

#include "tensor/cpu/gemm.h"

namespace tl::cpu {

// The sizes of a stride-1 convolution of x (N, C, H, W) with a (O, C, kh, kw) kernel and padding
// (ph, pw) < (kh, kw): output (N, O, Ho, Wo), Ho = H + 2ph - kh + 1, Wo = W + 2pw - kw + 1.
struct Stride1Conv {
  int64_t N, C, H, W, O, kh, kw, ph, pw;
  int64_t hp() const { return H + 2 * ph; }  // the padded input
  int64_t wp() const { return W + 2 * pw; }
  int64_t ho() const { return hp() - kh + 1; }
  int64_t wo() const { return wp() - kw + 1; }
};

// out (N, O, Ho, Wo) = w (O, C*kh*kw) @ col(x) for each image, w packed as `wp` (O rows, C*kh*kw deep,
// for the active micro-kernel).
bool conv2d_stride1_forward(const float* x, const gemm::PackedA& wp, float* out, const Stride1Conv& s);

// dW (O, C*kh*kw) += sum over n, oh, ow of grad[n, o, oh, ow] * x[n, c, oh - ph + ki, ow - pw + kj],
// for grad (N, O, Ho, Wo). Needs O a multiple of 8 and kh*kw of 3.
bool conv2d_stride1_backward_weight(const float* grad, const float* x, float* dw, const Stride1Conv& s);

// The weight gradient's dot-product kernel on its own, for operands already laid out as rows: acc
// (O, K, 16) += per-lane partial sums of g (O, Q) . b (K, Q)^T, with g 64-byte aligned, Q a multiple
// of 16 and K of 3 (rows past the true lengths zero). add_lanes then adds each entry's 16 lanes, in a
// fixed order, into dw (O, K) (acc's rows ldk entries apart). Needs dot_lanes_supported(O): O a
// multiple of 8 and an AVX2 or AVX-512 kernel active.
bool dot_lanes_supported(int64_t O);
void accumulate_dot_lanes(const float* g, const float* b, int64_t O, int64_t K, int64_t Q, float* acc);
void add_lanes(const float* acc, int64_t O, int64_t K, int64_t ldk, float* dw);

}  // namespace tl::cpu
