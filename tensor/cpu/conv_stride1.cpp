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
// xpad[n, c, oh + ki, ow + kj]. In padded-width coordinates q = oh * wp + ow (the gradient copied
// into rows of wp floats, zero past Wo) both are one contiguous run per band of an image's rows, so
// it vectorizes along q with no transposition (the GEMM formulation dW = g @ col^T needs col^T
// packed) and no row ends.
// A tile of 8 output channels x 3 consecutive r keeps 24 vector accumulators, one lane per position
// mod the vector width; each step loads 8 gradient vectors and 3 input vectors for 24 FMAs. The
// accumulators of every tile live in a (O, K, lanes) buffer across blocks of q; the lanes are added
// up in a fixed order at the end, so the bits do not depend on the thread count.
#include "tensor/cpu/conv_stride1.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>

#include "tensor/parallel.h"
#include "tensor/tensor.h"

namespace tl::cpu {

namespace {

constexpr int kTileO = 8, kTileR = 3;

// Rows [h0, h0 + rows) of image x (C, H, W)'s zero-padded planes (C, hp, wp) into xpad (C, rows, wp):
// padded row h holds input row h - ph, or zeros in the border. With CheckFinite, returns whether every
// value copied is finite (an integer max over the exponent bits, which the copy loop vectorizes);
// without it (the forward pass, which needs no such answer) the rows are plain copies.
template <bool CheckFinite>
bool pad_rows(const float* xn, float* xpad, const Stride1Conv& s, int64_t h0, int64_t rows) {
  const int64_t wp = s.wp();
  std::atomic<bool> nonfinite{false};
  parallel_for(0, s.C, 1, [&](int64_t cb, int64_t ce) {
    uint32_t m = 0;
    for (int64_t c = cb; c < ce; ++c)
      for (int64_t i = 0; i < rows; ++i) {
        float* row = xpad + (c * rows + i) * wp;
        const int64_t h = h0 + i - s.ph;  // the input row, if inside the image
        if (h < 0 || h >= s.H) {
          std::fill(row, row + wp, 0.0f);
          continue;
        }
        const float* src = xn + (c * s.H + h) * s.W;
        std::fill(row, row + s.pw, 0.0f);
        if constexpr (CheckFinite) {
          for (int64_t w = 0; w < s.W; ++w) {
            uint32_t b;
            std::memcpy(&b, src + w, sizeof b);
            m = std::max(m, b & 0x7f800000u);
            row[s.pw + w] = src[w];
          }
        } else {
          std::copy(src, src + s.W, row + s.pw);
        }
        std::fill(row + s.pw + s.W, row + wp, 0.0f);
      }
    if (m == 0x7f800000u) nonfinite.store(true, std::memory_order_relaxed);
  });
  return !nonfinite.load();
}

// The forward micro-kernels: c (mr, nr) (+)= a (kc, MR) @ B with B's row k the nr floats at
// x + off[k] (nr <= NR), the GEMM kernels' tiles (gemm.cpp). B is loaded under a mask only in a
// partial tile (Full false): AVX2's masked loads run at half the rate of plain ones on some CPUs.
template <bool Full>
__attribute__((target("avx512f"))) void rows_avx512_t(int64_t kc, const float* a, const float* x, const int64_t* off,
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
    const __m512 b0 = Full ? _mm512_loadu_ps(b) : _mm512_maskz_loadu_ps(m0, b),
                 b1 = Full ? _mm512_loadu_ps(b + 16) : _mm512_maskz_loadu_ps(m1, b + 16),
                 b2 = Full ? _mm512_loadu_ps(b + 32) : _mm512_maskz_loadu_ps(m2, b + 32);
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
      if (Full) {
        _mm512_storeu_ps(p, acc ? _mm512_add_ps(s[i][v], _mm512_loadu_ps(p)) : s[i][v]);
        continue;
      }
      const __m512 r = acc ? _mm512_add_ps(s[i][v], _mm512_maskz_loadu_ps(m[v], p)) : s[i][v];
      _mm512_mask_storeu_ps(p, m[v], r);
    }
  }
}

