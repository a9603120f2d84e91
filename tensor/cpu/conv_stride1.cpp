// float32 stride-1 convolutions over a zero-padded copy of the input (conv_stride1.h).
//
// With the padding written out, xpad (C, H + 2ph, W + 2pw), the input pixel that kernel tap
// r = (c, ki, kj) sees at output pixel (oh, ow) is xpad[c, oh + ki, ow + kj]: for a run of output
// pixels along a row it is a contiguous run of the padded row, with no bounds to check. So:
//
// Forward: out[o, oh, ow0 .. ow0+NR) = sum over r of w[o, r] * xpad[c, oh + ki, ow0 + kj ..]. That
// is the GEMM micro-kernel's tile, with B's row r read in place at xpad + off[r] + oh*wp + ow0
// instead of from a packed panel: the weights are the packed A operand, the input is never copied
// into a column matrix or a panel (with 16 or 32 output channels packing B cost more than the
// multiply-adds it feeds).
//
// Weight gradient: dW[o, r] is the dot product, over every output pixel, of g[n, o, oh, ow] and
// xpad[n, c, oh + ki, ow + kj]; along an output row both are contiguous, so it vectorizes along the
// pixels with no transposition (the GEMM formulation dW = g @ col^T needs col^T packed). A tile of 8
// output channels x 3 consecutive r keeps 24 vector accumulators, one lane per pixel position mod the
// vector width; each step loads 8 gradient vectors and 3 input vectors for 24 FMAs. The accumulators
// of every tile live in a (O, K, lanes) buffer across blocks of output rows; the lanes are added up
// in a fixed order at the end, so the bits depend only on the thread count.
#include "tensor/cpu/conv_stride1.h"

#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "tensor/parallel.h"
#include "tensor/tensor.h"

namespace tl::cpu {

namespace {

constexpr int kTileO = 8, kTileR = 3;

// Image n of x (C, H, W) into xpad (C, hp, wp) with its zero border.
void pad_image(const float* xn, float* xpad, const Stride1Conv& s) {
  const int64_t hp = s.hp(), wp = s.wp();
  parallel_for(0, s.C, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      float* dst = xpad + c * hp * wp;
      std::fill(dst, dst + s.ph * wp, 0.0f);
      for (int64_t h = 0; h < s.H; ++h) {
        float* row = dst + (h + s.ph) * wp;
        std::fill(row, row + s.pw, 0.0f);
        std::copy(xn + (c * s.H + h) * s.W, xn + (c * s.H + h + 1) * s.W, row + s.pw);
        std::fill(row + s.pw + s.W, row + wp, 0.0f);
      }
      std::fill(dst + (s.H + s.ph) * wp, dst + hp * wp, 0.0f);
    }
  });
}

// The forward micro-kernels: c (mr, nr) (+)= a (kc, MR) @ B with B's row k the nr floats at
// x + off[k] (nr <= NR, loaded under a mask past nr), the GEMM kernels' tiles (gemm.cpp).
__attribute__((target("avx512f"))) void rows_avx512(int64_t kc, const float* a, const float* x, const int64_t* off,
                                                   float* c, int64_t ldc, int64_t mr, int64_t nr, bool acc) {
  constexpr int MR = 8;
  auto mask = [&](int v) -> __mmask16 {
    const int64_t n = std::clamp<int64_t>(nr - 16 * v, 0, 16);
    return static_cast<__mmask16>((uint32_t{1} << n) - 1);
  };
  const __mmask16 m0 = mask(0), m1 = mask(1), m2 = mask(2);
  __m512 s[MR][3];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) s[i][0] = s[i][1] = s[i][2] = _mm512_setzero_ps();
