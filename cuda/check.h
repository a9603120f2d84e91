#pragma once
// TL_CUDA_CHECK(call), TL_CUBLAS_CHECK(call): throw std::runtime_error with the call, the file, the line
// and the library's own name and message for the error. For .cu files only.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#define TL_CUDA_CHECK(call)                                                                            \
  do {                                                                                                 \
    cudaError_t tl_err_ = (call);                                                                      \
    if (tl_err_ != cudaSuccess)                                                                        \
      throw std::runtime_error(std::string(#call) + " failed at " + __FILE__ + ":" +                   \
                               std::to_string(__LINE__) + ": " + cudaGetErrorName(tl_err_) + ": " +    \
                               cudaGetErrorString(tl_err_));                                           \
  } while (0)

#define TL_CUBLAS_CHECK(call)                                                                          \
  do {                                                                                                 \
    cublasStatus_t tl_status_ = (call);                                                                \
    if (tl_status_ != CUBLAS_STATUS_SUCCESS)                                                           \
      throw std::runtime_error(std::string(#call) + " failed at " + __FILE__ + ":" +                   \
                               std::to_string(__LINE__) + ": " + cublasGetStatusName(tl_status_) +     \
                               ": " + cublasGetStatusString(tl_status_));                              \
  } while (0)
