#include "tensor/random.h"

#include <stdexcept>

#include "tensor/kernels.h"

namespace tl {

Generator& default_generator() {
  static Generator g(20);
  return g;
}

void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

namespace {

void fill_dist(const Tensor& t, kernels::Distribution d, double a, double b, Generator* gen) {
  if (!is_floating(t.dtype()))
    throw std::invalid_argument(std::string("random: expected a floating tensor, got ") + dtype_name(t.dtype()));
  Generator& g = gen ? *gen : default_generator();
  const uint64_t offset = g.advance(static_cast<uint64_t>(t.numel()));
  if (t.is_contiguous()) {
    kernels::fill_random_(t, d, a, b, g.seed(), offset);
    return;
  }
  Tensor tmp = empty(t.shape(), t.options());
  kernels::fill_random_(tmp, d, a, b, g.seed(), offset);
  kernels::copy_(t, tmp);
}

Tensor make(const Shape& shape, TensorOptions opts, kernels::Distribution d, double a, double b, Generator* gen) {
  Tensor t = empty(shape, opts.with_requires_grad(false));
  fill_dist(t, d, a, b, gen);
  t.impl()->requires_grad = opts.requires_grad;
  return t;
}

}  // namespace

Tensor rand(const Shape& shape, TensorOptions opts, Generator* gen) {
  return make(shape, opts, kernels::Distribution::Uniform, 0.0, 1.0, gen);
}
Tensor randn(const Shape& shape, TensorOptions opts, Generator* gen) {
  return make(shape, opts, kernels::Distribution::Normal, 0.0, 1.0, gen);
}
Tensor uniform(const Shape& shape, double lo, double hi, TensorOptions opts, Generator* gen) {
  if (!(lo <= hi)) throw std::invalid_argument("uniform: expected lo <= hi");
  return make(shape, opts, kernels::Distribution::Uniform, lo, hi, gen);
}
Tensor normal(const Shape& shape, double mean, double std, TensorOptions opts, Generator* gen) {
  if (!(std >= 0)) throw std::invalid_argument("normal: expected std >= 0");
  return make(shape, opts, kernels::Distribution::Normal, mean, std, gen);
}
void uniform_(const Tensor& t, double lo, double hi, Generator* gen) {
  fill_dist(t, kernels::Distribution::Uniform, lo, hi, gen);
}
void normal_(const Tensor& t, double mean, double std, Generator* gen) {
  fill_dist(t, kernels::Distribution::Normal, mean, std, gen);
}

}  // namespace tl
