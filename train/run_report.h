#pragma once
// The run folder shows itself: the files train() writes, beside its checkpoints, for a person to
// open while the run goes on (no Python; any browser):
//   curves.svg            train and validation loss and dice per epoch, drawn from metrics.csv
//   panels/epoch_NNN.jpg  the validation panel of epoch NNN: for each photo of a fixed set of (up to)
//                         4 validation photos, a row photo | true mask | prediction, the prediction
//                         made at the photo's own resolution and labelled with its thresholded dice
//                         there (Kaggle's dice, train/predict.h mask_dice)
//   report.html           one self-contained page (no script, no file outside it needed): the run's
//                         status, the curves (inline SVG), the latest panel (an inline JPEG) and links
//                         to every panel, the metrics table, the split, the checkpoint files and the
//                         config. While the run goes on the page asks the browser to reload it every
//                         30 seconds; the last version, written when the run ends, does not.
// Order and atomicity: each file is replaced by tl::write_file_atomic (data::write_jpeg uses it too)
// into RunFolder::view_path, and a file is written only after every file it names exists (panel,
// then curves.svg, then report.html), so a reload at any moment sees a complete, consistent page.
// A view never stops a run: an error writing one (a full disk, an unreadable panel photo) is passed
// to the warning callback, one line, and the run goes on.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "data/image.h"
#include "data/split.h"
#include "nn/unet.h"
#include "train/metrics_log.h"
#include "train/svg.h"
#include "train/trainer.h"

namespace tl::train {

class RunFolder;

// The panel photos, k = 0 .. count-1, with spread(k, n) = floor((2k + 1) * n / (2 * count)): when `val`
// holds at least `count` cars (C, in order of first appearance), photo spread(k, n_c) of car
// spread(k, C) (n_c: that car's photos, in their order), so different cars at different angles; else
// sample spread(k, n) of all n (min(count, n) photos). A pure function of `val`: a resumed run reads
// the same val.csv back and gets the same photos.
std::vector<data::Sample> pick_panel_samples(const std::vector<data::Sample>& val, size_t count = 4);

// The two charts of curves.svg from a metrics table: "loss" (train_loss dashed, val_loss) and
// "dice" (train_dice dashed, val_dice, val_dice_soft), against the epoch. Absent columns are left out.
std::vector<Chart> curve_charts(const MetricsTable& table);

// RFC 4648 base64, with padding ("Man" -> "TWFu", "M" -> "TQ==").
std::string base64(std::string_view bytes);

// RGB images stacked top to bottom, left-aligned; the space right of a narrower row is `fill` gray.
// std::invalid_argument for an empty list or an image that is not RGB.
data::Image stack_rows(const std::vector<data::Image>& rows, uint8_t fill = 40);

// Everything report.html shows; report_html renders it.
struct ReportPage {
  std::string run_name;               // the folder's name
  std::string status;                 // one line: "running: 3 of 10 epochs done", "finished: ..."
  bool running = true;                // the page reloads itself while true
  std::string updated;                // "2026-12-07 01:02:03 UTC"
  std::string config_json;            // TrainConfig::to_json()
  std::vector<std::string> split;     // one line each: the source, then the train and validation sizes
  MetricsTable metrics;               // metrics.csv
  std::string curves_svg;             // curves.svg's text, inlined; empty before the first epoch
  int64_t panel_epoch = 0;            // the latest panel's epoch; 0: none yet
  std::string panel_jpeg;              // its bytes, inlined
  std::vector<std::string> panel_files;  // every panel, relative to the folder, oldest first
  std::vector<std::pair<std::string, double>> panel_dice;  // (photo, its dice) of the latest panel
  struct File {
    std::string name, what;
    uintmax_t bytes = 0;
  };
  std::vector<File> checkpoints;      // those that exist
  std::vector<std::string> commands;  // what to run next (resume, predict)
};
// A complete HTML5 document; every text is escaped.
std::string report_html(const ReportPage& page);

class RunReport {
 public:
  using Warn = std::function<void(const std::string& line)>;

  // Decodes the panel photos of `val` (pick_panel_samples) at their own resolution, once; one that
  // cannot be read is left out with a warning.
  RunReport(const TrainConfig& cfg, const RunFolder& folder, const std::vector<data::Sample>& train,
            const std::vector<data::Sample>& val, const std::string& split_source, Warn warn);

  // At the start of the run (or of a resume): curves.svg when metrics.csv has rows, and report.html.
  void start();
  // After epoch `epoch` (1-based) is saved: its panel, curves.svg and report.html. The model runs
  // in eval mode on `device` and is left in train mode.
  void end_epoch(int64_t epoch, const std::shared_ptr<nn::UNet>& model, Device device);
  // The final report.html: how the run ended; it no longer reloads itself.
  void finish(const TrainResult& result);

  size_t panel_photos() const { return photos_.size(); }

 private:
  struct PanelPhoto {
    std::string name;  // the photo's file name
    data::Image photo, truth;
  };
  void write_page(const std::string& status, bool running, bool resumable);
  void guarded(const char* what, const std::function<void()>& step);

  const TrainConfig& cfg_;
  const RunFolder& folder_;
  Warn warn_;
  std::vector<std::string> split_;
  std::vector<PanelPhoto> photos_;
  int64_t panel_epoch_ = 0;
  std::vector<std::pair<std::string, double>> panel_dice_;
};

}  // namespace tl::train
