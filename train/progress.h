#pragma once
// The trainer's progress display. On a terminal: one line redrawn in place,
//   epoch 2/5 [##########----------] 18/36  loss 0.2314  dice 0.9412  11.8 img/s  ETA 0:24
// elsewhere (a pipe, a log file, CI): the same text as plain lines, at most one every `interval`
// seconds plus the last batch of each epoch, so logs stay short.
#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <string>

namespace tl::train {

class Progress {
 public:
  Progress(std::ostream& out, bool tty, bool quiet, double interval_seconds = 10);

  void start_epoch(int64_t epoch, int64_t epochs, int64_t batches, int64_t first_batch);
  // After batch `done` (1-based) of the epoch; images = images in that batch.
  void update(int64_t done, int64_t images, double loss, double dice);
  // Ends the epoch's display (clears the bar) and prints `line` (always, even when quiet).
  void finish_epoch(const std::string& line);
  // A message on its own line, not disturbing the bar.
  void message(const std::string& line);

  static std::string format_duration(double seconds);  // "0:24", "12:05", "1:02:03"

 private:
  using Clock = std::chrono::steady_clock;
  std::string bar_text(int64_t done) const;
  void clear_bar();

  std::ostream& out_;
  bool tty_, quiet_;
  double interval_;
  int64_t epoch_ = 0, epochs_ = 0, batches_ = 0, first_batch_ = 0;
  int64_t images_ = 0;
  double loss_ = 0, dice_ = 0;
  Clock::time_point epoch_start_, last_print_;
  bool bar_shown_ = false;
};

}  // namespace tl::train
