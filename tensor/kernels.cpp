// Device dispatch of the primitive ops. Every op checks that its tensor arguments share one device
// and then runs the CPU body (tensor/cpu/) or the CUDA backend's (cuda/ops.h).
#include "tensor/kernels.h"

#include <initializer_list>
#include <stdexcept>
#include <string>

#include "tensor/cpu/cpu_kernels.h"
#include "tensor/profile.h"

#if TL_WITH_CUDA
#include "cuda/copy.h"
#include "cuda/ops.h"
#endif

namespace tl::kernels {

namespace {

// The device all defined tensors share; throws naming the op and both devices otherwise.
Device common_device(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts) {
    if (!t->defined()) continue;
    if (!first) first = t;
    else if (t->device() != first->device())
      throw_op_error(op, "tensors on different devices: " + shape_str(first->shape()) + " on " + first->device().str() +
                             " and " + shape_str(t->shape()) + " on " + t->device().str());
  }
  if (!first) throw std::logic_error(std::string(op) + ": no defined tensor argument");
  return first->device();
}

// A build without the CUDA backend has no kernels for cuda:N tensors.
[[maybe_unused]] [[noreturn]] void no_device_kernel(const char* op, Device d) {
  throw std::runtime_error(std::string(op) + ": no kernel for " + d.str() + " in this build (built without CUDA)");
}

}  // namespace

#if TL_WITH_CUDA
#define TL_DISPATCH(op, call, ...)                                     \
  do {                                                                 \
    const Device dev_ = common_device(op, {__VA_ARGS__});              \
    if (dev_.is_cpu()) return cpu::call;                               \
    return cuda::call;                                                 \
  } while (0)
#else
#define TL_DISPATCH(op, call, ...)                                     \
  do {                                                                 \
    const Device dev_ = common_device(op, {__VA_ARGS__});              \
    if (dev_.is_cpu()) return cpu::call;                               \
    no_device_kernel(op, dev_);                                        \
  } while (0)
#endif

#if TL_WITH_CUDA
namespace {

// copy_ when either side is on a CUDA device. On one device: a byte copy when both sides are the same
// dense block, else the strided kernel (which broadcasts and casts). Between two devices only dense
// bytes move: the source is first made a contiguous block in dst's shape on its own device, lands in dst
// directly when dst is contiguous with the source's dtype, else in a staging block on dst's device
// that a same-device copy then casts and scatters into dst's strides.
void cuda_copy_(const Tensor& dst, const Tensor& src) {
  const Shape& shape = dst.shape();
  if (broadcast_shapes(src.shape(), shape, "copy_") != shape)
    throw_op_error("copy_", "source " + shape_str(src.shape()) + " does not broadcast to destination " +
                                shape_str(shape));
  if (dst.numel() == 0) return;
  const Device dd = dst.device(), sd = src.device();
  const size_t nbytes = static_cast<size_t>(dst.numel()) * dtype_size(src.dtype());
  if (dd == sd) {
    if (dst.dtype() == src.dtype() && dst.is_contiguous() && src.is_contiguous() && src.shape() == shape) {
      if (dst.raw_data() == src.raw_data()) return;
      if (dst.storage() == src.storage()) {  // may overlap: the CPU's memmove semantics, through a copy
        const Tensor staged = empty(shape, src.options());
        cuda::copy_device_to_device(staged.raw_data(), dd.index, src.raw_data(), sd.index, nbytes);
        cuda::copy_device_to_device(dst.raw_data(), dd.index, staged.raw_data(), sd.index, nbytes);
        return;
      }
      cuda::copy_device_to_device(dst.raw_data(), dd.index, src.raw_data(), sd.index, nbytes);
      return;
    }
    const Strides src_strides = broadcast_strides(src.shape(), src.strides(), shape);
    cuda::copy_strided(dst.raw_data(), dst.dtype(), dst.strides().data(), src.raw_data(), src.dtype(),
                       src_strides.data(), shape.data(), static_cast<int>(dst.dim()), dd.index);
    return;
  }
  Tensor dense = src;  // (shape) contiguous, src's dtype, on src's device
  if (!src.is_contiguous() || src.shape() != shape) {
    dense = empty(shape, TensorOptions(src.dtype()).with_device(sd));
    copy_(dense, src);
  }
  Tensor landing = dst;  // (shape) contiguous, src's dtype, on dst's device
  if (!dst.is_contiguous() || dst.dtype() != src.dtype())
    landing = empty(shape, TensorOptions(src.dtype()).with_device(dd));
  if (sd.is_cpu()) cuda::copy_host_to_device(landing.raw_data(), dense.raw_data(), nbytes, dd.index);
  else if (dd.is_cpu()) cuda::copy_device_to_host(landing.raw_data(), dense.raw_data(), nbytes, sd.index);
  else cuda::copy_device_to_device(landing.raw_data(), dd.index, dense.raw_data(), sd.index, nbytes);
  if (!landing.is_same(dst)) copy_(dst, landing);
}

}  // namespace
#endif

