#pragma once
// Checkpoints: one safetensors file that alone rebuilds its model and resumes its training.
//   tensors:  the model's state_dict under its own names (so the file loads into the PyTorch
//             module after dropping the "optim." entries), and the optimizer's state as
//             "optim.<param name>.<slot>" plus "optim.step";
//   metadata: the UNet config (model, in_channels, out_channels, features, activation, conv_bias),
//             and step, epoch, rng_seed, rng_offset (decimal strings), plus any extra keys.
// A weights-only checkpoint (no optimizer) loads strictly into torch's module as it is.
#include <map>
#include <memory>
#include <string>

#include "nn/optim.h"
#include "nn/safetensors.h"
#include "nn/unet.h"

namespace tl::nn {

struct TrainingState {
  int64_t step = 0;
  int64_t epoch = 0;
  uint64_t rng_seed = 0;
  uint64_t rng_offset = 0;
};

struct Checkpoint {
  UNetConfig config;
  std::map<std::string, Tensor> model_state;  // names as in UNet::state_dict()
  std::map<std::string, Tensor> optim_state;  // "optim.*" entries; empty for weights only
  TrainingState state;
  safetensors::Metadata metadata;  // everything in the file's metadata
};

// Atomic (temporary file, fsync, rename). optimizer may be null (weights only).
void save_checkpoint(const std::string& path, const UNet& model, const optim::Optimizer* optimizer = nullptr,
                     const TrainingState& state = {}, const safetensors::Metadata& extra = {});

// Reads and validates the config and every value; throws naming the file and what is wrong: a bad
// config, or a floating tensor (weights, buffers or optimizer state) that holds NaN or Inf, by name.
Checkpoint load_checkpoint(const std::string& path);

// A UNet with the checkpoint's config and weights (strict: every missing, unexpected or wrong-shaped
// weight is reported by name).
std::shared_ptr<UNet> unet_from_checkpoint(const Checkpoint& ckpt);

}  // namespace tl::nn
