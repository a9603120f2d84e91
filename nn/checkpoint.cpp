#include "nn/checkpoint.h"

#include <cmath>
#include <stdexcept>

namespace tl::nn {

namespace {

uint64_t parse_u64(const std::string& path, const safetensors::Metadata& md, const std::string& key) {
  auto it = md.find(key);
  if (it == md.end()) return 0;
  const std::string& v = it->second;
  if (v.empty() || v.size() > 20 || v.find_first_not_of("0123456789") != std::string::npos)
    throw std::runtime_error(path + ": metadata '" + key + "' = '" + v + "' is not a non-negative integer");
  return std::stoull(v);
}

// Refuses a tensor holding NaN or Inf: such weights (a run saved after it diverged, a corrupt file)
// would load and predict black masks without a word.
template <typename T>
void check_values(const std::string& path, const std::string& name, const Tensor& t) {
  const T* p = t.data_ptr<T>();
  int64_t nan = 0, inf = 0, first = -1;
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (std::isfinite(p[i])) continue;
    (std::isnan(p[i]) ? nan : inf) += 1;
    if (first < 0) first = i;
  }
  if (first >= 0)
    throw std::runtime_error(path + ": tensor '" + name + "' " + shape_str(t.shape()) + " holds " +
                             std::to_string(nan) + " NaN and " + std::to_string(inf) +
                             " infinite values (the first at flat index " + std::to_string(first) +
                             "): the checkpoint is corrupt or was saved after training diverged; use an earlier one");
}

void check_finite(const std::string& path, const std::string& name, const Tensor& t) {
  if (t.dtype() == kFloat32) check_values<float>(path, name, t);
  if (t.dtype() == kFloat64) check_values<double>(path, name, t);
}

}  // namespace

void save_checkpoint(const std::string& path, const UNet& model, const optim::Optimizer* optimizer,
                     const TrainingState& state, const safetensors::Metadata& extra) {
  safetensors::NamedTensors tensors = model.state_dict();
  if (optimizer)
    for (auto& entry : optimizer->state_dict()) tensors.push_back(entry);
  safetensors::Metadata md = extra;
  for (const auto& [k, v] : model.config().to_metadata()) md[k] = v;
  md["step"] = std::to_string(state.step);
  md["epoch"] = std::to_string(state.epoch);
  md["rng_seed"] = std::to_string(state.rng_seed);
  md["rng_offset"] = std::to_string(state.rng_offset);
  safetensors::save(path, tensors, md);
}

Checkpoint load_checkpoint(const std::string& path) {
  safetensors::File f = safetensors::load(path);
  Checkpoint c;
  c.metadata = f.metadata;
  try {
    c.config = UNetConfig::from_metadata(f.metadata);
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": not a UNet checkpoint: " + e.what());
  }
  for (auto& [name, t] : f.tensors) {
    check_finite(path, name, t);
    (name.rfind("optim.", 0) == 0 ? c.optim_state : c.model_state)[name] = t;
  }
  c.state.step = static_cast<int64_t>(parse_u64(path, f.metadata, "step"));
  c.state.epoch = static_cast<int64_t>(parse_u64(path, f.metadata, "epoch"));
  c.state.rng_seed = parse_u64(path, f.metadata, "rng_seed");
  c.state.rng_offset = parse_u64(path, f.metadata, "rng_offset");
  return c;
}

std::shared_ptr<UNet> unet_from_checkpoint(const Checkpoint& ckpt) {
  auto model = std::make_shared<UNet>(ckpt.config);
  model->load_state_dict(ckpt.model_state, true);
  return model;
}

}  // namespace tl::nn
