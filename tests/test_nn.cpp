// nn: modules and state dicts, layers and their initialization, the UNet, checkpoints, interop errors.
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "nn/checkpoint.h"
#include "nn/interop.h"
#include "nn/layers.h"
#include "nn/optim.h"
#include "nn/unet.h"
#include "tests/test_util.h"

#if TL_WITH_CUDA
#include "cuda/runtime.h"
#endif

using namespace tl;
using namespace tl::nn;
namespace fs = std::filesystem;

namespace {

UNetConfig small_config(const std::string& act = "relu") {
  UNetConfig c;
  c.features = {4, 8};
  c.activation = act;
  return c;
}

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("tl_test_nn_" + std::to_string(::getpid()));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

}  // namespace

TEST_CASE("the default UNet has the design's parameter count and PyTorch's names") {
  UNet net;
  CHECK(net.num_parameters() == 31037633);
  NamedTensors sd = net.state_dict();
  std::vector<std::string> names;
  for (auto& [n, t] : sd) names.push_back(n);
  // torch's order: ups, downs, bottleneck, final_conv; within a module its params, then buffers.
  CHECK(names.front() == "ups.0.weight");
  CHECK(names[1] == "ups.0.bias");
  CHECK(names[2] == "ups.1.conv.0.weight");
  CHECK(names[3] == "ups.1.conv.1.weight");
  CHECK(names[4] == "ups.1.conv.1.bias");
  CHECK(names[5] == "ups.1.conv.1.running_mean");
  CHECK(names[6] == "ups.1.conv.1.running_var");
  CHECK(names[7] == "ups.1.conv.1.num_batches_tracked");
  CHECK(names[8] == "ups.1.conv.3.weight");
  CHECK(names.back() == "final_conv.bias");
  auto has = [&](const std::string& n) { return std::find(names.begin(), names.end(), n) != names.end(); };
  CHECK(has("downs.3.conv.4.running_var"));
  CHECK(has("bottleneck.conv.0.weight"));
  CHECK(has("ups.6.weight"));
  CHECK(has("ups.7.conv.4.bias"));
  CHECK_FALSE(has("downs.0.conv.0.bias"));  // conv bias off by default
  CHECK(sd.size() == /*transposed convs*/ 4 * 2 + /*final*/ 2 + /*double convs*/ 9 * (2 + 2 * 5));
  UNetConfig with_bias;
  with_bias.conv_bias = true;
  CHECK(UNet(with_bias).num_parameters() == 31037633 + 2 * (64 + 128 + 256 + 512 + 1024) + 2 * (64 + 128 + 256 + 512));
}

TEST_CASE("layer initialization follows PyTorch's bounds") {
  Generator g(3);
  Conv2d c(16, 8, 3, 1, 1, true, &g);
  const double bound = 1.0 / std::sqrt(16.0 * 9);
  CHECK(max(abs(c.weight)).item() <= bound);
  CHECK(max(abs(c.weight)).item() > 0.9 * bound);
  CHECK(max(abs(c.bias)).item() <= bound);
  ConvTranspose2d t(16, 8, 2, 2, 0, true, &g);
  CHECK(t.weight.shape() == Shape{16, 8, 2, 2});
  CHECK(max(abs(t.weight)).item() <= 1.0 / std::sqrt(8.0 * 4));  // torch's fan_in uses dim 1 here
  CHECK(max(abs(t.weight)).item() > 0.9 / std::sqrt(8.0 * 4));
  BatchNorm2d bn(5);
  CHECK(bn.weight.to_vector<float>() == std::vector<float>(5, 1.0f));
  CHECK(bn.running_var.to_vector<float>() == std::vector<float>(5, 1.0f));
  CHECK(bn.num_batches_tracked.dtype() == kInt64);
  // Same seed, same weights.
  Generator g1(7), g2(7);
  CHECK(UNet(small_config(), &g1).state_dict()[0].second.to_vector<float>() ==
        UNet(small_config(), &g2).state_dict()[0].second.to_vector<float>());
}