template <bool Full>
__attribute__((target("avx2,fma"))) void rows_avx2_t(int64_t kc, const float* a, const float* x, const int64_t* off,
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
    const __m256 b0 = Full ? _mm256_loadu_ps(b) : _mm256_maskload_ps(b, m0),
                 b1 = Full ? _mm256_loadu_ps(b + 8) : _mm256_maskload_ps(b + 8, m1),
                 b2 = Full ? _mm256_loadu_ps(b + 16) : _mm256_maskload_ps(b + 16, m2);
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
      if (Full) {
        _mm256_storeu_ps(p, acc ? _mm256_add_ps(s[i][v], _mm256_loadu_ps(p)) : s[i][v]);
        continue;
      }
      const __m256 r = acc ? _mm256_add_ps(s[i][v], _mm256_maskload_ps(p, m[v])) : s[i][v];
      _mm256_maskstore_ps(p, m[v], r);
    }
  }
}

void rows_avx512(int64_t kc, const float* a, const float* x, const int64_t* off, float* c, int64_t ldc, int64_t mr,
                 int64_t nr, bool acc) {
  (nr == 48 ? rows_avx512_t<true> : rows_avx512_t<false>)(kc, a, x, off, c, ldc, mr, nr, acc);
}

void rows_avx2(int64_t kc, const float* a, const float* x, const int64_t* off, float* c, int64_t ldc, int64_t mr,
               int64_t nr, bool acc) {
  (nr == 24 ? rows_avx2_t<true> : rows_avx2_t<false>)(kc, a, x, off, c, ldc, mr, nr, acc);
}

using RowsFn = void (*)(int64_t, const float*, const float*, const int64_t*, float*, int64_t, int64_t, int64_t, bool);

// One tile of the weight gradient over padded-width positions [q0, q1) (multiples of 16):
// acc (kTileO rows, ldacc floats apart, of kTileR slots of 16 lanes) += g . x, where
//   g: the tile's first output channel's gradient plane in padded-width coordinates (64-byte aligned,
//      zero where ow >= Wo), planes ldg apart;
//   x[t]: the padded input plane of tap r0 + t, offset by (ki, kj).
//   next: the input the next tile reads at the same q (its first tap's row), prefetched a line per
//      16 positions: at every new channel the tile's input is a fresh run of the plane that is not yet
//      in L2, and waiting for it at each of its first lines costs more than the prefetches.
// Each gradient vector is loaded once for its kTileR FMAs, and in the AVX2 tile each input vector once
// for its 4: the empty asm statements keep them in registers, where GCC would otherwise fold them into
// every FMA as memory operands and make the loop load-bound (built for an AVX-512 CPU, the AVX2 tile
// had its 3 input vectors folded into all 12 FMAs, and its weight gradient ran 1.6x slower).
__attribute__((target("avx512f"))) void tile_avx512(const float* g, int64_t ldg, const float* const* x,
                                                    const float* next, int64_t q0, int64_t q1, float* acc,
                                                    int64_t ldacc) {
  __m512 s[kTileO][kTileR];
  for (int i = 0; i < kTileO; ++i)
    for (int t = 0; t < kTileR; ++t) s[i][t] = _mm512_loadu_ps(acc + i * ldacc + t * 16);
  const float *x0 = x[0], *x1 = x[1], *x2 = x[2];
  for (int64_t q = q0; q < q1; q += 16) {
    _mm_prefetch(reinterpret_cast<const char*>(next + q), _MM_HINT_T0);
    const __m512 a = _mm512_loadu_ps(x0 + q), b = _mm512_loadu_ps(x1 + q), c = _mm512_loadu_ps(x2 + q);
#pragma GCC unroll 8
    for (int i = 0; i < kTileO; ++i) {
      __m512 gv = _mm512_load_ps(g + i * ldg + q);
      asm("" : "+v"(gv));
      s[i][0] = _mm512_fmadd_ps(gv, a, s[i][0]);
      s[i][1] = _mm512_fmadd_ps(gv, b, s[i][1]);
      s[i][2] = _mm512_fmadd_ps(gv, c, s[i][2]);
    }
  }
  for (int i = 0; i < kTileO; ++i)
    for (int t = 0; t < kTileR; ++t) _mm512_storeu_ps(acc + i * ldacc + t * 16, s[i][t]);
}

