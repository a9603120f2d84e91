#pragma once
// Shapes and strides are vectors of int64, strides counted in elements (not bytes).
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace tl {

using Shape = std::vector<int64_t>;
using Strides = std::vector<int64_t>;

int64_t numel_of(const Shape& s);
Strides contiguous_strides(const Shape& s);
std::string shape_str(const Shape& s);  // "(4,3,160,240)"; "()" for a scalar

// Broadcasting as in NumPy/PyTorch: align on the right, sizes equal or 1. `op` names the caller.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);
// Strides of a tensor with `shape`/`strides` read as if broadcast to `out_shape` (right-aligned): 0 on
// every broadcast dim.
Strides broadcast_strides(const Shape& shape, const Strides& strides, const Shape& out_shape);

// Normalizes a possibly negative dim into [0, ndim); throws naming `op` when out of range.
int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op);

}  // namespace tl
