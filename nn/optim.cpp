#include "nn/optim.h"
#include "nn/option_errors.h"

#include "tensor/profile.h"

#include <cmath>
#include <set>
#include <sstream>
#include <stdexcept>

#include "tensor/functors.h"  // TL_HD
#include "tensor/parallel.h"

namespace tl::optim {
namespace {

constexpr int64_t kGrain = 1 << 14;  // elements per thread chunk of an update

using detail::fail;
using detail::num;

// ---- the per-element updates. Each line is one op of torch 1.13's _single_tensor_* function (quoted
// beside it). A hyperparameter enters as T(x), torch's rounding of the Python float to the tensor's
// dtype; std::fma stands where torch's vectorized CPU kernels fuse (add with alpha is
// fmadd(other, alpha, self); addcmul's `self + value * t1 * t2` is contracted), and addcdiv adds an
// unfused quotient. With these choices ten float32 steps of every optimizer here reproduced torch
// 1.13's CPU (AVX2) results bit for bit on a million elements; each other choice changed thousands.
template <class T>
struct SgdUpdate {
  T weight_decay, momentum, one_minus_dampening, neg_lr;
  bool decay, has_momentum, nesterov;
  bool first;  // this parameter's first update: the buffer starts as a copy of the gradient
  TL_HD void operator()(T& p, T g, T& buf) const {
    T d = decay ? std::fma(p, weight_decay, g) : g;  // d_p = d_p.add(param, alpha=weight_decay)
    if (has_momentum) {
      // buf.mul_(momentum).add_(d_p, alpha=1 - dampening)
      buf = first ? d : std::fma(d, one_minus_dampening, buf * momentum);
      d = nesterov ? std::fma(buf, momentum, d) : buf;  // d_p = d_p.add(buf, alpha=momentum)
    }
    p = std::fma(d, neg_lr, p);  // param.add_(d_p, alpha=-lr)
  }
};

template <class T>
struct AdamUpdate {
  T decay;         // AdamW: 1 - lr * weight_decay
  T weight_decay;  // Adam: the L2 coefficient
  T beta1, one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, eps, neg_step_size;
  bool decoupled, l2;
  TL_HD void operator()(T& p, T g, T& m, T& v) const {
    if (decoupled) p = p * decay;                     // param.mul_(1 - lr * weight_decay)
    if (l2) g = std::fma(p, weight_decay, g);         // grad = grad.add(param, alpha=weight_decay)
    m = std::fma(g, one_minus_beta1, m * beta1);      // exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    v = std::fma(one_minus_beta2 * g, g, v * beta2);  // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    const T denom = std::sqrt(v) / bias_correction2_sqrt + eps;  // (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps)
    p = p + neg_step_size * m / denom;                // param.addcdiv_(exp_avg, denom, value=-step_size)
  }
};

// Runs update(p, g, n) on contiguous data of `param` (written back when it is a strided view) and of
// its gradient.
template <class T, class Fn>
void update_param(const Tensor& param, const Tensor& grad, const Fn& update) {
  Tensor p = param.is_contiguous() ? param : param.contiguous();
  const Tensor g = grad.contiguous();
  update(p.data_ptr<T>(), g.data_ptr<T>(), p.numel());
  if (!p.is_same(param)) Tensor(param).copy_(p);
}

// Calls fn(i) for every i in [0, n). Elements are independent, so the split does not change results.
template <class Fn>
void for_each_index(int64_t n, const Fn& fn) {
  parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) fn(i);
  });
}

const SGDOptions& validated(const SGDOptions& o) {
  if (std::isnan(o.lr)) fail("SGD", "lr is required (torch.optim.SGD has no default learning rate)");
  if (!(o.lr >= 0) || std::isinf(o.lr)) fail("SGD", "invalid learning rate: " + num(o.lr));
  if (!(o.momentum >= 0)) fail("SGD", "invalid momentum value: " + num(o.momentum));
  if (!(o.weight_decay >= 0)) fail("SGD", "invalid weight_decay value: " + num(o.weight_decay));
  if (o.nesterov && (o.momentum <= 0 || o.dampening != 0))
    fail("SGD", "Nesterov momentum requires a momentum and zero dampening (momentum " + num(o.momentum) +
                    ", dampening " + num(o.dampening) + ")");
  return o;
}

