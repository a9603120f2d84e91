#include "train/progress.h"

#include <cmath>
#include <cstdio>
#include <ostream>

namespace tl::train {

Progress::Progress(std::ostream& out, bool tty, bool quiet, double interval_seconds)
    : out_(out), tty_(tty), quiet_(quiet), interval_(interval_seconds) {}

std::string Progress::format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<int64_t>(std::llround(seconds));
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  return buf;
}

void Progress::start_epoch(int64_t epoch, int64_t epochs, int64_t batches, int64_t first_batch) {
  epoch_ = epoch;
  epochs_ = epochs;
  batches_ = batches;
  first_batch_ = first_batch;
  images_ = 0;
  epoch_start_ = last_print_ = Clock::now();
}

std::string Progress::bar_text(int64_t done) const {
  const double elapsed = std::chrono::duration<double>(Clock::now() - epoch_start_).count();
  const int64_t done_here = done - first_batch_;
  const double rate = elapsed > 0 ? static_cast<double>(images_) / elapsed : 0;
  const double eta = done_here > 0 ? elapsed / static_cast<double>(done_here) * static_cast<double>(batches_ - done) : NAN;
  constexpr int kWidth = 20;
  const int filled = batches_ ? static_cast<int>(kWidth * done / batches_) : kWidth;
  char buf[256];
  std::snprintf(buf, sizeof buf, "epoch %lld/%lld [%s%s] %lld/%lld  loss %.4f  dice %.4f  %.1f img/s  ETA %s",
                static_cast<long long>(epoch_), static_cast<long long>(epochs_), std::string(filled, '#').c_str(),
                std::string(kWidth - filled, '-').c_str(), static_cast<long long>(done),
                static_cast<long long>(batches_), loss_, dice_, rate, format_duration(eta).c_str());
  return buf;
}

void Progress::update(int64_t done, int64_t images, double loss, double dice) {
  images_ += images;
  loss_ = loss;
  dice_ = dice;
  if (quiet_) return;
  const auto now = Clock::now();
  if (tty_) {
    out_ << "\r\033[K" << bar_text(done) << std::flush;
    bar_shown_ = true;
  } else if (std::chrono::duration<double>(now - last_print_).count() >= interval_ || done == batches_) {
    out_ << bar_text(done) << "\n" << std::flush;
    last_print_ = now;
  }
}

void Progress::clear_bar() {
  if (bar_shown_) out_ << "\r\033[K";
  bar_shown_ = false;
}

void Progress::finish_epoch(const std::string& line) {
  clear_bar();
  out_ << line << "\n" << std::flush;
}

void Progress::message(const std::string& line) {
  clear_bar();
  out_ << line << "\n" << std::flush;
}

}  // namespace tl::train
