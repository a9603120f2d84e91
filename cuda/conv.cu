// Matrix products on cuBLAS: bmm, and the convolution by im2col + GEMM with its two gradients.
//
// cuBLAS is column-major; our matrices are row-major. A row-major (R, C) matrix with row stride ld is
// the column-major (C, R) matrix with the same ld, its transpose. So the row-major product
// C = A B is computed as the column-major C^T = B^T A^T, B first.
//
// Convolution, for a chunk of nb images at once (x and the output contiguous, NCHW):
//   forward:          out[n] (O, L)       = W (O, K) @ col[n] (K, L)          one strided-batched GEMM
//   backward input:   colgrad[n] (K, L)   = W^T @ g[n] (O, L); dx[n] = col2im(colgrad[n])
//   backward weight:  dW (O, K)          (+)= G (O, nb*L) @ Col^T (nb*L, K)  one GEMM, beta 0 for the
//                                          first chunk and 1 after
// with K = C*kh*kw and L = Ho*Wo (cuda/conv_index.h). A 1x1 convolution with stride 1 and no padding
// has col[n] == x[n]: no im2col in the forward and the input gradient. The weight gradient puts a
// chunk's images side by side: Col is the im2col of every image of the chunk laid out (K, nb, L) (for
// a pointwise convolution x permuted from (nb, C, L) to (C, nb, L)) and G the chunk's gradient
// permuted from (nb, O, L) to (O, nb, L), so the sum over the images is the GEMM's own inner sum
// (conv_index.h has both layouts). The column matrices of a chunk live in one per-device workspace that
// grows to the largest request and is then reused by every convolution (all work on a device is on
// its one stream, so consecutive users are ordered); the chunk is as many images as fit in
// kWorkspaceElems, so a train step makes no allocation beyond its first and runs no GEMM per image.
#include <algorithm>
#include <mutex>
#include <vector>

#include "cuda/allocator.h"
#include "cuda/conv_index.h"
#include "cuda/launch.cuh"
#include "cuda/ops.h"
#include "tensor/precision.h"

namespace tl::cuda {

namespace {

// The largest column buffer a convolution chunk uses, in elements (256 MiB of float32). A chunk is
// at least one image, so one image's columns may exceed it.
constexpr int64_t kWorkspaceElems = int64_t{1} << 26;

// One strided-batched GEMM, column-major: C_i (m, n) = op(A_i) (m, k) @ op(B_i) (k, n) + beta C_i for
// i < batch, A_i = A + i * stride_a (and so on; a stride of 0 reuses the operand).
template <typename T>
void gemm(int device, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* A, int64_t lda,
          int64_t stride_a, const T* B, int64_t ldb, int64_t stride_b, T beta, T* C, int64_t ldc, int64_t stride_c,
          int64_t batch) {
  for (int64_t v : {m, n, k, lda, ldb, ldc, batch})
    if (v > INT_MAX)
      throw std::runtime_error("cuda: a GEMM dimension of " + std::to_string(v) + " is more than cuBLAS takes (int)");
  cublasHandle_t h = cublas_handle(device);
  DeviceGuard guard(device);
  const T alpha = T(1);
  constexpr bool is_float = std::is_same_v<T, float>;
  const cudaDataType_t type = is_float ? CUDA_R_32F : CUDA_R_64F;
  const cublasComputeType_t compute =
      !is_float ? CUBLAS_COMPUTE_64F : (allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F);
  TL_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      h, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, static_cast<int>(m),
      static_cast<int>(n), static_cast<int>(k), &alpha, A, type, static_cast<int>(lda), stride_a, B, type,
      static_cast<int>(ldb), stride_b, &beta, C, type, static_cast<int>(ldc), stride_c, static_cast<int>(batch),
      compute, CUBLAS_GEMM_DEFAULT));
}

// ---- the per-device workspace
struct Workspace {
  std::mutex mu;
  std::vector<void*> ptr;
  std::vector<size_t> bytes;
};

Workspace& workspaces() {
  static Workspace* w = new Workspace();  // never destroyed, like the allocator
  return *w;
}

// A device buffer of at least nbytes, valid until the next call for the same device. One host thread
// per device runs convolutions (the trainer's): two would share the buffer. Growing frees the
// old buffer; that is stream-ordered (allocator.h), so kernels still queued on it finish first.
void* workspace(int device, size_t nbytes) {
  Workspace& w = workspaces();
  std::lock_guard<std::mutex> lock(w.mu);
  const size_t d = static_cast<size_t>(device);
  if (w.ptr.size() <= d) {
    w.ptr.resize(d + 1, nullptr);
    w.bytes.resize(d + 1, 0);
  }
  if (w.bytes[d] < nbytes) {
    release(w.ptr[d], device);
    w.ptr[d] = nullptr;
    w.bytes[d] = 0;
    w.ptr[d] = allocate(nbytes, device);
    w.bytes[d] = nbytes;
  }
  return w.ptr[d];
}

