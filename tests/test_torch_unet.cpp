// UNet parity with PyTorch: the four activations (eval output, train output, loss, every gradient,
// the BatchNorm buffers after the step), ten optimizer steps of Adam, AdamW and SGD, the default-width
// UNet, and the reverse direction (an engine checkpoint loaded strictly by PyTorch).
// Reads the dump of tests/torch_unet_reference.py from TL_TORCH_UNET_DIR; exits 77 (skipped) without it.
#define DOCTEST_CONFIG_IMPLEMENT
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "nn/checkpoint.h"
#include "nn/interop.h"
#include "nn/optim.h"
#include "tests/test_util.h"

using namespace tl;
using testing::rel_l2;
using namespace tl::nn;
namespace fs = std::filesystem;

namespace {

std::string g_dir;

std::string path(const std::string& name) { return (fs::path(g_dir) / name).string(); }

struct Row {
  std::string what;
  double output, loss, worst_grad, worst_buffer;
};
std::vector<Row> g_rows;

// Compares unet_forward's train step on <tag> with PyTorch's; returns the achieved errors.
Row check_train_step(const std::string& tag, bool with_eval) {
  std::map<std::string, Tensor> ref = safetensors::load(path("ref_" + tag + ".safetensors")).as_map();
  Row row{tag, 0, 0, 0, 0};
  const std::string ckpt = path("unet_" + tag + ".safetensors"), io = path("io_" + tag + ".safetensors");
  if (with_eval) {
    auto eval = unet_forward(ckpt, io, false);
    const double e = rel_l2(eval.at(0).second, ref.at("eval_output"));
    CHECK_MESSAGE(e <= 1e-4, tag << " eval output rel L2 " << e);
    row.output = e;
  }
  std::string worst_grad;
  for (auto& [name, t] : unet_forward(ckpt, io, true)) {
    REQUIRE_MESSAGE(ref.count(name), "PyTorch has no " << name);
    const Tensor& want = ref.at(name);
    REQUIRE_MESSAGE(t.shape() == want.shape(), name << ": " << shape_str(t.shape()) << " vs " << shape_str(want.shape()));
    if (name.rfind("buffer.", 0) == 0 && name.find("num_batches_tracked") != std::string::npos) {
      CHECK_MESSAGE(t.item() == want.item(), name);
      continue;
    }
    const double e = rel_l2(t, want);
    if (name == "output" || name == "loss") {
      CHECK_MESSAGE(e <= 1e-4, tag << " " << name << " rel L2 " << e);
      (name == "loss" ? row.loss : row.output) = std::max(name == "loss" ? row.loss : row.output, e);
    } else if (name.rfind("grad.", 0) == 0 && ref.count("grad64." + name.substr(5))) {
      // Ill-conditioned step: measured against float64; the engine must be as close to it as torch's
      // own float32 is (within 2x), or within 1e-3.
      const Tensor& exact = ref.at("grad64." + name.substr(5));
      const double ours = rel_l2(t, exact), torch32 = rel_l2(want, exact);
      CHECK_MESSAGE(ours <= std::max(1e-3, 2 * torch32),
                    tag << " " << name << ": rel L2 to float64 " << ours << ", torch float32's " << torch32);
      if (ours >= row.worst_grad) worst_grad = name + " (torch float32: " + std::to_string(torch32) + ")";
      row.worst_grad = std::max(row.worst_grad, ours);
    } else if (name.rfind("grad.", 0) == 0) {
      CHECK_MESSAGE(e <= 1e-3, tag << " " << name << " rel L2 " << e);
      if (e >= row.worst_grad) worst_grad = name;
      row.worst_grad = std::max(row.worst_grad, e);
    } else {
      CHECK_MESSAGE(e <= 1e-4, tag << " " << name << " rel L2 " << e);
      row.worst_buffer = std::max(row.worst_buffer, e);
    }
  }
  MESSAGE(tag << ": worst gradient " << worst_grad << " at " << row.worst_grad);
  return row;
}

}  // namespace

TEST_CASE("small UNet, each activation: outputs, loss, gradients and buffers match PyTorch") {
  for (const char* act : {"relu", "gelu", "silu", "pysilu"}) g_rows.push_back(check_train_step(act, true));
}

