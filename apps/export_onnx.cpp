// export_onnx --checkpoint X.safetensors --out model.onnx [--height H --width W] [--dynamic]
// Writes the checkpoint's UNet as an ONNX model (nn/onnx_export.h), checked by ONNX's checker.
#include <iostream>
#include <string>
#include <tuple>

#include "nn/checkpoint.h"
#include "tensor/file_util.h"
#include "train/cli.h"
#ifdef TL_WITH_ONNX
#include "nn/onnx_export.h"
#endif

int main(int argc, char** argv) {
  tl::cli::Flags flags("export_onnx",
                       "Writes a UNet checkpoint as an ONNX model (opset 17) for onnxruntime and other runtimes:\n"
                       "input 'input' (N, C, H, W) float32, output 'logits'. The batch size is always free; H and W\n"
                       "are fixed (--height/--width, else the checkpoint's image_size) unless --dynamic.");
  std::string checkpoint, out;
  int64_t height = 0, width = 0;
  bool dynamic = false;
  flags.add("--checkpoint", &checkpoint, "model weights and config (.safetensors); required");
  flags.add("--out", &out, "the ONNX file to write (atomically); required");
  flags.add("--height", &height, "input height; 0: the checkpoint's image_size");
  flags.add("--width", &width, "input width; 0: the checkpoint's image_size");
  flags.add_switch("--dynamic", &dynamic, "any input size: H and W are symbolic, the skip crops computed at run time");
  return tl::cli::run_main("export_onnx", [&] {
    if (!flags.parse(argc, argv)) return 0;
    if (checkpoint.empty()) throw tl::cli::UsageError("--checkpoint is required");
    if (out.empty()) throw tl::cli::UsageError("--out is required");
    if (height < 0 || width < 0) throw tl::cli::UsageError("--height and --width must be positive");
    if (dynamic && (height || width)) throw tl::cli::UsageError("--dynamic takes no --height/--width (any size runs)");
    if ((height == 0) != (width == 0)) throw tl::cli::UsageError("--height and --width go together");
#ifndef TL_WITH_ONNX
    throw std::runtime_error(
        "this build has no ONNX support: install libonnx-dev and libprotobuf-dev (scripts/install_deps.sh) and "
        "rebuild");
#else
    const tl::nn::Checkpoint ckpt = tl::nn::load_checkpoint(checkpoint);
    if (!dynamic && height == 0) {
      const auto it = ckpt.metadata.find("image_size");
      if (it == ckpt.metadata.end())
        throw tl::cli::UsageError(checkpoint + " records no image_size: give --height and --width, or --dynamic");
      std::tie(height, width) = tl::cli::parse_size(checkpoint + " image_size", it->second);
    }
    std::shared_ptr<tl::nn::UNet> model;
    try {
      model = tl::nn::unet_from_checkpoint(ckpt);
    } catch (const std::exception& e) {
      throw std::runtime_error(checkpoint + ": " + e.what());
    }
    tl::nn::OnnxExportOptions opt;
    opt.height = height;
    opt.width = width;
    opt.dynamic = dynamic;
    const std::string bytes = tl::nn::export_unet_onnx(*model, opt);
    tl::write_file_atomic(out, bytes);
    std::cout << "wrote " << out << " (" << bytes.size() / 1000000.0 << " MB, " << model->config().activation << ", "
              << (dynamic ? std::string("any HxW") : std::to_string(height) + "x" + std::to_string(width))
              << ", checked by onnx::checker)\n";
    return 0;
#endif
  });
}
