#pragma once
// float32 3x3 stride-1 convolutions by Winograd's minimal filtering F(2x2, 3x3): 16 multiplies per
// 2x2 output tile and input channel instead of 36 (see conv_winograd.cpp). The forward pass (and so
// the stride-1 input gradient, which conv.cpp computes as a forward convolution with the rotated
// kernel) and the weight gradient.
//
// Both return false, computing nothing the caller sees, where they do not apply: switched off, a
// kernel other than 3x3, padding past 2, too few channels for the transforms to pay or too many for
// their scratch memory, or a non-finite value in the operands (Winograd's transforms mix an Inf into
// outputs and taps whose sums never meet it; the caller's direct paths then keep those finite). The
// caller then takes its usual path.
#include <cstdint>

#include "tensor/cpu/conv_stride1.h"

namespace tl::cpu {

// The switch: TL_CONV_WINOGRAD=0 turns the Winograd path off, 1 (or unset) leaves it on; read once,
// any other value throws std::invalid_argument naming the variable. set_winograd_enabled overrides it
// (tests, benchmarks).
bool winograd_enabled();
void set_winograd_enabled(bool on);

// Where it pays depends on the GEMM micro-kernel in use (gemm.h): the direct stride-1 kernels it
// replaces run at that kernel's vector width, the transforms cost about the same at either. Measured
// on the UNet's layers (2 threads, batch 4), the fewest input and output channels, the same for the
// forward and the weight gradient:
// - AVX-512: 64 (at 32 the forward is even with the direct path, the GEMMs being only K = C deep, and
//   the direct weight gradient is 7-30% faster);
// - AVX2, and the reference kernel (which has no direct stride-1 kernels): 32 (there the forward is
//   20-30% faster than the direct path, the weight gradient even at 32 x 32 and 17% faster at
//   64 x 32; at 16 the weight gradient is 20-40% slower).
int64_t winograd_min_channels(gemm::Isa isa);
// The transformed kernels, U (16, O, C), and the weight gradient's dU take 16/9 of the weights' memory
// each: layers with more than 512 x 512 kernels keep the direct paths, so that the scratch of the
// widest layers (1024 channels: 64 MB) does not raise the peak memory of a train step.
constexpr int64_t kWinogradMaxKernels = 512 * 512;

// Whether a convolution of this shape takes the Winograd forward and weight gradient (when enabled
// and finite) under the active micro-kernel, gemm::active_isa().
bool winograd_applies(const Stride1Conv& s);

// Calls that completed on the Winograd path since the start of the process: the evidence tests check.
int64_t winograd_forward_calls();
int64_t winograd_backward_weight_calls();

// out (N, O, Ho, Wo) = conv(x (N, C, H, W), w (O, C, 3, 3)), no bias. Overwrites out, also when it
// returns false after finding a non-finite value part way.
bool conv2d_winograd_forward(const float* x, const float* w, float* out, const Stride1Conv& s);

// dw (O, C, 3, 3) += sum over n, oh, ow of grad[n, o, oh, ow] * x[n, c, oh - ph + ki, ow - pw + kj].
// dw is untouched when it returns false.
bool conv2d_winograd_backward_weight(const float* grad, const float* x, float* dw, const Stride1Conv& s);

}  // namespace tl::cpu
