#include "tensor/parallel.h"

#include <atomic>
#include <stdexcept>
#include <string>

namespace tl {

namespace {
std::atomic<int> g_threads{0};  // 0: not set, use OpenMP's default
}

void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("set_num_threads: thread count must be >= 1, got " + std::to_string(n));
  g_threads = n;
  omp_set_num_threads(n);  // Eigen's GEMM reads this
}

int get_num_threads() {
  const int n = g_threads.load();
  return n > 0 ? n : omp_get_max_threads();
}

}  // namespace tl
