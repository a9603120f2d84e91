#include "nn/module.h"

#include <functional>
#include <set>
#include <stdexcept>

#include "tensor/kernels.h"

#if TL_WITH_CUDA
#include "cuda/runtime.h"
#endif

namespace tl::nn {

Tensor& Module::register_parameter(const std::string& name, Tensor t) {
  if (!t.is_leaf()) t = t.detach();
  t.requires_grad_(true);
  params_.emplace_back(name, std::move(t));
  return params_.back().second;
}

Tensor& Module::register_buffer(const std::string& name, Tensor t) {
  buffers_.emplace_back(name, std::move(t));
  return buffers_.back().second;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> m) {
  if (!m) throw std::invalid_argument("register_module: module '" + name + "' is null");
  children_.emplace_back(name, std::move(m));
}

void Module::collect(const std::string& prefix, bool params, bool buffers, NamedTensors& out) const {
  if (params)
    for (const auto& [n, t] : params_) out.emplace_back(prefix + n, t);
  if (buffers)
    for (const auto& [n, t] : buffers_) out.emplace_back(prefix + n, t);
  for (const auto& [n, m] : children_) m->collect(prefix + n + ".", params, buffers, out);
}

NamedTensors Module::named_parameters() const {
  NamedTensors r;
  collect("", true, false, r);
  return r;
}

NamedTensors Module::named_buffers() const {
  NamedTensors r;
  collect("", false, true, r);
  return r;
}

NamedTensors Module::state_dict() const {
  NamedTensors r;
  collect("", true, true, r);
  return r;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> r;
  for (auto& [n, t] : named_parameters()) r.push_back(t);
  return r;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (const Tensor& t : parameters()) n += t.numel();
  return n;
}

void Module::load_state_dict(const NamedTensors& state, bool strict) {
  std::map<std::string, Tensor> m;
  for (const auto& [n, t] : state) m[n] = t;
  load_state_dict(m, strict);
}

void Module::load_state_dict(const std::map<std::string, Tensor>& state, bool strict) {
  const NamedTensors own = state_dict();
  std::vector<std::string> missing, unexpected, mismatched;
  std::set<std::string> known;
  for (const auto& [name, t] : own) {
    known.insert(name);
    auto it = state.find(name);
    if (it == state.end()) {
      missing.push_back(name);
    } else if (it->second.shape() != t.shape()) {
      mismatched.push_back(name + " (checkpoint " + shape_str(it->second.shape()) + ", model " + shape_str(t.shape()) + ")");
    }
  }
  for (const auto& [name, t] : state)
    if (!known.count(name)) unexpected.push_back(name);

  auto list = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
  };
  std::string err;
  if (!mismatched.empty()) err += "\n  wrong shape: " + list(mismatched);
  if (strict && !missing.empty()) err += "\n  missing: " + list(missing);
  if (strict && !unexpected.empty()) err += "\n  unexpected: " + list(unexpected);
  if (!err.empty()) throw std::runtime_error("load_state_dict: the state does not fit the model:" + err);

  // Validation passed: nothing is written before every key is known to fit.
  {
    NoGradGuard no_grad;
    for (const auto& [name, t] : own) {
      auto it = state.find(name);
      if (it != state.end()) kernels::copy_(t, it->second);
    }
  }
  notify_state_loaded();
}

void Module::notify_state_loaded() {
  on_state_loaded();
  for (auto& [n, m] : children_) m->notify_state_loaded();
}

// Replaces, in place, every parameter and buffer (and gradient) that `wanted` selects by `convert` of
// it, each TensorImpl once (a tensor registered twice is one). All conversions run first, then the
// swap: a failed one (no such device, out of memory) leaves the module as it was.
void Module::replace_all(const std::function<bool(const Tensor&)>& wanted,
                         const std::function<Tensor(const Tensor&)>& convert) {
  std::vector<Tensor> todo;
  std::set<const TensorImpl*> seen;
  auto add = [&](const Tensor& t) {
    if (t.defined() && wanted(t) && seen.insert(t.impl()).second) todo.push_back(t);
  };
  for (const auto& [name, t] : state_dict()) {
    add(t);
    if (t.impl()->grad) add(Tensor(t.impl()->grad));
  }
  std::vector<Tensor> converted;
  converted.reserve(todo.size());
  {
    NoGradGuard no_grad;
    for (const Tensor& t : todo) converted.push_back(convert(t.detach()));
  }
  for (size_t i = 0; i < todo.size(); ++i) {
    TensorImpl* impl = todo[i].impl();
    impl->storage = converted[i].storage();
    impl->strides = converted[i].strides();
    impl->offset = converted[i].offset();
    impl->dtype = converted[i].dtype();
  }
}

Module& Module::to(Device device) {
  replace_all([&](const Tensor& t) { return t.device() != device; },
              [&](const Tensor& t) { return t.to(device); });  // contiguous, offset 0
  return *this;
}

Module& Module::to(DType dtype) {
  if (!is_floating(dtype))
    throw std::invalid_argument(std::string("Module::to: expected a floating dtype (float32 or float64), got ") +
                                dtype_name(dtype));
  replace_all([&](const Tensor& t) { return is_floating(t.dtype()) && t.dtype() != dtype; },
              [&](const Tensor& t) { return t.to(dtype).contiguous(); });
  return *this;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, m] : children_) m->train(on);
}

void Module::zero_grad() {
  for (Tensor& p : parameters()) p.set_grad(Tensor());
}

Device resolve_device(const std::string& name) {
  if (name == "auto") {
#if TL_WITH_CUDA
    if (cuda::device_count() > 0) return Device::cuda(0);
#endif
    return Device::cpu();
  }
  Device d;
  try {
    d = Device::parse(name);
  } catch (const std::exception&) {
    throw std::invalid_argument("--device: expected auto, cpu, cuda or cuda:N, got '" + name + "'");
  }
  if (d.is_cpu()) return d;
#if TL_WITH_CUDA
  const int n = cuda::device_count();
  if (n == 0) throw std::runtime_error("--device " + name + ": no CUDA device is available");
  if (d.index >= n)
    throw std::runtime_error("--device " + name + ": no such CUDA device (this machine has " + std::to_string(n) +
                             ": cuda:0 to cuda:" + std::to_string(n - 1) + ")");
  return d;
#else
  throw std::runtime_error("--device " + name + ": this build has no CUDA backend (it was built without nvcc); use --device cpu");
#endif
}

}  // namespace tl::nn
