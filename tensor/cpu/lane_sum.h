#pragma once
// Sums in double over a run of values, as kLanes interleaved running sums (i % kLanes) added in a
// fixed order at the end. One running sum is a chain of dependent additions, bound by the add latency
// (a quarter of the machine's speed at best); independent lanes vectorize. The order depends only on
// n, so a reduction split over threads by output element still does not depend on the thread count.
#include <cstdint>
#include <utility>

namespace tl::cpu {

constexpr int kLanes = 8;

// The sum of f(i) over i in [0, n).
template <typename F>
double lane_sum(int64_t n, const F& f) {
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += f(i + j);
  for (int j = 0; i < n; ++i, ++j) acc[j] += f(i);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// Two such sums in one pass: (sum f(i), sum g(i)).
template <typename F, typename G>
std::pair<double, double> lane_sum2(int64_t n, const F& f, const G& g) {
  double a[kLanes] = {}, b[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      a[j] += f(i + j);
      b[j] += g(i + j);
    }
  for (int j = 0; i < n; ++i, ++j) {
    a[j] += f(i);
    b[j] += g(i);
  }
  return {((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])),
          ((b[0] + b[1]) + (b[2] + b[3])) + ((b[4] + b[5]) + (b[6] + b[7]))};
}

}  // namespace tl::cpu
