// Negative log-likelihood over class indices: forward and backward.
//
// logp (N, C, S...) is read as (N, C, S) and target (N, S...) as (N, S), S the product of the
// trailing dims; a 1-d logp (C) with a 0-d target is one sample (N = 1, S = 1). The loss is the mean
// over the N * S target positions of -logp[n, target[n, s], s].
#include <string>

#include "tensor/cpu/cpu_kernels.h"

namespace tl::cpu {

namespace {

// The multi-index of flat position i in `shape`: "(1,2,3)".
std::string position_str(int64_t i, const Shape& shape) {
  Shape idx(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    idx[d] = i % shape[d];
    i /= shape[d];
  }
  return shape_str(idx);
}

}  // namespace

std::string nll_target_error(int64_t value, int64_t position, const Shape& shape, int64_t classes) {
  return "target " + std::to_string(value) + " at position " + position_str(position, shape) + " of target " +
         shape_str(shape) + " is out of bounds for " + std::to_string(classes) + " classes [0, " +
         std::to_string(classes) + ")";
}

// target (N, S...) as a contiguous CPU int64 buffer, every value checked to lie in [0, classes).
Tensor check_nll_target(const char* op, const Tensor& target, int64_t classes) {
  Tensor t = contiguous_copy(target.device().is_cpu() ? target : target.to(Device::cpu()));
  const int64_t* tp = t.data_ptr<int64_t>();
  for (int64_t i = 0; i < t.numel(); ++i)
    if (tp[i] < 0 || tp[i] >= classes) throw_op_error(op, nll_target_error(tp[i], i, t.shape(), classes));
  return t;
}

// logp (N, C, S...) float, target (N, S...) int64 -> () mean of -logp at the targets
Tensor nll_loss(const Tensor& logp_in, const Tensor& target) {
  const NllDims d(logp_in);
  const Tensor t = check_nll_target("nll_loss", target, d.c);
  const Tensor logp = contiguous_copy(logp_in);
  Tensor out = empty({}, logp.options());
  dispatch_floating(logp.dtype(), "nll_loss", [&]<typename T>() {
    const T* lp = logp.data_ptr<T>();
    const int64_t* tp = t.data_ptr<int64_t>();
    // One thread, fixed order, double accumulator: the sum is cheap next to the log_softmax before it,
    // and the result stays independent of the thread count.
    double acc = 0;
    for (int64_t n = 0; n < d.n; ++n)
      for (int64_t s = 0; s < d.s; ++s) acc -= static_cast<double>(lp[(n * d.c + tp[n * d.s + s]) * d.s + s]);
    // No targets: 0 / 0 = NaN, as torch's mean reduction gives.
    *out.data_ptr<T>() = static_cast<T>(acc / static_cast<double>(d.n * d.s));
  });
  return out;
}

// grad (), logp (N, C, S...), target (N, S...) -> dlogp (N, C, S...): -grad / count at each target, 0
// elsewhere. Only logp's shape and dtype are read, so the caller may pass a stride-0 placeholder.
Tensor nll_loss_backward(const Tensor& grad, const Tensor& logp, const Tensor& target) {
  const NllDims d(logp);
  const Tensor t = check_nll_target("nll_loss_backward", target, d.c);
  Tensor out = zeros(logp.shape(), logp.options());
  const double v = -grad.item() / static_cast<double>(d.n * d.s);
  dispatch_floating(logp.dtype(), "nll_loss_backward", [&]<typename T>() {
    T* op = out.data_ptr<T>();
    const int64_t* tp = t.data_ptr<int64_t>();
    for (int64_t n = 0; n < d.n; ++n)
      for (int64_t s = 0; s < d.s; ++s) op[(n * d.c + tp[n * d.s + s]) * d.s + s] = static_cast<T>(v);
  });
  return out;
}

}  // namespace tl::cpu