void copy_(const Tensor& dst, const Tensor& src) {
  profile::Scope scope(profile::Kind::Copy);
  if (dst.device().is_cpu() && src.device().is_cpu()) return cpu::copy_(dst, src);
#if TL_WITH_CUDA
  cuda_copy_(dst, src);
#else
  no_device_kernel("copy_", dst.device().is_cpu() ? src.device() : dst.device());
#endif
}
void fill_(const Tensor& dst, double value) {
  profile::Scope scope(profile::Kind::Copy);
  TL_DISPATCH("fill_", fill_(dst, value), &dst);
}
void fill_random_(const Tensor& dst, Distribution d, double a, double b, uint64_t seed, uint64_t offset) {
  TL_DISPATCH("random", fill_random_(dst, d, a, b, seed, offset), &dst);
}

const char* unary_name(Unary op) {
  static const char* names[] = {"neg",  "exp",     "log",  "sqrt", "abs",  "pow",   "clamp",
                                "sigmoid", "tanh", "relu", "gelu", "silu", "pysilu"};
  return names[static_cast<int>(op)];
}
const char* binary_name(Binary op) {
  static const char* names[] = {"add", "sub", "mul", "div", "eq", "gt", "lt", "ge", "le",
                                "binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits_backward"};
  return names[static_cast<int>(op)];
}

Tensor unary(Unary op, const Tensor& x, UnaryParams p) {
  profile::Scope scope(profile::Kind::Activation);
  TL_DISPATCH(unary_name(op), unary(op, x, p), &x);
}
Tensor unary_backward(Unary op, const Tensor& x, const Tensor& grad, UnaryParams p) {
  profile::Scope scope(profile::Kind::Activation);
  TL_DISPATCH(unary_name(op), unary_backward(op, x, grad, p), &x, &grad);
}
Tensor binary(Binary op, const Tensor& a, const Tensor& b, const Tensor& out) {
  profile::Scope scope(profile::Kind::Elementwise);
  if (a.dtype() != b.dtype())
    throw_op_error(binary_name(op), std::string("dtype mismatch: ") + dtype_name(a.dtype()) + " " +
                                        shape_str(a.shape()) + " and " + dtype_name(b.dtype()) + " " +
                                        shape_str(b.shape()));
  if (out.defined() &&
      (out.dtype() != a.dtype() || out.shape() != broadcast_shapes(a.shape(), b.shape(), binary_name(op))))
    throw_op_error(binary_name(op), "output " + std::string(dtype_name(out.dtype())) + " " + shape_str(out.shape()) +
                                        " does not match the inputs " + dtype_name(a.dtype()) + " " +
                                        shape_str(a.shape()) + " and " + shape_str(b.shape()));
  TL_DISPATCH(binary_name(op), binary(op, a, b, out), &a, &b, &out);
}
Tensor reduce(Reduce op, const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  profile::Scope scope(profile::Kind::Reduction);
  TL_DISPATCH("reduce", reduce(op, x, dims, keepdim), &x);
}
ReducePlan reduce_plan(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  const int64_t nd = x.dim();
  std::vector<bool> reduced(static_cast<size_t>(nd), dims.empty());
  for (int64_t d : dims) reduced[static_cast<size_t>(d)] = true;
  ReducePlan p;
  for (int64_t d = 0; d < nd; ++d) {
    if (reduced[static_cast<size_t>(d)]) {
      p.inner_shape.push_back(x.size(d));
      p.inner_strides.push_back(x.stride(d));
      if (keepdim) p.out_shape.push_back(1);
    } else {
      p.outer_shape.push_back(x.size(d));
      p.outer_strides.push_back(x.stride(d));
      p.out_shape.push_back(x.size(d));
    }
  }
  p.count = numel_of(p.inner_shape);
  return p;
}

