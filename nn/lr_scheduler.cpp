#include "nn/lr_scheduler.h"
#include "nn/option_errors.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <sstream>
#include <stdexcept>

namespace tl::optim {
namespace {

using detail::fail;
using detail::num;

// Python's a % b for b > 0: never negative.
int64_t py_mod(int64_t a, int64_t b) { return ((a % b) + b) % b; }

}  // namespace

// ---- LRScheduler
LRScheduler::LRScheduler(Optimizer& optimizer)
    : optimizer_(optimizer), base_lr_(optimizer.lr()), last_lr_(optimizer.lr()) {}

void LRScheduler::step() {
  ++last_epoch_;
  optimizer_.set_lr(get_lr());
  last_lr_ = optimizer_.lr();
}

void LRScheduler::load_state(const State& s) {
  if (s.last_epoch < 0) fail("LRScheduler::load_state", "last_epoch must be >= 0, got " + std::to_string(s.last_epoch));
  last_epoch_ = s.last_epoch;
  base_lr_ = s.base_lr;
  last_lr_ = s.last_lr;
}

// ---- StepLR
StepLR::StepLR(Optimizer& optimizer, int64_t step_size, double gamma)
    : LRScheduler(optimizer), step_size_(step_size), gamma_(gamma) {
  if (step_size < 1) fail("StepLR", "step_size must be >= 1, got " + std::to_string(step_size));
  if (!(gamma >= 0) || std::isinf(gamma)) fail("StepLR", "gamma must be finite and >= 0, got " + num(gamma));
}

double StepLR::get_lr() const {
  const double lr = optimizer_.lr();
  return last_epoch_ % step_size_ != 0 ? lr : lr * gamma_;
}

// ---- CosineAnnealingLR
CosineAnnealingLR::CosineAnnealingLR(Optimizer& optimizer, int64_t T_max, double eta_min)
    : LRScheduler(optimizer), T_max_(T_max), eta_min_(eta_min) {
  if (T_max < 1) fail("CosineAnnealingLR", "T_max must be >= 1, got " + std::to_string(T_max));
  if (!(eta_min >= 0) || std::isinf(eta_min))
    fail("CosineAnnealingLR", "eta_min must be finite and >= 0, got " + num(eta_min));
}

// torch 1.13's get_lr, term for term (same operation order, so the same doubles).
double CosineAnnealingLR::get_lr() const {
  constexpr double pi = std::numbers::pi;
  const double lr = optimizer_.lr();
  const auto T = static_cast<double>(T_max_);
  const auto e = static_cast<double>(last_epoch_);
  if (py_mod(last_epoch_ - 1 - T_max_, 2 * T_max_) == 0)
    return lr + (base_lr_ - eta_min_) * (1 - std::cos(pi / T)) / 2;
  return (1 + std::cos(pi * e / T)) / (1 + std::cos(pi * (e - 1) / T)) * (lr - eta_min_) + eta_min_;
}

// ---- ReduceLROnPlateau
ReduceLROnPlateau::ReduceLROnPlateau(Optimizer& optimizer, Options options)
    : optimizer_(optimizer), opt_(std::move(options)), last_lr_(optimizer.lr()) {
  const char* who = "ReduceLROnPlateau";
  if (opt_.mode != "min" && opt_.mode != "max") fail(who, "mode '" + opt_.mode + "' is unknown (use min or max)");
  if (opt_.threshold_mode != "rel" && opt_.threshold_mode != "abs")
    fail(who, "threshold mode '" + opt_.threshold_mode + "' is unknown (use rel or abs)");
  if (!(opt_.factor < 1.0)) fail(who, "factor should be < 1.0, got " + num(opt_.factor));
  if (!(opt_.factor >= 0)) fail(who, "factor must be >= 0, got " + num(opt_.factor));
  if (opt_.patience < 0) fail(who, "patience must be >= 0, got " + std::to_string(opt_.patience));
  if (opt_.cooldown < 0) fail(who, "cooldown must be >= 0, got " + std::to_string(opt_.cooldown));
  if (!(opt_.threshold >= 0)) fail(who, "threshold must be >= 0, got " + num(opt_.threshold));
  if (!(opt_.min_lr >= 0)) fail(who, "min_lr must be >= 0, got " + num(opt_.min_lr));
  if (!(opt_.eps >= 0)) fail(who, "eps must be >= 0, got " + num(opt_.eps));
  best_ = opt_.mode == "min" ? std::numeric_limits<double>::infinity() : -std::numeric_limits<double>::infinity();
}

bool ReduceLROnPlateau::is_better(double a) const {
  const bool rel = opt_.threshold_mode == "rel";
  if (opt_.mode == "min") return rel ? a < best_ * (1. - opt_.threshold) : a < best_ - opt_.threshold;
  return rel ? a > best_ * (opt_.threshold + 1.) : a > best_ + opt_.threshold;
}

void ReduceLROnPlateau::step(double metric) {
  ++last_epoch_;
  if (is_better(metric)) {
    best_ = metric;
    num_bad_epochs_ = 0;
  } else {
    ++num_bad_epochs_;
  }
  if (in_cooldown()) {
    --cooldown_counter_;
    num_bad_epochs_ = 0;  // bad epochs during cooldown are not counted
  }
  if (num_bad_epochs_ > opt_.patience) {
    const double old_lr = optimizer_.lr();
    const double new_lr = std::max(old_lr * opt_.factor, opt_.min_lr);
    if (old_lr - new_lr > opt_.eps) optimizer_.set_lr(new_lr);
    cooldown_counter_ = opt_.cooldown;
    num_bad_epochs_ = 0;
  }
  last_lr_ = optimizer_.lr();
}

void ReduceLROnPlateau::load_state(const State& s) {
  const char* who = "ReduceLROnPlateau::load_state";
  if (s.last_epoch < 0 || s.num_bad_epochs < 0 || s.cooldown_counter < 0)
    fail(who, "counts must be >= 0 (last_epoch " + std::to_string(s.last_epoch) + ", num_bad_epochs " +
                  std::to_string(s.num_bad_epochs) + ", cooldown_counter " + std::to_string(s.cooldown_counter) + ")");
  last_epoch_ = s.last_epoch;
  best_ = s.best;
  num_bad_epochs_ = s.num_bad_epochs;
  cooldown_counter_ = s.cooldown_counter;
  last_lr_ = s.last_lr;
}

}  // namespace tl::optim
