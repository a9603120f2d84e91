#include "nn/onnx_export.h"

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <bit>
#include <stdexcept>
#include <vector>

namespace tl::nn {

namespace {

static_assert(std::endian::native == std::endian::little, "ONNX raw_data is little-endian: this writer copies bytes");

constexpr int64_t kOpset = 17;  // the newest ONNX 1.12 knows: Shape(start), BatchNormalization-15, Where, Erf

// Builds one graph: names values "<prefix>.<op>" from the module paths, so a node reads back to its
// layer ("downs.0.conv.1" is the BatchNormalization of downs.0.conv.1.*).
class GraphBuilder {
 public:
  explicit GraphBuilder(onnx::GraphProto* g) : g_(g) {}

  onnx::NodeProto* node(const std::string& op, const std::vector<std::string>& inputs, const std::string& output) {
    onnx::NodeProto* n = g_->add_node();
    n->set_op_type(op);
    n->set_name(output);
    for (const auto& in : inputs) n->add_input(in);
    n->add_output(output);
    return n;
  }
  static void ints(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& values) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (int64_t v : values) a->add_ints(v);
  }
  static void int_attr(onnx::NodeProto* n, const std::string& name, int64_t value) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(value);
  }
  static void float_attr(onnx::NodeProto* n, const std::string& name, float value) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(value);
  }

  // A float32 tensor (any device, any strides) as an initializer named `name`.
  const std::string& initializer(const std::string& name, const Tensor& t) {
    if (t.dtype() != kFloat32) throw std::runtime_error("" + name + " is " + dtype_name(t.dtype()) + ", expected float32");
    const Tensor c = t.to(Device::cpu()).contiguous();
    onnx::TensorProto* p = g_->add_initializer();
    p->set_name(name);
    p->set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t d : c.shape()) p->add_dims(d);
    p->set_raw_data(c.data_ptr<float>(), static_cast<size_t>(c.numel()) * sizeof(float));
    return name;
  }
  // A scalar float constant (shape []), shared by every node that needs the same value.
  std::string scalar(const std::string& name, float value) {
    const std::string full = "const." + name;
    if (!has_const(full)) {
      onnx::TensorProto* p = g_->add_initializer();
      p->set_name(full);
      p->set_data_type(onnx::TensorProto::FLOAT);
      p->set_raw_data(&value, sizeof value);
    }
    return full;
  }
  std::string int64s(const std::string& name, const std::vector<int64_t>& values) {
    const std::string full = "const." + name;
    if (!has_const(full)) {
      onnx::TensorProto* p = g_->add_initializer();
      p->set_name(full);
      p->set_data_type(onnx::TensorProto::INT64);
      p->add_dims(static_cast<int64_t>(values.size()));
      p->set_raw_data(values.data(), values.size() * sizeof(int64_t));
    }
    return full;
  }

 private:
  bool has_const(const std::string& name) {
    for (const auto& c : consts_)
      if (c == name) return true;
    consts_.push_back(name);
    return false;
  }
  onnx::GraphProto* g_;
  std::vector<std::string> consts_;
};

// The value's static spatial size; unknown (0) in a dynamic graph.
struct Hw {
  int64_t h = 0, w = 0;
};

std::shared_ptr<Module> child(const Module& m, const std::string& name) {
  for (const auto& [n, c] : m.children())
    if (n == name) return c;
  throw std::runtime_error("the model has no module '" + name + "'");
}

std::string activation_nodes(GraphBuilder& b, Activation kind, const std::string& x, const std::string& out) {
  switch (kind) {
    case Activation::Relu:
      b.node("Relu", {x}, out);
      return out;
    case Activation::Gelu: {  // 0.5 * x * (1 + erf(x * 1/sqrt(2))), in fn::Gelu's order
      b.node("Mul", {x, b.scalar("inv_sqrt2", 0.70710678118654752440f)}, out + ".scaled");
      b.node("Erf", {out + ".scaled"}, out + ".erf");
      b.node("Add", {out + ".erf", b.scalar("one", 1.0f)}, out + ".cdf2");
      b.node("Mul", {x, b.scalar("half", 0.5f)}, out + ".half");
      b.node("Mul", {out + ".half", out + ".cdf2"}, out);
      return out;
    }
    case Activation::Silu:
      b.node("Sigmoid", {x}, out + ".sigmoid");
      b.node("Mul", {x, out + ".sigmoid"}, out);
      return out;
    case Activation::PySilu:  // x >= 0 ? x : x / (1 + x^2)
      b.node("GreaterOrEqual", {x, b.scalar("zero", 0.0f)}, out + ".nonneg");
      b.node("Mul", {x, x}, out + ".sq");
      b.node("Add", {out + ".sq", b.scalar("one", 1.0f)}, out + ".den");
      b.node("Div", {x, out + ".den"}, out + ".neg");
      b.node("Where", {out + ".nonneg", x, out + ".neg"}, out);
      return out;
    case Activation::None:
      break;
  }
  throw std::runtime_error("activation '" + std::string(activation_name(kind)) + "' has no ONNX form");
}

