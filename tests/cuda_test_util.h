#pragma once
// What the CUDA test programs share: the device under test, the tolerances, the CPU-vs-CUDA result
// check, and their main(), which prints "skipped: no CUDA device" and exits 77 (ctest: skipped) on a
// machine without a GPU. Each CUDA test program has its own main() for that reason.
//
// Error measure: max |cuda - cpu| / max(max |cpu|, 1e-30) over a whole tensor (compare() of
// tests/test_util.h), so an element near zero is judged against its tensor's scale, not against its
// own tiny magnitude. Tolerances, in strict fp32 (TF32 off, forced by main()): 1e-5 for one op,
// forward or gradient; 1e-4 for a UNet's eval forward (train steps are judged against a float64
// run instead, tests/test_cuda_unet.cpp); float64 1e-12; integer and 0/1 results exact;
// with TF32 on, 1e-2.
#include <cstdio>
#include <string>

#include "cuda/runtime.h"
#include "tensor/precision.h"
#include "tests/test_util.h"

namespace tl::testing {

inline const Device kGpu = Device::cuda(0);

constexpr double kTol32 = 1e-5;    // one op in strict fp32
constexpr double kTol64 = 1e-12;   // one op in float64
constexpr double kTolStep = 1e-4;  // a UNet eval forward in strict fp32
constexpr double kTolTf32 = 1e-2;  // float32 GEMMs on TF32 tensor cores

// A new contiguous copy of t on `device`, never t itself (t.to(device) is t when it is already there).
inline Tensor copy_to(const Tensor& t, Device device) {
  Tensor c = empty(t.shape(), TensorOptions(t.dtype()).with_device(device));
  c.copy_(t);
  return c;
}

// CHECKs a CUDA result against the CPU's: both undefined, or on cuda:0 with the same dtype and shape
// and values within tol32 (float32), kTol64 (float64), or equal (integers, 0/1).
inline void check_result(const std::string& what, const Tensor& got, const Tensor& want, double tol32) {
  INFO(what);
  CHECK(got.defined() == want.defined());
  if (!got.defined() || !want.defined()) return;
  CHECK(got.device() == kGpu);
  CHECK(got.dtype() == want.dtype());
  CHECK_MESSAGE(got.shape() == want.shape(), shape_str(got.shape()) << " vs " << shape_str(want.shape()));
  if (got.shape() != want.shape()) return;
  const double tol = want.dtype() == kFloat64 ? kTol64 : want.dtype() == kFloat32 ? tol32 : 0.0;
  TL_CHECK_CLOSE(got, want, tol);
}

}  // namespace tl::testing

// The main() of a CUDA test program (doctest with DOCTEST_CONFIG_IMPLEMENT).
#define TL_CUDA_TEST_MAIN()                                                                   \
  int main(int argc, char** argv) {                                                           \
    if (::tl::cuda::device_count() == 0) {                                                    \
      const char* why_ = ::tl::cuda::device_count_error();                                    \
      std::printf("skipped: no CUDA device%s%s\n", *why_ ? ": " : "", why_);                 \
      return 77;                                                                              \
    }                                                                                         \
    ::tl::set_allow_tf32(false); /* strict fp32 for every comparison, whatever TL_ALLOW_TF32 says */ \
    doctest::Context ctx(argc, argv);                                                         \
    return ctx.run();                                                                         \
  }
