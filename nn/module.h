#pragma once
// Module: the unit of a model. It owns named parameters (tensors that require grad) and buffers
// (state that is saved but not trained, like BatchNorm's running statistics), and child modules.
// Names are dotted as PyTorch makes them ("downs.0.conv.1.running_mean"), so that state dicts move
// between this engine and PyTorch unchanged.
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autograd/ops.h"

namespace tl::nn {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  virtual Tensor forward(const Tensor& x) = 0;
  Tensor operator()(const Tensor& x) { return forward(x); }

  // Parameters and buffers in PyTorch's state_dict order: a module's own parameters, then its own
  // buffers, then each child's, recursively, in registration order.
  NamedTensors named_parameters() const;
  NamedTensors named_buffers() const;
  std::vector<Tensor> parameters() const;
  NamedTensors state_dict() const;  // parameters and buffers, interleaved per module as torch does
  int64_t num_parameters() const;   // total elements of all parameters

  // Copies values into the registered tensors (in place, shapes must match). Strict: every key
  // must be present and no other key may be; every fault is reported, each by name, in one error.
  void load_state_dict(const NamedTensors& state, bool strict = true);
  void load_state_dict(const std::map<std::string, Tensor>& state, bool strict = true);

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  void zero_grad();  // drops every parameter's gradient

  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const { return children_; }

 protected:
  Tensor& register_parameter(const std::string& name, Tensor t);  // makes t a leaf requiring grad
  Tensor& register_buffer(const std::string& name, Tensor t);
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    add_child(name, m);
    return m;
  }

 private:
  void add_child(const std::string& name, std::shared_ptr<Module> m);
  void collect(const std::string& prefix, bool params, bool buffers, NamedTensors& out) const;

  bool training_ = true;
  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<std::pair<std::string, Tensor>> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

}  // namespace tl::nn