std::string conv_node(GraphBuilder& b, const Conv2d& conv, const std::string& prefix, const std::string& x) {
  std::vector<std::string> inputs = {x, b.initializer(prefix + ".weight", conv.weight)};
  if (conv.bias.defined()) inputs.push_back(b.initializer(prefix + ".bias", conv.bias));
  onnx::NodeProto* n = b.node("Conv", inputs, prefix);
  GraphBuilder::ints(n, "kernel_shape", {conv.weight.size(2), conv.weight.size(3)});
  GraphBuilder::ints(n, "strides", {conv.stride.h, conv.stride.w});
  GraphBuilder::ints(n, "pads", {conv.padding.h, conv.padding.w, conv.padding.h, conv.padding.w});
  return prefix;
}

// A DoubleConv's Sequential (conv.{0..5}): each child by its type, in order.
std::string double_conv(GraphBuilder& b, const Module& dc, const std::string& prefix, std::string x, Hw& hw) {
  const std::shared_ptr<Module> seq = child(dc, "conv");
  for (const auto& [name, m] : seq->children()) {
    const std::string p = prefix + ".conv." + name;
    if (auto conv = std::dynamic_pointer_cast<Conv2d>(m)) {
      x = conv_node(b, *conv, p, x);
      // same padding for the 3x3 convs of DESIGN.md; the general formula keeps static sizes honest
      if (hw.h) hw = {(hw.h + 2 * conv->padding.h - conv->weight.size(2)) / conv->stride.h + 1,
                      (hw.w + 2 * conv->padding.w - conv->weight.size(3)) / conv->stride.w + 1};
    } else if (auto bn = std::dynamic_pointer_cast<BatchNorm2d>(m)) {
      onnx::NodeProto* n = b.node("BatchNormalization",
                                  {x, b.initializer(p + ".weight", bn->weight), b.initializer(p + ".bias", bn->bias),
                                   b.initializer(p + ".running_mean", bn->running_mean),
                                   b.initializer(p + ".running_var", bn->running_var)},
                                  p);
      GraphBuilder::float_attr(n, "epsilon", static_cast<float>(bn->eps));
      x = p;
    } else if (auto act = std::dynamic_pointer_cast<ActivationLayer>(m)) {
      x = activation_nodes(b, act->kind(), x, p);
    } else {
      throw std::runtime_error("" + p + " is a layer the exporter does not know");
    }
  }
  return x;
}

// Crops `skip` to the spatial size of `up`, the crop starting at floor((skip - up) / 2) on each axis.
std::string center_crop_node(GraphBuilder& b, const std::string& skip, Hw skip_hw, const std::string& up, Hw up_hw,
                             const std::string& out, bool dynamic) {
  std::string starts, ends;
  if (dynamic) {
    onnx::NodeProto* s = b.node("Shape", {skip}, out + ".skip_hw");
    GraphBuilder::int_attr(s, "start", 2);
    onnx::NodeProto* u = b.node("Shape", {up}, out + ".up_hw");
    GraphBuilder::int_attr(u, "start", 2);
    b.node("Sub", {out + ".skip_hw", out + ".up_hw"}, out + ".excess");
    b.node("Div", {out + ".excess", b.int64s("two", {2, 2})}, out + ".starts");  // excess >= 0: Div floors
    b.node("Add", {out + ".starts", out + ".up_hw"}, out + ".ends");
    starts = out + ".starts";
    ends = out + ".ends";
  } else {
    const int64_t top = (skip_hw.h - up_hw.h) / 2, left = (skip_hw.w - up_hw.w) / 2;
    starts = b.int64s(out + ".starts", {top, left});
    ends = b.int64s(out + ".ends", {top + up_hw.h, left + up_hw.w});
  }
  b.node("Slice", {skip, starts, ends, b.int64s("axes_hw", {2, 3})}, out);
  return out;
}

void add_io(onnx::ValueInfoProto* v, const std::string& name, int64_t channels, Hw hw) {
  v->set_name(name);
  onnx::TypeProto_Tensor* t = v->mutable_type()->mutable_tensor_type();
  t->set_elem_type(onnx::TensorProto::FLOAT);
  onnx::TensorShapeProto* s = t->mutable_shape();
  s->add_dim()->set_dim_param("batch");
  s->add_dim()->set_dim_value(channels);
  if (hw.h) {
    s->add_dim()->set_dim_value(hw.h);
    s->add_dim()->set_dim_value(hw.w);
  } else {
    s->add_dim()->set_dim_param(name == "input" ? "height" : "out_height");
    s->add_dim()->set_dim_param(name == "input" ? "width" : "out_width");
  }
}

}  // namespace