ConvGeometry geometry(const Shape& x_shape, const Shape& w_shape, Conv2dParams p) {
  ConvGeometry g{x_shape[1], x_shape[2], x_shape[3], w_shape[2], w_shape[3], p.stride_h, p.stride_w,
                 p.pad_h,    p.pad_w,    0,          0};
  g.Ho = (g.H + 2 * g.ph - g.kh) / g.sh + 1;
  g.Wo = (g.W + 2 * g.pw - g.kw) / g.sw + 1;
  return g;
}

// Checks that the output (or its gradient) has the geometry's size: a mismatch would make the kernels
// index outside the buffers.
void check_out(const char* op, const ConvGeometry& g, const Shape& out, const Shape& x_shape, const Shape& w_shape) {
  if (out[2] != g.Ho || out[3] != g.Wo)
    throw std::logic_error(std::string(op) + ": output " + shape_str(out) + " does not match input " +
                           shape_str(x_shape) + " and weight " + shape_str(w_shape));
}

// Images per chunk: as many as keep the columns within kWorkspaceElems, at least one.
int64_t chunk_images(const ConvGeometry& g, int64_t N) {
  if (g.pointwise()) return N;
  return std::clamp<int64_t>(kWorkspaceElems / std::max<int64_t>(g.K() * g.L(), 1), 1, std::max<int64_t>(N, 1));
}

template <typename T>
__global__ void im2col_kernel(const T* x, T* col, ConvGeometry g, int64_t total) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int64_t KL = g.K() * g.L();
  const int64_t n = i / KL, rl = i % KL;
  const int64_t src = im2col_source(g, rl / g.L(), rl % g.L());
  col[i] = src < 0 ? T(0) : x[n * g.image() + src];
}

template <typename T>
__global__ void col2im_kernel(const T* col, T* dx, ConvGeometry g, int64_t total) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int64_t n = i / g.image();
  dx[i] = col2im_gather(g, col + n * g.K() * g.L(), i % g.image());
}

// The column matrices (nb, K, L) of the nb images at xn, as the GEMMs read them: the images themselves
// for a pointwise convolution, else im2col into `col` (queued on s).
template <typename T>
const T* columns(const ConvGeometry& g, const T* xn, T* col, int64_t nb, int device, cudaStream_t s) {
  if (g.pointwise()) return xn;
  const int64_t total = nb * g.K() * g.L();
  DeviceGuard guard(device);
  im2col_kernel<T><<<blocks_for(total), kThreads, 0, s>>>(xn, col, g, total);
  check_launch();
  return col;
}

// out (N, O, L) += bias[o]
template <typename T>
__global__ void add_bias_kernel(T* out, const T* bias, int64_t O, int64_t L, int64_t total) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < total) out[i] += bias[(i / L) % O];
}

// Col (K, nb*L) of the chunk's images x (nb, C, H, W): the weight gradient's column layout.
template <typename T>
__global__ void im2col_batched_kernel(const T* x, T* col, ConvGeometry g, int64_t nb, int64_t total) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int64_t src = batched_im2col_source(g, nb, i);
  col[i] = src < 0 ? T(0) : x[src];
}

// G (O, nb*L) of the chunk's gradient gr (nb, O, L).
template <typename T>
__global__ void permute_grad_kernel(const T* gr, T* out, int64_t O, int64_t L, int64_t nb, int64_t total) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < total) out[i] = gr[batched_grad_source(O, L, nb, i)];
}

// The leading dimension of a (rows, cols) matrix with strides (s_row, s_col) read row-major (s_col 1)
// or column-major (s_row 1); 0 when it is neither. A dim of 1 makes its stride irrelevant.
struct MatrixView {
  bool row_major;
  int64_t ld;
};
bool matrix_view(int64_t rows, int64_t cols, int64_t s_row, int64_t s_col, MatrixView& v) {
  if ((s_col == 1 || cols == 1) && (s_row >= cols || rows == 1)) {
    v = {true, rows == 1 ? std::max<int64_t>(cols, 1) : s_row};
    return true;
  }
  if ((s_row == 1 || rows == 1) && (s_col >= rows || cols == 1)) {
    v = {false, cols == 1 ? std::max<int64_t>(rows, 1) : s_col};
    return true;
  }
  return false;
}

}  // namespace