#pragma GCC unroll 2
  for (int64_t k = 0; k < kc; ++k, a += MR) {
    const float* b = x + off[k];
    const __m512 b0 = _mm512_maskz_loadu_ps(m0, b), b1 = _mm512_maskz_loadu_ps(m1, b + 16),
                 b2 = _mm512_maskz_loadu_ps(m2, b + 32);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i]);
      s[i][0] = _mm512_fmadd_ps(ai, b0, s[i][0]);
      s[i][1] = _mm512_fmadd_ps(ai, b1, s[i][1]);
      s[i][2] = _mm512_fmadd_ps(ai, b2, s[i][2]);
    }
  }
  const __mmask16 m[3] = {m0, m1, m2};
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    if (i >= mr) break;
#pragma GCC unroll 3
    for (int v = 0; v < 3; ++v) {
      float* p = c + i * ldc + 16 * v;
      const __m512 r = acc ? _mm512_add_ps(s[i][v], _mm512_maskz_loadu_ps(m[v], p)) : s[i][v];
      _mm512_mask_storeu_ps(p, m[v], r);
    }
  }
}

__attribute__((target("avx2,fma"))) void rows_avx2(int64_t kc, const float* a, const float* x, const int64_t* off,
                                                  float* c, int64_t ldc, int64_t mr, int64_t nr, bool acc) {
  constexpr int MR = 4;
  alignas(32) int32_t bits[24];
  for (int j = 0; j < 24; ++j) bits[j] = j < nr ? -1 : 0;
  const __m256i m0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(bits)),
                m1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(bits + 8)),
                m2 = _mm256_load_si256(reinterpret_cast<const __m256i*>(bits + 16));
  __m256 s[MR][3];
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i) s[i][0] = s[i][1] = s[i][2] = _mm256_setzero_ps();
#pragma GCC unroll 2
  for (int64_t k = 0; k < kc; ++k, a += MR) {
    const float* b = x + off[k];
    const __m256 b0 = _mm256_maskload_ps(b, m0), b1 = _mm256_maskload_ps(b + 8, m1),
                 b2 = _mm256_maskload_ps(b + 16, m2);
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) {
      const __m256 ai = _mm256_broadcast_ss(a + i);
      s[i][0] = _mm256_fmadd_ps(ai, b0, s[i][0]);
      s[i][1] = _mm256_fmadd_ps(ai, b1, s[i][1]);
      s[i][2] = _mm256_fmadd_ps(ai, b2, s[i][2]);
    }
  }
  const __m256i m[3] = {m0, m1, m2};
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i) {
    if (i >= mr) break;
#pragma GCC unroll 3
    for (int v = 0; v < 3; ++v) {
      float* p = c + i * ldc + 8 * v;
      const __m256 r = acc ? _mm256_add_ps(s[i][v], _mm256_maskload_ps(p, m[v])) : s[i][v];
      _mm256_maskstore_ps(p, m[v], r);
    }
  }
}

using RowsFn = void (*)(int64_t, const float*, const float*, const int64_t*, float*, int64_t, int64_t, int64_t, bool);

// One tile over output rows [oh0, oh1): acc (kTileO, kTileR, 16) += g rows . x rows.
//   g: the tile's first output channel's plane (Ho, Wo), planes ldg apart;
//   x[t]: the padded input plane of r0 + t, offset by (ki, kj), rows of wp floats.
__attribute__((target("avx512f"))) void tile_avx512(const float* g, int64_t ldg, const float* const* x, int64_t wp,
                                                    int64_t wo, int64_t oh0, int64_t oh1, float* acc) {
  __m512 s[kTileO][kTileR];
  for (int i = 0; i < kTileO; ++i)
    for (int t = 0; t < kTileR; ++t) s[i][t] = _mm512_loadu_ps(acc + (i * kTileR + t) * 16);
  const __mmask16 tail = static_cast<__mmask16>((1u << (wo % 16)) - 1);
  for (int64_t oh = oh0; oh < oh1; ++oh) {
    const float* gr = g + oh * wo;
    const float* x0 = x[0] + oh * wp;
    const float* x1 = x[1] + oh * wp;
    const float* x2 = x[2] + oh * wp;
    // The full vectors, then the row's tail under a mask (written out twice: a lambda or a helper
    // taking the accumulators by reference makes the compiler keep them in memory).
    int64_t ow = 0;
    for (; ow + 16 <= wo; ow += 16) {
      const __m512 a = _mm512_loadu_ps(x0 + ow), b = _mm512_loadu_ps(x1 + ow), c = _mm512_loadu_ps(x2 + ow);
#pragma GCC unroll 8
      for (int i = 0; i < kTileO; ++i) {
        const __m512 gv = _mm512_loadu_ps(gr + i * ldg + ow);
        s[i][0] = _mm512_fmadd_ps(gv, a, s[i][0]);
        s[i][1] = _mm512_fmadd_ps(gv, b, s[i][1]);
        s[i][2] = _mm512_fmadd_ps(gv, c, s[i][2]);
      }
    }
    if (ow < wo) {
      const __m512 a = _mm512_maskz_loadu_ps(tail, x0 + ow), b = _mm512_maskz_loadu_ps(tail, x1 + ow),
                   c = _mm512_maskz_loadu_ps(tail, x2 + ow);
#pragma GCC unroll 8
      for (int i = 0; i < kTileO; ++i) {
        const __m512 gv = _mm512_maskz_loadu_ps(tail, gr + i * ldg + ow);
        s[i][0] = _mm512_fmadd_ps(gv, a, s[i][0]);
        s[i][1] = _mm512_fmadd_ps(gv, b, s[i][1]);
        s[i][2] = _mm512_fmadd_ps(gv, c, s[i][2]);
      }
    }
  }
  for (int i = 0; i < kTileO; ++i)
    for (int t = 0; t < kTileR; ++t) _mm512_storeu_ps(acc + (i * kTileR + t) * 16, s[i][t]);
}

