// The packed GEMM of gemm.h: the blocking loops, the packing of A and of strided B, the three
// micro-kernels and the one place that picks among them.
//
// Loop nest of one thread's share, C rows [m0, m1) by columns [n0, n1):
//   for each KC block of K:                  A's panels for it were packed once (PackedA)
//     for each NC block of columns:          pack B (kc, nc) into NR-wide panels: about 0.5-1 MB, in L2
//       for each MC block of A's rows:
//         for each NR panel of the B block:  (kc, NR) of B stays in L1 ...
//           for each MR panel of A's rows:   ... while A's panels stream from L2
//             C tile (MR, NR) (+)= A panel @ B panel
// With a single MC block (at most 256 rows on the thread) there is nothing to reuse a packed B block
// for: each B panel is packed, or read in place, just before its A panels run over it.
// Every element of C is summed over k in the same order whatever the thread count, so results do
// not depend on how the work was split.
#include "tensor/cpu/gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

#include "tensor/cpu/simd_transpose.h"
#include "tensor/parallel.h"

namespace tl::cpu::gemm {

namespace {

// c (mr, nr) with row stride ldc (+)= tile (MR, NR) with row stride tile_ld: the edge of C.
void store_partial(const float* tile, int64_t tile_ld, float* c, int64_t ldc, int64_t mr, int64_t nr, bool acc) {
  for (int64_t i = 0; i < mr; ++i)
    for (int64_t j = 0; j < nr; ++j) c[i * ldc + j] = acc ? c[i * ldc + j] + tile[i * tile_ld + j] : tile[i * tile_ld + j];
}

// Micro-kernels: c (mr, nr) (+)= a (kc, MR) @ b (kc, NR), a packed k-major, b's rows ldb floats apart
// (NR when packed); mr <= MR, nr <= NR.
using Kernel = void (*)(int64_t kc, const float* a, const float* b, int64_t ldb, float* c, int64_t ldc, int64_t mr, int64_t nr,
                        bool acc);

// The portable reference: plain loops the compiler vectorizes for whatever it targets.
constexpr int kRefMR = 4, kRefNR = 16;
void kernel_reference(int64_t kc, const float* a, const float* b, int64_t ldb, float* c, int64_t ldc, int64_t mr, int64_t nr, bool acc) {
  float s[kRefMR][kRefNR] = {};
  for (int64_t k = 0; k < kc; ++k, a += kRefMR, b += ldb)
    for (int i = 0; i < kRefMR; ++i)
      for (int j = 0; j < kRefNR; ++j) s[i][j] += a[i] * b[j];
  store_partial(&s[0][0], kRefNR, c, ldc, mr, nr, acc);
}

// AVX2 + FMA: 4 rows x 24 columns = 12 ymm accumulators, 3 loads of B and 4 broadcasts of A per k.
// 4 rows divide every channel count of the UNet (16 ... 1024), so no tile is wasted on padding.
// V < 3 computes only the first 8V columns of the panel: the last panel of a product whose width is
// not a multiple of 24 (10x15 = 150 pixels is 6 full panels and 6 columns) costs its share, not a
// whole panel.
constexpr int kAvx2MR = 4, kAvx2NR = 24;
template <int V>
__attribute__((target("avx2,fma"))) void kernel_avx2(int64_t kc, const float* a, const float* b, int64_t ldb, float* c, int64_t ldc,
                                                     int64_t mr, int64_t nr, bool acc) {
  __m256 s[kAvx2MR][V];
#pragma GCC unroll 4
  for (int i = 0; i < kAvx2MR; ++i)
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) s[i][v] = _mm256_setzero_ps();
  // The C tile is read at the end: start bringing its rows (up to 96 bytes each) in now.
#pragma GCC unroll 4
  for (int i = 0; i < kAvx2MR; ++i) {
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    if (V > 1) _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 16), _MM_HINT_T0);
  }