__attribute__((target("avx2,fma"))) void tile_avx2(const float* g, int64_t ldg, const float* const* x,
                                                   const float* next, int64_t q0, int64_t q1, float* acc,
                                                   int64_t ldacc) {
  // 24 accumulators do not fit AVX2's 16 registers: two passes of 4 output channels (12 + 3 + 1).
  const float *x0 = x[0], *x1 = x[1], *x2 = x[2];
  for (int half = 0; half < 2; ++half) {
    __m256 s[4][kTileR];
    float* a0 = acc + half * 4 * ldacc;
    for (int i = 0; i < 4; ++i)
      for (int t = 0; t < kTileR; ++t) s[i][t] = _mm256_loadu_ps(a0 + i * ldacc + t * 16);
    const float* gh = g + half * 4 * ldg;
    for (int64_t q = q0; q < q1; q += 8) {
      if (half == 0 && q % 16 == 0) _mm_prefetch(reinterpret_cast<const char*>(next + q), _MM_HINT_T0);
      __m256 a = _mm256_loadu_ps(x0 + q), b = _mm256_loadu_ps(x1 + q), c = _mm256_loadu_ps(x2 + q);
      asm("" : "+x"(a), "+x"(b), "+x"(c));
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        __m256 gv = _mm256_load_ps(gh + i * ldg + q);
        asm("" : "+x"(gv));
        s[i][0] = _mm256_fmadd_ps(gv, a, s[i][0]);
        s[i][1] = _mm256_fmadd_ps(gv, b, s[i][1]);
        s[i][2] = _mm256_fmadd_ps(gv, c, s[i][2]);
      }
    }
    // The AVX2 lanes are the first 8 of each 16-float slot; the other 8 stay 0.
    for (int i = 0; i < 4; ++i)
      for (int t = 0; t < kTileR; ++t) _mm256_storeu_ps(a0 + i * ldacc + t * 16, s[i][t]);
  }
}

using TileFn = void (*)(const float*, int64_t, const float* const*, const float*, int64_t, int64_t, float*, int64_t);

// Padded-width positions per block: a tile's 8 gradient rows of the block (8 x 768 floats, 24 KB) stay
// in L1 while the tiles of every r stream the input past them from L2.
constexpr int64_t kQBlock = 768;

// The weight gradient takes an image a band of rows at a time: the band's padded input and gradient
// together are at most this many floats (4 MB), which the caches keep while every block of 8 output
// channels reads them.
constexpr int64_t kBandFloats = int64_t{1} << 20;

// acc (O, K, 16) lanes += the dot products over q in [0, Q) of g's rows (O of them, Q floats apart,
// 64-byte aligned) with the rows row(r) of the other operand, r < K: tiles of 8 rows of g by 3 rows r.
// Each thread owns whole blocks of 8 rows of g, so the accumulators are never shared.
template <typename RowFn>
void accumulate_tiles(TileFn tile, const float* g, int64_t O, int64_t K, int64_t Q, const RowFn& row_of, float* acc) {
  // The rows' addresses, computed once: row_of divides by run-time sizes, and 12 divisions for every
  // tile took about 5% of the weight gradient's time.
  std::vector<const float*> rows(static_cast<size_t>(K));
  for (int64_t r = 0; r < K; ++r) rows[static_cast<size_t>(r)] = row_of(r);
  const auto row = [&](int64_t r) { return rows[static_cast<size_t>(r)]; };
  parallel_for(0, O / kTileO, 1, [&](int64_t ob, int64_t oe) {
    for (int64_t oi = ob; oi < oe; ++oi) {
      const int64_t o0 = oi * kTileO;
      for (int64_t q0 = 0; q0 < Q; q0 += kQBlock) {
        const int64_t q1 = std::min(Q, q0 + kQBlock);
        for (int64_t r0 = 0; r0 < K; r0 += kTileR) {
          const float* xs[kTileR];
          for (int j = 0; j < kTileR; ++j) xs[j] = row(r0 + j);
          // The next tile: the next r at these q, else the first r at the next block's.
          const float* next = r0 + kTileR < K ? row(r0 + kTileR) : q1 < Q ? row(0) + kQBlock : row(0);
          tile(g + o0 * Q, Q, xs, next, q0, q1, acc + (o0 * K + r0) * 16, K * 16);
        }
      }
    }
  });
}

