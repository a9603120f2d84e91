#pragma once
// The UNet of DESIGN.md, with parameter names exactly those of the common PyTorch tutorial module:
// downs.{i}.conv.{0,1,3,4}.*, bottleneck.conv.*, ups.{2k} (transposed convs), ups.{2k+1}.conv.*,
// final_conv.*. Skips are center-cropped to the upsampled size, so any input size works; the output
// is logits, (N, out_channels, H', W') with H' = H rounded down to a multiple of 2^depth.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "nn/layers.h"

namespace tl::nn {

struct UNetConfig {
  int64_t in_channels = 3;
  int64_t out_channels = 1;
  std::vector<int64_t> features = {64, 128, 256, 512};
  std::string activation = "relu";
  bool conv_bias = false;

  void validate() const;  // throws naming the bad field
  // The checkpoint metadata encoding of DESIGN.md: model=unet, in_channels="3", features="64,128,256,512", ...
  std::map<std::string, std::string> to_metadata() const;
  // Throws naming the missing or malformed key.
  static UNetConfig from_metadata(const std::map<std::string, std::string>& metadata);
};

// Conv 3x3 (same padding) - BatchNorm - activation, twice: conv.{0..5}.
class DoubleConv : public Module {
 public:
  DoubleConv(int64_t in, int64_t out, const std::string& activation, bool conv_bias, Generator* gen);
  Tensor forward(const Tensor& x) override { return conv->forward(x); }
  std::shared_ptr<Sequential> conv;
};

class UNet : public Module {
 public:
  explicit UNet(const UNetConfig& config = {}, Generator* gen = nullptr);
  Tensor forward(const Tensor& x) override;  // (N, in_channels, H, W) -> logits (N, out_channels, H', W')
  const UNetConfig& config() const { return config_; }

 private:
  UNetConfig config_;
  std::shared_ptr<ModuleList> downs_, ups_;
  std::shared_ptr<DoubleConv> bottleneck_;
  std::shared_ptr<Conv2d> final_conv_;
};

}  // namespace tl::nn