#pragma GCC unroll 2
  for (int64_t k = 0; k < kc; ++k, a += kAvx2MR, b += ldb) {
    __m256 bv[V];
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) bv[v] = _mm256_loadu_ps(b + 8 * v);
#pragma GCC unroll 4
    for (int i = 0; i < kAvx2MR; ++i) {
      const __m256 ai = _mm256_broadcast_ss(a + i);
#pragma GCC unroll 3
      for (int v = 0; v < V; ++v) s[i][v] = _mm256_fmadd_ps(ai, bv[v], s[i][v]);
    }
  }
  if (mr == kAvx2MR && nr == 8 * V) {
#pragma GCC unroll 4
    for (int i = 0; i < kAvx2MR; ++i)
#pragma GCC unroll 3
      for (int v = 0; v < V; ++v) {
        float* p = c + i * ldc + 8 * v;
        _mm256_storeu_ps(p, acc ? _mm256_add_ps(s[i][v], _mm256_loadu_ps(p)) : s[i][v]);
      }
    return;
  }
  alignas(32) float tile[kAvx2MR * 8 * V];
#pragma GCC unroll 4
  for (int i = 0; i < kAvx2MR; ++i)
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) _mm256_store_ps(tile + i * 8 * V + 8 * v, s[i][v]);
  store_partial(tile, 8 * V, c, ldc, mr, nr, acc);
}

// AVX-512: 8 rows x 48 columns = 24 zmm accumulators, 3 loads of B and 8 broadcasts of A per k; V < 3
// as for AVX2, 16V columns.
constexpr int kAvx512MR = 8, kAvx512NR = 48;
template <int V>
__attribute__((target("avx512f,fma"))) void kernel_avx512(int64_t kc, const float* a, const float* b, int64_t ldb, float* c,
                                                          int64_t ldc, int64_t mr, int64_t nr, bool acc) {
  __m512 s[kAvx512MR][V];
#pragma GCC unroll 8
  for (int i = 0; i < kAvx512MR; ++i)
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) s[i][v] = _mm512_setzero_ps();
  // The C tile is read at the end: start bringing its rows (V cache lines each) in now.
#pragma GCC unroll 8
  for (int i = 0; i < kAvx512MR; ++i)
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 16 * v), _MM_HINT_T0);
#pragma GCC unroll 2
  for (int64_t k = 0; k < kc; ++k, a += kAvx512MR, b += ldb) {
    __m512 bv[V];
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) bv[v] = _mm512_loadu_ps(b + 16 * v);
#pragma GCC unroll 8
    for (int i = 0; i < kAvx512MR; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i]);
#pragma GCC unroll 3
      for (int v = 0; v < V; ++v) s[i][v] = _mm512_fmadd_ps(ai, bv[v], s[i][v]);
    }
  }
  if (mr == kAvx512MR && nr == 16 * V) {
#pragma GCC unroll 8
    for (int i = 0; i < kAvx512MR; ++i)
#pragma GCC unroll 3
      for (int v = 0; v < V; ++v) {
        float* p = c + i * ldc + 16 * v;
        _mm512_storeu_ps(p, acc ? _mm512_add_ps(s[i][v], _mm512_loadu_ps(p)) : s[i][v]);
      }
    return;
  }
  alignas(64) float tile[kAvx512MR * 16 * V];
#pragma GCC unroll 8
  for (int i = 0; i < kAvx512MR; ++i)
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) _mm512_store_ps(tile + i * 16 * V + 16 * v, s[i][v]);
  store_partial(tile, 16 * V, c, ldc, mr, nr, acc);
}

// A kernel and its blocking. The loop nest keeps one (kc, NR) panel of B in L1 while A's panels
// stream past it from L2 (A's panel is MR floats a step, B's NR: streaming the thinner one is what
// lets the kernel run near the FMA peak). kc is at most 160 floats, so a B panel is 30 KB (AVX-512)
// or 15 KB (AVX2) of L1; K is cut into equal blocks, so the 3x3 convolutions' K = 9 * 16k gives
// blocks of 144. MC rows of A (MC x kc, 300 / 150 KB) stay in L2; when M is larger, B is packed a
// block of NC columns at a time and reused for each MC block of rows.
//
// fn[v - 1] computes the first v vectors (of NR / 3 floats) of a panel's columns: a tile of nr
// columns takes fn[ceil(3 nr / NR) - 1].
struct KernelInfo {
  Isa isa;
  Kernel fn[3];
  Blocking b;
  int64_t mc;
  Kernel kernel(int64_t nr) const { return fn[(3 * nr + b.nr - 1) / b.nr - 1]; }
};
constexpr KernelInfo kKernels[] = {
    {Isa::Reference, {kernel_reference, kernel_reference, kernel_reference}, {kRefMR, kRefNR, 160, 1536}, 256},
    {Isa::Avx2, {kernel_avx2<1>, kernel_avx2<2>, kernel_avx2<3>}, {kAvx2MR, kAvx2NR, 160, 480}, 256},
    {Isa::Avx512, {kernel_avx512<1>, kernel_avx512<2>, kernel_avx512<3>}, {kAvx512MR, kAvx512NR, 160, 768}, 256},
};