Tensor bmm(const Tensor& a, const Tensor& b) { TL_DISPATCH("matmul", bmm(a, b), &a, &b); }

// Multiply-adds x 2 of a convolution with input x_shape, weight w_shape and output spatial size out_hw.
static double conv_flops(const Shape& x_shape, const Shape& w_shape, int64_t out_hw) {
  return 2.0 * static_cast<double>(x_shape[0]) * static_cast<double>(numel_of(w_shape)) * static_cast<double>(out_hw);
}

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, Conv2dParams p) {
  const int64_t ho = (x.size(2) + 2 * p.pad_h - w.size(2)) / p.stride_h + 1;
  const int64_t wo = (x.size(3) + 2 * p.pad_w - w.size(3)) / p.stride_w + 1;
  profile::Scope scope(profile::Kind::ConvForward, conv_flops(x.shape(), w.shape(), ho * wo));
  TL_DISPATCH("conv2d", conv2d(x, w, bias, p), &x, &w, &bias);
}
Tensor conv2d_backward_input(const Tensor& grad, const Tensor& w, const Shape& x_shape, Conv2dParams p) {
  profile::Scope scope(profile::Kind::ConvBackwardData, conv_flops(x_shape, w.shape(), grad.size(2) * grad.size(3)));
  TL_DISPATCH("conv2d_backward_input", conv2d_backward_input(grad, w, x_shape, p), &grad, &w);
}
Tensor conv2d_backward_weight(const Tensor& grad, const Tensor& x, const Shape& w_shape, Conv2dParams p) {
  profile::Scope scope(profile::Kind::ConvBackwardWeight, conv_flops(x.shape(), w_shape, grad.size(2) * grad.size(3)));
  TL_DISPATCH("conv2d_backward_weight", conv2d_backward_weight(grad, x, w_shape, p), &grad, &x);
}

std::pair<Tensor, Tensor> max_pool2d(const Tensor& x, Pool2dParams p) {
  profile::Scope scope(profile::Kind::Pooling);
  TL_DISPATCH("max_pool2d", max_pool2d(x, p), &x);
}
Tensor max_pool2d_backward(const Tensor& grad, const Tensor& indices, const Shape& x_shape, Pool2dParams p) {
  profile::Scope scope(profile::Kind::Pooling);
  TL_DISPATCH("max_pool2d_backward", max_pool2d_backward(grad, indices, x_shape, p), &grad, &indices);
}

BatchNormOutput batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                           const Tensor& running_var, bool training, double momentum, double eps, Activation act) {
  profile::Scope scope(profile::Kind::BatchNorm);
  TL_DISPATCH("batch_norm", batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps, act), &x,
              &weight, &bias, &running_mean, &running_var);
}
BatchNormGrads batch_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight, const Tensor& bias,
                                   const Tensor& mean, const Tensor& invstd, bool training, Activation act) {
  profile::Scope scope(profile::Kind::BatchNorm);
  TL_DISPATCH("batch_norm_backward", batch_norm_backward(grad, x, weight, bias, mean, invstd, training, act), &grad,
              &x, &weight, &bias, &mean, &invstd);
}

Tensor nll_loss(const Tensor& logp, const Tensor& target) {
  TL_DISPATCH("nll_loss", nll_loss(logp, target), &logp, &target);
}
Tensor nll_loss_backward(const Tensor& grad, const Tensor& logp, const Tensor& target) {
  TL_DISPATCH("nll_loss_backward", nll_loss_backward(grad, logp, target), &grad, &logp, &target);
}

#undef TL_DISPATCH

}  // namespace tl::kernels

namespace tl {

const char* activation_name(Activation a) {
  static const char* names[] = {"none", "relu", "gelu", "silu", "pysilu"};
  return names[static_cast<int>(a)];
}

}  // namespace tl
