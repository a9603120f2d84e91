// Elementwise kernels: fill, the random fill, and every unary, unary-backward and binary op, each
// running the functor of tensor/functors.h that the CPU loops run.
//
// Two loops per arity. When every operand is contiguous with the output's shape (most of a training
// step), elements go in 16-byte packs (float4 / double2 loads and stores) when the pointers allow it;
// otherwise one thread per element finds its operands' offsets with an OffsetCalc (strided views and
// broadcasting, stride 0).
#include "cuda/launch.cuh"
#include "cuda/ops.h"
#include "tensor/op_functors.h"
#include "tensor/random.h"

namespace tl::cuda {

namespace {

// Elements of a 16-byte pack.
template <typename T>
constexpr int kPack = 16 / static_cast<int>(sizeof(T));

template <typename T>
struct alignas(16) Pack {
  T v[kPack<T>];
};

// The functor call of each op kind, as one `operator()(args...)`.
template <typename F>
struct Forward1 {
  F f;
  template <typename T> TL_HD T operator()(T x) const { return f(x); }
};
template <typename F>
struct Backward1 {  // (x, grad) -> grad * f'(x)
  F f;
  template <typename T> TL_HD T operator()(T x, T g) const { return f.grad(x, g); }
};

// out[i] = f(in_0[i], ..., in_{K-1}[i]) for i in [0, n), all contiguous; packs of kPack<T> elements
// over [0, packs * kPack), the tail element by element by the first threads.
template <typename T, int K, typename F>
__global__ void map_contiguous_kernel(T* out, Ptrs<T, K> in, int64_t n, F f) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  constexpr int P = kPack<T>;
  const int64_t packs = n / P;
  if (i < packs) {
    Pack<T> a[K > 0 ? K : 1];
#pragma unroll
    for (int k = 0; k < K; ++k) a[k] = reinterpret_cast<const Pack<T>*>(in.p[k])[i];
    Pack<T> r;
#pragma unroll
    for (int j = 0; j < P; ++j) {
      if constexpr (K == 0) r.v[j] = f();
      else if constexpr (K == 1) r.v[j] = f(a[0].v[j]);
      else r.v[j] = f(a[0].v[j], a[1].v[j]);
    }
    reinterpret_cast<Pack<T>*>(out)[i] = r;
  }
  const int64_t t = packs * P + i;  // the tail: fewer than P elements
  if (i < P && t < n) {
    if constexpr (K == 0) out[t] = f();
    else if constexpr (K == 1) out[t] = f(in.p[0][t]);
    else out[t] = f(in.p[0][t], in.p[1][t]);
  }
}

// Same, unpacked, for pointers that are not 16-byte aligned.
template <typename T, int K, typename F>
__global__ void map_contiguous_scalar_kernel(T* out, Ptrs<T, K> in, int64_t n, F f) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  if constexpr (K == 0) out[i] = f();
  else if constexpr (K == 1) out[i] = f(in.p[0][i]);
  else out[i] = f(in.p[0][i], in.p[1][i]);
}

// Any strides: operand 0 is the output, 1..K the inputs.
template <typename T, int K, typename F>
__global__ void map_strided_kernel(T* out, Ptrs<T, K> in, int64_t n, OffsetCalc<K + 1> oc, F f) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  int64_t off[K + 1];
  oc.get(i, off);
  if constexpr (K == 0) out[off[0]] = f();
  else if constexpr (K == 1) out[off[0]] = f(in.p[0][off[1]]);
  else out[off[0]] = f(in.p[0][off[1]], in.p[1][off[2]]);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// out (new or given, any strides) = f(inputs...) with the inputs broadcast to out's shape.