// a (B, M, K) @ b (B, K, N) -> (B, M, N). Row-major C = A B is column-major C^T (N, M) = B^T A^T:
// a row-major operand is its own transpose in column-major terms (no op), a column-major one needs T.
Tensor bmm(const Tensor& a_in, const Tensor& b_in) {
  const int64_t B = a_in.size(0), M = a_in.size(1), K = a_in.size(2), N = b_in.size(2);
  Tensor out = empty({B, M, N}, a_in.options());
  if (out.numel() == 0) return out;
  if (K == 0) {
    fill_(out, 0.0);
    return out;
  }
  MatrixView va{}, vb{};
  Tensor a = a_in, b = b_in;
  // A layout cuBLAS cannot take (no unit stride, or a leading dimension beyond its int) is copied.
  if (!matrix_view(M, K, a.stride(1), a.stride(2), va) || va.ld > INT_MAX) {
    a = contiguous_copy(a_in);
    matrix_view(M, K, a.stride(1), a.stride(2), va);
  }
  if (!matrix_view(K, N, b.stride(1), b.stride(2), vb) || vb.ld > INT_MAX) {
    b = contiguous_copy(b_in);
    matrix_view(K, N, b.stride(1), b.stride(2), vb);
  }
  const int64_t sa = B == 1 ? 0 : a.stride(0), sb = B == 1 ? 0 : b.stride(0);
  dispatch_floating(a.dtype(), "matmul", [&]<typename T>() {
    gemm<T>(out.device().index, !vb.row_major, !va.row_major, N, M, K, b.data_ptr<T>(), vb.ld, sb, a.data_ptr<T>(),
            va.ld, sa, T(0), out.data_ptr<T>(), N, M * N, B);
  });
  return out;
}

// x (N, C, H, W), w (O, C, kh, kw), bias (O) or undefined -> (N, O, Ho, Wo)
Tensor conv2d(const Tensor& x_in, const Tensor& w_in, const Tensor& bias_in, Conv2dParams p) {
  const Tensor x = contiguous_copy(x_in), w = contiguous_copy(w_in);
  const ConvGeometry g = geometry(x.shape(), w.shape(), p);
  const int64_t N = x.size(0), O = w.size(0), K = g.K(), L = g.L();
  Tensor out = empty({N, O, g.Ho, g.Wo}, x.options());
  if (out.numel() == 0) return out;
  const int device = x.device().index;
  cudaStream_t s = stream(device);
  const int64_t chunk = chunk_images(g, N);
  dispatch_floating(x.dtype(), "conv2d", [&]<typename T>() {
    T* col = g.pointwise() || K == 0 ? nullptr : static_cast<T*>(workspace(device, sizeof(T) * chunk * K * L));
    if (K == 0) fill_(out, 0.0);  // no input channels or an empty kernel: the sum is empty (cuBLAS needs k >= 1)
    for (int64_t n0 = 0; K > 0 && n0 < N; n0 += chunk) {
      const int64_t nb = std::min(chunk, N - n0);
      const T* cols = columns(g, x.data_ptr<T>() + n0 * g.image(), col, nb, device, s);
      // out[n]^T (L, O) = col[n]^T (L, K) @ W^T (K, O)
      gemm<T>(device, false, false, L, O, K, cols, L, K * L, w.data_ptr<T>(), K, 0, T(0),
              out.data_ptr<T>() + n0 * O * L, L, O * L, nb);
    }
    if (bias_in.defined()) {
      const Tensor bias = contiguous_copy(bias_in);
      DeviceGuard guard(device);
      add_bias_kernel<T><<<blocks_for(out.numel()), kThreads, 0, s>>>(out.data_ptr<T>(), bias.data_ptr<T>(), O, L,
                                                                      out.numel());
      check_launch();
    }
  });
  return out;
}

