#pragma once
// Matrix-multiply precision. Strict fp32 by default: every GEMM (matmul and the convolutions' GEMMs)
// accumulates float32 products in float32. TF32 lets CUDA's float32 GEMMs run on the tensor cores
// with 10-bit mantissa inputs, the mode PyTorch uses for its cuDNN convolutions by default; it is for
// like-with-like speed comparisons. The CPU backend ignores the switch.
//
// The initial value comes from the environment variable TL_ALLOW_TF32 ("1" on, "0" or unset off),
// read once at first use; set_allow_tf32 overrides it (apps expose it as --tf32).
namespace tl {

bool allow_tf32();
void set_allow_tf32(bool on);

}  // namespace tl