TEST_CASE("train and eval, BatchNorm statistics and num_batches_tracked") {
  BatchNorm2d bn(3);
  Tensor x = randn({4, 3, 5, 5});
  bn.forward(x);
  bn.forward(x);
  CHECK(bn.num_batches_tracked.item() == 2);
  CHECK(max(abs(bn.running_mean)).item() > 0);
  bn.eval();
  CHECK_FALSE(bn.is_training());
  std::vector<float> rm = bn.running_mean.to_vector<float>();
  bn.forward(x);
  CHECK(bn.running_mean.to_vector<float>() == rm);
  CHECK(bn.num_batches_tracked.item() == 2);
  CHECK_THROWS_WITH_AS(bn.forward(zeros({3, 5})), "BatchNorm2d: expected a 4-D input (N, C, H, W), got (3,5)",
                       std::invalid_argument);

  // The count is kept on the host too (no read back per forward); load_state_dict refreshes it.
  BatchNorm2d other(3);
  std::map<std::string, Tensor> sd;
  for (auto& [n, t] : other.state_dict()) sd[n] = t.clone();
  sd["num_batches_tracked"] = scalar_tensor(41, kInt64);
  bn.load_state_dict(sd);
  CHECK(bn.num_batches_tracked.item() == 41);
  bn.train();
  bn.forward(x);
  CHECK(bn.num_batches_tracked.item() == 42);
}

TEST_CASE("Module::to moves in place; the device flag resolves; a failed move leaves the model") {
  Generator g(3);
  UNet net(small_config(), &g);
  std::vector<const void*> data;
  for (auto& [n, t] : net.state_dict()) data.push_back(t.storage()->data());
  Tensor y = net.forward(randn({1, 3, 8, 8}));
  binary_cross_entropy_with_logits(y, zeros_like(y.detach())).backward();
  const Tensor w = net.named_parameters().back().second;  // final_conv.bias: a handle taken before the move
  CHECK(&net.to(Device::cpu()) == &net);   // already there: nothing moves
  size_t i = 0;
  for (auto& [n, t] : net.state_dict()) CHECK_MESSAGE(t.storage()->data() == data[i++], n);
  CHECK(w.is_same(net.named_parameters().back().second));
  CHECK(w.grad().defined());

  CHECK(resolve_device("cpu") == Device::cpu());
  CHECK_THROWS_WITH_AS(resolve_device("gpu"), "--device: expected auto, cpu, cuda or cuda:N, got 'gpu'",
                       std::invalid_argument);
  CHECK_THROWS_AS(resolve_device("cuda:x"), std::invalid_argument);
#if TL_WITH_CUDA
  const bool gpu = cuda::device_count() > 0;
#else
  const bool gpu = false;
#endif
  if (!gpu) {  // with a GPU, test_cuda moves models there and back
    CHECK(resolve_device("auto") == Device::cpu());
#if TL_WITH_CUDA
    CHECK_THROWS_WITH_AS(resolve_device("cuda"), "--device cuda: no CUDA device is available", std::runtime_error);
#else
    CHECK_THROWS_WITH_AS(resolve_device("cuda:1"), doctest::Contains("--device cuda:1: this build has no CUDA backend"),
                         std::runtime_error);
#endif
    const std::vector<float> before = w.to_vector<float>();
    CHECK_THROWS(net.to(Device::cuda(0)));
    for (auto& [n, t] : net.state_dict()) CHECK_MESSAGE(t.device().is_cpu(), n);
    CHECK(w.to_vector<float>() == before);
  }
}

