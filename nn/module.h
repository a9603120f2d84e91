#pragma once
// Module: the unit of a model. It owns named parameters (tensors that require grad) and buffers
// (state that is saved but not trained, like BatchNorm's running statistics), and child modules.
// Names are dotted as PyTorch makes them ("downs.0.conv.1.running_mean"), so that state dicts move
// between this engine and PyTorch unchanged.
#include <functional>
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

  // Moves every parameter and buffer (and every gradient) to `device`, in place: each tensor keeps its
  // identity (handles such as a layer's `weight`, and an optimizer's references, stay valid) and gets
  // a contiguous copy of its values on `device` as its storage. A tensor already there is left as it
  // is. Create optimizers after moving: their state is made on the parameters' device. Returns *this.
  Module& to(Device device);
  // Converts every floating-point parameter and buffer (and gradient) to `dtype` (kFloat32 or
  // kFloat64), in place and with the same identity guarantees as to(Device); integer buffers (batch
  // norm's num_batches_tracked) stay as they are. As torch's module.double() / .float().
  Module& to(DType dtype);

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  void zero_grad();  // drops every parameter's gradient

  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const { return children_; }

 protected:
  // Called on every module of the tree after load_state_dict has written the values, for modules
  // that keep a host-side copy of some state (BatchNorm2d's batch counter).
  virtual void on_state_loaded() {}

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
  void notify_state_loaded();
  void replace_all(const std::function<bool(const Tensor&)>& wanted, const std::function<Tensor(const Tensor&)>& convert);

  bool training_ = true;
  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<std::pair<std::string, Tensor>> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

// The device a `--device` flag names: "cpu", "cuda", "cuda:N", or "auto": cuda:0 when this build has
// the CUDA backend and a GPU is present, else the CPU. Throws std::invalid_argument for another name,
// std::runtime_error (one line, starting "--device NAME: ") when the build has no CUDA backend or the
// CUDA device is not there.
Device resolve_device(const std::string& name);

}  // namespace tl::nn
