#pragma once
// The strided N-operand loop behind every CPU elementwise kernel.
//
// Each operand is described by its strides (in elements) over one common iteration shape; a
// broadcast dimension has stride 0. The plan merges dimensions that are contiguous for every operand
// (so a contiguous tensor becomes one long row) and drops size-1 dimensions. The loop then calls
// `row(offsets, n, inner_strides)` for each row of the innermost dimension, rows split over threads.
#include <array>
#include <cstdint>

#include "tensor/parallel.h"
#include "tensor/shape.h"

namespace tl {

template <size_t N>
struct StridedPlan {
  Shape shape;                     // after merging; may be empty (one element)
  std::array<Strides, N> strides;  // per operand, same rank as shape
};

template <size_t N>
StridedPlan<N> make_strided_plan(const Shape& shape, const std::array<Strides, N>& strides) {
  StridedPlan<N> p;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    bool merge = !p.shape.empty();
    for (size_t k = 0; k < N && merge; ++k) merge = p.strides[k].back() == strides[k][d] * shape[d];
    if (merge) {
      p.shape.back() *= shape[d];
      for (size_t k = 0; k < N; ++k) p.strides[k].back() = strides[k][d];
    } else {
      p.shape.push_back(shape[d]);
      for (size_t k = 0; k < N; ++k) p.strides[k].push_back(strides[k][d]);
    }
  }
  return p;
}

constexpr int64_t kElementwiseGrain = 32768;  // elements below which a loop stays on one thread

template <size_t N, typename RowFn>
void for_each_row(const StridedPlan<N>& p, const RowFn& row, int64_t grain = kElementwiseGrain) {
  const int64_t nd = static_cast<int64_t>(p.shape.size());
  std::array<int64_t, N> inner{};
  if (nd == 0) {
    std::array<int64_t, N> zero{};
    row(zero, int64_t{1}, inner);
    return;
  }
  const int64_t len = p.shape[nd - 1];
  for (size_t k = 0; k < N; ++k) inner[k] = p.strides[k][nd - 1];
  const int64_t rows = numel_of(p.shape) / len;
  parallel_for(0, rows, grain / len + 1, [&](int64_t rb, int64_t re) {  // (no overflow for grain = INT64_MAX)
    // Multi-index of row rb over the outer dims, and each operand's offset there.
    Shape idx(nd > 1 ? nd - 1 : 0);
    std::array<int64_t, N> off{};
    int64_t r = rb;
    for (int64_t d = nd - 2; d >= 0; --d) {
      idx[d] = r % p.shape[d];
      r /= p.shape[d];
      for (size_t k = 0; k < N; ++k) off[k] += idx[d] * p.strides[k][d];
    }
    for (int64_t i = rb; i < re; ++i) {
      row(off, len, inner);
      for (int64_t d = nd - 2; d >= 0; --d) {  // odometer step with carry
        for (size_t k = 0; k < N; ++k) off[k] += p.strides[k][d];
        if (++idx[d] < p.shape[d]) break;
        for (size_t k = 0; k < N; ++k) off[k] -= p.strides[k][d] * p.shape[d];
        idx[d] = 0;
      }
    }
  });
}

}  // namespace tl
