// unet_forward --checkpoint W.safetensors --input X.safetensors --output Y.safetensors [--train-step]
#include <cstring>
#include <iostream>
#include <string>

#include "nn/interop.h"

namespace {

const char* kUsage =
    "usage: unet_forward --checkpoint W.safetensors --input X.safetensors --output Y.safetensors [--train-step]\n"
    "\n"
    "Builds the UNet described by the checkpoint's metadata, loads its weights, and runs it on tensor\n"
    "'input' (N, C, H, W, float32) of the input file.\n"
    "  --checkpoint FILE  weights and config (safetensors with UNet metadata)           (required)\n"
    "  --input FILE       safetensors holding 'input' (and 'target' for --train-step)     (required)\n"
    "  --output FILE      where to write the results (written atomically)                (required)\n"
    "  --train-step       train mode: BCE-with-logits against 'target', backward; writes 'output',\n"
    "                     'loss', 'grad.<param>' and 'buffer.<name>' (after the running-stat update).\n"
    "                     Default: eval mode, no gradients, writes 'output' (logits).\n"
    "  --help             this text\n";

}  // namespace

int main(int argc, char** argv) {
  std::string checkpoint, input, output;
  bool train_step = false;
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
  try {
    tl::safetensors::save(output, tl::nn::unet_forward(checkpoint, input, train_step));
  } catch (const std::exception& e) {
    std::cerr << "unet_forward: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
