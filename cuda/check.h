#pragma once
// TL_CUDA_CHECK(call): throws std::runtime_error with the call, the file, the line and CUDA's message.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#define TL_CUDA_CHECK(call)                                                                            \
  do {                                                                                                 \
    cudaError_t tl_err_ = (call);                                                                      \
    if (tl_err_ != cudaSuccess)                                                                        \
      throw std::runtime_error(std::string(#call) + " failed at " + __FILE__ + ":" +                   \
                               std::to_string(__LINE__) + ": " + cudaGetErrorString(tl_err_));         \
  } while (0)
