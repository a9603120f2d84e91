#include "nn/module.h"

#include <set>
#include <stdexcept>

#include "tensor/kernels.h"

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
  NoGradGuard no_grad;
  for (const auto& [name, t] : own) {
    auto it = state.find(name);
    if (it != state.end()) kernels::copy_(t, it->second);
  }
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, m] : children_) m->train(on);
}

void Module::zero_grad() {
  for (Tensor& p : parameters()) p.set_grad(Tensor());
}

}  // namespace tl::nn
