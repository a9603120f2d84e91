// conv2d and conv_transpose2d, both built on the three convolution primitives of tensor/kernels.h:
//   conv2d(x, w)                       the forward convolution
//   conv2d_backward_input(g, w)        its adjoint in x (a transposed convolution of g)
//   conv2d_backward_weight(g, x)       its adjoint in w
// A transposed convolution is the adjoint of a convolution, so its forward is backward_input, its
// input gradient is a plain conv2d, and its weight gradient is backward_weight with the roles of
// input and gradient swapped.
#include <string>

#include "autograd/node.h"
#include "autograd/ops.h"
#include "tensor/kernels.h"
#include "tensor/profile.h"

namespace tl {

namespace {

using Grads = std::vector<Tensor>;

std::string pair_str(int64_t a, int64_t b) { return "(" + std::to_string(a) + "," + std::to_string(b) + ")"; }

// The checks both ops share: 4-D floating input and weight of one dtype, a 1-D bias of `out_channels`
// and the dtype, stride >= 1, padding >= 0. `in_channels_dim` is the weight dim that must equal the
// input's channels (1 for conv2d's (O, C, kh, kw), 0 for conv_transpose2d's (Cin, Cout, kh, kw)).
void check_conv_args(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias, Size2 stride,
                     Size2 padding, int64_t in_channels_dim) {
  if (x.dim() != 4) throw_op_error(op, "expected a 4-D input (N, C, H, W), got " + shape_str(x.shape()));
  if (weight.dim() != 4)
    throw_op_error(op, "expected a 4-D weight, got " + shape_str(weight.shape()));
  if (x.dtype() != weight.dtype())
    throw_op_error(op, std::string("dtype mismatch: input ") + dtype_name(x.dtype()) + " vs weight " +
                           dtype_name(weight.dtype()));
  if (!is_floating(x.dtype()))
    throw_op_error(op, std::string("expected floating tensors (float32 or float64), got ") + dtype_name(x.dtype()));
  const int64_t expect = weight.size(in_channels_dim);
  if (x.size(1) != expect)
    throw_op_error(op, "input " + shape_str(x.shape()) + " has " + std::to_string(x.size(1)) + " channels, weight " +
                           shape_str(weight.shape()) + " expects " + std::to_string(expect));
  const int64_t out_channels = weight.size(1 - in_channels_dim);
  if (bias.defined()) {
    if (bias.dim() != 1 || bias.size(0) != out_channels)
      throw_op_error(op, "bias " + shape_str(bias.shape()) + " does not match weight " + shape_str(weight.shape()) +
                             ": expected (" + std::to_string(out_channels) + ")");
    if (bias.dtype() != x.dtype())
      throw_op_error(op, std::string("dtype mismatch: input ") + dtype_name(x.dtype()) + " vs bias " +
                             dtype_name(bias.dtype()));
  }
  if (stride.h < 1 || stride.w < 1) throw_op_error(op, "stride must be >= 1, got " + pair_str(stride.h, stride.w));
  if (padding.h < 0 || padding.w < 0)
    throw_op_error(op, "padding must be >= 0, got " + pair_str(padding.h, padding.w));
}

kernels::Conv2dParams params(Size2 stride, Size2 padding) { return {stride.h, stride.w, padding.h, padding.w}; }

// db of a bias added on channel dim 1 of an (N, C, H, W) output.
Tensor bias_grad(const Tensor& g) { return kernels::reduce(kernels::Reduce::Sum, g, {0, 2, 3}, false); }

}  // namespace

// x (N, C, H, W), weight (O, C, kh, kw), bias (O) -> (N, O, Ho, Wo), Ho = (H + 2 ph - kh) / sh + 1
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, Size2 stride, Size2 padding) {
  check_conv_args("conv2d", x, weight, bias, stride, padding, 1);
  const int64_t H = x.size(2) + 2 * padding.h, W = x.size(3) + 2 * padding.w;
  if (H < weight.size(2) || W < weight.size(3))
    throw_op_error("conv2d", "input " + shape_str(x.shape()) + " padded by " + pair_str(padding.h, padding.w) +
                                 " is smaller than the kernel " + pair_str(weight.size(2), weight.size(3)));
  const kernels::Conv2dParams p = params(stride, padding);
  Tensor out = kernels::conv2d(x, weight, bias, p);
  return record("conv2d", out, {x, weight, bias},
                [x = x.detach(), w = weight.detach(), p](const Tensor& g, const std::vector<bool>& needs) {
                  return Grads{needs[0] ? kernels::conv2d_backward_input(g, w, x.shape(), p) : Tensor(),
                               needs[1] ? kernels::conv2d_backward_weight(g, x, w.shape(), p) : Tensor(),
                               needs[2] ? bias_grad(g) : Tensor()};
                });
}

// x (N, Cin, H, W), weight (Cin, Cout, kh, kw), bias (Cout) -> (N, Cout, Ho, Wo),
// Ho = (H - 1) sh - 2 ph + kh. Read as the adjoint of conv2d with weight (O = Cin, C = Cout, kh, kw),
// which maps (N, Cout, Ho, Wo) to (N, Cin, H, W).
Tensor conv_transpose2d(const Tensor& x, const Tensor& weight, const Tensor& bias, Size2 stride, Size2 padding) {
  check_conv_args("conv_transpose2d", x, weight, bias, stride, padding, 0);
  const int64_t Ho = (x.size(2) - 1) * stride.h - 2 * padding.h + weight.size(2);
  const int64_t Wo = (x.size(3) - 1) * stride.w - 2 * padding.w + weight.size(3);
  if (Ho < 1 || Wo < 1)
    throw_op_error("conv_transpose2d", "output size " + pair_str(Ho, Wo) + " is too small: input " +
                                           shape_str(x.shape()) + ", weight " + shape_str(weight.shape()) +
                                           ", stride " + pair_str(stride.h, stride.w) + ", padding " +
                                           pair_str(padding.h, padding.w));
  const kernels::Conv2dParams p = params(stride, padding);
  const Shape out_shape{x.size(0), weight.size(1), Ho, Wo};
  // One GEMM's work: every input pixel times every weight.
  const double flops = 2.0 * static_cast<double>(x.size(0) * x.size(2) * x.size(3) * weight.numel());
  profile::Scope scope(profile::Kind::ConvTranspose, flops);
  const Tensor out = kernels::conv2d_backward_input(x, weight, out_shape, p);
  if (bias.defined())  // in place: out is new, and the UNet's largest is 10 MB
    kernels::binary(kernels::Binary::Add, out, bias.detach().reshape({1, weight.size(1), 1, 1}), out);
  return record("conv_transpose2d", out, {x, weight, bias},
                [x = x.detach(), w = weight.detach(), p, flops](const Tensor& g_in, const std::vector<bool>& needs) {
                  profile::Scope bscope(profile::Kind::ConvTranspose, flops * ((needs[0] ? 1 : 0) + (needs[1] ? 1 : 0)));
                  // In the UNet g is a channel slice of cat's gradient, strided across the batch: each
                  // kernel would copy it into a contiguous tensor, so copy it once for all of them.
                  const Tensor g = g_in.contiguous();
                  return Grads{needs[0] ? kernels::conv2d(g, w, Tensor(), p) : Tensor(),
                               needs[1] ? kernels::conv2d_backward_weight(x, g, w.shape(), p) : Tensor(),
                               needs[2] ? bias_grad(g) : Tensor()};
                });
}

}  // namespace tl