const AdamOptions& validated(const std::string& who, const AdamOptions& o) {
  if (!(o.lr >= 0) || std::isinf(o.lr)) fail(who, "invalid learning rate: " + num(o.lr));
  if (!(o.eps >= 0)) fail(who, "invalid epsilon value: " + num(o.eps));
  if (!(o.beta1 >= 0 && o.beta1 < 1))
    fail(who, "invalid beta parameter at index 0: " + num(o.beta1) + " (must be in [0, 1))");
  if (!(o.beta2 >= 0 && o.beta2 < 1))
    fail(who, "invalid beta parameter at index 1: " + num(o.beta2) + " (must be in [0, 1))");
  if (!(o.weight_decay >= 0)) fail(who, "invalid weight_decay value: " + num(o.weight_decay));
  return o;
}

AdamOptions as_adam(const AdamWOptions& o) { return {o.lr, o.beta1, o.beta2, o.eps, o.weight_decay}; }

}  // namespace

// ---- Optimizer
Optimizer::Optimizer(std::string name, NamedParams params, double lr, std::vector<std::string> slots)
    : name_(std::move(name)), params_(std::move(params)), slot_names_(std::move(slots)), lr_(lr) {
  if (params_.empty()) fail(name_, "optimizer got an empty parameter list");
  std::set<std::string> seen;
  for (const auto& [n, p] : params_) {
    if (n.empty()) fail(name_, "a parameter has an empty name (names key the optimizer state)");
    if (!seen.insert(n).second) fail(name_, "parameter name '" + n + "' appears twice");
    if (!p.defined()) fail(name_, "parameter '" + n + "' is an undefined tensor");
    if (!is_floating(p.dtype()))
      fail(name_, "parameter '" + n + "' is " + dtype_name(p.dtype()) +
                      "; only float32 and float64 tensors can be optimized");
    if (!p.is_leaf()) fail(name_, "can't optimize a non-leaf tensor ('" + n + "' was produced by an op)");
  }
  state_.resize(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i].second;
    for (size_t k = 0; k < slot_names_.size(); ++k)
      state_[i].slot.push_back(zeros(p.shape(), TensorOptions(p.dtype()).with_device(p.device())));
  }
}

void Optimizer::zero_grad(bool set_to_none) {
  NoGradGuard no_grad;
  for (auto& [n, p] : params_) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (set_to_none)
      p.set_grad(Tensor());
    else
      g.zero_();
  }
}

void Optimizer::set_lr(double lr) {
  if (!(lr >= 0) || std::isinf(lr)) fail(name_, "invalid learning rate: " + num(lr));
  lr_ = lr;
}

// The parameters that have a gradient; checks every one before any update, so that a bad gradient
// leaves all parameters untouched.
std::vector<size_t> Optimizer::params_with_grad() const {
  std::vector<size_t> idx;
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& [n, p] = params_[i];
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    if (!p.device().is_cpu())
      fail(name_, "parameter '" + n + "' is on " + p.device().str() +
                      "; the optimizer update runs on CPU tensors only (no CUDA kernel yet)");
    if (g.shape() != p.shape() || g.dtype() != p.dtype() || g.device() != p.device())
      fail(name_, "gradient of '" + n + "' is " + shape_str(g.shape()) + " " + dtype_name(g.dtype()) + " on " +
                      g.device().str() + ", the parameter " + shape_str(p.shape()) + " " + dtype_name(p.dtype()) +
                      " on " + p.device().str());
    idx.push_back(i);
  }
  return idx;
}

