#pragma once
// Helpers shared by the tests: tolerance comparisons that print their evidence on failure.
#include <doctest/doctest.h>

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "tensor/parallel.h"
#include "tensor/random.h"

namespace tl::testing {

// A fresh folder under the system's temporary folder, named after the test program, the process and
// a counter; removed with everything in it at the end of its scope.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& prefix = "tl_test") {
    static std::atomic<int> n{0};
    path = std::filesystem::temp_directory_path() /
           (prefix + "_" + std::to_string(::getpid()) + "_" + std::to_string(n++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path / name).string(); }
};

// Max abs error, relative to the largest magnitude of `expected` (at least 1e-30), and where.
struct Comparison {
  double max_abs = 0, rel = 0;
  int64_t worst = -1;
  double got = 0, want = 0;
  std::string str(double tol) const {
    std::ostringstream os;
    os << "max abs error " << max_abs << ", relative " << rel << " (tolerance " << tol << ") at flat index " << worst
       << ": got " << got << ", expected " << want;
    return os.str();
  }
};

inline Comparison compare(const Tensor& got, const Tensor& want) {
  REQUIRE_MESSAGE(got.shape() == want.shape(), "shape " << shape_str(got.shape()) << " vs " << shape_str(want.shape()));
  std::vector<double> g = got.to_vector<double>(), w = want.to_vector<double>();
  Comparison c;
  double scale = 1e-30;
  for (double v : w) scale = std::max(scale, std::abs(v));
  for (size_t i = 0; i < g.size(); ++i) {
    // NaN where NaN is expected is a match; NaN on one side only is the worst possible error.
    double e = std::isnan(g[i]) || std::isnan(w[i]) ? (std::isnan(g[i]) == std::isnan(w[i]) ? 0.0 : INFINITY)
                                                     : std::abs(g[i] - w[i]);
    if (e > c.max_abs || c.worst < 0) {
      c.max_abs = e;
      c.worst = static_cast<int64_t>(i);
      c.got = g[i];
      c.want = w[i];
    }
  }
  c.rel = c.max_abs / scale;
  return c;
}

// CHECKs that `got` matches `want` to relative tolerance `tol` (max abs error / max |want|).
#define TL_CHECK_CLOSE(got, want, tol)                                     \
  do {                                                                     \
    auto tl_cmp_ = ::tl::testing::compare((got), (want));                  \
    CHECK_MESSAGE(tl_cmp_.rel <= (tol), tl_cmp_.str(tol));                 \
  } while (0)


// The message of the exception fn throws, or "(no error)".
// ||a - b|| / ||b|| over all elements (on any device), accumulated in double; ||a - b|| when b is
// all zeros. +inf for a shape mismatch, NaN when either side holds a NaN (so that `<= tol` fails).
inline double rel_l2(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) return std::numeric_limits<double>::infinity();
  const std::vector<double> va = a.to(Device::cpu()).to_vector<double>(), vb = b.to(Device::cpu()).to_vector<double>();
  double diff = 0, ref = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    diff += (va[i] - vb[i]) * (va[i] - vb[i]);
    ref += vb[i] * vb[i];
  }
  return ref > 0 ? std::sqrt(diff / ref) : std::sqrt(diff);
}

inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

// A file's whole contents ("" when it cannot be read).
inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// metrics.csv without its last column (seconds), which is wall time.
inline std::string metrics_without_seconds(const std::filesystem::path& p) {
  std::stringstream in(read_text(p)), out;
  std::string line;
  while (std::getline(in, line)) out << line.substr(0, line.rfind(',')) << "\n";
  return out.str();
}

// The real Carvana sample: $TL_CARVANA_SAMPLE, else ../shared/data/carvana_sample beside the source
// tree. Returns an empty path, after a "skipped: ..." message, when it has no train/ and train_masks/.
inline std::filesystem::path carvana_sample_dir() {
  std::filesystem::path dir;
  if (const char* env = std::getenv("TL_CARVANA_SAMPLE")) dir = env;
#ifdef TL_SOURCE_DIR
  else dir = std::filesystem::path(TL_SOURCE_DIR) / ".." / "shared" / "data" / "carvana_sample";
#else
  else dir = std::filesystem::path("..") / "shared" / "data" / "carvana_sample";
#endif
  if (!std::filesystem::is_directory(dir / "train") || !std::filesystem::is_directory(dir / "train_masks")) {
    MESSAGE("skipped: Carvana sample not found at " << dir.string());
    return {};
  }
  return dir;
}

}  // namespace tl::testing
