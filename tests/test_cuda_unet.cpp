// Whole UNet train steps on cuda:0 against the CPU (loss, logits, every gradient and buffer, then ten
// Adam steps), each judged by its distance to a float64 CPU run (check_against_float64), and a steady
// train step that makes no cudaMalloc.
#define DOCTEST_CONFIG_IMPLEMENT
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "cuda/allocator.h"
#include "nn/optim.h"
#include "data/loader.h"
#include "nn/unet.h"
#include "train/trainer.h"
#include "tests/cuda_test_util.h"

using namespace tl;
using namespace tl::testing;
// ---- whole UNet train steps ---------------------------------------------------------------------

namespace {

// The trainer's loss, --loss bce+dice (compute_loss in train/trainer.cpp).
Tensor train_loss(const Tensor& logits, const Tensor& masks) {
  return binary_cross_entropy_with_logits(logits, masks) + dice_loss(logits, masks);
}

// How close a float32 result must be, as relative L2 error to the float64 CPU result, and why:
// a UNet step is ill-conditioned where batch norm normalizes few values (the bottleneck of a 32x48
// input sees 12 per channel) and near ReLU's kink, so float32 gradients there are good to only a few
// 1e-3 on ANY device (the PyTorch parity work measured ~6e-3 for torch's own float32). The CUDA result
// must be as close to float64 as the CPU's float32 is (within 2x: another summation order), or within
// the floor: 1e-4 for outputs, the loss and buffers, 1e-3 for gradients (the parity test's floors).
constexpr double kFloorValue = 1e-4, kFloorGrad = 1e-3;

void check_against_float64(const std::string& what, const Tensor& gpu, const Tensor& cpu32, const Tensor& cpu64,
                           double floor) {
  INFO(what);
  REQUIRE(gpu.defined());
  CHECK(gpu.device() == kGpu);
  CHECK(gpu.dtype() == cpu32.dtype());
  REQUIRE_MESSAGE(gpu.shape() == cpu64.shape(), shape_str(gpu.shape()) << " vs " << shape_str(cpu64.shape()));
  if (!is_floating(cpu32.dtype())) {  // num_batches_tracked: exact
    TL_CHECK_CLOSE(gpu.to(Device::cpu()), cpu32, 0.0);
    return;
  }
  const double e_gpu = rel_l2(gpu, cpu64), e_cpu = rel_l2(cpu32, cpu64);
  const double tol = std::max(floor, 2 * e_cpu);
  CHECK_MESSAGE(e_gpu <= tol, "relative L2 to float64: cuda " << e_gpu << ", cpu float32 " << e_cpu << ", tolerance "
                                                              << tol);
  MESSAGE(what << ": relative L2 to float64: cuda " << e_gpu << ", cpu float32 " << e_cpu);
}

// A UNet built on the CPU, a copy of its state dict moved to cuda:0 and a float64 copy on the CPU:
// one train step (forward, the trainer's loss, backward) on each, the two float32 results judged
// against the float64 one (loss, logits, every parameter's gradient, every buffer; see
// check_against_float64), then `adam_steps` Adam steps on each with the loss judged after every one.
void check_unet_against_cpu(const nn::UNetConfig& config, const Shape& input_shape, int adam_steps) {
  Generator g(17);
  nn::UNet cpu_net(config, &g);
  nn::UNet gpu_net(config, &g);  // other initial weights, replaced next
  nn::UNet ref_net(config, &g);
  gpu_net.load_state_dict(cpu_net.state_dict());
  ref_net.load_state_dict(cpu_net.state_dict());
  gpu_net.to(kGpu);
  ref_net.to(kFloat64);

  const int64_t m = int64_t{1} << config.features.size();  // the output side is a multiple of 2^depth
  const Tensor images = randn(input_shape, kFloat32, &g);  // (N, C, H, W)
  const Tensor masks =                                      // (N, out, H', W') 0/1
      gt(rand({input_shape[0], config.out_channels, input_shape[2] / m * m, input_shape[3] / m * m}, kFloat32, &g), 0.5)
          .to(kFloat32);
  auto forward_backward = [&](nn::UNet& net, Device device, DType dtype, Tensor* logits_out) {
    const Tensor logits = net.forward(images.to(dtype).to(device));
    const Tensor loss = train_loss(logits, masks.to(dtype).to(device));
    loss.backward();
    if (logits_out) *logits_out = logits;
    return loss;
  };

  Tensor cpu_logits, gpu_logits, ref_logits;
  const Tensor cpu_loss = forward_backward(cpu_net, Device::cpu(), kFloat32, &cpu_logits);
  const Tensor gpu_loss = forward_backward(gpu_net, kGpu, kFloat32, &gpu_logits);
  const Tensor ref_loss = forward_backward(ref_net, Device::cpu(), kFloat64, &ref_logits);
  check_against_float64("loss", gpu_loss, cpu_loss, ref_loss, kFloorValue);
  check_against_float64("logits", gpu_logits, cpu_logits, ref_logits, kFloorValue);
  const nn::NamedTensors cpu_params = cpu_net.named_parameters(), gpu_params = gpu_net.named_parameters(),
                         ref_params = ref_net.named_parameters();
  REQUIRE(cpu_params.size() == gpu_params.size());
  REQUIRE(cpu_params.size() == ref_params.size());
  for (size_t i = 0; i < cpu_params.size(); ++i) {
    const std::string& name = cpu_params[i].first;
    if (config.conv_bias && (name.ends_with("conv.0.bias") || name.ends_with("conv.3.bias"))) {
      // A 3x3 conv's bias feeds a training-mode batch norm: its exact gradient is 0 and each device
      // returns its own rounding noise. Check that it is noise-sized against its conv's weight gradient.
      const Tensor& w_grad = cpu_params[i - 1].second.grad();  // registered just before the bias
      REQUIRE(cpu_params[i - 1].first == name.substr(0, name.size() - 4) + "weight");
      const double noise = max(abs(gpu_params[i].second.grad().to(Device::cpu()))).item();
      const double scale = max(abs(w_grad)).item();
      CHECK_MESSAGE(noise <= 1e-3 * scale, "gradient of " << name << " (exactly 0): " << noise << " vs weight gradient "
                                                          << scale);
      continue;
    }
    check_against_float64("gradient of " + name, gpu_params[i].second.grad(), cpu_params[i].second.grad(),
                          ref_params[i].second.grad(), kFloorGrad);
  }
  const nn::NamedTensors cpu_buffers = cpu_net.named_buffers(), gpu_buffers = gpu_net.named_buffers(),
                         ref_buffers = ref_net.named_buffers();
  REQUIRE(cpu_buffers.size() == gpu_buffers.size());
  for (size_t i = 0; i < cpu_buffers.size(); ++i)  // running statistics; num_batches_tracked exact
    check_against_float64("buffer " + cpu_buffers[i].first, gpu_buffers[i].second, cpu_buffers[i].second,
                          ref_buffers[i].second, kFloorValue);

  // lr 1e-4: at 1e-3 Adam amplifies float32 rounding within ten steps on either device alone
  // (tests/torch_unet_reference.py measured it in torch).
  const optim::AdamOptions adam{.lr = 1e-4};
  optim::Adam cpu_opt(cpu_net.named_parameters(), adam), gpu_opt(gpu_net.named_parameters(), adam),
      ref_opt(ref_net.named_parameters(), adam);
  for (int step = 1; step <= adam_steps; ++step) {
    for (optim::Adam* opt : {&cpu_opt, &gpu_opt, &ref_opt}) {
      opt->step();
      opt->zero_grad();
    }
    const Tensor cl = forward_backward(cpu_net, Device::cpu(), kFloat32, nullptr);
    const Tensor gl = forward_backward(gpu_net, kGpu, kFloat32, nullptr);
    const Tensor rl = forward_backward(ref_net, Device::cpu(), kFloat64, nullptr);
    check_against_float64("loss after Adam step " + std::to_string(step), gl, cl, rl, kFloorValue);
  }
}

nn::UNetConfig unet_config(std::vector<int64_t> features, const std::string& activation = "relu", bool conv_bias = false) {
  nn::UNetConfig c;
  c.features = std::move(features);
  c.activation = activation;
  c.conv_bias = conv_bias;
  return c;
}

}  // namespace

