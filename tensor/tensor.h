#pragma once
// Tensor: a view (shape, strides, offset, dtype) over a shared Storage, plus the autograd slots
// (requires_grad, the leaf's .grad, the producing node). A Tensor is a cheap handle: copies share
// the same TensorImpl, as `torch.Tensor` objects do.
//
// The differentiable methods (views, contiguous, clone, to, reductions, backward) are declared here
// and defined in autograd/tensor_methods.cpp, which forwards to the ops of autograd/ops.h.
#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "tensor/device.h"
#include "tensor/dtype.h"
#include "tensor/shape.h"
#include "tensor/storage.h"

namespace tl {

struct Node;  // autograd/node.h
class Tensor;

struct TensorImpl {
  StoragePtr storage;
  Shape shape;
  Strides strides;
  int64_t offset = 0;  // in elements
  DType dtype = kFloat32;

  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;  // accumulated gradient of a leaf
  std::shared_ptr<Node> grad_fn;     // the op that produced this tensor (null for leaves)
};

struct TensorOptions {
  DType dtype = kFloat32;
  Device device = Device::cpu();
  bool requires_grad = false;

  TensorOptions() = default;
  TensorOptions(DType d) : dtype(d) {}    // NOLINT: implicit, as in torch::zeros(shape, torch::kFloat64)
  TensorOptions(Device d) : device(d) {}  // NOLINT
  TensorOptions with_dtype(DType d) const { auto o = *this; o.dtype = d; return o; }
  TensorOptions with_device(Device d) const { auto o = *this; o.device = d; return o; }
  TensorOptions with_requires_grad(bool r = true) const { auto o = *this; o.requires_grad = r; return o; }
};

class Tensor {
 public:
  Tensor() = default;  // undefined: holds nothing; defined() is false
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool is_same(const Tensor& o) const { return impl_ == o.impl_; }

  // ---- metadata
  const Shape& shape() const { return checked()->shape; }
  int64_t size(int64_t dim) const;
  const Strides& strides() const { return checked()->strides; }
  int64_t stride(int64_t dim) const;
  int64_t offset() const { return checked()->offset; }
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  int64_t numel() const { return numel_of(shape()); }
  DType dtype() const { return checked()->dtype; }
  Device device() const { return checked()->storage->device(); }
  const StoragePtr& storage() const { return checked()->storage; }
  TensorOptions options() const;
  bool is_contiguous() const;

  // ---- raw data (CPU tensors). Pointer to the first element (offset applied); checks the dtype.
  template <typename T> T* data_ptr() const;
  void* raw_data() const;

  // ---- values
  double item() const;                              // a one-element tensor's value
  template <typename T> T item() const { return static_cast<T>(item()); }
  template <typename T> std::vector<T> to_vector() const;  // row-major, any strides, any device
  std::string str() const;                          // printed as torch prints

  // ---- autograd
  bool requires_grad() const { return checked()->requires_grad; }
  Tensor& requires_grad_(bool r = true);  // leaves only
  Tensor grad() const;                    // undefined until a backward reached this leaf
  void set_grad(const Tensor& g);         // replaces (or clears, with an undefined tensor) the gradient
  bool is_leaf() const { return checked()->grad_fn == nullptr; }
  const std::shared_ptr<Node>& grad_fn() const { return checked()->grad_fn; }
  // Backpropagates from this tensor. With no gradient it must hold one element (a loss).
  void backward(const Tensor& gradient = Tensor(), bool retain_graph = false) const;
  Tensor detach() const;  // same storage, no history, requires_grad false

  // ---- copies and conversions (differentiable)
  Tensor contiguous() const;  // *this when already contiguous
  Tensor clone() const;       // always a new contiguous storage
  Tensor to(DType dtype) const;
  Tensor to(Device device) const;

  // ---- views: never copy (differentiable). reshape copies only when a view is impossible.
  Tensor view(const Shape& shape) const;
  Tensor reshape(const Shape& shape) const;
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor t() const { return transpose(0, 1); }
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int64_t dim, int64_t index) const;  // removes `dim`
  Tensor expand(const Shape& shape) const;           // -1 keeps a size
  Tensor squeeze() const;
  Tensor squeeze(int64_t dim) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;

  // ---- reductions (differentiable); empty dims = all dims
  Tensor sum(const std::vector<int64_t>& dims = {}, bool keepdim = false) const;
  Tensor mean(const std::vector<int64_t>& dims = {}, bool keepdim = false) const;
  Tensor max(const std::vector<int64_t>& dims = {}, bool keepdim = false) const;

  // ---- in-place, not recorded by autograd (initializers, optimizers). Refused on a leaf that
  // requires grad while grad mode is on, as in PyTorch.
  Tensor& fill_(double value);
  Tensor& zero_() { return fill_(0.0); }
  Tensor& copy_(const Tensor& src);  // src broadcast to this shape, cast to this dtype

 private:
  TensorImpl* checked() const;
  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// ---- creation
Tensor empty(const Shape& shape, TensorOptions opts = {});
Tensor zeros(const Shape& shape, TensorOptions opts = {});
Tensor ones(const Shape& shape, TensorOptions opts = {});
Tensor full(const Shape& shape, double value, TensorOptions opts = {});
Tensor scalar_tensor(double value, TensorOptions opts = {});  // 0-d
Tensor arange(double start, double end, double step = 1.0, TensorOptions opts = {});
inline Tensor arange(double end, TensorOptions opts = {}) { return arange(0.0, end, 1.0, opts); }
// Copies `values` (row-major) into a new tensor of `shape`; the dtype is the C++ type's unless
// opts say otherwise (from_vector<double>(...) is float64).
template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, TensorOptions opts = TensorOptions(dtype_of<T>::value));
// Nested-brace literal, float32 unless opts say otherwise: tensor({1, 2, 3}), 1-d only.
Tensor tensor(std::initializer_list<double> values, TensorOptions opts = {});
Tensor empty_like(const Tensor& t);
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);

// A new view of `base`'s storage with the given geometry, no autograd history. Internal building
// block of the view ops; checks that the view stays inside the storage.
Tensor make_view(const Tensor& base, const Shape& shape, const Strides& strides, int64_t offset);

// Throws std::invalid_argument "<op>: <what>" (dtype, device or shape mismatches use this).
[[noreturn]] void throw_op_error(const char* op, const std::string& what);

}  // namespace tl
