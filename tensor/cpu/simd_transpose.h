#pragma once
// An 8 x 8 float transpose through AVX2 registers, for the packings that turn rows into columns (the
// GEMM's A panels, the Winograd weight gradient's B panels). Callers check that the CPU has AVX2.
#include <immintrin.h>

#include <cstdint>

namespace tl::cpu {

// dst[k * ldd + j] = src[j * lds + k] for j, k < 8.
__attribute__((target("avx2"))) inline void transpose8x8(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * lds);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);      // (r_i k0, r_i+1 k0, r_i k1, r_i+1 k1 | k4, k5)
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);  // (k2, k3 | k6, k7)
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);          // k0 | k4
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);      // k1 | k5
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);  // k2 | k6
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);  // k3 | k7
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x20);
    t[i + 4] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x31);
  }
  for (int i = 0; i < 8; ++i) _mm256_storeu_ps(dst + i * ldd, t[i]);
}

}  // namespace tl::cpu