TEST_CASE("a UNet (widths 8,16,32,64) train step and ten Adam steps match the CPU") {
  check_unet_against_cpu(unet_config({8, 16, 32, 64}), {2, 3, 32, 48}, 10);
}

TEST_CASE("a UNet with GELU, conv bias, two outputs and cropped skips matches the CPU") {
  // 29x35 with depth 3: the skips are center-cropped to the upsampled sizes; output 24x32.
  nn::UNetConfig config = unet_config({6, 12, 24}, "gelu", true);
  config.out_channels = 2;
  check_unet_against_cpu(config, {2, 3, 29, 35}, 10);
}

TEST_CASE("the default UNet (widths 64..512, GELU) train step and ten Adam steps match the CPU at 2x3x32x48") {
  // GELU, as tests/torch_unet_reference.py for the default widths: with ReLU a few of the ~1e5
  // pre-activations per layer lie within rounding of the kink, and one flipped sign moves every
  // decoder gradient by ~3e-3.
  nn::UNetConfig config;
  config.activation = "gelu";
  check_unet_against_cpu(config, {2, 3, 32, 48}, 10);
}

TEST_CASE("a steady UNet train step on cuda makes no cudaMalloc") {
  if (!cuda::caching_enabled()) {  // TL_CUDA_ALLOCATOR=passthrough (the sanitizer runs): every block is a cudaMalloc
    MESSAGE("skipped: the allocator is in pass-through mode");
    return;
  }
  Generator g(23);
  nn::UNet net(unet_config({8, 16, 32, 64}), &g);
  net.to(kGpu);
  optim::Adam opt(net.named_parameters());
  const Tensor images = randn({2, 3, 32, 48}, kFloat32, &g);                   // (N, 3, H, W), on the CPU
  const Tensor masks = gt(rand({2, 1, 32, 48}, kFloat32, &g), 0.5).to(kFloat32);  // (N, 1, H, W)
  // The trainer's step (train/trainer.cpp): the batch comes from the CPU.
  auto train_step = [&] {
    opt.zero_grad(/*set_to_none=*/true);
    const Tensor logits = net.forward(images.to(kGpu));
    const Tensor loss = train_loss(logits, masks.to(kGpu));
    const double value = loss.item();
    loss.backward();
    opt.step();
    return value;
  };
  // An empty cache first: blocks cached by earlier cases could otherwise hide a step that allocates.
  cuda::empty_cache();
  train_step();  // warm-up: fills the allocator's cache
  const cuda::AllocatorStats warm = cuda::allocator_stats(0);
  std::string per_step;  // cudaMalloc calls of each further step, the evidence on failure
  for (int i = 0; i < 3; ++i) {
    const size_t before = cuda::allocator_stats(0).num_device_mallocs;
    CHECK(std::isfinite(train_step()));
    per_step += " " + std::to_string(cuda::allocator_stats(0).num_device_mallocs - before);
  }
  const cuda::AllocatorStats after = cuda::allocator_stats(0);
  INFO("after the warm-up step: " << cuda::stats_str(warm) << "\nafter three more: " << cuda::stats_str(after)
                                  << "\ncudaMalloc calls in each of the three steps:" << per_step);
  CHECK(after.num_device_mallocs == warm.num_device_mallocs);
  CHECK(after.allocated_bytes == warm.allocated_bytes);  // nothing kept alive from step to step
  CHECK(after.num_cache_hits > warm.num_cache_hits);
}