const KernelInfo& info(Isa isa) { return kKernels[static_cast<int>(isa)]; }

Isa best_supported() {
  if (isa_supported(Isa::Avx512)) return Isa::Avx512;
  if (isa_supported(Isa::Avx2)) return Isa::Avx2;
  return Isa::Reference;
}

Isa initial_isa() {
  const char* env = std::getenv("TL_GEMM_ISA");
  if (!env || !*env) return best_supported();
  for (Isa isa : {Isa::Reference, Isa::Avx2, Isa::Avx512})
    if (std::string(env) == isa_name(isa)) {
      if (!isa_supported(isa))
        throw std::invalid_argument(std::string("TL_GEMM_ISA=") + env + ": this CPU does not support it");
      return isa;
    }
  throw std::invalid_argument(std::string("TL_GEMM_ISA=") + env + ": expected reference, avx2 or avx512");
}

Isa& current() {
  static Isa isa = initial_isa();
  return isa;
}

// dst (kc, 8) = 8 rows of A (src[r * rs + k]) transposed, 8 x 8 in registers: A's panel packing is
// a transposition, and done a float at a time it costs a tenth of a small product (256 x 150 x 2304).
__attribute__((target("avx2"), flatten)) void pack_rows8(const float* src, int64_t rs, int64_t kc, float* dst) {
  int64_t k = 0;
  for (; k + 8 <= kc; k += 8) transpose8x8(src + k, rs, dst + k * 8, 8);
  for (; k < kc; ++k)
    for (int i = 0; i < 8; ++i) dst[k * 8 + i] = src[i * rs + k];
}

// dst (kc, 4) = 4 rows of A transposed, 4 x 4 in SSE registers (every x86-64 has them).
void pack_rows4(const float* src, int64_t rs, int64_t kc, float* dst) {
  int64_t k = 0;
  for (; k + 4 <= kc; k += 4) {
    __m128 r0 = _mm_loadu_ps(src + k), r1 = _mm_loadu_ps(src + rs + k), r2 = _mm_loadu_ps(src + 2 * rs + k),
           r3 = _mm_loadu_ps(src + 3 * rs + k);
    _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
    _mm_storeu_ps(dst + k * 4, r0);
    _mm_storeu_ps(dst + k * 4 + 4, r1);
    _mm_storeu_ps(dst + k * 4 + 8, r2);
    _mm_storeu_ps(dst + k * 4 + 12, r3);
  }
  for (; k < kc; ++k)
    for (int i = 0; i < 4; ++i) dst[k * 4 + i] = src[i * rs + k];
}

// A 64-byte aligned scratch buffer per thread for B's packed block, grown on demand and kept.
float* b_buffer(int64_t floats) {
  struct Buffer {
    std::unique_ptr<float, decltype(&std::free)> p{nullptr, &std::free};
    int64_t size = 0;
  };
  thread_local Buffer buf;
  if (buf.size < floats) {
    const size_t bytes = (static_cast<size_t>(floats) * sizeof(float) + 63) / 64 * 64;
    buf.p.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
    if (!buf.p) throw std::bad_alloc();
    buf.size = floats;
  }
  return buf.p.get();
}