std::string export_unet_onnx(UNet& model, const OnnxExportOptions& opt) {
  const UNetConfig& cfg = model.config();
  const int64_t depth = static_cast<int64_t>(cfg.features.size());
  if (!opt.dynamic) {
    const int64_t min_side = int64_t{1} << depth;
    if (opt.height < min_side || opt.width < min_side)
      throw std::invalid_argument("input size " + std::to_string(opt.height) + "x" + std::to_string(opt.width) +
                                  " is smaller than 2^" + std::to_string(depth) + " = " + std::to_string(min_side) +
                                  " on a side, too small for " + std::to_string(depth) + " poolings");
  }

  onnx::ModelProto proto;
  proto.set_ir_version(onnx::IR_VERSION);
  proto.set_producer_name(opt.producer);
  proto.set_model_version(1);
  onnx::OperatorSetIdProto* opset = proto.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOpset);
  for (const auto& [k, v] : cfg.to_metadata()) {
    onnx::StringStringEntryProto* e = proto.add_metadata_props();
    e->set_key(k);
    e->set_value(v);
  }
  onnx::GraphProto* g = proto.mutable_graph();
  g->set_name("unet");
  GraphBuilder b(g);

  Hw hw = opt.dynamic ? Hw{} : Hw{opt.height, opt.width};
  add_io(g->add_input(), "input", cfg.in_channels, hw);

  // Mirrors UNet::forward.
  const std::shared_ptr<Module> downs = child(model, "downs"), ups = child(model, "ups");
  std::vector<std::pair<std::string, Hw>> skips;
  std::string x = "input";
  for (int64_t i = 0; i < depth; ++i) {
    const std::string p = "downs." + std::to_string(i);
    x = double_conv(b, *child(*downs, std::to_string(i)), p, x, hw);
    skips.emplace_back(x, hw);
    onnx::NodeProto* pool = b.node("MaxPool", {x}, p + ".pool");
    GraphBuilder::ints(pool, "kernel_shape", {2, 2});
    GraphBuilder::ints(pool, "strides", {2, 2});
    x = p + ".pool";
    if (hw.h) hw = {hw.h / 2, hw.w / 2};
  }
  x = double_conv(b, *child(model, "bottleneck"), "bottleneck", x, hw);
  for (int64_t k = 0; k < depth; ++k) {
    const std::string up_name = "ups." + std::to_string(2 * k);
    const auto up = std::dynamic_pointer_cast<ConvTranspose2d>(child(*ups, std::to_string(2 * k)));
    if (!up) throw std::runtime_error("" + up_name + " is not a ConvTranspose2d");
    std::vector<std::string> inputs = {x, b.initializer(up_name + ".weight", up->weight)};
    if (up->bias.defined()) inputs.push_back(b.initializer(up_name + ".bias", up->bias));
    onnx::NodeProto* n = b.node("ConvTranspose", inputs, up_name);
    GraphBuilder::ints(n, "kernel_shape", {up->weight.size(2), up->weight.size(3)});
    GraphBuilder::ints(n, "strides", {up->stride.h, up->stride.w});
    GraphBuilder::ints(n, "pads", {up->padding.h, up->padding.w, up->padding.h, up->padding.w});
    x = up_name;
    if (hw.h) hw = {(hw.h - 1) * up->stride.h - 2 * up->padding.h + up->weight.size(2),
                    (hw.w - 1) * up->stride.w - 2 * up->padding.w + up->weight.size(3)};

    auto [skip, skip_hw] = skips[skips.size() - 1 - static_cast<size_t>(k)];
    // As UNet::forward: a static graph crops only when the sizes differ; a dynamic one always slices
    // (a no-op slice where they agree).
    if (opt.dynamic || skip_hw.h != hw.h || skip_hw.w != hw.w)
      skip = center_crop_node(b, skip, skip_hw, x, hw, up_name + ".crop", opt.dynamic);
    const std::string dc_name = "ups." + std::to_string(2 * k + 1);
    onnx::NodeProto* cat = b.node("Concat", {skip, x}, dc_name + ".cat");
    GraphBuilder::int_attr(cat, "axis", 1);
    x = double_conv(b, *child(*ups, std::to_string(2 * k + 1)), dc_name, dc_name + ".cat", hw);
  }
  const auto final_conv = std::dynamic_pointer_cast<Conv2d>(child(model, "final_conv"));
  if (!final_conv) throw std::runtime_error("final_conv is not a Conv2d");
  x = conv_node(b, *final_conv, "final_conv", x);
  b.node("Identity", {x}, "logits");
  add_io(g->add_output(), "logits", cfg.out_channels, hw);

  try {
    onnx::checker::check_model(proto);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("the ONNX checker refuses the graph: ") + e.what());
  }
  std::string bytes;
  if (!proto.SerializeToString(&bytes)) throw std::runtime_error("could not serialize the ONNX model");
  return bytes;
}

}  // namespace tl::nn