TEST_CASE("Module::to moves a UNet to cuda and back in place, values and handles kept") {
  Generator g(5);
  nn::UNet net(unet_config({4, 8}), &g);
  const nn::NamedTensors before = net.state_dict();
  std::vector<Tensor> cpu_values;
  for (const auto& [name, t] : before) cpu_values.push_back(t.clone());
  const Tensor x = randn({1, 3, 16, 16}, kFloat32, &g);
  net.eval();
  const Tensor cpu_out = net.forward(x);
  net.to(kGpu);
  const nn::NamedTensors on_gpu = net.state_dict();
  for (size_t i = 0; i < on_gpu.size(); ++i) {
    INFO(on_gpu[i].first);
    CHECK(on_gpu[i].second.device() == kGpu);
    CHECK(on_gpu[i].second.is_same(before[i].second));  // the same handle, its storage moved
  }
  check_result("eval forward on cuda", net.forward(x.to(kGpu)), cpu_out, kTolStep);
  net.to(Device::cpu());
  for (size_t i = 0; i < before.size(); ++i) {
    INFO(before[i].first);
    CHECK(before[i].second.device() == Device::cpu());
    TL_CHECK_CLOSE(before[i].second, cpu_values[i], 0.0);
  }
}

TEST_CASE("an optimizer made before Module::to moves its state with the parameters") {
  // Same model, same data: one made on the GPU and stepped there, one whose Adam was made on the CPU
  // before the move.
  auto run = [](bool optimizer_first) {
    Generator g(21);
    nn::UNet net(unet_config({4, 8}), &g);
    std::unique_ptr<optim::Adam> opt;
    if (optimizer_first) opt = std::make_unique<optim::Adam>(net.named_parameters(), optim::AdamOptions{.lr = 1e-2});
    net.to(kGpu);
    if (!optimizer_first) opt = std::make_unique<optim::Adam>(net.named_parameters(), optim::AdamOptions{.lr = 1e-2});
    const Tensor x = randn({2, 3, 16, 16}, kFloat32, &g).to(kGpu);
    const Tensor t = gt(rand({2, 1, 16, 16}, kFloat32, &g), 0.5).to(kFloat32).to(kGpu);
    for (int step = 0; step < 2; ++step) {
      opt->zero_grad();
      binary_cross_entropy_with_logits(net.forward(x), t).backward();
      opt->step();
    }
    return net.state_dict();
  };
  const nn::NamedTensors a = run(true), b = run(false);
  for (size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].first);
    TL_CHECK_CLOSE(a[i].second.to(Device::cpu()), b[i].second.to(Device::cpu()), 0.0);
  }
}

