#pragma once
// Shared by the optimizers and the LR schedules: how an invalid option is reported.
#include <sstream>
#include <stdexcept>
#include <string>

namespace tl::optim::detail {

// A double as the user wrote it (shortest round-trip form), for error messages.
inline std::string num(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

// Throws std::invalid_argument "<who>: <what>".
[[noreturn]] inline void fail(const std::string& who, const std::string& what) {
  throw std::invalid_argument(who + ": " + what);
}

}  // namespace tl::optim::detail
