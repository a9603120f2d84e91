// Losses, each returning a 0-d mean. BCE-with-logits and NLL have their own kernels and backward;
// dice, log_softmax and cross-entropy are composed of differentiable ops and need none.
#include <string>

#include "autograd/node.h"
#include "autograd/ops.h"
#include "tensor/kernels.h"

namespace tl {

namespace {

using kernels::Binary;
using Grads = std::vector<Tensor>;

// Element-wise losses: logits and target floating, same dtype, same shape (no broadcasting, as torch).
void check_same(const char* op, const Tensor& logits, const Tensor& target) {
  if (!is_floating(logits.dtype()) || logits.dtype() != target.dtype())
    throw_op_error(op, std::string("logits ") + dtype_name(logits.dtype()) + " " + shape_str(logits.shape()) +
                           " and target " + dtype_name(target.dtype()) + " " + shape_str(target.shape()) +
                           " must share one floating dtype");
  if (logits.shape() != target.shape())
    throw_op_error(op, "target " + shape_str(target.shape()) + " must have the same shape as logits " +
                           shape_str(logits.shape()));
}

// logp (N, C, ...) floating, target (N, ...) int64: the shape of logp without dim 1. A 1-d logp (C)
// takes a 0-d target, as in torch.
void check_class_target(const char* op, const Tensor& logp, const Tensor& target) {
  if (!is_floating(logp.dtype()))
    throw_op_error(op, std::string("expected floating input, got ") + dtype_name(logp.dtype()) + " " +
                           shape_str(logp.shape()));
  if (logp.dim() < 1) throw_op_error(op, "expected input (N, C, ...) or (C), got " + shape_str(logp.shape()));
  if (target.dtype() != kInt64)
    throw_op_error(op, std::string("expected target of class indices (int64), got ") + dtype_name(target.dtype()) +
                           " " + shape_str(target.shape()));
  Shape want = logp.shape();
  want.erase(want.begin() + (logp.dim() >= 2 ? 1 : 0));
  if (target.shape() != want)
    throw_op_error(op, "target " + shape_str(target.shape()) + " does not match input " + shape_str(logp.shape()) +
                           ": expected target " + shape_str(want));
}

}  // namespace

// logits, target (any shape, same) -> () mean of max(x, 0) - x t + log(1 + exp(-|x|))
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target) {
  const char* op = "binary_cross_entropy_with_logits";
  check_same(op, logits, target);
  const double n = static_cast<double>(logits.numel());
  Tensor out = kernels::reduce(kernels::Reduce::Mean, kernels::binary(Binary::BceLogits, logits, target), {}, false);
  return record(op, out, {logits, target},
                [x = logits.detach(), t = target.detach(), n](const Tensor& g, const std::vector<bool>& needs) {
                  // d/dx = sigmoid(x) - t, d/dt = -x; each element carries 1/n of the mean.
                  const Tensor gn = div(g, n);
                  return Grads{needs[0] ? mul(kernels::binary(Binary::BceLogitsGrad, x, t), gn) : Tensor(),
                               needs[1] ? mul(neg(x), gn) : Tensor()};
                });
}

// logits, target (any shape, same) -> () soft dice loss on p = sigmoid(logits), over all elements
Tensor dice_loss(const Tensor& logits, const Tensor& target, double smooth) {
  check_same("dice_loss", logits, target);
  const Tensor p = sigmoid(logits);
  const Tensor inter = sum(mul(p, target));
  const Tensor denom = add(add(sum(p), sum(target)), smooth);
  return rsub(div(add(mul(inter, 2.0), smooth), denom), 1.0);  // 1 - (2 sum(p t) + s) / (sum p + sum t + s)
}

// x (..., K, ...) -> same shape, log-probabilities along `dim`
Tensor log_softmax(const Tensor& x, int64_t dim) {
  if (!is_floating(x.dtype()))
    throw_op_error("log_softmax", std::string("expected a floating tensor, got ") + dtype_name(x.dtype()) + " " +
                                      shape_str(x.shape()));
  const int64_t d = wrap_dim(dim, x.dim(), "log_softmax");
  // Shift by the max so that exp never overflows. log_softmax(x - c) = log_softmax(x) for any c
  // constant along dim, so the max can be a constant (detached): its gradient would cancel exactly.
  const Tensor z = sub(x, max(x.detach(), {d}, true));  // (..., K, ...), max along dim is 0
  return sub(z, log(sum(exp(z), {d}, true)));
}

// logp (N, C, ...), target (N, ...) int64 -> () mean of -logp[n, target, ...]
Tensor nll_loss(const Tensor& logp, const Tensor& target) {
  check_class_target("nll_loss", logp, target);
  Tensor out = kernels::nll_loss(logp, target);
  // Backward needs logp's shape and dtype only: a stride-0 view of one zero keeps the graph from
  // holding the whole (N, C, ...) log-probability tensor alive.
  const Tensor logp_shape = zeros({}, logp.options()).expand(logp.shape());
  return record("nll_loss", out, {logp}, [logp_shape, target](const Tensor& g, const std::vector<bool>&) {
    return Grads{kernels::nll_loss_backward(g, logp_shape, target)};
  });
}

// logits (N, C, ...), target (N, ...) int64 -> () mean cross-entropy
Tensor cross_entropy(const Tensor& logits, const Tensor& target) {
  check_class_target("cross_entropy", logits, target);
  return nll_loss(log_softmax(logits, logits.dim() >= 2 ? 1 : 0), target);
}

}  // namespace tl
