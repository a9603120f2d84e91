#include "nn/optim.h"
#include "nn/option_errors.h"

#include "tensor/profile.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <tuple>
#include <sstream>
#include <stdexcept>

#include "nn/optim_update.h"
#include "tensor/parallel.h"

namespace tl::optim {
namespace {

constexpr int64_t kGrain = 1 << 14;  // elements per thread chunk of an update

using detail::fail;
using detail::num;

// Runs update(p, g, n) on contiguous data of `param` (written back when it is a strided view) and of
// its gradient.
template <class T, class Fn>
void update_param(const Tensor& param, const Tensor& grad, const Fn& update) {
  Tensor p = param.is_contiguous() ? param : param.contiguous();
  const Tensor g = grad.contiguous();
  update(p.data_ptr<T>(), g.data_ptr<T>(), p.numel());
  if (!p.is_same(param)) Tensor(param).copy_(p);
}

#if TL_WITH_CUDA
// The parameters on CUDA devices, gathered during a step and updated by fused launches at its end:
// grouped by (device, dtype, the parameter's step count), since the update's constants depend on
// the count and one launch runs one functor.
class DeviceBatch {
 public:
  void add(const Tensor& param, const Tensor& grad, const std::vector<Tensor>& slots, int64_t step) {
    Tensor p = param.is_contiguous() ? param : param.contiguous();
    if (!p.is_same(param)) write_back_.emplace_back(param, p);
    const Tensor g = grad.is_contiguous() ? grad : grad.contiguous();
    keep_.push_back(g);
    DeviceSlots d{p.raw_data(), g.raw_data(), slots.size() > 0 ? slots[0].raw_data() : nullptr,
                  slots.size() > 1 ? slots[1].raw_data() : nullptr, p.numel()};
    groups_[{param.device().index, param.dtype(), step}].push_back(d);
  }
  // Calls launch(device, dtype, step, slots) per group, then copies strided parameters back.
  template <class Launch>
  void run(const Launch& launch) {
    for (const auto& [key, slots] : groups_) launch(std::get<0>(key), std::get<1>(key), std::get<2>(key), slots);
    for (auto& [param, p] : write_back_) Tensor(param).copy_(p);
  }

