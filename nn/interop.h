#pragma once
// The interop step behind apps/unet_forward: run a checkpoint's UNet on a tensor file.
#include <string>

#include "nn/safetensors.h"

namespace tl::nn {

// Builds the UNet from `checkpoint`'s metadata and weights, reads tensor "input" (N, C, H, W) float32
// from `input_path`.
//   train_step false: eval mode, no gradients; returns {"output": logits}.
//   train_step true:  train mode; reads "target" (the output's shape, values 0/1), computes
//                     BCE-with-logits (mean), runs backward; returns "output", "loss",
//                     "grad.<param>" for every parameter and "buffer.<name>" for every buffer after
//                     the step's running-statistics update.
// The model and the step run on `device`; the returned tensors are on the CPU.
// Every fault is a std::runtime_error naming the file and the tensor.
safetensors::NamedTensors unet_forward(const std::string& checkpoint, const std::string& input_path, bool train_step,
                                       Device device = Device::cpu());

}  // namespace tl::nn
