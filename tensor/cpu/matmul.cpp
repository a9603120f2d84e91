// Batched GEMM over the tensors' own buffers: float32 on the packed GEMM (gemm.h, any strides), float64 on
// Eigen, where each operand is mapped row-major when its last
// dim has unit stride and column-major when its second-to-last has (a transposed view), so neither
// case copies. Other layouts are made contiguous first.
#include <Eigen/Core>

#include <type_traits>

#include "tensor/cpu/cpu_kernels.h"
#include "tensor/cpu/gemm.h"
#include "tensor/parallel.h"

namespace tl::cpu {

namespace {

template <typename T>
using RowMap = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, 0, Eigen::OuterStride<>>;
template <typename T>
using ColMap = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>, 0, Eigen::OuterStride<>>;

enum class Layout { Row, Col, None };

// Row-major when the columns are adjacent and rows do not overlap; column-major for the transpose.
Layout layout_of(int64_t rows, int64_t cols, int64_t s_row, int64_t s_col) {
  if ((s_col == 1 || cols == 1) && (s_row >= cols || rows == 1)) return Layout::Row;
  if ((s_row == 1 || rows == 1) && (s_col >= rows || cols == 1)) return Layout::Col;
  return Layout::None;
}

bool mappable(const Tensor& t) { return layout_of(t.size(1), t.size(2), t.stride(1), t.stride(2)) != Layout::None; }

// Calls fn(map) with an Eigen map of the (rows, cols) matrix at p with strides (s_row, s_col).
template <typename T, typename Fn>
void with_matrix(const T* p, int64_t rows, int64_t cols, int64_t s_row, int64_t s_col, const Fn& fn) {
  if (layout_of(rows, cols, s_row, s_col) == Layout::Row)
    fn(RowMap<T>(p, rows, cols, Eigen::OuterStride<>(rows == 1 ? cols : s_row)));
  else
    fn(ColMap<T>(p, rows, cols, Eigen::OuterStride<>(cols == 1 ? rows : s_col)));
}

}  // namespace

Tensor bmm(const Tensor& a_in, const Tensor& b_in) {
  // a (B, M, K), b (B, K, N) -> (B, M, N)
  const Tensor a = mappable(a_in) ? a_in : contiguous_copy(a_in);
  const Tensor b = mappable(b_in) ? b_in : contiguous_copy(b_in);
  const int64_t B = a.size(0), M = a.size(1), K = a.size(2), N = b.size(2);
  Tensor out = empty({B, M, N}, a.options());
  dispatch_floating(a.dtype(), "matmul", [&]<typename T>() {
    using OutMap = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;
    const T* ap = a.data_ptr<T>();
    const T* bp = b.data_ptr<T>();
    T* op = out.data_ptr<T>();
    auto one = [&](int64_t i) {
      if constexpr (std::is_same_v<T, float>) {  // the packed GEMM reads any strides
        gemm::gemm(M, N, K, gemm::View{ap + i * a.stride(0), a.stride(1), a.stride(2)},
                   gemm::View{bp + i * b.stride(0), b.stride(1), b.stride(2)}, op + i * M * N, N, false);
        return;
      }
      OutMap O(op + i * M * N, M, N);
      if (K == 0) {
        O.setZero();
        return;
      }
      with_matrix(ap + i * a.stride(0), M, K, a.stride(1), a.stride(2), [&](const auto& A) {
        with_matrix(bp + i * b.stride(0), K, N, b.stride(1), b.stride(2), [&](const auto& Bm) { O.noalias() = A * Bm; });
      });
    };
    // Many small products: one per thread. Few large ones: Eigen splits each over the threads.
    if (B > 1 && M * N * K < 64 * 64 * 64) parallel_for(0, B, 1, [&](int64_t b0, int64_t e0) {
      for (int64_t i = b0; i < e0; ++i) one(i);
    });
    else for (int64_t i = 0; i < B; ++i) one(i);
  });
  return out;
}

}  // namespace tl::cpu