 private:
  std::map<std::tuple<int, DType, int64_t>, std::vector<DeviceSlots>> groups_;
  std::vector<Tensor> keep_;                             // contiguous gradients, alive until the launches
  std::vector<std::pair<Tensor, Tensor>> write_back_;    // (strided parameter, its contiguous copy)
};
#endif

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
  std::map<const TensorImpl*, std::string> tensors;
  for (const auto& [n, p] : params_) {
    if (n.empty()) fail(name_, "a parameter has an empty name (names key the optimizer state)");
    if (!seen.insert(n).second) fail(name_, "parameter name '" + n + "' appears twice");
    if (!p.defined()) fail(name_, "parameter '" + n + "' is an undefined tensor");
    // One tensor under two names (a shared layer) would be updated twice per step.
    if (auto [it, fresh] = tensors.emplace(p.impl(), n); !fresh)
      fail(name_, "parameter '" + n + "' is the same tensor as '" + it->second + "'; list a shared parameter once");
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
// leaves all parameters untouched. The state follows its parameter's device: an optimizer made before
// Module::to would otherwise hand the update slots on the old device.
std::vector<size_t> Optimizer::params_with_grad() {
  std::vector<size_t> idx;
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& [n, p] = params_[i];
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    for (Tensor& slot : state_[i].slot)
      if (slot.device() != p.device()) slot = slot.to(p.device());
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
  auto functor = [&]<typename T>(int64_t step) {
    return SgdUpdate<T>{T(opt_.weight_decay), T(opt_.momentum), T(1 - opt_.dampening), T(-lr_),
                        opt_.weight_decay != 0, opt_.momentum != 0, opt_.nesterov, step == 0};
  };
#if TL_WITH_CUDA
  DeviceBatch on_device;
#endif
  for (size_t i : params_with_grad()) {
    const Tensor& param = params_[i].second;
    ParamState& st = state_[i];
#if TL_WITH_CUDA
    if (param.device().is_cuda()) {
      on_device.add(param, param.grad(), st.slot, st.step);
      ++st.step;
      continue;
    }
#endif
    dispatch_floating(param.dtype(), "SGD", [&]<typename T>() {
      const SgdUpdate<T> f = functor.template operator()<T>(st.step);
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
#if TL_WITH_CUDA
  on_device.run([&](int device, DType dtype, int64_t step, const std::vector<DeviceSlots>& slots) {
    dispatch_floating(dtype, "SGD", [&]<typename T>() { cuda_sgd_step<T>(slots, functor.template operator()<T>(step), device); });
  });
#endif
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
  // The update's constants after `step` updates. Host-side scalars in double, as torch computes them
  // in Python from its step count.
  auto functor = [&]<typename T>(int64_t step) {
    const double t = static_cast<double>(step);
    const double bias_correction1 = 1 - std::pow(o.beta1, t);
    const double bias_correction2 = 1 - std::pow(o.beta2, t);
    const double step_size = lr_ / bias_correction1;
    const double bias_correction2_sqrt = std::sqrt(bias_correction2);
    return AdamUpdate<T>{T(1 - lr_ * o.weight_decay), T(o.weight_decay), T(o.beta1), T(1 - o.beta1), T(o.beta2),
                         T(1 - o.beta2), T(bias_correction2_sqrt), T(o.eps), T(-step_size),
                         decoupled_, !decoupled_ && o.weight_decay != 0};
  };
#if TL_WITH_CUDA
  DeviceBatch on_device;
#endif
  for (size_t i : params_with_grad()) {
    const Tensor& param = params_[i].second;
    ParamState& st = state_[i];
    ++st.step;
#if TL_WITH_CUDA
    if (param.device().is_cuda()) {
      on_device.add(param, param.grad(), st.slot, st.step);
      continue;
    }
#endif
    dispatch_floating(param.dtype(), name_.c_str(), [&]<typename T>() {
      const AdamUpdate<T> f = functor.template operator()<T>(st.step);
      T* m = st.slot[0].data_ptr<T>();
      T* v = st.slot[1].data_ptr<T>();
      update_param<T>(param, param.grad(), [&](T* p, const T* g, int64_t n) {
        for_each_index(n, [&](int64_t j) { f(p[j], g[j], m[j], v[j]); });
      });
    });
  }
#if TL_WITH_CUDA
  on_device.run([&](int device, DType dtype, int64_t step, const std::vector<DeviceSlots>& slots) {
    dispatch_floating(dtype, name_.c_str(), [&]<typename T>() {
      cuda_adam_step<T>(slots, functor.template operator()<T>(step), device);
    });
  });
#endif
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
  // torch: the norm of the per-gradient norms, each rounded to the gradient's dtype. Each norm is
  // written into one float64 vector on its gradient's device, read back once per device (one
  // synchronization for a model on a GPU, not one per gradient).
  double total_sq = 0;
  std::vector<std::pair<Device, std::vector<Tensor>>> norms_on;
  for (const Tensor& g : grads) {
    auto it = std::find_if(norms_on.begin(), norms_on.end(), [&](const auto& e) { return e.first == g.device(); });
    if (it == norms_on.end()) it = norms_on.insert(norms_on.end(), {g.device(), {}});
    it->second.push_back(sqrt(sum(g * g)));
  }
  for (const auto& [device, norms] : norms_on) {
    Tensor all = empty({static_cast<int64_t>(norms.size())}, TensorOptions(kFloat64).with_device(device));
    for (size_t i = 0; i < norms.size(); ++i) all.select(0, static_cast<int64_t>(i)).copy_(norms[i]);
    for (double n : all.to_vector<double>()) total_sq += n * n;
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