__attribute__((target("avx2,fma"))) void tile_avx2(const float* g, int64_t ldg, const float* const* x, int64_t wp,
                                                   int64_t wo, int64_t oh0, int64_t oh1, float* acc) {
  // 24 accumulators do not fit AVX2's 16 registers: two passes of 4 output channels (12 + 3 + 1).
  alignas(32) int32_t mask_bits[8];
  for (int j = 0; j < 8; ++j) mask_bits[j] = j < wo % 8 ? -1 : 0;
  const __m256i tail = _mm256_load_si256(reinterpret_cast<const __m256i*>(mask_bits));
  for (int half = 0; half < 2; ++half) {
    __m256 s[4][kTileR];
    float* a0 = acc + half * 4 * kTileR * 16;
    for (int i = 0; i < 4; ++i)
      for (int t = 0; t < kTileR; ++t) s[i][t] = _mm256_loadu_ps(a0 + (i * kTileR + t) * 16);
    const float* gh = g + half * 4 * ldg;
    for (int64_t oh = oh0; oh < oh1; ++oh) {
      const float* gr = gh + oh * wo;
      const float* x0 = x[0] + oh * wp;
      const float* x1 = x[1] + oh * wp;
      const float* x2 = x[2] + oh * wp;
      int64_t ow = 0;
      for (; ow + 8 <= wo; ow += 8) {
        const __m256 a = _mm256_loadu_ps(x0 + ow), b = _mm256_loadu_ps(x1 + ow), c = _mm256_loadu_ps(x2 + ow);
#pragma GCC unroll 4
        for (int i = 0; i < 4; ++i) {
          const __m256 gv = _mm256_loadu_ps(gr + i * ldg + ow);
          s[i][0] = _mm256_fmadd_ps(gv, a, s[i][0]);
          s[i][1] = _mm256_fmadd_ps(gv, b, s[i][1]);
          s[i][2] = _mm256_fmadd_ps(gv, c, s[i][2]);
        }
      }
      if (ow < wo) {
        const __m256 a = _mm256_maskload_ps(x0 + ow, tail), b = _mm256_maskload_ps(x1 + ow, tail),
                     c = _mm256_maskload_ps(x2 + ow, tail);
#pragma GCC unroll 4
        for (int i = 0; i < 4; ++i) {
          const __m256 gv = _mm256_maskload_ps(gr + i * ldg + ow, tail);
          s[i][0] = _mm256_fmadd_ps(gv, a, s[i][0]);
          s[i][1] = _mm256_fmadd_ps(gv, b, s[i][1]);
          s[i][2] = _mm256_fmadd_ps(gv, c, s[i][2]);
        }
      }
    }
    // The AVX2 lanes are the first 8 of each 16-float slot; the other 8 stay 0.
    for (int i = 0; i < 4; ++i)
      for (int t = 0; t < kTileR; ++t) _mm256_storeu_ps(a0 + (i * kTileR + t) * 16, s[i][t]);
  }
}

