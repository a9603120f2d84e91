// Winograd F(2x2, 3x3) for float32 3x3 stride-1 convolutions (conv_winograd.h).
//
// The transforms. In one dimension, two outputs of a 3-tap correlation y[i] = sum_k d[i + k] g[k]
// come from four inputs with four multiplies: y = A^T [(G g) * (B^T d)] (elementwise *), where
//
//         | 1  0 -1  0 |          |  1    0    0  |
//   B^T = | 0  1  1  0 |     G =  | 1/2  1/2  1/2 |     A^T = | 1  1  1  0 |
//         | 0 -1  1  0 |          | 1/2 -1/2  1/2 |           | 0  1 -1 -1 |
//         | 0  1  0 -1 |          |  0    0    1  |
//
// Nested over rows and columns, a 2x2 output tile Y of one output channel o is
//   Y = A^T [ sum over c of (G g[o, c] G^T) * (B^T d[c] B) ] A
// with d[c] the 4x4 input patch under the tile (rows 2ty - ph .. +3, columns 2tx - pw .. +3; zero
// outside the image). Position xi = (i, j) of the 4x4 transformed tile is one independent product
// summed over c, so with U[xi] (O, C) the transformed kernels and V[xi] (C, T) the transformed
// patches of T tiles, the sum is 16 GEMMs M[xi] (O, T) = U[xi] @ V[xi]: 16 multiplies per tile and
// channel pair where the direct convolution has 36 (4 outputs x 9 taps), 2.25x fewer. The output
// transform A^T m A writes the valid outputs only (an odd Ho or Wo leaves a partial last tile; its
// patch reaches a row or column past the padded input, which reads as zero).
//
// The weight gradient is the adjoint of the same linear map, exact in real arithmetic:
//   dM = A dY A^T per tile (dY the tile's 2x2 output gradient, zero past Ho or Wo),
//   dU[xi] (O, C) = sum over tiles of dM[xi] (O, T) @ V[xi]^T (T, C),
//   dW[o, c] = G^T dU[o, c] G (3x3 from 4x4).
//
// Blocking. The tiles of the whole batch are numbered (n, ty, tx) row-major and taken in blocks of
// TB consecutive tiles (a block may cross tile rows and images); only a block's V (16, C, TB) and M
// or dM (16, O, TB) exist at a time, one set per thread, so the scratch is a few MB whatever the batch
// (about 1 MB per thread where TB's floor of 96 tiles allows: it stays in L2). The tiles are done in
// one parallel region, with no barrier per block (a barrier costs a scheduler time slice on a busy
// host; the kernel transforms before it and after it are one region each):
//   forward: each thread takes a contiguous share of whole blocks (the block count a multiple of the
//     thread count): input transform, the 16 GEMMs (the packed GEMM's micro-kernel chosen at run
//     time, U[xi] packed once per call), output transform;
//   weight gradient: each thread owns a share of the 16 xi and runs every block for them, doing only
//     the rows of the transforms its xi need. Each dU[xi] is summed over the blocks in order by one
//     thread, and TB depends on the shape alone, so the bits do not depend on the thread count.

#include "tensor/cpu/conv_winograd.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "tensor/cpu/gemm.h"
#include "tensor/cpu/simd_transpose.h"
#include "tensor/parallel.h"
#include "tensor/storage.h"

