#pragma once
// The layer set: convolutions, batch norm, pooling, activations and containers. Constructors
// initialize as PyTorch does (kaiming-uniform with a = sqrt(5) for conv weights, uniform bias in
// +-1/sqrt(fan_in), BatchNorm weight 1 and bias 0) from a seeded generator (default: the global one).
#include <memory>
#include <string>
#include <vector>

#include "nn/module.h"
#include "tensor/random.h"

namespace tl::nn {

class Conv2d : public Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, Size2 kernel, Size2 stride = 1, Size2 padding = 0,
         bool bias = true, Generator* gen = nullptr);
  Tensor forward(const Tensor& x) override;  // (N, Cin, H, W) -> (N, Cout, Ho, Wo)
  Tensor weight, bias;                       // (Cout, Cin, kh, kw), (Cout) or undefined
  Size2 stride, padding;
};

class ConvTranspose2d : public Module {
 public:
  ConvTranspose2d(int64_t in_channels, int64_t out_channels, Size2 kernel, Size2 stride = 1, Size2 padding = 0,
                  bool bias = true, Generator* gen = nullptr);
  Tensor forward(const Tensor& x) override;
  Tensor weight, bias;  // (Cin, Cout, kh, kw) as torch, (Cout) or undefined
  Size2 stride, padding;
};

class BatchNorm2d;

// Replaces BatchNorm2d's training-mode op, for statistics over more than this process's batch
// (dist/sync_batch_norm.h: torch.nn.SyncBatchNorm). It returns act(batch_norm(x)) with the layer's
// weight and bias, recorded for backward, and updates the layer's running statistics.
class BatchNormTrainingOp {
 public:
  virtual ~BatchNormTrainingOp() = default;
  virtual Tensor forward(const BatchNorm2d& bn, const Tensor& x, Activation act) = 0;
};

class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t num_features, double eps = 1e-5, double momentum = 0.1);
  Tensor forward(const Tensor& x) override;  // (N, C, H, W); counts num_batches_tracked in training
  // act(forward(x)) in one pass (batch_norm_activation).
  Tensor forward_activation(const Tensor& x, Activation act);
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  double eps, momentum;
  std::shared_ptr<BatchNormTrainingOp> training_op;  // null: batch_norm_activation over this batch

 protected:
  void on_state_loaded() override;

 private:
  // The value of num_batches_tracked, kept on the host so that counting a batch is a fill (queued on
  // a GPU) rather than a read back from the device, which would wait for all queued work every
  // forward. load_state_dict refreshes it (on_state_loaded); a value put into the buffer any other way
  // is replaced at the next training forward.
  int64_t batches_tracked_ = 0;
};

class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(Size2 kernel, Size2 stride = 0) : kernel_(kernel), stride_(stride) {}
  Tensor forward(const Tensor& x) override { return max_pool2d(x, kernel_, stride_); }

 private:
  Size2 kernel_, stride_;
};

// An activation as a layer. A Sequential runs a BatchNorm2d followed by one of these as one fused op
// (batch_norm_activation), unless fusion is switched off (set_fusion).
class ActivationLayer : public Module {
 public:
  explicit ActivationLayer(Activation kind) : kind_(kind) {}
  Tensor forward(const Tensor& x) override { return activation(x, kind_); }
  Activation kind() const { return kind_; }

 private:
  Activation kind_;
};
class ReLU : public ActivationLayer {
 public:
  ReLU() : ActivationLayer(Activation::Relu) {}
};
class GELU : public ActivationLayer {
 public:
  GELU() : ActivationLayer(Activation::Gelu) {}
};
class SiLU : public ActivationLayer {
 public:
  SiLU() : ActivationLayer(Activation::Silu) {}
};
class PySiLU : public ActivationLayer {
 public:
  PySiLU() : ActivationLayer(Activation::PySilu) {}
};
class Identity : public Module {
 public:
  Tensor forward(const Tensor& x) override { return x; }
};

// "relu", "gelu", "silu" or "pysilu"; anything else is an error listing these.
std::shared_ptr<Module> make_activation(const std::string& name);
const std::vector<std::string>& activation_names();

// Whether Sequential fuses a BatchNorm2d and the activation layer after it (default on). The fused
// op gives the same values; switching it off is for measuring what it saves.
void set_fusion(bool on);
bool fusion_enabled();

// Children named "0", "1", ...; forward runs them in order, a BatchNorm2d and the activation layer
// right after it as one op (see set_fusion).
class Sequential : public Module {
 public:
  Sequential() = default;
  explicit Sequential(const std::vector<std::shared_ptr<Module>>& modules);
  void push_back(std::shared_ptr<Module> m);
  Tensor forward(const Tensor& x) override;
  size_t size() const { return children().size(); }
};

// Children named "0", "1", ... without a forward of its own (torch.nn.ModuleList).
class ModuleList : public Module {
 public:
  void push_back(std::shared_ptr<Module> m);
  size_t size() const { return children().size(); }
  Module& operator[](size_t i) const { return *children().at(i).second; }
  Tensor forward(const Tensor&) override;  // throws: a list is not callable
};

}  // namespace tl::nn