template <typename T, int K, typename F>
void map(const Tensor& out, const std::array<const Tensor*, K>& inputs, F f, const char* what) {
  const int64_t n = out.numel();
  if (n == 0) return;
  const int device = out.device().index;
  cudaStream_t s = stream(device);
  DeviceGuard guard(device);
  Ptrs<T, K> in{};
  bool dense = out.is_contiguous(), aligned = aligned16(out.raw_data());
  for (int k = 0; k < K; ++k) {
    in.p[k] = inputs[k]->template data_ptr<T>();
    dense = dense && inputs[k]->is_contiguous() && inputs[k]->shape() == out.shape();
    aligned = aligned && aligned16(in.p[k]);
  }
  T* o = out.template data_ptr<T>();
  if (dense && aligned) {
    const int64_t packs = n / kPack<T>;
    map_contiguous_kernel<T, K, F><<<blocks_for(std::max<int64_t>(packs, kPack<T>)), kThreads, 0, s>>>(o, in, n, f);
  } else if (dense) {
    map_contiguous_scalar_kernel<T, K, F><<<blocks_for(n), kThreads, 0, s>>>(o, in, n, f);
  } else {
    std::array<Strides, K> bs;
    std::array<const int64_t*, K + 1> st{};
    st[0] = out.strides().data();
    for (int k = 0; k < K; ++k) {
      bs[k] = broadcast_strides(inputs[k]->shape(), inputs[k]->strides(), out.shape());
      st[k + 1] = bs[k].data();
    }
    const OffsetCalc<K + 1> oc = make_offset_calc<K + 1>(out.shape(), st, what);
    map_strided_kernel<T, K, F><<<blocks_for(n), kThreads, 0, s>>>(o, in, n, oc, f);
  }
  check_launch();
}

template <typename T>
struct Constant {
  T v;
  TL_HD T operator()() const { return v; }
};

template <typename T>
__global__ void random_kernel(T* out, int64_t n, uint64_t seed, uint64_t offset, bool normal, double a, double b) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = static_cast<T>(philox::sample(seed, offset, static_cast<uint64_t>(i), normal, a, b));
}

}  // namespace

Tensor contiguous_copy(const Tensor& t) {
  if (t.is_contiguous()) return t;
  Tensor c = empty(t.shape(), TensorOptions(t.dtype()).with_device(t.device()));
  kernels::copy_(c, t);
  return c;
}

void fill_(const Tensor& dst, double value) {
  dispatch_all(dst.dtype(), [&]<typename T>() { map<T, 0>(dst, {}, Constant<T>{static_cast<T>(value)}, "fill_"); });
}

void fill_random_(const Tensor& dst, kernels::Distribution d, double a, double b, uint64_t seed, uint64_t offset) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  const int device = dst.device().index;
  cudaStream_t s = stream(device);
  DeviceGuard guard(device);
  dispatch_floating(dst.dtype(), "random", [&]<typename T>() {
    random_kernel<T><<<blocks_for(n), kThreads, 0, s>>>(dst.data_ptr<T>(), n, seed, offset,
                                                        d == kernels::Distribution::Normal, a, b);
  });
  check_launch();
}

Tensor unary(Unary op, const Tensor& x, UnaryParams p) {
  Tensor out = empty(x.shape(), x.options());
  dispatch_floating(x.dtype(), kernels::unary_name(op), [&]<typename T>() {
    kernels::with_unary(op, p, [&](auto f) {
      map<T, 1>(out, {&x}, Forward1<decltype(f)>{f}, kernels::unary_name(op));
    });
  });
  return out;
}

Tensor unary_backward(Unary op, const Tensor& x, const Tensor& grad, UnaryParams p) {
  Tensor out = empty(x.shape(), x.options());
  dispatch_floating(x.dtype(), kernels::unary_name(op), [&]<typename T>() {
    kernels::with_unary(op, p, [&](auto f) {
      map<T, 2>(out, {&x, &grad}, Backward1<decltype(f)>{f}, kernels::unary_name(op));
    });
  });
  return out;
}

Tensor binary(Binary op, const Tensor& a, const Tensor& b, const Tensor& out_in) {
  const Tensor out =
      out_in.defined() ? out_in : empty(broadcast_shapes(a.shape(), b.shape(), kernels::binary_name(op)), a.options());
  dispatch_floating(a.dtype(), kernels::binary_name(op), [&]<typename T>() {
    kernels::with_binary(op, [&](auto f) { map<T, 2>(out, {&a, &b}, f, kernels::binary_name(op)); });
  });
  return out;
}

}  // namespace tl::cuda
