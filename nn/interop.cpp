#include "nn/interop.h"

#include <stdexcept>

#include "nn/checkpoint.h"

namespace tl::nn {

safetensors::NamedTensors unet_forward(const std::string& checkpoint, const std::string& input_path, bool train_step,
                                       Device device) {
  Checkpoint ckpt = load_checkpoint(checkpoint);
  std::shared_ptr<UNet> model;
  try {
    model = unet_from_checkpoint(ckpt);
  } catch (const std::exception& e) {
    throw std::runtime_error(checkpoint + ": " + e.what());
  }
  model->to(device);
  const safetensors::File in = safetensors::load(input_path);
  const Tensor& x = in.at("input");
  if (x.dtype() != kFloat32 || x.dim() != 4 || x.size(1) != ckpt.config.in_channels)
    throw std::runtime_error(input_path + ": tensor 'input' must be float32 (N, " +
                             std::to_string(ckpt.config.in_channels) + ", H, W), got " + dtype_name(x.dtype()) + " " +
                             shape_str(x.shape()));
  const Tensor input = x.to(device);
  safetensors::NamedTensors out;
  if (!train_step) {
    NoGradGuard no_grad;
    model->eval();
    out.emplace_back("output", model->forward(input).to(Device::cpu()));
    return out;
  }
  model->train();
  Tensor y = model->forward(input);
  const Tensor& target = in.at("target");
  if (target.shape() != y.shape() || target.dtype() != kFloat32)
    throw std::runtime_error(input_path + ": tensor 'target' must be float32 " + shape_str(y.shape()) +
                             " (the output's shape), got " + dtype_name(target.dtype()) + " " + shape_str(target.shape()));
  Tensor loss = binary_cross_entropy_with_logits(y, target.to(device));
  loss.backward();
  const Device cpu = Device::cpu();
  out.emplace_back("output", y.detach().to(cpu));
  out.emplace_back("loss", loss.detach().to(cpu));
  for (auto& [name, p] : model->named_parameters())
    out.emplace_back("grad." + name, p.grad().defined() ? p.grad().to(cpu) : zeros(p.shape(), p.dtype()));
  for (auto& [name, b] : model->named_buffers()) out.emplace_back("buffer." + name, b.to(cpu));
  return out;
}

}  // namespace tl::nn
