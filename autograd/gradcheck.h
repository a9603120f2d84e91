#pragma once
// Numerical gradient checking by central differences, for float64 inputs.
//
// For an op f and inputs x_k, it compares the analytic gradient of L = sum(f(x) * R), R a fixed
// random tensor, with (L(x + eps e_i) - L(x - eps e_i)) / (2 eps) for every element i of every input
// that requires grad. Inputs may be non-contiguous leaves (their elements are perturbed in place).
#include <functional>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace tl {

struct GradcheckResult {
  // max_i |analytic_i - numeric_i| / max(max_i |numeric_i|, max_i |analytic_i|), worst over inputs;
  // 0 when both gradients are zero everywhere.
  double max_rel_error = 0;
  std::string worst;  // where: "input 1, element 17: analytic 0.25, numeric 0.2500001"
  int64_t evaluations = 0;
};

using GradcheckFn = std::function<Tensor(const std::vector<Tensor>&)>;

GradcheckResult gradcheck(const GradcheckFn& f, const std::vector<Tensor>& inputs, double eps = 1e-6,
                          uint64_t seed = 7);

}  // namespace tl