TEST_CASE("ten optimizer steps match PyTorch's losses") {
  std::map<std::string, Tensor> ref = safetensors::load(path("optim_ref.safetensors")).as_map();
  Checkpoint ckpt = load_checkpoint(path("unet_relu.safetensors"));
  safetensors::File io = safetensors::load(path("io_relu.safetensors"));
  for (const std::string name : {"adam", "adamw", "sgd"}) {
    auto model = unet_from_checkpoint(ckpt);
    model->train();
    std::unique_ptr<optim::Optimizer> opt;
    if (name == "adam") opt = std::make_unique<optim::Adam>(model->named_parameters(), optim::AdamOptions{.lr = 1e-4});
    if (name == "adamw")
      opt = std::make_unique<optim::AdamW>(model->named_parameters(), optim::AdamWOptions{.lr = 1e-4, .weight_decay = 1e-2});
    if (name == "sgd")
      opt = std::make_unique<optim::SGD>(model->named_parameters(), optim::SGDOptions{.lr = 1e-2, .momentum = 0.9});
    std::vector<double> want = ref.at("losses." + name).to_vector<double>();
    std::vector<double> exact = ref.at("losses64." + name).to_vector<double>();
    double worst = 0, torch_drift = 0;
    for (size_t k = 0; k < want.size(); ++k) torch_drift = std::max(torch_drift, std::abs(want[k] - exact[k]) / exact[k]);
    MESSAGE(name << ": torch float32 vs float64 over the ten steps: " << torch_drift);
    for (size_t step = 0; step < want.size(); ++step) {
      opt->zero_grad();
      Tensor loss = binary_cross_entropy_with_logits(model->forward(io.at("input")), io.at("target"));
      loss.backward();
      opt->step();
      const double e = std::abs(loss.item() - want[step]) / std::abs(want[step]);
      CHECK_MESSAGE(e <= 1e-4, name << " step " << step + 1 << ": loss " << loss.item() << " vs torch " << want[step]);
      worst = std::max(worst, e);
    }
    g_rows.push_back({"10 steps " + name, 0, worst, 0, 0});
  }
}

TEST_CASE("default-width UNet (31,037,633 parameters, GELU), one train step at 1x3x64x96") {
  g_rows.push_back(check_train_step("default", false));
}

TEST_CASE("reverse direction: an engine checkpoint loads strictly into PyTorch and reproduces the output") {
  const char* python = std::getenv("TL_PYTHON");
  const char* tests = std::getenv("TL_TESTS_DIR");
  REQUIRE_MESSAGE(python, "TL_PYTHON is not set");
  REQUIRE_MESSAGE(tests, "TL_TESTS_DIR is not set");
  Generator g(31);
  UNetConfig cfg;
  cfg.features = {8, 16, 32, 64};
  cfg.activation = "pysilu";
  cfg.conv_bias = true;
  UNet model(cfg, &g);
  model.train();
  model.forward(randn({2, 3, 40, 48}, kFloat32, &g));  // moves the running statistics off 0 and 1
  model.eval();
  Tensor x = randn({1, 3, 37, 45}, kFloat32, &g);
  Tensor y;
  {
    NoGradGuard ng;
    y = model.forward(x);
  }
  save_checkpoint(path("engine_ckpt.safetensors"), model);
  safetensors::save(path("engine_io.safetensors"), {{"input", x}, {"output", y}});
  const std::string cmd = std::string(python) + " " + tests + "/torch_load_check.py " + path("engine_ckpt.safetensors") +
                          " " + path("engine_io.safetensors");
  const int status = std::system(cmd.c_str());
  CHECK_MESSAGE(status == 0, "`" << cmd << "` exited with status " << status);
}

int main(int argc, char** argv) {
  const char* dir = std::getenv("TL_TORCH_UNET_DIR");
  if (!dir || !fs::exists(fs::path(dir) / "optim_ref.safetensors")) {
    std::printf("skipped: PyTorch UNet reference dump not found (TL_TORCH_UNET_DIR=%s); it is written by "
                "tests/torch_unet_reference.py with Debian's python3-torch\n", dir ? dir : "(unset)");
    return 77;
  }
  g_dir = dir;
  doctest::Context ctx(argc, argv);
  const int rc = ctx.run();
  std::printf("\nUNet parity with PyTorch (relative L2 errors; optimizer rows: worst relative error of the ten losses;\n"
              "default row: gradients against float64, see the test)\n");
  std::printf("%-18s %12s %12s %14s %14s\n", "case", "output", "loss", "worst grad", "worst buffer");
  for (const Row& r : g_rows)
    std::printf("%-18s %12.3e %12.3e %14.3e %14.3e\n", r.what.c_str(), r.output, r.loss, r.worst_grad, r.worst_buffer);
  return rc;
}
