#pragma once
// The engine's own float32 GEMM: C (M, N) = A (M, K) @ B (K, N), or C += A @ B.
//
// BLIS-style: A is packed once into panels of MR rows (k-major), B a block at a time into panels of NR
// columns, and a register-blocked micro-kernel computes an MR x NR tile of C over a KC-long slice of K.
// The micro-kernel is chosen once, at run time, by the CPU's features (AVX-512, AVX2 + FMA, or the
// portable reference), so one binary runs at full speed on both kinds of x86-64 machine; the
// environment variable TL_GEMM_ISA (reference, avx2, avx512) or set_isa() overrides the choice.
//
// B is not necessarily a matrix in memory: a PanelSource writes B's packed panels, so a convolution
// packs its input patches straight into the panels (implicit im2col) instead of materializing the
// column matrix first.
#include <cstdint>

#include "tensor/storage.h"

namespace tl::cpu::gemm {

enum class Isa { Reference, Avx2, Avx512 };

const char* isa_name(Isa isa);
bool isa_supported(Isa isa);
Isa active_isa();      // the override, else the best this CPU supports
void set_isa(Isa isa);  // throws std::invalid_argument when this CPU lacks it

// The active micro-kernel's tile (MR rows of A by NR columns of B) and K blocking.
struct Blocking {
  int64_t mr, nr, kc, nc;
};
Blocking blocking();

// A strided matrix: element (i, j) at p[i * rs + j * cs].
struct View {
  const float* p;
  int64_t rs, cs;
};

// Writes B's packed panel for rows [k0, k0 + kc) and columns [n0, n0 + nc), nc <= nr:
// dst[k * nr + j] = B(k0 + k, n0 + j) for j < nc, and 0 for nc <= j < nr.
class PanelSource {
 public:
  virtual ~PanelSource() = default;
  virtual void pack(int64_t k0, int64_t kc, int64_t n0, int64_t nc, int64_t nr, float* dst) const = 0;
  // B(k0, n0) when B's rows are contiguous in memory, ld floats apart (ld is set), so a panel that is
  // used only a few times can be read in place instead of copied; nullptr when they are not.
  virtual const float* direct(int64_t k0, int64_t n0, int64_t& ld) const {
    (void)k0, (void)n0, (void)ld;
    return nullptr;
  }
};

// B as a strided matrix; read in place when its columns are contiguous (cs == 1).
class MatrixSource final : public PanelSource {
 public:
  explicit MatrixSource(View b) : b_(b) {}
  void pack(int64_t k0, int64_t kc, int64_t n0, int64_t nc, int64_t nr, float* dst) const override;
  const float* direct(int64_t k0, int64_t n0, int64_t& ld) const override {
    if (b_.cs != 1) return nullptr;
    ld = b_.rs;
    return b_.p + k0 * b_.rs + n0;
  }

 private:
  View b_;
};

// A (M, K) packed for the active micro-kernel: for each KC block of K, panels of MR rows, each
// (kc, MR) k-major, rows past M zero. Pack once, reuse for many products (a conv's weights over the
// images of a batch).
class PackedA {
 public:
  PackedA(View a, int64_t m, int64_t k);
  Isa isa() const { return isa_; }  // the micro-kernel it was packed for
  int64_t rows() const { return m_; }
  int64_t depth() const { return k_; }
  int64_t kc() const { return kc_; }  // K's block length
  // The panel of rows [i * mr, i * mr + mr) over the KC block starting at k0.
  const float* panel(int64_t k0, int64_t i) const { return data_.data() + k0 * mpad_ + i * mr_ * kc_len(k0); }

 private:
  int64_t kc_len(int64_t k0) const;
  Isa isa_;
  int64_t m_, k_, mr_, kc_, mpad_;
  CpuBuffer<float> data_;
};

// C (M, N) with row stride ldc = A @ B (accumulate: C += A @ B). The work is split over the threads by
// columns of C when there are enough of them, else by rows; called inside a parallel region it runs on
// the calling thread alone.
void gemm(const PackedA& a, const PanelSource& b, int64_t n, float* c, int64_t ldc, bool accumulate);
void gemm(int64_t m, int64_t n, int64_t k, View a, View b, float* c, int64_t ldc, bool accumulate);

}  // namespace tl::cpu::gemm
