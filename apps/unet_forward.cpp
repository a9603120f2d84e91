// unet_forward --checkpoint W.safetensors --input X.safetensors --output Y.safetensors [--train-step]
//              [--device auto|cpu|cuda|cuda:N] [--tf32]
#include <cstring>
#include <iostream>
#include <string>

#include "nn/interop.h"
#include "nn/module.h"
#include "tensor/precision.h"

namespace {

const char* kUsage =
    "usage: unet_forward --checkpoint W.safetensors --input X.safetensors --output Y.safetensors [--train-step]\n"
    "                    [--device auto|cpu|cuda|cuda:N] [--tf32]\n"
    "\n"
    "Builds the UNet described by the checkpoint's metadata, loads its weights, and runs it on tensor\n"
    "'input' (N, C, H, W, float32) of the input file.\n"
    "  --checkpoint FILE  weights and config (safetensors with UNet metadata)           (required)\n"
    "  --input FILE       safetensors holding 'input' (and 'target' for --train-step)     (required)\n"
    "  --output FILE      where to write the results (written atomically)                (required)\n"
    "  --train-step       train mode: BCE-with-logits against 'target', backward; writes 'output',\n"
    "                     'loss', 'grad.<param>' and 'buffer.<name>' (after the running-stat update).\n"
    "                     Default: eval mode, no gradients, writes 'output' (logits).\n"
    "  --device D         auto (the GPU when there is one, else the CPU), cpu, cuda or cuda:N     (default: auto)\n"
    "  --tf32             TF32 GEMMs on the GPU (as TL_ALLOW_TF32=1); default: strict float32\n"
    "  --help             this text\n";

}  // namespace

int main(int argc, char** argv) {
  std::string checkpoint, input, output, device = "auto";
  bool train_step = false, tf32 = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](std::string& dst) {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      dst = argv[++i];
    };
    try {
      if (a == "--help" || a == "-h") {
        std::cout << kUsage;
        return 0;
      } else if (a == "--checkpoint") value(checkpoint);
      else if (a == "--input") value(input);
      else if (a == "--output") value(output);
      else if (a == "--train-step") train_step = true;
      else if (a == "--device") value(device);
      else if (a == "--tf32") tf32 = true;
      else throw std::invalid_argument("unknown flag " + a);
    } catch (const std::exception& e) {
      std::cerr << "unet_forward: " << e.what() << " (see --help)\n";
      return 2;
    }
  }
  if (checkpoint.empty() || input.empty() || output.empty()) {
    std::cerr << "unet_forward: --checkpoint, --input and --output are required (see --help)\n";
    return 2;
  }
  tl::Device dev;
  try {
    dev = tl::nn::resolve_device(device);
  } catch (const std::invalid_argument& e) {
    std::cerr << "unet_forward: " << e.what() << " (see --help)\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "unet_forward: " << e.what() << "\n";
    return 1;
  }
  if (tf32) tl::set_allow_tf32(true);
  try {
    tl::safetensors::save(output, tl::nn::unet_forward(checkpoint, input, train_step, dev));
  } catch (const std::exception& e) {
    std::cerr << "unet_forward: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