// One thread's share: C rows [m0, m1) by columns [n0, n1), all of K.
void gemm_block(const KernelInfo& ki, const PackedA& a, const PanelSource& b, int64_t m0, int64_t m1, int64_t n0,
                int64_t n1, float* c, int64_t ldc, bool accumulate) {
  const int64_t K = a.depth(), M = a.rows(), MR = ki.b.mr, NR = ki.b.nr, KC = a.kc();
  if (K == 0) {
    if (!accumulate)
      for (int64_t i = m0; i < m1; ++i) std::fill(c + i * ldc + n0, c + i * ldc + n1, 0.0f);
    return;
  }
  if (m1 - m0 <= ki.mc) {
    // One MC block of rows: each B panel is used by the few A panels and not again, so a B that is a
    // row-major matrix is read where it lies (prefetching the next panel) instead of being copied,
    // and any other is packed panel by panel just before its use, into L1.
    float* bp = b_buffer(KC * NR);
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
      const int64_t kc = std::min(KC, K - k0);
      const bool acc = accumulate || k0 > 0;
      for (int64_t j = n0; j < n1; j += NR) {
        const int64_t nr = std::min(NR, n1 - j);
        int64_t ldb = NR;
        const float* p = nr == NR ? b.direct(k0, j, ldb) : nullptr;
        if (p && j + 2 * NR <= n1) {
          for (int64_t k = 0; k < kc; ++k)
            for (int64_t o = 0; o < NR; o += 16) _mm_prefetch(reinterpret_cast<const char*>(p + k * ldb + NR + o), _MM_HINT_T0);
        } else if (!p) {
          b.pack(k0, kc, j, nr, NR, bp);
          p = bp;
          ldb = NR;
        }
        const Kernel fn = ki.kernel(nr);
        for (int64_t i = m0; i < m1; i += MR)
          fn(kc, a.panel(k0, i / MR), p, ldb, c + i * ldc + j, ldc, std::min(MR, M - i), nr, acc);
      }
    }
    return;
  }
  // Several MC blocks: a block of NC columns of B is packed once and reused for each of them.
  const int64_t MC = ki.mc, NC = ki.b.nc;
  float* bp = b_buffer(KC * NC);  // (NC / NR panels of (kc, NR))
  for (int64_t k0 = 0; k0 < K; k0 += KC) {
    const int64_t kc = std::min(KC, K - k0);
    const bool acc = accumulate || k0 > 0;
    for (int64_t j0 = n0; j0 < n1; j0 += NC) {
      const int64_t nc = std::min(NC, n1 - j0);
      for (int64_t jp = 0; jp < nc; jp += NR) b.pack(k0, kc, j0 + jp, std::min(NR, nc - jp), NR, bp + jp * kc);
      for (int64_t i0 = m0; i0 < m1; i0 += MC) {
        const int64_t i1 = std::min(m1, i0 + MC);
        for (int64_t jp = 0; jp < nc; jp += NR) {
          const int64_t nr = std::min(NR, nc - jp);
          const Kernel fn = ki.kernel(nr);
          for (int64_t i = i0; i < i1; i += MR)
            fn(kc, a.panel(k0, i / MR), bp + jp * kc, NR, c + i * ldc + j0 + jp, ldc, std::min(MR, M - i), nr, acc);
        }
      }
    }
  }
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Reference: return "reference";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
  }
  return "?";
}

bool isa_supported(Isa isa) {
  switch (isa) {
    case Isa::Reference: return true;
    case Isa::Avx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::Avx512: return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
  }
  return false;
}

Isa active_isa() { return current(); }

void set_isa(Isa isa) {
  if (!isa_supported(isa)) throw std::invalid_argument(std::string("gemm: this CPU does not support ") + isa_name(isa));
  current() = isa;
}

Blocking blocking() { return info(active_isa()).b; }

void MatrixSource::pack(int64_t k0, int64_t kc, int64_t n0, int64_t nc, int64_t nr, float* dst) const {
  if (b_.cs == 1 || nc == 1) {
    for (int64_t k = 0; k < kc; ++k) {
      const float* src = b_.p + (k0 + k) * b_.rs + n0 * b_.cs;
      float* d = dst + k * nr;
      // The next panel's part of this row: with one MC block of A, panels are packed one at a time
      // just before use, and B's rows are far apart (a conv's image rows), too many streams for the
      // hardware prefetcher to follow.
      for (int64_t o = 0; o < nr; o += 16) _mm_prefetch(reinterpret_cast<const char*>(src + nr + o), _MM_HINT_T0);
      std::memcpy(d, src, static_cast<size_t>(nc) * sizeof(float));
      std::fill(d + nc, d + nr, 0.0f);
    }
    return;
  }
  // B transposed (rs == 1 typically): walk each column of the panel along k, where it is contiguous.
  for (int64_t j = 0; j < nc; ++j) {
    const float* src = b_.p + k0 * b_.rs + (n0 + j) * b_.cs;
    for (int64_t k = 0; k < kc; ++k) dst[k * nr + j] = src[k * b_.rs];
  }
  for (int64_t k = 0; k < kc; ++k) std::fill(dst + k * nr + nc, dst + (k + 1) * nr, 0.0f);
}