NamedParams Optimizer::state_dict() const {
  NamedParams out;
  out.emplace_back("optim.step", scalar_tensor(static_cast<double>(steps_), kInt64));
  out.emplace_back("optim.lr", scalar_tensor(lr_, kFloat64));
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string prefix = "optim." + params_[i].first + ".";
    out.emplace_back(prefix + "step", scalar_tensor(static_cast<double>(state_[i].step), kInt64));
    for (size_t k = 0; k < slot_names_.size(); ++k) out.emplace_back(prefix + slot_names_[k], state_[i].slot[k]);
  }
  return out;
}

void Optimizer::load_state_dict(const NamedParams& state) {
  std::map<std::string, Tensor> m;
  for (const auto& [k, t] : state) m[k] = t;
  load_state_dict(m);
}

void Optimizer::load_state_dict(const std::map<std::string, Tensor>& state) {
  std::vector<std::string> faults;
  std::set<std::string> expected;
  auto find = [&](const std::string& key) -> const Tensor* {
    expected.insert(key);
    const auto it = state.find(key);
    if (it == state.end() || !it->second.defined()) {
      faults.push_back("missing " + key);
      return nullptr;
    }
    return &it->second;
  };
  // A one-element entry; nullopt-like NaN when absent or misshapen (the fault is recorded).
  auto scalar = [&](const std::string& key) -> double {
    const Tensor* t = find(key);
    if (!t) return NAN;
    if (t->numel() != 1) {
      faults.push_back(key + " has shape " + shape_str(t->shape()) + ", expected () (one value)");
      return NAN;
    }
    return t->item();
  };
  auto count = [&](const std::string& key) -> int64_t {
    const double v = scalar(key);
    if (std::isnan(v)) return 0;
    if (!(v >= 0) || v != std::floor(v)) {
      faults.push_back(key + " is " + num(v) + ", expected a count (an integer >= 0)");
      return 0;
    }
    return static_cast<int64_t>(v);
  };

  const int64_t steps = count("optim.step");
  const double lr = scalar("optim.lr");
  if (!std::isnan(lr) && (!(lr >= 0) || std::isinf(lr))) faults.push_back("optim.lr is " + num(lr) + ", expected >= 0");
  std::vector<int64_t> param_steps(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& [n, p] = params_[i];
    param_steps[i] = count("optim." + n + ".step");
    for (const std::string& slot : slot_names_) {
      const std::string key = "optim." + n + "." + slot;
      const Tensor* t = find(key);
      if (!t) continue;
      if (t->shape() != p.shape())
        faults.push_back(key + " has shape " + shape_str(t->shape()) + ", expected " + shape_str(p.shape()) +
                         " (the parameter's)");
      else if (!is_floating(t->dtype()))
        faults.push_back(key + " is " + dtype_name(t->dtype()) + ", expected float32 or float64");
    }
  }
  for (const auto& [k, t] : state)
    if (k.rfind("optim.", 0) == 0 && !expected.count(k)) faults.push_back("unexpected " + k);
  if (!faults.empty()) {
    std::string msg = name_ + ".load_state_dict: " + std::to_string(faults.size()) + " problem(s): ";
    for (size_t i = 0; i < faults.size(); ++i) msg += (i ? "; " : "") + faults[i];
    throw std::invalid_argument(msg);
  }

  NoGradGuard no_grad;
  steps_ = steps;
  lr_ = lr;
  for (size_t i = 0; i < params_.size(); ++i) {
    state_[i].step = param_steps[i];
    for (size_t k = 0; k < slot_names_.size(); ++k) {
      Tensor& dst = state_[i].slot[k];
      dst.copy_(state.at("optim." + params_[i].first + "." + slot_names_[k]).to(dst.device()));
    }
  }
}

// ---- SGD
SGD::SGD(NamedParams params, SGDOptions options)
    : Optimizer("SGD", std::move(params), validated(options).lr,
                options.momentum != 0 ? std::vector<std::string>{"momentum_buffer"} : std::vector<std::string>{}),
      opt_(options) {}