TEST_CASE("Module::to(kFloat64) converts in place: same handles, float64 values, integer buffers kept") {
  Generator g(4);
  UNet a(small_config("gelu"), &g);
  const Tensor x = randn({2, 3, 16, 16}, kFloat32, &g);
  const Tensor y32 = a.forward(x);
  binary_cross_entropy_with_logits(y32, zeros_like(y32.detach())).backward();
  const nn::NamedTensors before = a.state_dict();
  std::vector<Tensor> values;
  for (const auto& [name, t] : before) values.push_back(t.clone());
  CHECK(&a.to(kFloat64) == &a);
  const nn::NamedTensors after = a.state_dict();
  for (size_t i = 0; i < after.size(); ++i) {
    INFO(after[i].first);
    CHECK(after[i].second.is_same(before[i].second));  // the handle an optimizer holds
    const bool integer = after[i].first.ends_with("num_batches_tracked");
    CHECK(after[i].second.dtype() == (integer ? kInt64 : kFloat64));
    // The float64 values are the float32 ones, exactly (the conversion widens).
    TL_CHECK_CLOSE(after[i].second.to(values[i].dtype()), values[i], 0.0);
  }
  for (const auto& [name, p] : a.named_parameters()) {
    INFO(name);
    CHECK(p.grad().dtype() == kFloat64);  // gradients too
  }
  // A train-mode forward (batch statistics) again, now in float64: it agrees with the float32 one
  // within float32 rounding, tolerance 1e-5 of the output's scale.
  a.zero_grad();
  const Tensor y64 = a.forward(x.to(kFloat64));
  CHECK(y64.dtype() == kFloat64);
  binary_cross_entropy_with_logits(y64, zeros_like(y64.detach())).backward();
  TL_CHECK_CLOSE(y64.to(kFloat32), y32, 1e-5);
  CHECK(a.named_parameters()[0].second.grad().dtype() == kFloat64);
  a.to(kFloat32);
  CHECK(a.named_parameters()[0].second.dtype() == kFloat32);
  CHECK_THROWS_WITH_AS(a.to(kInt64), doctest::Contains("expected a floating dtype"), std::invalid_argument);
}

