#pragma once
// Learning-rate schedules with torch 1.13's semantics: StepLR, CosineAnnealingLR (both computed by
// torch's recursive, "chainable" formulas from the optimizer's current lr, so that the values match
// torch's to the last bit) and ReduceLROnPlateau. Each is constructed on an optimizer, remembers the
// lr it found there as base_lr, and sets the optimizer's lr on every step(). Constructing one does
// not change the lr (torch's initial step computes epoch 0's lr, which is the base lr).
//
// A scheduler keeps a reference to its optimizer, which must outlive it. For checkpoints each exposes
// its state (state() / load_state()); restore the optimizer (whose state holds the current lr) before
// the scheduler.
#include <cstdint>
#include <string>

#include "nn/optim.h"

namespace tl::optim {

class LRScheduler {
 public:
  virtual ~LRScheduler() = default;
  LRScheduler(const LRScheduler&) = delete;
  LRScheduler& operator=(const LRScheduler&) = delete;

  // Advances one epoch and sets the optimizer's lr to that epoch's value.
  virtual void step();
  double last_lr() const { return last_lr_; }  // torch's get_last_lr()[0]
  double base_lr() const { return base_lr_; }
  int64_t last_epoch() const { return last_epoch_; }

  struct State {
    int64_t last_epoch = 0;
    double base_lr = 0;
    double last_lr = 0;
  };
  State state() const { return {last_epoch_, base_lr_, last_lr_}; }
  void load_state(const State& s);

 protected:
  explicit LRScheduler(Optimizer& optimizer);
  // The lr of epoch last_epoch_ (already advanced, >= 1), from the optimizer's current lr.
  virtual double get_lr() const = 0;

  Optimizer& optimizer_;
  double base_lr_;
  int64_t last_epoch_ = 0;
  double last_lr_;
};

// lr = base_lr * gamma^floor(epoch / step_size), computed as torch does: multiplied by gamma at each
// multiple of step_size.
class StepLR : public LRScheduler {
 public:
  StepLR(Optimizer& optimizer, int64_t step_size, double gamma = 0.1);

 protected:
  double get_lr() const override;

 private:
  int64_t step_size_;
  double gamma_;
};

// lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2, by torch's recursive
// update; past T_max it rises again (torch's periodic continuation).
class CosineAnnealingLR : public LRScheduler {
 public:
  CosineAnnealingLR(Optimizer& optimizer, int64_t T_max, double eta_min = 0);

 protected:
  double get_lr() const override;

 private:
  int64_t T_max_;
  double eta_min_;
};

struct ReduceLROnPlateauOptions {
  std::string mode = "min";  // "min": lower metric is better; "max": higher is better
  double factor = 0.1;       // new lr = max(lr * factor, min_lr)
  int64_t patience = 10;     // bad epochs tolerated before a reduction
  double threshold = 1e-4;   // how much better counts as better
  std::string threshold_mode = "rel";  // "rel": best * (1 -+ threshold); "abs": best -+ threshold
  int64_t cooldown = 0;      // epochs after a reduction during which bad epochs are not counted
  double min_lr = 0;
  double eps = 1e-8;         // a reduction smaller than eps is not applied
};

// Not an LRScheduler (as in torch): its step takes the metric.
class ReduceLROnPlateau {
 public:
  using Options = ReduceLROnPlateauOptions;
  explicit ReduceLROnPlateau(Optimizer& optimizer, Options options = {});
  ReduceLROnPlateau(const ReduceLROnPlateau&) = delete;
  ReduceLROnPlateau& operator=(const ReduceLROnPlateau&) = delete;

  void step(double metric);
  double last_lr() const { return last_lr_; }
  const Options& options() const { return opt_; }

  double best() const { return best_; }  // +inf ("min") or -inf ("max") before the first step
  int64_t num_bad_epochs() const { return num_bad_epochs_; }
  int64_t cooldown_counter() const { return cooldown_counter_; }
  int64_t last_epoch() const { return last_epoch_; }
  bool in_cooldown() const { return cooldown_counter_ > 0; }

  struct State {
    int64_t last_epoch = 0;
    double best = 0;
    int64_t num_bad_epochs = 0;
    int64_t cooldown_counter = 0;
    double last_lr = 0;
  };
  State state() const { return {last_epoch_, best_, num_bad_epochs_, cooldown_counter_, last_lr_}; }
  void load_state(const State& s);

 private:
  bool is_better(double a) const;

  Optimizer& optimizer_;
  Options opt_;
  double best_;
  int64_t num_bad_epochs_ = 0;
  int64_t cooldown_counter_ = 0;
  int64_t last_epoch_ = 0;
  double last_lr_;
};

}  // namespace tl::optim