// The forward pass pads up to this many input floats (several small images at once, 4 MB; as many
// of their padded-width outputs) ...
constexpr int64_t kBatchedInputFloats = int64_t{1} << 20;
// ... and gives a run of tiles at most this much of C (256 KB), which stays in L2 across K's blocks.
constexpr int64_t kRunCFloats = int64_t{1} << 16;

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
  const int64_t tiles = by_row ? ho * row_tiles : (Q + NR - 1) / NR;  // per image
  // Small images (the deep layers: 20x30, 10x15) are done several at a time, so that each KC block of
  // the weights is read from memory once for all their tiles rather than once per tile: with 256
  // channels the weights are 2.4 MB, more than L2 holds.
  const int64_t image = s.C * hp * wpad, wide_image = by_row ? 0 : O * Q;
  const int64_t G = std::clamp<int64_t>(kBatchedInputFloats / std::max<int64_t>({image, wide_image, 1}), 1, s.N);
  // Scratch from the engine's allocator, whose block cache spares fresh page faults on every call.
  Tensor xpad_t = empty({G * image + s.kw}, TensorOptions(kFloat32));  // (G, C, hp, wp)
  Tensor wide_t = empty({by_row ? 0 : G * O * Q}, TensorOptions(kFloat32));  // (G, O, Ho, wp)
  float* xpad = xpad_t.data_ptr<float>();
  float* wide = wide_t.data_ptr<float>();
  std::fill(xpad + G * image, xpad + G * image + s.kw, 0.0f);
  // A thread's tiles are taken a run at a time, each run's C (O x run x NR) small enough for L2; the
  // run goes through K a block at a time: the block's weights (O x KC) stay in L2 for all its tiles,
  // and in a tile one (kc, NR) window of xpad stays in L1 while every panel of the weights passes.
  const int64_t run = std::max<int64_t>(1, kRunCFloats / std::max<int64_t>(O * NR, 1));
  for (int64_t n0 = 0; n0 < s.N; n0 += G) {
    const int64_t g = std::min(G, s.N - n0);
    for (int64_t j = 0; j < g; ++j) pad_rows<false>(x + (n0 + j) * s.C * s.H * s.W, xpad + j * image, s, 0, hp);
    parallel_for(0, g * tiles, 1, [&](int64_t tb, int64_t te) {
      for (int64_t r0 = tb; r0 < te; r0 += run) {
        const int64_t r1 = std::min(te, r0 + run);
        for (int64_t k0 = 0; k0 < K; k0 += KC) {
          const int64_t kc = std::min(KC, K - k0);
          for (int64_t u = r0; u < r1; ++u) {
            const int64_t j = u / tiles, t = u % tiles;
            const float* xj = xpad + j * image;
            int64_t xq, nr, ldc;
            float* c;
            if (by_row) {
              const int64_t oh = t / row_tiles, ow0 = (t % row_tiles) * NR;
              xq = oh * wpad + ow0, nr = std::min(NR, wo - ow0), c = out + (n0 + j) * O * L + oh * wo + ow0, ldc = L;
            } else {
              xq = t * NR, nr = std::min(NR, Q - xq), c = wide + j * O * Q + xq, ldc = Q;
            }
            for (int64_t i = 0; i < O; i += MR)
              kernel(kc, wp.panel(k0, i / MR), xj + xq, off.data() + k0, c + i * ldc, ldc, std::min(MR, O - i), nr,
                     k0 > 0);
          }
        }
      }
    });
    if (!by_row)
      parallel_for(0, g * O * ho, 64, [&](int64_t rb, int64_t re) {
        for (int64_t r = rb; r < re; ++r) {
          const int64_t j = r / (O * ho), rr = r % (O * ho);
          std::copy_n(wide + j * O * Q + rr * wpad, wo, out + (n0 + j) * O * L + rr * wo);
        }
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
  const int64_t K = C * kh * kw, wp = sc.wp(), ho = sc.ho(), wo = sc.wo();
  if (ho <= 0 || wo <= 0) return false;
  const int64_t L = ho * wo;
  // Each image is taken a band of output rows at a time: the band's padded input (its rows and kh - 1
  // more) and gradient, together at most kBandFloats, stay in the caches while every block of 8 output
  // channels reads them (a whole image's, 40 MB each at 320x480 with 64 channels, would come from
  // memory once per block), and the scratch is that much smaller.
  const int64_t band = std::clamp<int64_t>((kBandFloats / wp - C * (kh - 1)) / (C + O), 1, ho);
  // Padded-width coordinates q = i * wp + ow, ow in [0, wp), for the band's output rows i: the
  // gradient is copied into them, zero past Wo and up to Q (a multiple of the vector width), so that a
  // tile runs over one contiguous range with neither row ends nor masked tails. The positions past Wo
  // meet input values that are not in the sum (the row's last columns and the next row's first): 0
  // times them is 0 for finite inputs, and an input with an Inf or NaN takes the GEMM path, which
  // meets exactly the products of the sum.
  const int64_t Qmax = (band * wp + 15) / 16 * 16;
  // Zeros past the band's last plane, which its last rows reach (a shorter last band has room for them).
  const int64_t spare = Qmax - band * wp + kw + 16;
  CpuBuffer<float> acc(static_cast<size_t>(O * K * 16));  // (O, K, 16) lanes
  std::fill(acc.data(), acc.data() + acc.size(), 0.0f);
  CpuBuffer<float> xpad_b(static_cast<size_t>(C * (band + kh - 1) * wp + spare));  // (C, rows + kh - 1, wp)
  CpuBuffer<float> gpad_b(static_cast<size_t>(O * Qmax));                         // (O, Q)
  float* xpad = xpad_b.data();
  float* gpad = gpad_b.data();

  for (int64_t n = 0; n < N; ++n) {
    const float* xn = x + n * C * sc.H * sc.W;
    const float* gn = grad + n * O * L;  // (O, Ho, Wo)
    for (int64_t oh0 = 0; oh0 < ho; oh0 += band) {
      const int64_t rows = std::min(band, ho - oh0), hb = rows + kh - 1, Q = (rows * wp + 15) / 16 * 16;
      // an Inf or NaN: dw is untouched (it is added to at the end)
      if (!pad_rows<true>(xn, xpad, sc, oh0, hb)) return false;
      std::fill(xpad + C * hb * wp, xpad + C * hb * wp + spare, 0.0f);
      parallel_for(0, O, 8, [&](int64_t ob, int64_t oe) {
        for (int64_t o = ob; o < oe; ++o) {
          float* dst = gpad + o * Q;
          for (int64_t i = 0; i < rows; ++i) {
            std::copy_n(gn + (o * ho + oh0 + i) * wo, wo, dst + i * wp);
            std::fill(dst + i * wp + wo, dst + (i + 1) * wp, 0.0f);
          }
          std::fill(dst + rows * wp, dst + Q, 0.0f);
        }
      });
      accumulate_tiles(tile, gpad, O, K, Q, [&](int64_t r) {
        const int64_t c = r / (kh * kw), ki = (r / kw) % kh, kj = r % kw;
        return xpad + c * hb * wp + ki * wp + kj;
      }, acc.data());
    }
  }
  add_lanes(acc.data(), O, K, K, dw);
  return true;
}

bool dot_lanes_supported(int64_t O) {
  return gemm::active_isa() != gemm::Isa::Reference && O % kTileO == 0;
}

void accumulate_dot_lanes(const float* g, const float* b, int64_t O, int64_t K, int64_t Q, float* acc) {
  const TileFn tile = gemm::active_isa() == gemm::Isa::Avx512 ? tile_avx512 : tile_avx2;
  accumulate_tiles(tile, g, O, K, Q, [&](int64_t r) { return b + r * Q; }, acc);
}

void add_lanes(const float* acc, int64_t O, int64_t K, int64_t ldk, float* dw) {
  parallel_for(0, O * K, 1024, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const float* v = acc + ((i / K) * ldk + i % K) * 16;
      float s = 0;
      for (int j = 0; j < 16; ++j) s += v[j];
      dw[i] += s;
    }
  });
}

}  // namespace tl::cpu
