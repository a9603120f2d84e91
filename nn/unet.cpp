#include "nn/unet.h"

#include <algorithm>
#include <sstream>
#include <stdexcept>

namespace tl::nn {

// ---- config
void UNetConfig::validate() const {
  auto bad = [](const std::string& what) { throw std::invalid_argument("UNet config: " + what); };
  if (in_channels < 1) bad("in_channels must be >= 1, got " + std::to_string(in_channels));
  if (out_channels < 1) bad("out_channels must be >= 1, got " + std::to_string(out_channels));
  if (features.empty()) bad("features must list at least one width");
  for (int64_t f : features)
    if (f < 1) bad("every feature width must be >= 1, got " + std::to_string(f));
  // Each decoder level's transposed conv takes the level below's 2 x width channels: the widths double.
  for (size_t i = 1; i < features.size(); ++i)
    if (features[i] != 2 * features[i - 1]) {
      std::string list;
      for (size_t k = 0; k < features.size(); ++k) list += (k ? "," : "") + std::to_string(features[k]);
      bad("features must double from level to level (as 64,128,256,512), got " + list + ": " +
          std::to_string(features[i]) + " is not 2 x " + std::to_string(features[i - 1]));
    }
  const auto& names = activation_names();
  if (std::find(names.begin(), names.end(), activation) == names.end())
    bad("unknown activation '" + activation + "' (expected relu, gelu, silu or pysilu)");
}

std::map<std::string, std::string> UNetConfig::to_metadata() const {
  std::string f;
  for (size_t i = 0; i < features.size(); ++i) f += (i ? "," : "") + std::to_string(features[i]);
  return {{"model", "unet"},
          {"in_channels", std::to_string(in_channels)},
          {"out_channels", std::to_string(out_channels)},
          {"features", f},
          {"activation", activation},
          {"conv_bias", conv_bias ? "true" : "false"}};
}

namespace {

int64_t parse_int(const std::string& key, const std::string& v) {
  if (v.empty() || v.size() > 12 || v.find_first_not_of("0123456789") != std::string::npos)
    throw std::invalid_argument("UNet config: metadata '" + key + "' = '" + v + "' is not a positive integer");
  return std::stoll(v);
}

}  // namespace

UNetConfig UNetConfig::from_metadata(const std::map<std::string, std::string>& md) {
  auto get = [&](const std::string& key) -> const std::string& {
    auto it = md.find(key);
    if (it == md.end())
      throw std::invalid_argument("UNet config: metadata key '" + key +
                                  "' is missing (a checkpoint needs model, in_channels, out_channels, features, "
                                  "activation, conv_bias)");
    return it->second;
  };
  if (get("model") != "unet") throw std::invalid_argument("UNet config: metadata model is '" + get("model") + "', expected 'unet'");
  UNetConfig c;
  c.in_channels = parse_int("in_channels", get("in_channels"));
  c.out_channels = parse_int("out_channels", get("out_channels"));
  c.features.clear();
  std::stringstream ss(get("features"));
  for (std::string item; std::getline(ss, item, ',');) c.features.push_back(parse_int("features", item));
  c.activation = get("activation");
  const std::string& cb = get("conv_bias");
  if (cb != "true" && cb != "false")
    throw std::invalid_argument("UNet config: metadata 'conv_bias' = '" + cb + "', expected true or false");
  c.conv_bias = cb == "true";
  c.validate();
  return c;
}

// ---- modules
DoubleConv::DoubleConv(int64_t in, int64_t out, const std::string& activation, bool conv_bias, Generator* gen) {
  conv = register_module("conv", std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{
                                     std::make_shared<Conv2d>(in, out, 3, 1, 1, conv_bias, gen),
                                     std::make_shared<BatchNorm2d>(out), make_activation(activation),
                                     std::make_shared<Conv2d>(out, out, 3, 1, 1, conv_bias, gen),
                                     std::make_shared<BatchNorm2d>(out), make_activation(activation)}));
}

UNet::UNet(const UNetConfig& config, Generator* gen) : config_(config) {
  config_.validate();
  const auto& f = config_.features;
  // Registration order = state_dict order = the PyTorch module's: ups, downs, bottleneck, final_conv
  // as the tutorial module assigns them (self.ups, self.downs, self.pool, self.bottleneck, self.final_conv).
  ups_ = register_module("ups", std::make_shared<ModuleList>());
  downs_ = register_module("downs", std::make_shared<ModuleList>());
  int64_t in = config_.in_channels;
  for (int64_t w : f) {
    downs_->push_back(std::make_shared<DoubleConv>(in, w, config_.activation, config_.conv_bias, gen));
    in = w;
  }
  for (auto it = f.rbegin(); it != f.rend(); ++it) {
    ups_->push_back(std::make_shared<ConvTranspose2d>(2 * *it, *it, 2, 2, 0, true, gen));
    ups_->push_back(std::make_shared<DoubleConv>(2 * *it, *it, config_.activation, config_.conv_bias, gen));
  }
  bottleneck_ = register_module(
      "bottleneck", std::make_shared<DoubleConv>(f.back(), 2 * f.back(), config_.activation, config_.conv_bias, gen));
  final_conv_ = register_module("final_conv", std::make_shared<Conv2d>(f.front(), config_.out_channels, 1, 1, 0, true, gen));
}

Tensor UNet::forward(const Tensor& input) {
  if (input.dim() != 4 || input.size(1) != config_.in_channels)
    throw std::invalid_argument("UNet: expected input (N, " + std::to_string(config_.in_channels) + ", H, W), got " +
                                shape_str(input.shape()));
  const int64_t depth = static_cast<int64_t>(config_.features.size());
  if (input.size(2) < (int64_t{1} << depth) || input.size(3) < (int64_t{1} << depth))
    throw std::invalid_argument("UNet: input " + shape_str(input.shape()) + " is smaller than 2^" +
                                std::to_string(depth) + " on a side, too small for " + std::to_string(depth) + " poolings");
  std::vector<Tensor> skips;
  Tensor x = input;
  for (size_t i = 0; i < downs_->size(); ++i) {
    x = (*downs_)[i].forward(x);
    skips.push_back(x);
    x = max_pool2d(x, 2);
  }
  x = bottleneck_->forward(x);
  for (size_t k = 0; k < skips.size(); ++k) {
    x = (*ups_)[2 * k].forward(x);
    Tensor skip = skips[skips.size() - 1 - k];
    if (skip.size(2) != x.size(2) || skip.size(3) != x.size(3)) skip = center_crop(skip, x.size(2), x.size(3));
    x = (*ups_)[2 * k + 1].forward(cat({skip, x}, 1));
  }
  return final_conv_->forward(x);
}

}  // namespace tl::nn