using TileFn = void (*)(const float*, int64_t, const float* const*, int64_t, int64_t, int64_t, int64_t, float*);

// Output rows per block: a tile's 8 gradient rows of the block (8 x rows x Wo floats, 24 KB) stay in
// L1 while the tiles of every r stream the input rows past them from L2.
int64_t rows_per_block(int64_t wo) { return std::max<int64_t>(1, 6144 / (kTileO * std::max<int64_t>(wo, 1))); }

}  // namespace

bool conv2d_stride1_forward(const float* x, const gemm::PackedA& wp, float* out, const Stride1Conv& s) {
  const gemm::Isa isa = wp.isa();
  if (isa == gemm::Isa::Reference || s.ph >= s.kh || s.pw >= s.kw || s.ho() <= 0 || s.wo() <= 0) return false;
  const RowsFn kernel = isa == gemm::Isa::Avx512 ? rows_avx512 : rows_avx2;
  const gemm::Blocking bl = gemm::blocking();
  const int64_t MR = isa == gemm::Isa::Avx512 ? 8 : 4, NR = isa == gemm::Isa::Avx512 ? 48 : 24;
  if (bl.mr != MR) return false;  // packed for another kernel than the active one
  const int64_t K = s.C * s.kh * s.kw, O = s.O, hp = s.hp(), wpad = s.wp(), ho = s.ho(), wo = s.wo(), L = ho * wo;
  const int64_t KC = wp.kc();
  std::vector<int64_t> off(static_cast<size_t>(K));  // tap r = (c, ki, kj) -> its offset in xpad
  for (int64_t r = 0; r < K; ++r) {
    const int64_t c = r / (s.kh * s.kw), ki = (r / s.kw) % s.kh, kj = r % s.kw;
    off[static_cast<size_t>(r)] = (c * hp + ki) * wpad + kj;
  }
  // Tiles of NR output pixels. With rows of at least 4 tiles they run along each output row and are
  // written straight into out. Narrower outputs are computed in padded-width coordinates,
  // q = oh * wp + ow for ow in [0, wp): there B's row r at q is xpad[off[r] + q], one contiguous run
  // across output rows, so tiles never straddle a row end (at 15 or 30 pixels a row, whole-row tiles
  // would be mostly padding); the kw - 1 columns of each row past Wo are computed into `wide` and
  // dropped when copying out. xpad has kw spare zeros at its end, which those columns reach.
  const bool by_row = wo >= 4 * NR;
  const int64_t Q = ho * wpad, row_tiles = (wo + NR - 1) / NR;
  const int64_t tiles = by_row ? ho * row_tiles : (Q + NR - 1) / NR;
  // Scratch from the engine's allocator, whose block cache spares fresh page faults on every call.
  Tensor xpad_t = empty({s.C * hp * wpad + s.kw}, TensorOptions(kFloat32));  // (C, hp, wp), one image
  Tensor wide_t = empty({by_row ? 0 : O * Q}, TensorOptions(kFloat32));     // (O, Ho, wp)
  float* xpad = xpad_t.data_ptr<float>();
  float* wide = wide_t.data_ptr<float>();
  std::fill(xpad + s.C * hp * wpad, xpad + s.C * hp * wpad + s.kw, 0.0f);
  for (int64_t n = 0; n < s.N; ++n) {
    pad_image(x + n * s.C * s.H * s.W, xpad, s);
    float* on = out + n * O * L;  // (O, Ho, Wo)
    // In a tile, one (kc, NR) window of xpad stays in L1 while every panel of the weights passes.
    parallel_for(0, tiles, 1, [&](int64_t tb, int64_t te) {
      for (int64_t t = tb; t < te; ++t) {
        int64_t xq, nr, ldc;
        float* c;
        if (by_row) {
          const int64_t oh = t / row_tiles, ow0 = (t % row_tiles) * NR;
          xq = oh * wpad + ow0, nr = std::min(NR, wo - ow0), c = on + oh * wo + ow0, ldc = L;
        } else {
          xq = t * NR, nr = std::min(NR, Q - xq), c = wide + xq, ldc = Q;
        }
        for (int64_t k0 = 0; k0 < K; k0 += KC) {
          const int64_t kc = std::min(KC, K - k0);
          for (int64_t i = 0; i < O; i += MR)
            kernel(kc, wp.panel(k0, i / MR), xpad + xq, off.data() + k0, c + i * ldc, ldc, std::min(MR, O - i), nr,
                   k0 > 0);
        }
      }
    });
    if (!by_row)
      parallel_for(0, O * ho, 64, [&](int64_t rb, int64_t re) {
        for (int64_t r = rb; r < re; ++r) std::copy_n(wide + r * wpad, wo, on + r * wo);
      });
  }
  return true;
}

