#include "tensor/precision.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

namespace tl {

namespace {

bool from_environment() {
  const char* v = std::getenv("TL_ALLOW_TF32");
  if (!v || !*v || std::strcmp(v, "0") == 0) return false;
  if (std::strcmp(v, "1") == 0) return true;
  throw std::invalid_argument(std::string("TL_ALLOW_TF32 must be 0 or 1, got '") + v + "'");
}

std::atomic<bool>& flag() {
  static std::atomic<bool> f{from_environment()};
  return f;
}

}  // namespace

bool allow_tf32() { return flag().load(std::memory_order_relaxed); }
void set_allow_tf32(bool on) { flag().store(on, std::memory_order_relaxed); }

}  // namespace tl