PackedA::PackedA(View a, int64_t m, int64_t k) : isa_(active_isa()), m_(m), k_(k) {
  const Blocking b = info(isa_).b;
  mr_ = b.mr;
  // K in equal blocks of at most b.kc (144 + 144 rather than 160 + 128).
  const int64_t blocks = std::max<int64_t>(1, (k + b.kc - 1) / b.kc);
  kc_ = std::max<int64_t>(1, (k + blocks - 1) / blocks);
  mpad_ = (m + mr_ - 1) / mr_ * mr_;
  data_ = CpuBuffer<float>(static_cast<size_t>(mpad_ * k));
  if (mpad_ != m_) std::fill(data_.data(), data_.data() + data_.size(), 0.0f);  // the last panel's spare rows
  const int64_t panels = mpad_ / mr_, kblocks = (k_ + kc_ - 1) / kc_;
  // The (KC block, panel) pieces are independent: pack them in parallel, about 32K floats a task (a
  // 1024 x 4608 weight is 19 MB; a 16 x 38400 operand is only 2 panels, but 240 blocks).
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / (kc_ * mr_));
  const bool avx2 = isa_supported(Isa::Avx2);  // for the 8 x 8 transposes of AVX-512's panels
  parallel_for(0, kblocks * panels, grain, [&](int64_t tb, int64_t te) {
    for (int64_t t = tb; t < te; ++t) {
      const int64_t i = t / kblocks, k0 = t % kblocks * kc_, kc = kc_len(k0);  // along each panel's rows
      float* dst = data_.data() + k0 * mpad_ + i * mr_ * kc;  // (kc, MR)
      const int64_t rows = std::min(mr_, m_ - i * mr_);
      const float* src = a.p + i * mr_ * a.rs + k0 * a.cs;  // row r is src + r * a.rs
      if (a.cs == 1 && rows == mr_ && mr_ == 4) pack_rows4(src, a.rs, kc, dst);
      else if (a.cs == 1 && rows == mr_ && mr_ == 8 && avx2) pack_rows8(src, a.rs, kc, dst);
      else
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t kk = 0; kk < kc; ++kk) dst[kk * mr_ + r] = src[r * a.rs + kk * a.cs];
    }
  });
}

int64_t PackedA::kc_len(int64_t k0) const { return std::min(kc_, k_ - k0); }

void gemm(const PackedA& a, const PanelSource& b, int64_t n, float* c, int64_t ldc, bool accumulate) {
  const KernelInfo& ki = info(a.isa());
  const int64_t M = a.rows(), MR = ki.b.mr, NR = ki.b.nr;
  if (M == 0 || n == 0) return;
  const int64_t m_panels = (M + MR - 1) / MR, n_panels = (n + NR - 1) / NR;
  int64_t threads = omp_in_parallel() ? 1 : std::min<int64_t>(get_num_threads(), omp_get_max_threads());
  // By columns when each thread gets a few panels of them (B packed once in all), else by rows
  // (each thread packs all of B, which is small then).
  if (threads <= 1 || n_panels >= 4 * threads || n_panels >= m_panels) {
    parallel_for(0, n_panels, 1, [&](int64_t pb, int64_t pe) {
      gemm_block(ki, a, b, 0, M, pb * NR, std::min(n, pe * NR), c, ldc, accumulate);
    });
  } else {
    parallel_for(0, m_panels, 1, [&](int64_t pb, int64_t pe) {
      gemm_block(ki, a, b, pb * MR, std::min(M, pe * MR), 0, n, c, ldc, accumulate);
    });
  }
}

void gemm(int64_t m, int64_t n, int64_t k, View a, View b, float* c, int64_t ldc, bool accumulate) {
  gemm(PackedA(a, m, k), MatrixSource(b), n, c, ldc, accumulate);
}

}  // namespace tl::cpu::gemm
