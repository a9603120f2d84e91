#pragma once
// An opt-in profiler of where a step's time goes, by layer kind. Off by default (a Scope then costs
// one branch). Scopes nest; time goes to the outermost open scope, so a transposed convolution that
// runs the conv primitives inside is counted once, as a transposed convolution. Single-threaded
// callers only (the ops run on the caller's thread; the kernels' OpenMP threads are inside scopes).
#include <array>
#include <chrono>
#include <cstdint>

namespace tl::profile {

enum class Kind : int {
  ConvForward,
  ConvBackwardData,
  ConvBackwardWeight,
  ConvTranspose,
  BatchNorm,
  Activation,
  Pooling,
  Optimizer,
  Elementwise,
  Reduction,
  Copy,
  Count
};
constexpr int kKinds = static_cast<int>(Kind::Count);

struct Entry {
  double seconds = 0;
  double flops = 0;  // counted for the convolutions (multiply-adds x 2)
  int64_t calls = 0;
};

void set_enabled(bool on);
bool enabled();
void reset();
std::array<Entry, kKinds> snapshot();
const char* kind_name(Kind k);

class Scope {
 public:
  explicit Scope(Kind k, double flops = 0) {
    if (enabled()) begin(k, flops);
  }
  ~Scope() {
    if (active_) end();
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  void begin(Kind k, double flops);
  void end();
  bool active_ = false;
  Kind kind_ = Kind::Count;
  double flops_ = 0;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace tl::profile