// grad (N, O, Ho, Wo), w (O, C, kh, kw) -> dx (N, C, H, W)
Tensor conv2d_backward_input(const Tensor& grad_in, const Tensor& w_in, const Shape& x_shape, Conv2dParams p) {
  const Tensor gr = contiguous_copy(grad_in), w = contiguous_copy(w_in);
  const ConvGeometry g = geometry(x_shape, w.shape(), p);
  check_out("conv2d_backward_input", g, gr.shape(), x_shape, w.shape());
  const int64_t N = x_shape[0], O = w.size(0), K = g.K(), L = g.L();
  Tensor dx = empty(x_shape, gr.options());
  if (dx.numel() == 0) return dx;
  if (L == 0 || O == 0 || K == 0) {
    fill_(dx, 0.0);
    return dx;
  }
  const int device = gr.device().index;
  cudaStream_t s = stream(device);
  const int64_t chunk = chunk_images(g, N);
  dispatch_floating(gr.dtype(), "conv2d_backward_input", [&]<typename T>() {
    T* col = g.pointwise() ? nullptr : static_cast<T*>(workspace(device, sizeof(T) * chunk * K * L));
    for (int64_t n0 = 0; n0 < N; n0 += chunk) {
      const int64_t nb = std::min(chunk, N - n0);
      T* dxn = dx.data_ptr<T>() + n0 * g.image();
      // colgrad[n]^T (L, K) = g[n]^T (L, O) @ W (O, K); W row-major (O, K) is column-major (K, O): op T.
      gemm<T>(device, false, true, L, K, O, gr.data_ptr<T>() + n0 * O * L, L, O * L, w.data_ptr<T>(), K, 0, T(0),
              g.pointwise() ? dxn : col, L, K * L, nb);
      if (!g.pointwise()) {
        DeviceGuard guard(device);
        col2im_kernel<T><<<blocks_for(nb * g.image()), kThreads, 0, s>>>(col, dxn, g, nb * g.image());
        check_launch();
      }
    }
  });
  return dx;
}

// grad (N, O, Ho, Wo), x (N, C, H, W) -> dW (O, C, kh, kw)
Tensor conv2d_backward_weight(const Tensor& grad_in, const Tensor& x_in, const Shape& w_shape, Conv2dParams p) {
  const Tensor gr = contiguous_copy(grad_in), x = contiguous_copy(x_in);
  const ConvGeometry g = geometry(x.shape(), w_shape, p);
  check_out("conv2d_backward_weight", g, gr.shape(), x.shape(), w_shape);
  const int64_t N = x.size(0), O = w_shape[0], K = g.K(), L = g.L();
  Tensor dw = empty(w_shape, x.options());
  if (dw.numel() == 0) return dw;
  if (N == 0 || L == 0) {
    fill_(dw, 0.0);
    return dw;
  }
  const int device = x.device().index;
  cudaStream_t s = stream(device);
  // Images per chunk: Col (K, nb*L) and G (O, nb*L) each within kWorkspaceElems, at least one image.
  const int64_t chunk = std::clamp<int64_t>(kWorkspaceElems / std::max<int64_t>(std::max(K, O) * L, 1), 1, N);
  // G of a chunk of more than one image; one image's gradient (O, L) already is its G.
  Tensor gperm = chunk > 1 ? empty({O, chunk * L}, x.options()) : Tensor();
  dispatch_floating(x.dtype(), "conv2d_backward_weight", [&]<typename T>() {
    T* col = g.pointwise() && chunk == 1 ? nullptr : static_cast<T*>(workspace(device, sizeof(T) * chunk * K * L));
    DeviceGuard guard(device);
    for (int64_t n0 = 0; n0 < N; n0 += chunk) {
      const int64_t nb = std::min(chunk, N - n0), nL = nb * L;
      const T* xn = x.data_ptr<T>() + n0 * g.image();
      const T* gn = gr.data_ptr<T>() + n0 * O * L;
      const T* cols = xn;  // one image of a pointwise convolution: Col (C, L) is the image itself
      if (!(g.pointwise() && nb == 1)) {
        im2col_batched_kernel<T><<<blocks_for(K * nL), kThreads, 0, s>>>(xn, col, g, nb, K * nL);
        check_launch();
        cols = col;
      }
      if (nb > 1) {
        permute_grad_kernel<T><<<blocks_for(O * nL), kThreads, 0, s>>>(gn, gperm.data_ptr<T>(), O, L, nb, O * nL);
        check_launch();
        gn = gperm.data_ptr<T>();
      }
      // dW^T (K, O) (+)= Col (K, nL) @ G^T (nL, O). Col row-major (K, nL) is column-major (nL, K): op T;
      // G row-major (O, nL) is column-major (nL, O): no op. beta 0 on the first chunk (dW is not read).
      gemm<T>(device, true, false, K, O, nL, cols, nL, 0, gn, nL, 0, n0 > 0 ? T(1) : T(0), dw.data_ptr<T>(), K, 0,
              1);
    }
  });
  return dw;
}

}  // namespace tl::cuda
