#pragma once
// The UNet as an ONNX graph (opset 17), for runtimes that have no copy of this engine. Built only
// when the ONNX and protobuf libraries are found (libonnx-dev, libprotobuf-dev); apps/export_onnx.
//
// The graph is UNet::forward in eval mode, node for node: Conv, BatchNormalization (the running
// statistics, not folded), the activation from ONNX ops, MaxPool 2x2, ConvTranspose 2x2 stride 2, the
// skip's center crop as Slice, Concat [skip, upsampled], and the final 1x1 Conv. Initializers carry the
// state_dict names ("downs.0.conv.0.weight", ...). Activations:
//   relu    Relu
//   gelu    0.5 * x * (1 + Erf(x / sqrt(2)))          (the exact form, as fn::Gelu)
//   silu    x * Sigmoid(x)                             (as fn::Silu)
//   pysilu  Where(x >= 0, x, x / (1 + x * x))          (as fn::PySilu)
// Input "input" (N, C, H, W) float32, output "logits" (N, out_channels, H', W'), H' = H rounded down to
// a multiple of 2^depth. N is always symbolic ("batch").
#include <cstdint>
#include <string>

#include "nn/unet.h"

namespace tl::nn {

struct OnnxExportOptions {
  // Fixed input size (both > 0), unless dynamic: then H and W are symbolic ("height", "width") and
  // the crops are computed from the runtime shapes.
  int64_t height = 0, width = 0;
  bool dynamic = false;
  std::string producer = "torchlet";
};

// The serialized ModelProto, validated with onnx::checker::check_model. Throws std::invalid_argument
// for a size the UNet cannot take (smaller than 2^depth), std::runtime_error when the checker refuses
// the graph (naming what it found).
std::string export_unet_onnx(UNet& model, const OnnxExportOptions& options);

}  // namespace tl::nn
