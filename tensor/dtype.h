#pragma once
// Element types. float32 is the working type everywhere, float64 exists on CPU for gradient
// checks, int64 and uint8 hold indices and masks.
#include <cstdint>
#include <stdexcept>
#include <string>

namespace tl {

enum class DType : uint8_t { Float32, Float64, Int64, UInt8 };

constexpr DType kFloat32 = DType::Float32;
constexpr DType kFloat64 = DType::Float64;
constexpr DType kInt64 = DType::Int64;
constexpr DType kUInt8 = DType::UInt8;

size_t dtype_size(DType t);
const char* dtype_name(DType t);  // "float32", ...
inline bool is_floating(DType t) { return t == DType::Float32 || t == DType::Float64; }

template <typename T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::Float32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::Float64; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::Int64; };
template <> struct dtype_of<uint8_t> { static constexpr DType value = DType::UInt8; };

// Calls fn.template operator()<T>() with the C++ type of `t`, for the floating dtypes only.
// `op` names the caller in the error for other dtypes.
template <typename Fn>
decltype(auto) dispatch_floating(DType t, const char* op, Fn&& fn) {
  switch (t) {
    case DType::Float32: return fn.template operator()<float>();
    case DType::Float64: return fn.template operator()<double>();
    default:
      throw std::invalid_argument(std::string(op) + ": expected a floating dtype (float32 or float64), got " +
                                  dtype_name(t));
  }
}

// Same, for every dtype.
template <typename Fn>
decltype(auto) dispatch_all(DType t, Fn&& fn) {
  switch (t) {
    case DType::Float32: return fn.template operator()<float>();
    case DType::Float64: return fn.template operator()<double>();
    case DType::Int64: return fn.template operator()<int64_t>();
    case DType::UInt8: return fn.template operator()<uint8_t>();
  }
  throw std::logic_error("dispatch_all: bad dtype");
}

}  // namespace tl
