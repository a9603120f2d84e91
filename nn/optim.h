#pragma once
// Optimizers with PyTorch 1.13's exact semantics (one parameter group, torch's defaults, the
// single-tensor code path of torch.optim): SGD (momentum, dampening, Nesterov, L2 weight decay),
// Adam (L2 weight decay) and AdamW (decoupled weight decay), plus clip_grad_norm_.
//
// The per-element update performs torch's floating-point operations in torch's order, with the
// hyperparameters rounded to the parameter's dtype as torch rounds them and with a fused
// multiply-add wherever torch's vectorized CPU kernel fuses one (add(..., alpha), addcmul), so that
// float32 results agree with torch's CPU optimizers to the last bit in the common case.
//
// State is kept per parameter, as torch keeps it: its own step count (a parameter without a gradient
// is skipped and its count does not advance) and its slots. For checkpoints the state is a flat list
// of named tensors:
//   optim.step               0-d int64: step() calls so far
//   optim.lr                 0-d float64: the current learning rate (torch restores it too)
//   optim.<param>.step       0-d int64: updates applied to that parameter
//   optim.<param>.<slot>     shaped as the parameter: exp_avg, exp_avg_sq (Adam, AdamW);
//                            momentum_buffer (SGD with momentum)
// The update runs on CPU tensors (float32, float64); the state lives beside each parameter.
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "autograd/ops.h"

namespace tl::optim {

// A model's named_parameters(): the names become the state's keys.
using NamedParams = std::vector<std::pair<std::string, Tensor>>;

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of every parameter that has a gradient.
  virtual void step() = 0;
  // torch 1.13's default zeroes each gradient in place; set_to_none drops it instead (then the next
  // step skips parameters that received no gradient, which changes Adam's result: see torch's note).
  void zero_grad(bool set_to_none = false);

  double lr() const { return lr_; }
  void set_lr(double lr);  // what LR schedulers call
  int64_t steps() const { return steps_; }
  const NamedParams& params() const { return params_; }

  // The live state tensors (not copies), named as in the header comment.
  virtual NamedParams state_dict() const;
  // Restores the state from a map that may hold other entries too (a whole checkpoint): only keys
  // starting with "optim." are read. Strict: every expected key must be present with the right
  // shape and no unknown "optim." key may be; all faults are reported, each by name, in one error,
  // and nothing is changed when there is one. Values are cast to each parameter's dtype.
  virtual void load_state_dict(const std::map<std::string, Tensor>& state);
  void load_state_dict(const NamedParams& state);

 protected:
  // `slots` names the per-parameter state tensors (zeros of the parameter's shape and dtype).
  Optimizer(std::string name, NamedParams params, double lr, std::vector<std::string> slots);

  struct ParamState {
    int64_t step = 0;          // updates applied to this parameter
    std::vector<Tensor> slot;  // one per slot name, contiguous
  };
  // Indices of the parameters that have a gradient, each checked (device, shape, dtype) before any
  // is updated.
  // Moves a parameter's state to the parameter's device if it is elsewhere.
  std::vector<size_t> params_with_grad();

  std::string name_;  // "SGD", "Adam", "AdamW": prefixes error messages
  NamedParams params_;
  std::vector<std::string> slot_names_;
  std::vector<ParamState> state_;
  double lr_;
  int64_t steps_ = 0;
};

// torch.optim.SGD. lr has no default in torch 1.13 ("required"): leaving it unset is an error.
struct SGDOptions {
  double lr = std::numeric_limits<double>::quiet_NaN();
  double momentum = 0;
  double dampening = 0;
  double weight_decay = 0;
  bool nesterov = false;
};

class SGD : public Optimizer {
 public:
  SGD(NamedParams params, SGDOptions options);
  void step() override;
  const SGDOptions& options() const { return opt_; }

 private:
  SGDOptions opt_;
};

// torch.optim.Adam: weight_decay is an L2 term added to the gradient.
struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0;
};

// torch.optim.AdamW: the same fields, torch's AdamW default weight decay.
struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
};

class Adam : public Optimizer {
 public:
  explicit Adam(NamedParams params, AdamOptions options = {});
  void step() override;
  const AdamOptions& options() const { return opt_; }

 protected:
  Adam(std::string name, NamedParams params, AdamOptions options, bool decoupled);

 private:
  AdamOptions opt_;
  bool decoupled_;  // AdamW: p *= 1 - lr * weight_decay before the Adam update, no L2 term
};

class AdamW : public Adam {
 public:
  explicit AdamW(NamedParams params, AdamWOptions options = {});
};

// torch.nn.utils.clip_grad_norm_ (2-norm): the norm of all gradients taken as one vector. When
// max_norm / (norm + 1e-6) < 1 every gradient is scaled by it, in place. Parameters without a
// gradient are ignored. Returns the norm (0 when no parameter has a gradient). A non-finite norm is
// returned without scaling (torch 1.13 would scale by it, turning every gradient into NaN or 0).
double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm);

}  // namespace tl::optim