namespace tl::cpu {

namespace {

bool initial_enabled() {
  const char* env = std::getenv("TL_CONV_WINOGRAD");
  if (!env || !*env) return true;
  const std::string v(env);
  if (v == "1") return true;
  if (v == "0") return false;
  throw std::invalid_argument("TL_CONV_WINOGRAD=" + v + ": expected 0 (off) or 1 (on)");
}

bool& enabled_state() {
  static bool on = initial_enabled();
  return on;
}

std::atomic<int64_t> forward_calls{0}, backward_weight_calls{0};

constexpr uint32_t kExpMask = 0x7f800000u;  // all exponent bits set: Inf or NaN

uint32_t exponent(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b & kExpMask;
}

// Tiles per transform call: a row segment of the tile grid, at most kSeg tiles, fits local arrays.
constexpr int64_t kSeg = 64;

// Floats of one thread's block, V and M together: 1 MB, within its L2.
constexpr int64_t kBlockFloats = int64_t{1} << 18;

struct Plan {
  int64_t th, tw, T, TB;  // tile rows and columns per image, tiles in the batch, tiles per block
};

Plan plan(const Stride1Conv& s) {
  Plan p{(s.ho() + 1) / 2, (s.wo() + 1) / 2, 0, 0};
  p.T = s.N * p.th * p.tw;
  // A multiple of both micro-kernels' NR (24, 48), 2 to 21 of the wider.
  int64_t tb = kBlockFloats / (16 * (s.C + s.O));
  tb = std::clamp<int64_t>((tb + 47) / 48 * 48, 96, 1008);
  p.TB = std::min(tb, p.T);
  return p;
}

// Calls fn(n, ty, tx0, len, at) for the row segments of the tiles [t0, t1): image n, tile row ty,
// tiles tx0 .. tx0 + len (len <= kSeg), the first being the block's tile `at`.
template <typename Fn>
void for_each_segment(const Plan& p, int64_t t0, int64_t t1, const Fn& fn) {
  for (int64_t t = t0; t < t1;) {
    const int64_t n = t / (p.th * p.tw), r = t - n * p.th * p.tw, ty = r / p.tw, tx = r - ty * p.tw;
    const int64_t len = std::min({p.tw - tx, t1 - t, kSeg});
    fn(n, ty, tx, len, t - t0);
    t += len;
  }
}

// buf[i] = row[base + i] for i < n, 0 outside [0, W). Returns the exponents' maximum of buf.
uint32_t load_row(const float* row, int64_t W, int64_t base, int64_t n, float* buf) {
  const int64_t lo = std::clamp<int64_t>(-base, 0, n), hi = std::clamp<int64_t>(W - base, lo, n);
  std::fill(buf, buf + lo, 0.0f);
  std::fill(buf + hi, buf + n, 0.0f);
  // One loop for the copy and the check: inlined and vectorized (a short memcpy call cost more).
  uint32_t m = 0;
  for (int64_t i = lo; i < hi; ++i) {
    buf[i] = row[base + i];
    m = std::max(m, exponent(buf[i]));
  }
  return m;
}

// Rows [ib, ie] (i of xi = 4i + j) of V = B^T d B for the tiles tx0 .. tx0 + len of tile row ty of
// one channel's plane (H, W): v[(xi - 4 ib) * xs + k] for tile k. Returns the exponents' maximum of
// the inputs read.
uint32_t input_tiles(const float* plane, const Stride1Conv& s, int64_t ty, int64_t tx0, int64_t len, int ib, int ie,
                     float* v, int64_t xs) {
  float e[4][4][kSeg];  // (patch row, column-transformed j, tile): the rows times B
  float d[2 * kSeg + 2];  // one patch row of every tile: tile k's columns are d[2k .. 2k + 3]
  // Row i of B^T reads patch rows {0, 2}, {1, 2}, {1, 2}, {1, 3}.
  const bool need[4] = {ib == 0, ie >= 1, ib <= 2, ie == 3};
  uint32_t m = 0;
  for (int i = 0; i < 4; ++i) {
    if (!need[i]) continue;
    const int64_t ih = 2 * ty - s.ph + i;
    if (ih < 0 || ih >= s.H) {
      for (int j = 0; j < 4; ++j) std::fill(e[i][j], e[i][j] + len, 0.0f);
      continue;
    }
    m = std::max(m, load_row(plane + ih * s.W, s.W, 2 * tx0 - s.pw, 2 * len + 2, d));
    for (int64_t k = 0; k < len; ++k) {
      e[i][0][k] = d[2 * k] - d[2 * k + 2];
      e[i][1][k] = d[2 * k + 1] + d[2 * k + 2];
      e[i][2][k] = d[2 * k + 2] - d[2 * k + 1];
      e[i][3][k] = d[2 * k + 1] - d[2 * k + 3];
    }
  }
  for (int j = 0; j < 4; ++j) {
    const float *r0 = e[0][j], *r1 = e[1][j], *r2 = e[2][j], *r3 = e[3][j];
    // v holds the rows from ib on: xi = 4i + j at v + (4 (i - ib) + j) * xs.
    auto out = [&](int i) { return v + (4 * (i - ib) + j) * xs; };
    if (ib == 0) {
      float* v0 = out(0);
      for (int64_t k = 0; k < len; ++k) v0[k] = r0[k] - r2[k];
    }
    if (ib <= 1 && ie >= 1) {
      float* v1 = out(1);
      for (int64_t k = 0; k < len; ++k) v1[k] = r1[k] + r2[k];
    }
    if (ib <= 2 && ie >= 2) {
      float* v2 = out(2);
      for (int64_t k = 0; k < len; ++k) v2[k] = r2[k] - r1[k];
    }
    if (ie == 3) {
      float* v3 = out(3);
      for (int64_t k = 0; k < len; ++k) v3[k] = r1[k] - r3[k];
    }
  }
  return m;
}

// Y = A^T m A for the tiles tx0 .. tx0 + len of tile row ty of one output channel, m[xi * xs + k],
// written into its plane (Ho, Wo) where inside.
void output_tiles(const float* m, int64_t xs, float* plane, int64_t ho, int64_t wo, int64_t ty, int64_t tx0,
                  int64_t len) {
  float y[4][kSeg];  // y00, y01, y10, y11 of each tile
  for (int64_t k = 0; k < len; ++k) {
    float s0[4], s1[4];  // (A^T m) rows 0 and 1
    for (int j = 0; j < 4; ++j) {
      const float a = m[j * xs + k], b = m[(4 + j) * xs + k], c = m[(8 + j) * xs + k], d = m[(12 + j) * xs + k];
      s0[j] = a + b + c;
      s1[j] = b - c - d;
    }
    y[0][k] = s0[0] + s0[1] + s0[2];
    y[1][k] = s0[1] - s0[2] - s0[3];
    y[2][k] = s1[0] + s1[1] + s1[2];
    y[3][k] = s1[1] - s1[2] - s1[3];
  }
  const int64_t full = std::clamp<int64_t>(wo / 2 - tx0, 0, len);  // tiles with both columns inside
  for (int r = 0; r < 2; ++r) {
    const int64_t oh = 2 * ty + r;
    if (oh >= ho) break;
    float* row = plane + oh * wo + 2 * tx0;
    const float *ya = y[2 * r], *yb = y[2 * r + 1];
    for (int64_t k = 0; k < full; ++k) row[2 * k] = ya[k], row[2 * k + 1] = yb[k];
    for (int64_t k = full; k < len; ++k) row[2 * k] = ya[k];  // an odd Wo's last column
  }
}

// Rows [ib, ie] of dM = A dY A^T for the tiles tx0 .. tx0 + len of tile row ty of one output
// channel's gradient plane (Ho, Wo): dm[(xi - 4 ib) * xs + k]. Returns the exponents' maximum of the
// gradients read.
uint32_t grad_tiles(const float* plane, int64_t ho, int64_t wo, int64_t ty, int64_t tx0, int64_t len, int ib, int ie,
                    float* dm, int64_t xs) {
  float y[4][kSeg];  // dy00, dy01, dy10, dy11 of each tile, zero outside
  float d[2 * kSeg];
  uint32_t m = 0;
  for (int r = 0; r < 2; ++r) {
    const int64_t oh = 2 * ty + r;
    if (oh >= ho) {
      std::fill(y[2 * r], y[2 * r] + len, 0.0f);
      std::fill(y[2 * r + 1], y[2 * r + 1] + len, 0.0f);
      continue;
    }
    m = std::max(m, load_row(plane + oh * wo, wo, 2 * tx0, 2 * len, d));
    for (int64_t k = 0; k < len; ++k) y[2 * r][k] = d[2 * k], y[2 * r + 1][k] = d[2 * k + 1];
  }
  // Row i of A dY is (p, q) = ca * (dy00, dy01) + cc * (dy10, dy11), (ca, cc) the row of A; the
  // coefficients are 0 and +-1, so the products are exact.
  static constexpr float kA[4][2] = {{1, 0}, {1, 1}, {1, -1}, {0, -1}};
  for (int i = ib; i <= ie; ++i) {
    const float ca = kA[i][0], cc = kA[i][1];
    float *d0 = dm + 4 * (i - ib) * xs, *d1 = d0 + xs, *d2 = d1 + xs, *d3 = d2 + xs;  // rows from ib on
    for (int64_t k = 0; k < len; ++k) {
      const float p = ca * y[0][k] + cc * y[2][k], q = ca * y[1][k] + cc * y[3][k];
      d0[k] = p;
      d1[k] = p + q;
      d2[k] = p - q;
      d3[k] = -q;
    }
  }
  return m;
}

// u (4x4) = G g G^T for one kernel g (3x3).
void kernel_tile(const float* g, float* u) {
  float t[4][3];  // G g
  for (int j = 0; j < 3; ++j) {
    t[0][j] = g[j];
    t[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
    t[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
    t[3][j] = g[6 + j];
  }
  for (int i = 0; i < 4; ++i) {
    u[4 * i] = t[i][0];
    u[4 * i + 1] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
    u[4 * i + 2] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
    u[4 * i + 3] = t[i][2];
  }
}

// dg (3x3) += G^T du G for one 4x4 du.
void kernel_tile_adjoint(const float* du, float* dg) {
  float t[3][4];  // G^T du
  for (int j = 0; j < 4; ++j) {
    const float a = du[j], b = du[4 + j], c = du[8 + j], d = du[12 + j];
    t[0][j] = a + 0.5f * (b + c);
    t[1][j] = 0.5f * (b - c);
    t[2][j] = 0.5f * (b + c) + d;
  }
  for (int k = 0; k < 3; ++k) {
    dg[3 * k] += t[k][0] + 0.5f * (t[k][1] + t[k][2]);
    dg[3 * k + 1] += 0.5f * (t[k][1] - t[k][2]);
    dg[3 * k + 2] += 0.5f * (t[k][1] + t[k][2]) + t[k][3];
  }
}

// B = V[xi]^T (nb, C) for the weight gradient's GEMM, from V[xi] (C, TB): each panel is a transposed
// block of V's rows. MatrixSource would walk each column of the panel with strided stores; here 8x8
// blocks go through registers (AVX2 where the CPU has it, else plain loops).
class TransposedSource final : public gemm::PanelSource {
 public:
  TransposedSource(const float* v, int64_t ld) : v_(v), ld_(ld), avx2_(gemm::isa_supported(gemm::Isa::Avx2)) {}
  void pack(int64_t k0, int64_t kc, int64_t n0, int64_t nc, int64_t nr, float* dst) const override {
    const int64_t nc8 = avx2_ ? nc / 8 * 8 : 0, kc8 = avx2_ ? kc / 8 * 8 : 0;
    if (nc8 > 0 && kc8 > 0) pack_blocks8(k0, kc8, n0, nc8, nr, dst);
    for (int64_t j = 0; j < nc; ++j) {
      const float* src = v_ + (n0 + j) * ld_ + k0;
      for (int64_t k = j < nc8 ? kc8 : 0; k < kc; ++k) dst[k * nr + j] = src[k];
    }
    for (int64_t k = 0; k < kc; ++k) std::fill(dst + k * nr + nc, dst + (k + 1) * nr, 0.0f);
  }

 private:
  // The 8 x 8 blocks of the panel's first nc8 columns and kc8 rows, the transposes inlined.
  __attribute__((target("avx2"), flatten)) void pack_blocks8(int64_t k0, int64_t kc8, int64_t n0, int64_t nc8,
                                                             int64_t nr, float* dst) const {
    for (int64_t j = 0; j < nc8; j += 8)
      for (int64_t k = 0; k < kc8; k += 8) transpose8x8(v_ + (n0 + j) * ld_ + k0 + k, ld_, dst + k * nr + j, nr);
  }
  const float* v_;
  int64_t ld_;
  bool avx2_;
};

// Rows [ib, ie] of V (16, C, TB) for the block's tiles [t0, t0 + nb), on the calling thread; v holds
// the rows from ib on.
// Returns the exponents' maximum of the inputs read.
uint32_t transform_input(const float* x, const Stride1Conv& s, const Plan& p, int64_t t0, int64_t nb, int ib, int ie,
                         float* v) {
  uint32_t m = 0;
  for (int64_t c = 0; c < s.C; ++c)
    for_each_segment(p, t0, t0 + nb, [&](int64_t n, int64_t ty, int64_t tx0, int64_t len, int64_t at) {
      m = std::max(m, input_tiles(x + (n * s.C + c) * s.H * s.W, s, ty, tx0, len, ib, ie, v + c * p.TB + at,
                                  s.C * p.TB));
    });
  return m;
}

}  // namespace

bool winograd_enabled() { return enabled_state(); }
void set_winograd_enabled(bool on) { enabled_state() = on; }

int64_t winograd_min_channels(gemm::Isa isa) { return isa == gemm::Isa::Avx512 ? 64 : 32; }

bool winograd_applies(const Stride1Conv& s) {
  const int64_t min_channels = winograd_min_channels(gemm::active_isa());
  return s.kh == 3 && s.kw == 3 && s.ph >= 0 && s.ph <= 2 && s.pw >= 0 && s.pw <= 2 && s.C >= min_channels &&
         s.O >= min_channels && s.C * s.O <= kWinogradMaxKernels && s.N > 0 && s.ho() > 0 && s.wo() > 0;
}

int64_t winograd_forward_calls() { return forward_calls.load(); }
int64_t winograd_backward_weight_calls() { return backward_weight_calls.load(); }

bool conv2d_winograd_forward(const float* x, const float* w, float* out, const Stride1Conv& s) {
  if (!winograd_enabled() || !winograd_applies(s)) return false;
  const int64_t C = s.C, O = s.O, ho = s.ho(), wo = s.wo();
  Plan p = plan(s);
  // The blocks split evenly over the threads, each thread taking whole blocks (its own V and M, no
  // barrier between the steps): a count of blocks that is a multiple of the thread count.
  const int64_t threads = std::max(1, get_num_threads());
  int64_t blocks = (p.T + p.TB - 1) / p.TB;
  blocks = std::min(p.T, (blocks + threads - 1) / threads * threads);
  p.TB = (p.T + blocks - 1) / blocks;
  blocks = (p.T + p.TB - 1) / p.TB;

  // U[xi] (O, C): the transformed kernels, packed as the A operand of each xi's GEMM. They are
  // computed into u (O, C, 16), which each xi's packing reads strided; u is freed once packed.
  std::vector<std::optional<gemm::PackedA>> up(16);
  std::atomic<bool> nonfinite{false};
  {
    CpuBuffer<float> u(static_cast<size_t>(O * C * 16));  // (O, C, 16)
    parallel_for(0, O * C, 256, [&](int64_t b, int64_t e) {
      uint32_t m = 0;
      for (int64_t i = b; i < e; ++i) {
        for (int k = 0; k < 9; ++k) m = std::max(m, exponent(w[i * 9 + k]));
        kernel_tile(w + i * 9, u.data() + i * 16);
      }
      if (m == kExpMask) nonfinite.store(true, std::memory_order_relaxed);
    });
    if (nonfinite.load()) return false;
    parallel_for(0, 16, 1, [&](int64_t xb, int64_t xe) {
      for (int64_t xi = xb; xi < xe; ++xi)
        up[static_cast<size_t>(xi)].emplace(gemm::View{u.data() + xi, C * 16, 16}, O, C);
    });
  }

  parallel_for(0, blocks, 1, [&](int64_t bb, int64_t be) {
    CpuBuffer<float> v(static_cast<size_t>(16 * C * p.TB));  // (16, C, TB)
    CpuBuffer<float> mb(static_cast<size_t>(16 * O * p.TB));  // (16, O, TB)
    for (int64_t blk = bb; blk < be; ++blk) {
      const int64_t t0 = blk * p.TB, nb = std::min(p.TB, p.T - t0);
      if (transform_input(x, s, p, t0, nb, 0, 3, v.data()) == kExpMask) nonfinite.store(true, std::memory_order_relaxed);
      if (nonfinite.load(std::memory_order_relaxed)) return;
      for (int64_t xi = 0; xi < 16; ++xi)
        gemm::gemm(*up[static_cast<size_t>(xi)], gemm::MatrixSource(gemm::View{v.data() + xi * C * p.TB, p.TB, 1}), nb,
                   mb.data() + xi * O * p.TB, p.TB, false);
      for (int64_t o = 0; o < O; ++o)
        for_each_segment(p, t0, t0 + nb, [&](int64_t n, int64_t ty, int64_t tx0, int64_t len, int64_t at) {
          output_tiles(mb.data() + o * p.TB + at, O * p.TB, out + (n * O + o) * ho * wo, ho, wo, ty, tx0, len);
        });
    }
  });
  if (nonfinite.load()) return false;
  forward_calls.fetch_add(1);
  return true;
}

bool conv2d_winograd_backward_weight(const float* grad, const float* x, float* dw, const Stride1Conv& s) {
  if (!winograd_enabled() || !winograd_applies(s)) return false;
  const int64_t C = s.C, O = s.O, ho = s.ho(), wo = s.wo();
  const Plan p = plan(s);
  CpuBuffer<float> du(static_cast<size_t>(16 * O * C));  // (16, O, C)
  std::atomic<bool> nonfinite{false};
  // Each thread owns a share [xb, xe) of the 16 xi and runs every block for it, transforming only the
  // rows of V and dM its xi need (the threads share none of the work's results, so there is no barrier
  // per block, and each dU[xi] is summed over the blocks in order by one thread).
  parallel_for(0, 16, 1, [&](int64_t xb, int64_t xe) {
    const int ib = static_cast<int>(xb / 4), ie = static_cast<int>((xe - 1) / 4);
    std::fill(du.data() + xb * O * C, du.data() + xe * O * C, 0.0f);
    const int64_t nx = 4 * (ie - ib + 1), x0 = 4 * ib;        // the xi of rows [ib, ie]: [x0, x0 + nx)
    CpuBuffer<float> v(static_cast<size_t>(nx * C * p.TB));   // (nx, C, TB): V's rows [ib, ie]
    CpuBuffer<float> dm(static_cast<size_t>(nx * O * p.TB));  // (nx, O, TB)
    for (int64_t t0 = 0; t0 < p.T; t0 += p.TB) {
      const int64_t nb = std::min(p.TB, p.T - t0);
      uint32_t m = transform_input(x, s, p, t0, nb, ib, ie, v.data());
      for (int64_t o = 0; o < O; ++o)
        for_each_segment(p, t0, t0 + nb, [&](int64_t n, int64_t ty, int64_t tx0, int64_t len, int64_t at) {
          m = std::max(m, grad_tiles(grad + (n * O + o) * ho * wo, ho, wo, ty, tx0, len, ib, ie,
                                     dm.data() + o * p.TB + at, O * p.TB));
        });
      if (m == kExpMask) nonfinite.store(true, std::memory_order_relaxed);
      if (nonfinite.load(std::memory_order_relaxed)) return;
      // dU[xi] (O, C) += dM[xi] (O, nb) @ V[xi]^T (nb, C).
      for (int64_t xi = xb; xi < xe; ++xi) {
        const gemm::PackedA a(gemm::View{dm.data() + (xi - x0) * O * p.TB, p.TB, 1}, O, nb);
        gemm::gemm(a, TransposedSource(v.data() + (xi - x0) * C * p.TB, p.TB), C, du.data() + xi * O * C, C, true);
      }
    }
  });
  if (nonfinite.load()) return false;
  parallel_for(0, O * C, 256, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      float t[16];
      for (int xi = 0; xi < 16; ++xi) t[xi] = du.data()[xi * O * C + i];
      kernel_tile_adjoint(t, dw + i * 9);
    }
  });
  backward_weight_calls.fetch_add(1);
  return true;
}

}  // namespace tl::cpu
