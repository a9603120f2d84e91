// Prints the number of CUDA devices this build's binaries see: 0 in a build without the CUDA backend,
// or where the driver is missing or the devices are hidden (CUDA_VISIBLE_DEVICES). tests/cli_error.sh
// asks it, rather than nvidia-smi, whether a GPU is present.
#include <cstdio>

#if TL_WITH_CUDA
#include "cuda/runtime.h"
#endif

int main() {
#if TL_WITH_CUDA
  std::printf("%d\n", tl::cuda::device_count());
#else
  std::printf("0\n");
#endif
  return 0;
}
