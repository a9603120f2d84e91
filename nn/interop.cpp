#include "nn/interop.h"

#include <stdexcept>

#include "nn/checkpoint.h"

namespace tl::nn {

safetensors::NamedTensors unet_forward(const std::string& checkpoint, const std::string& input_path, bool train_step) {
  Checkpoint ckpt = load_checkpoint(checkpoint);
  std::shared_ptr<UNet> model;
  try {
    model = unet_from_checkpoint(ckpt);
  } catch (const std::exception& e) {
    throw std::runtime_error(checkpoint + ": " + e.what());
  }
  const safetensors::File in = safetensors::load(input_path);
  const Tensor& x = in.at("input");
  if (x.dtype() != kFloat32 || x.dim() != 4 || x.size(1) != ckpt.config.in_channels)
    throw std::runtime_error(input_path + ": tensor 'input' must be float32 (N, " +
                             std::to_string(ckpt.config.in_channels) + ", H, W), got " + dtype_name(x.dtype()) + " " +
                             shape_str(x.shape()));
  safetensors::NamedTensors out;
  if (!train_step) {
    NoGradGuard no_grad;
    model->eval();
    out.emplace_back("output", model->forward(x));
    return out;
  }
  model->train();
  Tensor y = model->forward(x);
  const Tensor& target = in.at("target");
  if (target.shape() != y.shape() || target.dtype() != kFloat32)
    throw std::runtime_error(input_path + ": tensor 'target' must be float32 " + shape_str(y.shape()) +
                             " (the output's shape), got " + dtype_name(target.dtype()) + " " + shape_str(target.shape()));
  Tensor loss = binary_cross_entropy_with_logits(y, target);
  loss.backward();
  out.emplace_back("output", y.detach());
  out.emplace_back("loss", loss.detach());
  for (auto& [name, p] : model->named_parameters())
    out.emplace_back("grad." + name, p.grad().defined() ? p.grad() : zeros_like(p.detach()));
  for (auto& [name, b] : model->named_buffers()) out.emplace_back("buffer." + name, b);
  return out;
}

}  // namespace tl::nn
