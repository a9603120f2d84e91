#pragma once
// Random numbers from a counter-based generator (Philox4x32-10): element i of a draw is a pure
// function of (seed, offset + i), so a tensor's values do not depend on the thread count, on the
// device, or on how the work is split. A Generator is just (seed, offset); saving and restoring
// those two numbers restores the stream exactly (checkpoints do this).
#include <cstdint>

#include "tensor/functors.h"
#include "tensor/tensor.h"

namespace tl {

class Generator {
 public:
  explicit Generator(uint64_t seed = 20) : seed_(seed) {}
  void manual_seed(uint64_t seed) { seed_ = seed; offset_ = 0; }
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) { seed_ = seed; offset_ = offset; }
  // Reserves n counters and returns the first one.
  uint64_t advance(uint64_t n) { uint64_t o = offset_; offset_ += n; return o; }

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
};

Generator& default_generator();
void manual_seed(uint64_t seed);  // seeds the default generator

// Uniform in [lo, hi), normal with (mean, std). gen = nullptr uses the default generator.
Tensor rand(const Shape& shape, TensorOptions opts = {}, Generator* gen = nullptr);
Tensor randn(const Shape& shape, TensorOptions opts = {}, Generator* gen = nullptr);
Tensor uniform(const Shape& shape, double lo, double hi, TensorOptions opts = {}, Generator* gen = nullptr);
Tensor normal(const Shape& shape, double mean, double std, TensorOptions opts = {}, Generator* gen = nullptr);
// In place on an existing tensor (parameter initialization); not recorded by autograd.
void uniform_(const Tensor& t, double lo, double hi, Generator* gen = nullptr);
void normal_(const Tensor& t, double mean, double std, Generator* gen = nullptr);

namespace philox {

struct Out { uint32_t v[4]; };

// Philox4x32 with 10 rounds (Salmon et al., SC'11). counter = (ctr, 0), key = seed.
TL_HD Out philox4x32_10(uint64_t ctr, uint64_t seed) {
  uint32_t c0 = static_cast<uint32_t>(ctr), c1 = static_cast<uint32_t>(ctr >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int r = 0; r < 10; ++r) {
    const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
    const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(p1);
    c3 = static_cast<uint32_t>(p0);
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {{c0, c1, c2, c3}};
}

// 53-bit uniform in [0, 1) from two 32-bit words.
TL_HD double to_unit(uint32_t hi, uint32_t lo) {
  return static_cast<double>((static_cast<uint64_t>(hi) << 21) ^ (lo >> 11)) * (1.0 / 9007199254740992.0);
}

// Element `i` of a draw at counter `offset`: uniform in [a, b) or normal(a, b) (Box-Muller).
TL_HD double sample(uint64_t seed, uint64_t offset, uint64_t i, bool normal, double a, double b) {
  Out o = philox4x32_10(offset + i, seed);
  double u1 = to_unit(o.v[0], o.v[1]);
  // std::fma: one rounding on every compiler and on the GPU (a plain a + (b - a) * u1 may or may not
  // be contracted into an FMA, which changes the last bit of float64 draws).
  if (!normal) return std::fma(b - a, u1, a);
  double u2 = to_unit(o.v[2], o.v[3]);
  double r = std::sqrt(-2.0 * std::log(1.0 - u1));  // 1 - u1 in (0, 1]
  return std::fma(b * r, std::cos(6.283185307179586477 * u2), a);
}

}  // namespace philox
}  // namespace tl
