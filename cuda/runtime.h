#pragma once
// CUDA runtime entry points used by the tensor layer. Plain C++ declarations: no CUDA headers leak
// into the rest of the engine.
#include <cstddef>

namespace tl::cuda {

int device_count();                             // 0 when there is no GPU or no driver
void* device_malloc(size_t nbytes, int device);  // throws std::runtime_error naming the call on failure
void device_free(void* p, int device);

}  // namespace tl::cuda
