#include "autograd/gradcheck.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>

#include "autograd/ops.h"
#include "tensor/random.h"

namespace tl {

namespace {

// Storage offset of the flat (row-major) element i of t.
int64_t element_offset(const Tensor& t, int64_t i) {
  int64_t off = t.offset();
  for (int64_t d = t.dim() - 1; d >= 0; --d) {
    off += (i % t.size(d)) * t.stride(d);
    i /= t.size(d);
  }
  return off;
}

}  // namespace

GradcheckResult gradcheck(const GradcheckFn& f, const std::vector<Tensor>& inputs, double eps, uint64_t seed) {
  for (const Tensor& x : inputs)
    if (x.defined() && x.requires_grad() && x.dtype() != kFloat64)
      throw std::invalid_argument("gradcheck: inputs that require grad must be float64");

  // Analytic gradients of L = sum(f(x) * R).
  Tensor out = f(inputs);
  Generator gen(seed);
  const Tensor R = randn(out.shape(), TensorOptions(kFloat64), &gen);
  for (const Tensor& x : inputs)
    if (x.defined() && x.requires_grad()) const_cast<Tensor&>(x).set_grad(Tensor());
  sum(mul(out, R)).backward();

  auto L = [&]() {
    NoGradGuard ng;
    return sum(mul(f(inputs), R)).item();
  };

  GradcheckResult res;
  for (size_t k = 0; k < inputs.size(); ++k) {
    const Tensor& x = inputs[k];
    if (!x.defined() || !x.requires_grad()) continue;
    const Tensor g = x.grad();
    const std::vector<double> analytic = g.defined() ? g.to_vector<double>() : std::vector<double>(x.numel(), 0.0);
    double* base = static_cast<double*>(x.storage()->data());
    std::vector<double> numeric(x.numel());
    for (int64_t i = 0; i < x.numel(); ++i) {
      double& v = base[element_offset(x, i)];
      const double saved = v;
      v = saved + eps;
      const double lp = L();
      v = saved - eps;
      const double lm = L();
      v = saved;
      numeric[i] = (lp - lm) / (2 * eps);
      res.evaluations += 2;
    }
    double scale = 0, worst = 0;
    int64_t wi = -1;
    for (int64_t i = 0; i < x.numel(); ++i) {
      scale = std::max({scale, std::abs(numeric[i]), std::abs(analytic[i])});
      const double e = std::abs(numeric[i] - analytic[i]);
      if (e > worst || wi < 0 || std::isnan(e)) {
        worst = std::isnan(e) ? INFINITY : e;
        wi = i;
      }
    }
    const double rel = scale > 0 ? worst / scale : (worst > 0 ? INFINITY : 0.0);
    if (rel >= res.max_rel_error) {
      res.max_rel_error = rel;
      std::ostringstream os;
      os << "input " << k << " " << shape_str(x.shape()) << ", element " << wi << ": analytic "
         << (wi >= 0 ? analytic[wi] : 0) << ", numeric " << (wi >= 0 ? numeric[wi] : 0);
      res.worst = os.str();
    }
  }
  return res;
}

}  // namespace tl
