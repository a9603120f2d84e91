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
// TB consecutive tiles; only one block's V (16, C, TB) and M or dM (16, O, TB) exist at a time, so
// the scratch is a few MB whatever the batch. Per block: the input (and gradient) transforms are
// split over the threads by channel, the 16 GEMMs by xi (each on one thread, the packed GEMM's
// micro-kernel chosen at run time), the output transform by output channel. A thread's 8 of the 16
// (V, M) pairs are sized to stay in its L2. TB depends on the shape only, and each dU[xi] is summed
// over the blocks in order by whichever thread owns xi, so the weight gradient's bits do not depend
// on the thread count.
#include "tensor/cpu/conv_winograd.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "tensor/cpu/gemm.h"
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

// Floats of one thread's share of a block (8 of the 16 V and M pairs): 1 MB, within its L2.
constexpr int64_t kBlockFloats = int64_t{1} << 18;

struct Plan {
  int64_t th, tw, T, TB;  // tile rows and columns per image, tiles in the batch, tiles per block
};

Plan plan(const Stride1Conv& s) {
  Plan p{(s.ho() + 1) / 2, (s.wo() + 1) / 2, 0, 0};
  p.T = s.N * p.th * p.tw;
  // A multiple of both micro-kernels' NR (24, 48), 2 to 21 of the wider.
  int64_t tb = kBlockFloats / (8 * (s.C + s.O));
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

// ev[k] = row[base + 2k], od[k] = row[base + 2k + 1] for k < cnt, 0 outside [0, W); m collects the
// exponents read.
void gather_pairs(const float* row, int64_t W, int64_t base, int64_t cnt, float* ev, float* od, uint32_t& m) {
  // Both columns inside for k in [lo, hi): base + 2k >= 0 and base + 2k + 1 <= W - 1.
  int64_t lo = base >= 0 ? 0 : (1 - base) / 2;
  int64_t hi = W - 2 - base < 0 ? 0 : (W - 2 - base) / 2 + 1;
  hi = std::clamp<int64_t>(hi, 0, cnt);
  lo = std::clamp<int64_t>(lo, 0, hi);
  auto at = [&](int64_t col) { return col >= 0 && col < W ? row[col] : 0.0f; };
  for (int64_t k = 0; k < lo; ++k) ev[k] = at(base + 2 * k), od[k] = at(base + 2 * k + 1);
  uint32_t mm = 0;
  for (int64_t k = lo; k < hi; ++k) {
    const float a = row[base + 2 * k], b = row[base + 2 * k + 1];
    ev[k] = a, od[k] = b;
    mm = std::max({mm, exponent(a), exponent(b)});
  }
  for (int64_t k = hi; k < cnt; ++k) ev[k] = at(base + 2 * k), od[k] = at(base + 2 * k + 1);
  for (int64_t k = 0; k < lo; ++k) mm = std::max({mm, exponent(ev[k]), exponent(od[k])});
  for (int64_t k = hi; k < cnt; ++k) mm = std::max({mm, exponent(ev[k]), exponent(od[k])});
  m = std::max(m, mm);
}

// V = B^T d B for the tiles tx0 .. tx0 + len of tile row ty of one channel's plane (H, W):
// v[xi * xs + k] for tile k, xi = 4i + j. Returns the exponents' maximum of the inputs read.
uint32_t input_tiles(const float* plane, const Stride1Conv& s, int64_t ty, int64_t tx0, int64_t len, float* v,
                     int64_t xs) {
  float e[4][4][kSeg];  // (patch row, column-transformed j, tile): the rows times B
  float ev[kSeg + 1], od[kSeg + 1];
  uint32_t m = 0;
  for (int i = 0; i < 4; ++i) {
    const int64_t ih = 2 * ty - s.ph + i;
    if (ih < 0 || ih >= s.H) {
      for (int j = 0; j < 4; ++j) std::fill(e[i][j], e[i][j] + len, 0.0f);
      continue;
    }
    // Patch columns d0..d3 of tile k: ev[k], od[k], ev[k + 1], od[k + 1].
    gather_pairs(plane + ih * s.W, s.W, 2 * tx0 - s.pw, len + 1, ev, od, m);
    for (int64_t k = 0; k < len; ++k) {
      e[i][0][k] = ev[k] - ev[k + 1];
      e[i][1][k] = od[k] + ev[k + 1];
      e[i][2][k] = ev[k + 1] - od[k];
      e[i][3][k] = od[k] - od[k + 1];
    }
  }
  for (int j = 0; j < 4; ++j) {
    float *v0 = v + j * xs, *v1 = v + (4 + j) * xs, *v2 = v + (8 + j) * xs, *v3 = v + (12 + j) * xs;
    const float *r0 = e[0][j], *r1 = e[1][j], *r2 = e[2][j], *r3 = e[3][j];
    for (int64_t k = 0; k < len; ++k) {
      v0[k] = r0[k] - r2[k];
      v1[k] = r1[k] + r2[k];
      v2[k] = r2[k] - r1[k];
      v3[k] = r1[k] - r3[k];
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

// dM = A dY A^T for the tiles tx0 .. tx0 + len of tile row ty of one output channel's gradient plane
// (Ho, Wo): dm[xi * xs + k]. Returns the exponents' maximum of the gradients read.
uint32_t grad_tiles(const float* plane, int64_t ho, int64_t wo, int64_t ty, int64_t tx0, int64_t len, float* dm,
                    int64_t xs) {
  float y[4][kSeg];  // dy00, dy01, dy10, dy11 of each tile, zero outside
  uint32_t m = 0;
  for (int r = 0; r < 2; ++r) {
    const int64_t oh = 2 * ty + r;
    if (oh >= ho) {
      std::fill(y[2 * r], y[2 * r] + len, 0.0f);
      std::fill(y[2 * r + 1], y[2 * r + 1] + len, 0.0f);
      continue;
    }
    gather_pairs(plane + oh * wo, wo, 2 * tx0, len, y[2 * r], y[2 * r + 1], m);
  }
  for (int64_t k = 0; k < len; ++k) {
    const float a = y[0][k], b = y[1][k], c = y[2][k], d = y[3][k];
    const float p[4] = {a, a + c, a - c, -c}, q[4] = {b, b + d, b - d, -d};  // rows of A dY
    for (int i = 0; i < 4; ++i) {
      dm[(4 * i) * xs + k] = p[i];
      dm[(4 * i + 1) * xs + k] = p[i] + q[i];
      dm[(4 * i + 2) * xs + k] = p[i] - q[i];
      dm[(4 * i + 3) * xs + k] = -q[i];
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

// V (16, C, TB) of the block's tiles [t0, t0 + nb). Returns false on a non-finite input.
bool transform_input(const float* x, const Stride1Conv& s, const Plan& p, int64_t t0, int64_t nb, float* v) {
  std::atomic<bool> nonfinite{false};
  parallel_for(0, s.C, 1, [&](int64_t cb, int64_t ce) {
    uint32_t m = 0;
    for (int64_t c = cb; c < ce; ++c)
      for_each_segment(p, t0, t0 + nb, [&](int64_t n, int64_t ty, int64_t tx0, int64_t len, int64_t at) {
        m = std::max(m, input_tiles(x + (n * s.C + c) * s.H * s.W, s, ty, tx0, len, v + c * p.TB + at, s.C * p.TB));
      });
    if (m == kExpMask) nonfinite.store(true, std::memory_order_relaxed);
  });
  return !nonfinite.load();
}

}  // namespace

bool winograd_enabled() { return enabled_state(); }
void set_winograd_enabled(bool on) { enabled_state() = on; }

bool winograd_applies(const Stride1Conv& s) {
  return s.kh == 3 && s.kw == 3 && s.ph >= 0 && s.ph <= 2 && s.pw >= 0 && s.pw <= 2 && s.C >= kWinogradMinChannels &&
         s.O >= kWinogradMinChannels && s.N > 0 && s.ho() > 0 && s.wo() > 0;
}

int64_t winograd_forward_calls() { return forward_calls.load(); }
int64_t winograd_backward_weight_calls() { return backward_weight_calls.load(); }

bool conv2d_winograd_forward(const float* x, const float* w, float* out, const Stride1Conv& s) {
  if (!winograd_enabled() || !winograd_applies(s)) return false;
  const int64_t C = s.C, O = s.O, ho = s.ho(), wo = s.wo();
  const Plan p = plan(s);
  // U (16, O, C): the transformed kernels, packed once per call as the A operand of each GEMM.
  CpuBuffer<float> u(static_cast<size_t>(16 * O * C));
  std::atomic<bool> nonfinite{false};
  parallel_for(0, O * C, 256, [&](int64_t b, int64_t e) {
    uint32_t m = 0;
    for (int64_t i = b; i < e; ++i) {
      float t[16];
      for (int k = 0; k < 9; ++k) m = std::max(m, exponent(w[i * 9 + k]));
      kernel_tile(w + i * 9, t);
      for (int xi = 0; xi < 16; ++xi) u.data()[xi * O * C + i] = t[xi];
    }
    if (m == kExpMask) nonfinite.store(true, std::memory_order_relaxed);
  });
  if (nonfinite.load()) return false;
  std::vector<gemm::PackedA> up;
  up.reserve(16);
  for (int64_t xi = 0; xi < 16; ++xi) up.emplace_back(gemm::View{u.data() + xi * O * C, C, 1}, O, C);

  CpuBuffer<float> v(static_cast<size_t>(16 * C * p.TB));  // (16, C, TB)
  CpuBuffer<float> mb(static_cast<size_t>(16 * O * p.TB));  // (16, O, TB)
  for (int64_t t0 = 0; t0 < p.T; t0 += p.TB) {
    const int64_t nb = std::min(p.TB, p.T - t0);
    if (!transform_input(x, s, p, t0, nb, v.data())) return false;
    parallel_for(0, 16, 1, [&](int64_t b, int64_t e) {
      for (int64_t xi = b; xi < e; ++xi)
        gemm::gemm(up[static_cast<size_t>(xi)], gemm::MatrixSource(gemm::View{v.data() + xi * C * p.TB, p.TB, 1}), nb,
                   mb.data() + xi * O * p.TB, p.TB, false);
    });
    parallel_for(0, O, 1, [&](int64_t ob, int64_t oe) {
      for (int64_t o = ob; o < oe; ++o)
        for_each_segment(p, t0, t0 + nb, [&](int64_t n, int64_t ty, int64_t tx0, int64_t len, int64_t at) {
          output_tiles(mb.data() + o * p.TB + at, O * p.TB, out + (n * O + o) * ho * wo, ho, wo, ty, tx0, len);
        });
    });
  }
  forward_calls.fetch_add(1);
  return true;
}

bool conv2d_winograd_backward_weight(const float* grad, const float* x, float* dw, const Stride1Conv& s) {
  if (!winograd_enabled() || !winograd_applies(s)) return false;
  const int64_t C = s.C, O = s.O, ho = s.ho(), wo = s.wo();
  const Plan p = plan(s);
  CpuBuffer<float> du(static_cast<size_t>(16 * O * C));  // (16, O, C)
  std::fill(du.data(), du.data() + du.size(), 0.0f);
  CpuBuffer<float> v(static_cast<size_t>(16 * C * p.TB));   // (16, C, TB)
  CpuBuffer<float> dm(static_cast<size_t>(16 * O * p.TB));  // (16, O, TB)
  for (int64_t t0 = 0; t0 < p.T; t0 += p.TB) {
    const int64_t nb = std::min(p.TB, p.T - t0);
    if (!transform_input(x, s, p, t0, nb, v.data())) return false;
    std::atomic<bool> nonfinite{false};
    parallel_for(0, O, 1, [&](int64_t ob, int64_t oe) {
      uint32_t m = 0;
      for (int64_t o = ob; o < oe; ++o)
        for_each_segment(p, t0, t0 + nb, [&](int64_t n, int64_t ty, int64_t tx0, int64_t len, int64_t at) {
          m = std::max(m, grad_tiles(grad + (n * O + o) * ho * wo, ho, wo, ty, tx0, len, dm.data() + o * p.TB + at,
                                     O * p.TB));
        });
      if (m == kExpMask) nonfinite.store(true, std::memory_order_relaxed);
    });
    if (nonfinite.load()) return false;
    // dU[xi] (O, C) += dM[xi] (O, nb) @ V[xi]^T (nb, C), each xi on one thread, blocks in order.
    parallel_for(0, 16, 1, [&](int64_t b, int64_t e) {
      for (int64_t xi = b; xi < e; ++xi) {
        const gemm::PackedA a(gemm::View{dm.data() + xi * O * p.TB, p.TB, 1}, O, nb);
        gemm::gemm(a, gemm::MatrixSource(gemm::View{v.data() + xi * C * p.TB, 1, p.TB}), C, du.data() + xi * O * C, C,
                   true);
      }
    });
  }
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
