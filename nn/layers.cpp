#include "nn/layers.h"

#include <atomic>
#include <cmath>
#include <stdexcept>

namespace tl::nn {

namespace {

// torch.nn.init.kaiming_uniform_(w, a=sqrt(5)) reduces to U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the
// default bias init uses the same bound. fan_in is size(1) * kh * kw, for ConvTranspose2d too
// (torch computes it from the weight tensor, whose dim 1 is then the output channels).
void init_conv(Tensor& w, Tensor& b, Generator* gen) {
  const int64_t fan_in = w.size(1) * w.size(2) * w.size(3);
  const double bound = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
  uniform_(w, -bound, bound, gen);
  if (b.defined()) uniform_(b, -bound, bound, gen);
}

void check_channels(int64_t in, int64_t out, const char* layer) {
  if (in < 1 || out < 1)
    throw std::invalid_argument(std::string(layer) + ": channel counts must be >= 1, got in " + std::to_string(in) +
                                ", out " + std::to_string(out));
}

}  // namespace

Conv2d::Conv2d(int64_t in, int64_t out, Size2 kernel, Size2 stride_, Size2 padding_, bool with_bias, Generator* gen)
    : stride(stride_), padding(padding_) {
  check_channels(in, out, "Conv2d");
  NoGradGuard no_grad;
  Tensor w = empty({out, in, kernel.h, kernel.w});
  Tensor b = with_bias ? empty({out}) : Tensor();
  init_conv(w, b, gen);
  weight = register_parameter("weight", w);
  if (with_bias) bias = register_parameter("bias", b);
}

Tensor Conv2d::forward(const Tensor& x) { return conv2d(x, weight, bias, stride, padding); }

ConvTranspose2d::ConvTranspose2d(int64_t in, int64_t out, Size2 kernel, Size2 stride_, Size2 padding_, bool with_bias,
                                 Generator* gen)
    : stride(stride_), padding(padding_) {
  check_channels(in, out, "ConvTranspose2d");
  NoGradGuard no_grad;
  Tensor w = empty({in, out, kernel.h, kernel.w});
  Tensor b = with_bias ? empty({out}) : Tensor();
  init_conv(w, b, gen);
  weight = register_parameter("weight", w);
  if (with_bias) bias = register_parameter("bias", b);
}

Tensor ConvTranspose2d::forward(const Tensor& x) { return conv_transpose2d(x, weight, bias, stride, padding); }

BatchNorm2d::BatchNorm2d(int64_t c, double eps_, double momentum_) : eps(eps_), momentum(momentum_) {
  check_channels(c, c, "BatchNorm2d");
  weight = register_parameter("weight", ones({c}));
  bias = register_parameter("bias", zeros({c}));
  running_mean = register_buffer("running_mean", zeros({c}));
  running_var = register_buffer("running_var", ones({c}));
  num_batches_tracked = register_buffer("num_batches_tracked", zeros({}, kInt64));
}

Tensor BatchNorm2d::forward(const Tensor& x) { return forward_activation(x, Activation::None); }

Tensor BatchNorm2d::forward_activation(const Tensor& x, Activation act) {
  if (x.dim() != 4) throw std::invalid_argument("BatchNorm2d: expected a 4-D input (N, C, H, W), got " + shape_str(x.shape()));
  if (is_training()) {
    NoGradGuard no_grad;
    num_batches_tracked.fill_(static_cast<double>(++batches_tracked_));
  }
  if (is_training() && training_op) return training_op->forward(*this, x, act);
  return batch_norm_activation(x, weight, bias, running_mean, running_var, is_training(), momentum, eps, act);
}

void BatchNorm2d::on_state_loaded() { batches_tracked_ = num_batches_tracked.item<int64_t>(); }

const std::vector<std::string>& activation_names() {
  static const std::vector<std::string> names = {"relu", "gelu", "silu", "pysilu"};
  return names;
}

std::shared_ptr<Module> make_activation(const std::string& name) {
  if (name == "relu") return std::make_shared<ReLU>();
  if (name == "gelu") return std::make_shared<GELU>();
  if (name == "silu") return std::make_shared<SiLU>();
  if (name == "pysilu") return std::make_shared<PySiLU>();
  throw std::invalid_argument("activation: unknown name '" + name + "' (expected relu, gelu, silu or pysilu)");
}

Sequential::Sequential(const std::vector<std::shared_ptr<Module>>& modules) {
  for (const auto& m : modules) push_back(m);
}

void Sequential::push_back(std::shared_ptr<Module> m) { register_module(std::to_string(size()), std::move(m)); }

namespace {
std::atomic<bool> g_fusion{true};
}  // namespace

void set_fusion(bool on) { g_fusion = on; }
bool fusion_enabled() { return g_fusion; }

Tensor Sequential::forward(const Tensor& x) {
  const auto& modules = children();
  const bool fuse = fusion_enabled();
  Tensor y = x;
  for (size_t i = 0; i < modules.size(); ++i) {
    Module* m = modules[i].second.get();
    auto* bn = fuse ? dynamic_cast<BatchNorm2d*>(m) : nullptr;
    auto* act = bn && i + 1 < modules.size() ? dynamic_cast<ActivationLayer*>(modules[i + 1].second.get()) : nullptr;
    if (act) {
      y = bn->forward_activation(y, act->kind());
      ++i;  // the activation ran inside the batch norm
    } else {
      y = m->forward(y);
    }
  }
  return y;
}

void ModuleList::push_back(std::shared_ptr<Module> m) { register_module(std::to_string(size()), std::move(m)); }

Tensor ModuleList::forward(const Tensor&) {
  throw std::logic_error("ModuleList: a list of modules has no forward; call its elements");
}

}  // namespace tl::nn