TEST_CASE("the UNet runs any input size, cropping skips, and returns logits") {
  Generator g(1);
  UNet net(small_config("pysilu"), &g);
  CHECK(net.forward(randn({2, 3, 16, 24})).shape() == Shape{2, 1, 16, 24});
  CHECK(net.forward(randn({1, 3, 17, 23})).shape() == Shape{1, 1, 16, 20});  // 17 -> 8 -> 4 -> 8 -> 16
  Tensor y = net.forward(randn({2, 3, 12, 12}));
  binary_cross_entropy_with_logits(y, zeros_like(y.detach())).backward();
  for (auto& [name, p] : net.named_parameters()) CHECK_MESSAGE(p.grad().defined(), name);
  net.zero_grad();
  CHECK_FALSE(net.parameters()[0].grad().defined());
  CHECK_THROWS_WITH_AS(net.forward(randn({1, 4, 16, 16})), "UNet: expected input (N, 3, H, W), got (1,4,16,16)",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(net.forward(randn({1, 3, 3, 16})),
                       "UNet: input (1,3,3,16) is smaller than 2^2 on a side, too small for 2 poolings",
                       std::invalid_argument);
}

TEST_CASE("Sequential fuses BatchNorm2d and its activation: the same training steps as unfused, bit for bit") {
  for (const std::string& act : activation_names()) {
    CAPTURE(act);
    // Two identical models, one run with fusion off; three SGD steps each.
    auto run = [&](bool fuse) {
      Generator g(11);
      UNet net(small_config(act), &g);
      optim::SGD opt(net.named_parameters(), optim::SGDOptions{.lr = 0.1, .momentum = 0.9});
      set_fusion(fuse);
      std::vector<float> losses;
      for (int step = 0; step < 3; ++step) {
        Generator data(100 + step);
        Tensor x = randn({2, 3, 12, 16}, kFloat32, &data);
        Tensor t = gt(rand({2, 1, 12, 16}, kFloat32, &data), 0.5).to(kFloat32);
        opt.zero_grad();
        Tensor loss = binary_cross_entropy_with_logits(net.forward(x), t);
        loss.backward();
        opt.step();
        losses.push_back(loss.item<float>());
      }
      set_fusion(true);
      std::vector<std::vector<float>> state;
      for (auto& [name, p] : net.named_parameters()) state.push_back(p.to_vector<float>());
      for (auto& [name, b] : net.named_buffers())
        if (is_floating(b.dtype())) state.push_back(b.to_vector<float>());
      return std::pair{losses, state};
    };
    const auto fused = run(true), unfused = run(false);
    CHECK(fused.first == unfused.first);
    CHECK(fused.second == unfused.second);
  }
  CHECK(fusion_enabled());
}

TEST_CASE("load_state_dict is strict and names every fault") {
  UNet a(small_config()), b(small_config());
  std::map<std::string, Tensor> sd;
  for (auto& [n, t] : a.state_dict()) sd[n] = t.clone();
  b.load_state_dict(sd);
  CHECK(b.state_dict()[0].second.to_vector<float>() == a.state_dict()[0].second.to_vector<float>());

  auto bad = sd;
  bad.erase("final_conv.bias");
  bad["extra.weight"] = zeros({1});
  bad["downs.0.conv.0.weight"] = zeros({4, 3, 5, 5});
  std::vector<float> before = b.state_dict()[0].second.to_vector<float>();
  try {
    b.load_state_dict(bad);
    FAIL("expected an error");
  } catch (const std::runtime_error& e) {
    const std::string m = e.what();
    CHECK(m.find("wrong shape: downs.0.conv.0.weight (checkpoint (4,3,5,5), model (4,3,3,3))") != std::string::npos);
    CHECK(m.find("missing: final_conv.bias") != std::string::npos);
    CHECK(m.find("unexpected: extra.weight") != std::string::npos);
  }
  CHECK(b.state_dict()[0].second.to_vector<float>() == before);  // nothing written on failure
}

TEST_CASE("UNet config metadata round trip and errors") {
  UNetConfig c;
  c.features = {8, 16, 32};
  c.activation = "gelu";
  c.conv_bias = true;
  auto md = c.to_metadata();
  CHECK(md.at("features") == "8,16,32");
  CHECK(md.at("conv_bias") == "true");
  CHECK(md.at("in_channels") == "3");
  UNetConfig r = UNetConfig::from_metadata(md);
  CHECK(r.features == c.features);
  CHECK(r.activation == "gelu");
  CHECK(r.conv_bias);
  md.erase("activation");
  CHECK_THROWS_WITH_AS(UNetConfig::from_metadata(md),
                       "UNet config: metadata key 'activation' is missing (a checkpoint needs model, in_channels, "
                       "out_channels, features, activation, conv_bias)",
                       std::invalid_argument);
  md["activation"] = "swish";
  CHECK_THROWS_WITH_AS(UNetConfig::from_metadata(md),
                       "UNet config: unknown activation 'swish' (expected relu, gelu, silu or pysilu)", std::invalid_argument);
  md["activation"] = "relu";
  md["features"] = "8,,16";
  CHECK_THROWS_WITH_AS(UNetConfig::from_metadata(md), "UNet config: metadata 'features' = '' is not a positive integer",
                       std::invalid_argument);
  md["features"] = "32,64,96";
  CHECK_THROWS_WITH_AS(UNetConfig::from_metadata(md),
                       "UNet config: features must double from level to level (as 64,128,256,512), got 32,64,96: 96 "
                       "is not 2 x 64",
                       std::invalid_argument);
  UNetConfig odd;
  odd.features = {6, 12, 24};  // any first width, as long as they double
  CHECK_NOTHROW(odd.validate());
}

TEST_CASE("checkpoints rebuild the model, and bad ones are clear errors") {
  TempDir dir;
  Generator g(11);
  UNet net(small_config("silu"), &g);
  net.forward(randn({2, 3, 8, 8}));  // move the running statistics
  TrainingState st{12, 3, 20, 4096};
  save_checkpoint(dir / "w.safetensors", net, nullptr, st, {{"note", "x"}});
  Checkpoint c = load_checkpoint(dir / "w.safetensors");
  CHECK(c.config.activation == "silu");
  CHECK(c.state.step == 12);
  CHECK(c.state.epoch == 3);
  CHECK(c.state.rng_offset == 4096);
  CHECK(c.metadata.at("note") == "x");
  CHECK(c.optim_state.empty());
  auto copy = unet_from_checkpoint(c);
  copy->eval();
  net.eval();
  Tensor x = randn({1, 3, 8, 8});
  NoGradGuard ng;
  CHECK(copy->forward(x).to_vector<float>() == net.forward(x).to_vector<float>());

  // Without config metadata.
  safetensors::save(dir / "bare.safetensors", net.state_dict());
  CHECK_THROWS_WITH_AS(load_checkpoint(dir / "bare.safetensors"),
                       (dir / "bare.safetensors" + ": not a UNet checkpoint: UNet config: metadata key 'model' is missing "
                                                   "(a checkpoint needs model, in_channels, out_channels, features, "
                                                   "activation, conv_bias)").c_str(),
                       std::runtime_error);
  // A wrong-shaped weight, through the interop entry point.
  auto sd = net.state_dict();
  for (auto& [n, t] : sd)
    if (n == "final_conv.weight") t = zeros({1, 4, 3, 3});
  safetensors::save(dir / "bad.safetensors", sd, small_config().to_metadata());
  safetensors::save(dir / "in.safetensors", {{"input", randn({1, 3, 8, 8})}});
  try {
    unet_forward(dir / "bad.safetensors", dir / "in.safetensors", false);
    FAIL("expected an error");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()).find("wrong shape: final_conv.weight (checkpoint (1,4,3,3), model (1,4,1,1))") !=
          std::string::npos);
  }
}