bool conv2d_stride1_backward_weight(const float* grad, const float* x, float* dw, const Stride1Conv& sc) {
  const gemm::Isa isa = gemm::active_isa();
  const int64_t C = sc.C, O = sc.O, kh = sc.kh, kw = sc.kw, N = sc.N;
  if (isa == gemm::Isa::Reference || O % kTileO != 0 || (kh * kw) % kTileR != 0 || sc.ph >= kh || sc.pw >= kw)
    return false;
  const TileFn tile = isa == gemm::Isa::Avx512 ? tile_avx512 : tile_avx2;
  const int64_t K = C * kh * kw, hp = sc.hp(), wp = sc.wp(), ho = sc.ho(), wo = sc.wo();
  if (ho <= 0 || wo <= 0) return false;
  const int64_t L = ho * wo, rtiles = K / kTileR;
  CpuBuffer<float> acc(static_cast<size_t>(O * K * 16));  // (O, K, 16) lanes
  std::fill(acc.data(), acc.data() + acc.size(), 0.0f);
  Tensor xpad_t = empty({C * hp * wp}, TensorOptions(kFloat32));  // (C, hp, wp), one image
  float* xpad = xpad_t.data_ptr<float>();
  const int64_t block = rows_per_block(wo);

  for (int64_t n = 0; n < N; ++n) {
    pad_image(x + n * C * sc.H * sc.W, xpad, sc);
    const float* gn = grad + n * O * L;  // (O, Ho, Wo)
    // Each thread owns whole blocks of 8 output channels, so the accumulators are never shared.
    parallel_for(0, O / kTileO, 1, [&](int64_t ob, int64_t oe) {
      alignas(64) float a[kTileO * kTileR * 16];  // one tile's accumulators, (kTileO, kTileR, 16)
      for (int64_t oi = ob; oi < oe; ++oi) {
        const int64_t o0 = oi * kTileO;
        for (int64_t oh0 = 0; oh0 < ho; oh0 += block) {
          const int64_t oh1 = std::min(ho, oh0 + block);
          for (int64_t rt = 0; rt < rtiles; ++rt) {
            const int64_t r0 = rt * kTileR;
            const float* xs[kTileR];
            for (int j = 0; j < kTileR; ++j) {
              const int64_t r = r0 + j, c = r / (kh * kw), ki = (r / kw) % kh, kj = r % kw;
              xs[j] = xpad + c * hp * wp + ki * wp + kj;
            }
            float* slot = acc.data() + (o0 * K + r0) * 16;  // rows of K*16 floats, kTileR*16 used
            for (int i = 0; i < kTileO; ++i) std::copy_n(slot + i * K * 16, kTileR * 16, a + i * kTileR * 16);
            tile(gn + o0 * L, L, xs, wp, wo, oh0, oh1, a);
            for (int i = 0; i < kTileO; ++i) std::copy_n(a + i * kTileR * 16, kTileR * 16, slot + i * K * 16);
          }
        }
      }
    });
  }
  parallel_for(0, O * K, 1024, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const float* v = acc.data() + i * 16;
      float s = 0;
      for (int j = 0; j < 16; ++j) s += v[j];
      dw[i] += s;
    }
  });
  return true;
}

}  // namespace tl::cpu
