#pragma once
// The CPU thread count and the one parallel loop every CPU kernel uses (OpenMP underneath).
// Work is split into equal contiguous chunks, one per thread, so results never depend on
// scheduling; kernels that reduce keep their per-element order fixed for the same reason.
#include <cstdint>

#include <omp.h>

namespace tl {

void set_num_threads(int n);  // also the thread count of Eigen's GEMM
int get_num_threads();

// Calls fn(begin, end) on disjoint chunks of [begin, end); runs inline when the range is smaller than
// `grain`, when one thread is set, or when already inside a parallel region. A thread that called
// omp_set_num_threads(1) for itself (the data loader's workers do) also runs inline: the count is
// capped by the calling thread's own OpenMP setting, so helper threads never start nested teams.
template <typename Fn>
void parallel_for(int64_t begin, int64_t end, int64_t grain, const Fn& fn) {
  const int64_t n = end - begin;
  if (n <= 0) return;
  int threads = get_num_threads();
  if (threads > omp_get_max_threads()) threads = omp_get_max_threads();
  if (grain < 1) grain = 1;
  if (threads > n / grain) threads = static_cast<int>(n / grain);
  if (threads <= 1 || omp_in_parallel()) {
    fn(begin, end);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t chunk = (n + nt - 1) / nt;
    const int64_t b = begin + t * chunk, e = b + chunk < end ? b + chunk : end;
    if (b < e) fn(b, e);
  }
}

}  // namespace tl