TEST_CASE("checkpoints holding NaN or Inf are refused at load, naming the tensor") {
  TempDir dir;
  Generator g(3);
  UNet net(small_config(), &g);
  safetensors::save(dir / "in.safetensors", {{"input", randn({1, 3, 8, 8})}});
  struct Bad {
    const char* tensor;
    double value;
    const char* holds;
  };
  for (const Bad& b : {Bad{"downs.0.conv.0.weight", NAN, "holds 1 NaN and 0 infinite values (the first at flat index 5)"},
                       Bad{"bottleneck.conv.1.running_var", INFINITY, "holds 0 NaN and 1 infinite values"},
                       Bad{"optim.final_conv.bias.exp_avg_sq", -INFINITY, "holds 0 NaN and 1 infinite values"}}) {
    CAPTURE(b.tensor);
    auto sd = net.state_dict();
    bool found = false;
    for (auto& [n, t] : sd)
      if (n == b.tensor) {
        t = t.clone();
        t.data_ptr<float>()[5 % t.numel()] = static_cast<float>(b.value);
        found = true;
      }
    if (!found) {  // an optimizer entry, as a training checkpoint holds
      Tensor t = zeros({1});
      t.data_ptr<float>()[0] = static_cast<float>(b.value);
      sd.emplace_back(b.tensor, t);
    }
    const std::string path = dir / "bad.safetensors";
    safetensors::save(path, sd, small_config().to_metadata());
    std::string e;
    try {
      load_checkpoint(path);
    } catch (const std::runtime_error& err) {
      e = err.what();
    }
    MESSAGE(e);
    CHECK(e.rfind(path + ": tensor '" + b.tensor + "' ", 0) == 0);
    CHECK(e.find(b.holds) != std::string::npos);
    CHECK(e.find("use an earlier one") != std::string::npos);
    // unet_forward (and so every app that loads a model) goes through the same check.
    CHECK_THROWS_WITH_AS(unet_forward(path, dir / "in.safetensors", false), doctest::Contains(b.tensor),
                         std::runtime_error);
  }
}

TEST_CASE("unet_forward: eval output and a train step with every gradient and buffer") {
  TempDir dir;
  Generator g(5);
  UNet net(small_config(), &g);
  save_checkpoint(dir / "w.safetensors", net);
  Tensor x = randn({2, 3, 8, 12}, kFloat32, &g);
  Tensor t = gt(rand({2, 1, 8, 12}, kFloat32, &g), 0.5).to(kFloat32);
  safetensors::save(dir / "in.safetensors", {{"input", x}, {"target", t}});
  auto eval_out = unet_forward(dir / "w.safetensors", dir / "in.safetensors", false);
  REQUIRE(eval_out.size() == 1);
  CHECK(eval_out[0].first == "output");
  auto train_out = unet_forward(dir / "w.safetensors", dir / "in.safetensors", true);
  std::map<std::string, Tensor> m(train_out.begin(), train_out.end());
  CHECK(m.at("loss").dim() == 0);
  CHECK(m.count("grad.final_conv.weight"));
  CHECK(m.at("buffer.downs.0.conv.1.num_batches_tracked").item() == 1);
  CHECK(m.size() == 2 + net.named_parameters().size() + net.named_buffers().size());
  safetensors::save(dir / "no_target.safetensors", {{"input", x}});
  CHECK_THROWS_WITH_AS(unet_forward(dir / "w.safetensors", dir / "no_target.safetensors", true),
                       doctest::Contains((dir / "no_target.safetensors" + ": no tensor 'target'").c_str()),
                       std::runtime_error);
}