TEST_CASE("DeviceStager copies batches through pinned memory unchanged, a smaller last batch too") {
  data::DeviceStager stager(kGpu);
  Generator g(9);
  // All batches are staged before any is read back, so the pinned slots are reused while earlier
  // copies may still be in flight; each host batch is overwritten as soon as to_device returns.
  std::vector<data::Batch> sent, staged;
  for (int64_t b : {4, 4, 3, 4, 1}) {  // more batches than pinned buffers; sizes change
    data::Batch host{rand({b, 3, 8, 12}, kFloat32, &g), gt(rand({b, 1, 8, 12}, kFloat32, &g), 0.5).to(kFloat32), {}};
    for (int64_t i = 0; i < b; ++i) host.indices.push_back(i * 7);
    sent.push_back({host.images.clone(), host.masks.clone(), host.indices});
    staged.push_back(stager.to_device(host));
    host.images.fill_(-1.0);
    host.masks.fill_(-1.0);
  }
  for (size_t k = 0; k < sent.size(); ++k) {
    CAPTURE(k);
    CHECK(staged[k].images.device() == kGpu);
    CHECK(staged[k].indices == sent[k].indices);
    TL_CHECK_CLOSE(staged[k].images.to(Device::cpu()), sent[k].images, 0.0);
    TL_CHECK_CLOSE(staged[k].masks.to(Device::cpu()), sent[k].masks, 0.0);
  }
}

TEST_CASE("train() with device cuda runs, checkpoints and resumes") {
  TempDir dir("tl_test_cuda_train");
  train::TrainConfig c;
  c.synthetic_count = 32;  // 4 cars of 8 views; 1 held out: 24 training images, 6 batches an epoch
  c.val_fraction = 0.25;
  c.height = 32;
  c.width = 48;
  c.features = {8, 16};
  c.epochs = 2;
  c.batch_size = 4;
  c.workers = 1;
  c.device = "cuda";
  c.quiet = true;
  c.out = dir.file("run");
  c.max_steps = 2;  // stops mid-epoch 1
  std::ostringstream console;
  const train::TrainResult first = train::train(c, console, false);
  CHECK(first.stop == train::StopReason::MaxSteps);
  CHECK(first.steps == 2);
  CHECK(std::isfinite(first.last_train_loss));
  train::TrainConfig r = c;
  r.max_steps = 0;
  r.resume = c.out + "/last.safetensors";
  const train::TrainResult second = train::train(r, console, false);
  CHECK(second.stop == train::StopReason::Finished);
  CHECK(second.steps == 12);
  CHECK(second.epochs_done == 2);
  CHECK(second.best_val_dice > 0);
}

TL_CUDA_TEST_MAIN()
