#include "tensor/profile.h"

namespace tl::profile {

namespace {
bool g_enabled = false;
int g_depth = 0;
std::array<Entry, kKinds> g_entries;
}  // namespace

void set_enabled(bool on) { g_enabled = on; }
bool enabled() { return g_enabled; }
void reset() { g_entries = {}; }
std::array<Entry, kKinds> snapshot() { return g_entries; }

const char* kind_name(Kind k) {
  static const char* names[] = {"conv forward", "conv backward-data", "conv backward-weight", "transposed conv",
                                "batch norm",   "activations",        "pooling",              "optimizer",
                                "elementwise",  "reductions",         "copies"};
  return names[static_cast<int>(k)];
}

void Scope::begin(Kind k, double flops) {
  active_ = true;
  if (g_depth++ > 0) return;  // an enclosing scope owns this time (kind_ stays Count)
  kind_ = k;
  flops_ = flops;
  start_ = std::chrono::steady_clock::now();
}

void Scope::end() {
  --g_depth;
  if (kind_ == Kind::Count) return;
  Entry& e = g_entries[static_cast<int>(kind_)];
  e.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  e.flops += flops_;
  e.calls += 1;
}

}  // namespace tl::profile