void SGD::step() {
  profile::Scope scope(profile::Kind::Optimizer);
  NoGradGuard no_grad;
  for (size_t i : params_with_grad()) {
    const Tensor& param = params_[i].second;
    ParamState& st = state_[i];
    dispatch_floating(param.dtype(), "SGD", [&]<typename T>() {
      const SgdUpdate<T> f{T(opt_.weight_decay), T(opt_.momentum), T(1 - opt_.dampening), T(-lr_),
                           opt_.weight_decay != 0, opt_.momentum != 0, opt_.nesterov, st.step == 0};
      T* buf = f.has_momentum ? st.slot[0].data_ptr<T>() : nullptr;
      update_param<T>(param, param.grad(), [&](T* p, const T* g, int64_t n) {
        for_each_index(n, [&](int64_t j) {
          T unused = 0;
          f(p[j], g[j], buf ? buf[j] : unused);
        });
      });
    });
    ++st.step;
  }
  ++steps_;
}

// ---- Adam, AdamW
Adam::Adam(NamedParams params, AdamOptions options) : Adam("Adam", std::move(params), options, false) {}

Adam::Adam(std::string name, NamedParams params, AdamOptions options, bool decoupled)
    : Optimizer(name, std::move(params), validated(name, options).lr, {"exp_avg", "exp_avg_sq"}),
      opt_(options),
      decoupled_(decoupled) {}

AdamW::AdamW(NamedParams params, AdamWOptions options) : Adam("AdamW", std::move(params), as_adam(options), true) {}

void Adam::step() {
  profile::Scope scope(profile::Kind::Optimizer);
  NoGradGuard no_grad;
  const AdamOptions& o = opt_;
  for (size_t i : params_with_grad()) {
    const Tensor& param = params_[i].second;
    ParamState& st = state_[i];
    ++st.step;
    // Host-side scalars in double, as torch computes them in Python from its step count.
    const double t = static_cast<double>(st.step);
    const double bias_correction1 = 1 - std::pow(o.beta1, t);
    const double bias_correction2 = 1 - std::pow(o.beta2, t);
    const double step_size = lr_ / bias_correction1;
    const double bias_correction2_sqrt = std::sqrt(bias_correction2);
    dispatch_floating(param.dtype(), name_.c_str(), [&]<typename T>() {
      const AdamUpdate<T> f{T(1 - lr_ * o.weight_decay), T(o.weight_decay), T(o.beta1), T(1 - o.beta1), T(o.beta2),
                            T(1 - o.beta2), T(bias_correction2_sqrt), T(o.eps), T(-step_size),
                            decoupled_, !decoupled_ && o.weight_decay != 0};
      T* m = st.slot[0].data_ptr<T>();
      T* v = st.slot[1].data_ptr<T>();
      update_param<T>(param, param.grad(), [&](T* p, const T* g, int64_t n) {
        for_each_index(n, [&](int64_t j) { f(p[j], g[j], m[j], v[j]); });
      });
    });
  }
  ++steps_;
}

// ---- clip_grad_norm_
double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm) {
  if (!(max_norm >= 0)) fail("clip_grad_norm_", "max_norm must be >= 0, got " + num(max_norm));
  NoGradGuard no_grad;
  std::vector<Tensor> grads;
  for (const Tensor& p : params)
    if (p.defined() && p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return 0.0;
  // torch: the norm of the per-gradient norms, each rounded to the gradient's dtype.
  double total_sq = 0;
  for (const Tensor& g : grads) {
    const double n = sqrt(sum(g * g)).item();
    total_sq += n * n;
  }
  const double total = std::sqrt(total_sq);
  if (!std::isfinite(total)) return total;
  for (Tensor& g : grads) {
    dispatch_floating(g.dtype(), "clip_grad_norm_", [&]<typename T>() {
      // torch: clip_coef = max_norm / (total_norm + 1e-6) on a tensor of the gradients' dtype, which
      // Python evaluates as reciprocal(total_norm + 1e-6) * max_norm.
      const T coef = (T(1) / (T(total) + T(1e-6))) * T(max_norm);
      if (coef < T(1)) g.copy_(g * static_cast<double>(coef));
    });
  }
  return total;
}

}  // namespace tl::optim
