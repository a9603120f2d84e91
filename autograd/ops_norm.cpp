// Batch normalization: forward by kernels::batch_norm, backward right below it by
// kernels::batch_norm_backward (both dispatched on device).
#include <string>

#include "autograd/node.h"
#include "autograd/ops.h"
#include "tensor/kernels.h"

namespace tl {

namespace {

using Grads = std::vector<Tensor>;

// A per-channel argument (weight, bias, running stat) must be (C) and of x's dtype when given.
void check_channel_arg(const Tensor& x, const Tensor& t, const char* name) {
  if (!t.defined()) return;
  const int64_t c = x.size(1);
  if (t.shape() != Shape{c})
    throw_op_error("batch_norm", std::string(name) + " " + shape_str(t.shape()) + " does not match input " +
                                     shape_str(x.shape()) + " with " + std::to_string(c) + " channels: expected (" +
                                     std::to_string(c) + ")");
  if (t.dtype() != x.dtype())
    throw_op_error("batch_norm", std::string(name) + " is " + dtype_name(t.dtype()) + " " + shape_str(t.shape()) +
                                     ", input is " + dtype_name(x.dtype()) + " " + shape_str(x.shape()));
}

// The graph node's name: the op, and the activation when one is fused.
const char* node_name(Activation act) {
  static const char* names[] = {"batch_norm", "batch_norm_relu", "batch_norm_gelu", "batch_norm_silu",
                                "batch_norm_pysilu"};
  return names[static_cast<int>(act)];
}

}  // namespace

// x (N, C, ...), weight/bias/running_mean/running_var (C) or undefined -> (N, C, ...)
Tensor batch_norm_activation(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                             const Tensor& running_var, bool training, double momentum, double eps, Activation act) {
  if (!is_floating(x.dtype()))
    throw_op_error("batch_norm", std::string("expected a floating input, got ") + dtype_name(x.dtype()) + " " +
                                     shape_str(x.shape()));
  if (x.dim() < 2)
    throw_op_error("batch_norm", "expected an input of rank 2 or more (N, C, ...), got " + shape_str(x.shape()));
  check_channel_arg(x, weight, "weight");
  check_channel_arg(x, bias, "bias");
  check_channel_arg(x, running_mean, "running_mean");
  check_channel_arg(x, running_var, "running_var");
  if (training) {
    // One value per channel has zero variance: the output would be all `bias` and the unbiased
    // running variance would divide by zero.
    if (x.size(1) > 0 && x.numel() / x.size(1) <= 1)
      throw_op_error("batch_norm", "Expected more than 1 value per channel when training, got input size " +
                                       shape_str(x.shape()));
  } else if (!running_mean.defined() || !running_var.defined()) {
    throw_op_error("batch_norm", "running_mean and running_var must be defined in evaluation mode (input " +
                                     shape_str(x.shape()) + ")");
  }
  // Running statistics are updated in place by the kernel: buffers, never part of the graph.
  for (const Tensor* r : {&running_mean, &running_var})
    if (r->defined() && r->requires_grad())
      throw_op_error("batch_norm", "running statistics must not require grad");

  kernels::BatchNormOutput r =
      kernels::batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps, act);
  // Saved for backward: the input, weight and bias, and the (C) statistics the forward used; never y
  // nor the pre-activation, which the backward recomputes.
  // Saved for backward: the input, weight and bias (detached: no copies), and the (C) statistics the
  // forward used; never y nor the pre-activation, which the backward recomputes.
  auto saved = [](const Tensor& t) { return t.defined() ? t.detach() : Tensor(); };
  return record(node_name(act), r.y, {x, weight, bias},
                [x = x.detach(), w = saved(weight), b = saved(bias), mean = r.mean, invstd = r.invstd, training,
                 act](const Tensor& g, const std::vector<bool>& needs) {
                  kernels::BatchNormGrads gr = kernels::batch_norm_backward(g, x, w, b, mean, invstd, training, act);
                  return Grads{needs[0] ? gr.dx : Tensor(), needs[1] ? gr.dweight : Tensor(),
                               needs[2] ? gr.dbias : Tensor()};
                });
}

Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                  const Tensor& running_var, bool training, double momentum, double eps) {
  return batch_norm_activation(x, weight, bias, running_mean, running_var, training, momentum, eps,
                               Activation::None);
}

}  // namespace tl
