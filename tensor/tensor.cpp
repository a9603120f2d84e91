#include "tensor/tensor.h"

#include <cmath>
#include <cstring>
#include <iomanip>
#include <sstream>
#include <stdexcept>

#include "tensor/kernels.h"

namespace tl {

void throw_op_error(const char* op, const std::string& what) {
  throw std::invalid_argument(std::string(op) + ": " + what);
}

Device Device::parse(const std::string& s) {
  if (s == "cpu") return cpu();
  if (s == "cuda") return cuda(0);
  if (s.rfind("cuda:", 0) == 0) {
    const std::string idx = s.substr(5);
    if (!idx.empty() && idx.find_first_not_of("0123456789") == std::string::npos) return cuda(std::stoi(idx));
  }
  throw std::invalid_argument("Device: cannot parse '" + s + "' (expected cpu, cuda or cuda:N)");
}

TensorImpl* Tensor::checked() const {
  if (!impl_) throw std::logic_error("Tensor: use of an undefined tensor");
  return impl_.get();
}

int64_t Tensor::size(int64_t d) const { return shape()[wrap_dim(d, dim(), "size")]; }
int64_t Tensor::stride(int64_t d) const { return strides()[wrap_dim(d, dim(), "stride")]; }

TensorOptions Tensor::options() const {
  TensorOptions o(dtype());
  o.device = device();
  return o;
}

bool Tensor::is_contiguous() const {
  const Shape& s = shape();
  const Strides& st = strides();
  int64_t expected = 1;
  for (size_t i = s.size(); i-- > 0;) {
    if (s[i] == 1) continue;
    if (st[i] != expected) return false;
    expected *= s[i];
  }
  return true;
}

void* Tensor::raw_data() const {
  TensorImpl* p = checked();
  return static_cast<char*>(p->storage->data()) + p->offset * static_cast<int64_t>(dtype_size(p->dtype));
}

template <typename T>
T* Tensor::data_ptr() const {
  if (dtype() != dtype_of<T>::value)
    throw std::invalid_argument(std::string("data_ptr: tensor is ") + dtype_name(dtype()) + ", asked for " +
                                dtype_name(dtype_of<T>::value));
  return static_cast<T*>(raw_data());
}
template float* Tensor::data_ptr<float>() const;
template double* Tensor::data_ptr<double>() const;
template int64_t* Tensor::data_ptr<int64_t>() const;
template uint8_t* Tensor::data_ptr<uint8_t>() const;

double Tensor::item() const {
  if (numel() != 1)
    throw std::invalid_argument("item: tensor of shape " + shape_str(shape()) + " has " + std::to_string(numel()) +
                                " elements, expected 1");
  Tensor c = device().is_cpu() ? *this : to(Device::cpu());
  return dispatch_all(c.dtype(), [&]<typename T>() { return static_cast<double>(*c.data_ptr<T>()); });
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  Tensor src = *this;
  if (!device().is_cpu()) src = src.to(Device::cpu());
  Tensor c = empty(shape(), TensorOptions(dtype_of<T>::value));
  kernels::copy_(c, src.detach());
  const T* p = c.data_ptr<T>();
  return std::vector<T>(p, p + c.numel());
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;
template std::vector<uint8_t> Tensor::to_vector<uint8_t>() const;

// ---- printing: torch-like, summarized past 1000 elements (first and last 3 of each dim)
namespace {

void print_rec(std::ostream& os, const std::vector<double>& v, const Shape& s, const Strides& st, size_t d,
               int64_t base, bool summarize, bool integral, int indent) {
  if (s.empty()) {
    os << v[base];
    return;
  }
  os << "[";
  const int64_t n = s[d];
  for (int64_t i = 0; i < n; ++i) {
    if (summarize && n > 6 && i == 3) {
      os << (d + 1 == s.size() ? "..., " : "...,\n" + std::string(indent + 1, ' '));
      i = n - 3;
    }
    if (d + 1 == s.size()) {
      double x = v[base + i * st[d]];
      if (integral) os << static_cast<int64_t>(x);
      else os << std::setprecision(4) << std::fixed << x;
    } else {
      print_rec(os, v, s, st, d + 1, base + i * st[d], summarize, integral, indent + 1);
    }
    if (i + 1 < n) os << (d + 1 == s.size() ? ", " : ",\n" + std::string(indent + 1, ' '));
  }
  os << "]";
}

}  // namespace

std::string Tensor::str() const {
  if (!defined()) return "tensor(undefined)";
  std::vector<double> v = to_vector<double>();
  std::ostringstream os;
  os << "tensor(";
  const bool integral = !is_floating(dtype());
  if (dim() == 0) {
    if (integral) os << static_cast<int64_t>(v[0]);
    else os << std::setprecision(4) << std::fixed << v[0];
  } else {
    print_rec(os, v, shape(), contiguous_strides(shape()), 0, 0, numel() > 1000, integral, 7);
  }
  if (dtype() != kFloat32) os << ", dtype=" << dtype_name(dtype());
  if (!device().is_cpu()) os << ", device=" << device().str();
  if (requires_grad()) os << (grad_fn() ? ", grad_fn" : ", requires_grad=True");
  os << ")";
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.str(); }

// ---- creation
Tensor empty(const Shape& shape, TensorOptions opts) {
  for (int64_t d : shape)
    if (d < 0) throw std::invalid_argument("empty: negative size in shape " + shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  const size_t bytes = static_cast<size_t>(numel_of(shape)) * dtype_size(opts.dtype);
  try {
    impl->storage = std::make_shared<Storage>(bytes, opts.device);
  } catch (const std::bad_alloc&) {  // name what was being allocated, not only that it failed
    throw OutOfMemory("out of memory allocating " + bytes_str(bytes) + " for a " + dtype_name(opts.dtype) +
                      " tensor " + shape_str(shape) + " on " + opts.device.str());
  }
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = opts.dtype;
  if (opts.requires_grad && !is_floating(opts.dtype))
    throw std::invalid_argument(std::string("empty: only floating tensors can require grad, got ") +
                                dtype_name(opts.dtype));
  impl->requires_grad = opts.requires_grad;
  return Tensor(std::move(impl));
}

Tensor full(const Shape& shape, double value, TensorOptions opts) {
  const bool rg = opts.requires_grad;
  Tensor t = empty(shape, opts.with_requires_grad(false));
  kernels::fill_(t, value);
  t.impl()->requires_grad = rg;
  return t;
}
Tensor zeros(const Shape& shape, TensorOptions opts) { return full(shape, 0.0, opts); }
Tensor ones(const Shape& shape, TensorOptions opts) { return full(shape, 1.0, opts); }
Tensor scalar_tensor(double value, TensorOptions opts) { return full({}, value, opts); }
Tensor empty_like(const Tensor& t) { return empty(t.shape(), t.options()); }
Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.options()); }
Tensor ones_like(const Tensor& t) { return ones(t.shape(), t.options()); }

Tensor arange(double start, double end, double step, TensorOptions opts) {
  if (step == 0 || !std::isfinite(start) || !std::isfinite(end))
    throw std::invalid_argument("arange: step must be non-zero and bounds finite");
  const int64_t n = std::max<int64_t>(0, static_cast<int64_t>(std::ceil((end - start) / step)));
  Tensor cpu = empty({n}, TensorOptions(opts.dtype));
  dispatch_all(opts.dtype, [&]<typename T>() {
    T* p = cpu.data_ptr<T>();
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(start + static_cast<double>(i) * step);
  });
  Tensor r = opts.device.is_cpu() ? cpu : cpu.to(opts.device);
  r.impl()->requires_grad = opts.requires_grad && is_floating(opts.dtype);
  return r;
}

template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, TensorOptions opts) {
  if (static_cast<int64_t>(values.size()) != numel_of(shape))
    throw std::invalid_argument("from_vector: " + std::to_string(values.size()) + " values for shape " +
                                shape_str(shape) + " (" + std::to_string(numel_of(shape)) + " elements)");
  Tensor src = empty(shape, TensorOptions(dtype_of<T>::value));
  if (!values.empty()) std::memcpy(src.raw_data(), values.data(), values.size() * sizeof(T));
  Tensor r = src;
  if (opts.dtype != dtype_of<T>::value || !opts.device.is_cpu()) {
    r = empty(shape, TensorOptions(opts.dtype).with_device(opts.device));
    kernels::copy_(r, src);
  }
  r.impl()->requires_grad = opts.requires_grad;
  return r;
}
template Tensor from_vector(const std::vector<float>&, const Shape&, TensorOptions);
template Tensor from_vector(const std::vector<double>&, const Shape&, TensorOptions);
template Tensor from_vector(const std::vector<int64_t>&, const Shape&, TensorOptions);
template Tensor from_vector(const std::vector<uint8_t>&, const Shape&, TensorOptions);

Tensor tensor(std::initializer_list<double> values, TensorOptions opts) {
  return from_vector(std::vector<double>(values), {static_cast<int64_t>(values.size())}, opts);
}

Tensor make_view(const Tensor& base, const Shape& shape, const Strides& strides, int64_t offset) {
  // The view must stay inside the storage: check its lowest and highest element.
  int64_t lo = offset, hi = offset;
  bool empty_view = false;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 0) empty_view = true;
    if (shape[i] > 1) (strides[i] < 0 ? lo : hi) += strides[i] * (shape[i] - 1);
  }
  const int64_t cap = static_cast<int64_t>(base.storage()->nbytes() / dtype_size(base.dtype()));
  if (!empty_view && (lo < 0 || hi >= cap))
    throw std::out_of_range("view: shape " + shape_str(shape) + " with strides " + shape_str(strides) +
                            " and offset " + std::to_string(offset) + " reaches outside a storage of " +
                            std::to_string(cap) + " elements");
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.storage();
  impl->shape = shape;
  impl->strides = strides;
  impl->offset = offset;
  impl->dtype = base.dtype();
  return Tensor(std::move(impl));
}

}  // namespace tl
