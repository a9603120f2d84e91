#include "train/run_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <stdexcept>

#include "nn/json.h"
#include "tensor/file_util.h"
#include "train/predict.h"
#include "train/progress.h"
#include "train/run_folder.h"

namespace tl::train {

namespace fs = std::filesystem;

namespace {

constexpr int kReloadSeconds = 30;
constexpr int64_t kTileHeight = 160;  // panel rows: 4 x 160 px keeps a panel under 1000 px tall
constexpr int kPanelQuality = 88;     // JPEG: a tenth of a PNG's size for photos, masks stay crisp enough

std::string fixed(double v, int digits) {
  if (!std::isfinite(v)) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

std::string read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw std::runtime_error(p.string() + ": cannot open");
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

std::string panel_name(int64_t epoch) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "panels/epoch_%03lld.jpg", static_cast<long long>(epoch));
  return buf;
}

std::string describe(const std::vector<data::Sample>& samples) {
  std::set<std::string> cars;
  for (const auto& s : samples) cars.insert(data::car_id(s.image));
  return std::to_string(samples.size()) + " images of " + std::to_string(cars.size()) + " cars";
}

std::string size_text(uintmax_t bytes) {
  char buf[40];
  if (bytes >= (uintmax_t{1} << 20)) std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  else std::snprintf(buf, sizeof buf, "%.1f KiB", static_cast<double>(bytes) / (1 << 10));
  return buf;
}

// A config value as a person reads it.
std::string value_text(const json::Value& v) {
  switch (v.type) {
    case json::Value::Type::String: return v.string.empty() ? "(none)" : v.string;
    case json::Value::Type::Int: return std::to_string(v.integer);
    case json::Value::Type::Real: {
      char buf[40];
      std::snprintf(buf, sizeof buf, "%.6g", v.real);
      return buf;
    }
    case json::Value::Type::Bool: return v.boolean ? "true" : "false";
    default: return v.type_name();
  }
}

// A metrics.csv value as the table shows it: epochs whole, the learning rate in 3 digits, seconds
// to a tenth, the rest to 4 decimals.
std::string metric_text(const std::string& column, double v) {
  if (column == "epoch") return fixed(v, 0);
  if (column == "seconds") return fixed(v, 1);
  if (column == "lr") {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3g", v);
    return buf;
  }
  return fixed(v, 4);
}

std::string cell(const std::string& tag, const std::string& text, const std::string& attrs = "") {
  return "<" + tag + attrs + ">" + xml_escape(text) + "</" + tag + ">";
}

}  // namespace

std::vector<data::Sample> pick_panel_samples(const std::vector<data::Sample>& val, size_t count) {
  auto spread = [](size_t k, size_t n, size_t of) { return (2 * k + 1) * n / (2 * of); };
  std::vector<std::string> cars;  // in order of first appearance
  std::vector<std::vector<size_t>> photos;
  for (size_t i = 0; i < val.size(); ++i) {
    const std::string car = data::car_id(val[i].image);
    const auto it = std::find(cars.begin(), cars.end(), car);
    if (it == cars.end()) {
      cars.push_back(car);
      photos.push_back({i});
    } else {
      photos[static_cast<size_t>(it - cars.begin())].push_back(i);
    }
  }
  std::vector<data::Sample> out;
  if (cars.size() >= count) {  // one photo of each of `count` cars, at different angles
    for (size_t k = 0; k < count; ++k) {
      const std::vector<size_t>& of_car = photos[spread(k, cars.size(), count)];
      out.push_back(val[of_car[spread(k, of_car.size(), count)]]);
    }
    return out;
  }
  const size_t k = std::min(count, val.size());
  for (size_t i = 0; i < k; ++i) out.push_back(val[spread(i, val.size(), k)]);
  return out;
}

std::vector<Chart> curve_charts(const MetricsTable& table) {
  const std::vector<double> epochs = table.epochs();
  auto series = [&](const char* column, const char* label, size_t color, bool dashed, std::vector<Series>& out) {
    if (table.has(column)) out.push_back({label, epochs, table.column(column), dashed, default_color(color)});
  };
  Chart loss{"loss", "epoch", "loss", {}, std::nullopt, true};
  series("train_loss", "train", 0, true, loss.series);
  series("val_loss", "validation", 1, false, loss.series);
  Chart dice{"dice", "epoch", "dice", {}, std::nullopt, true};
  series("train_dice", "train", 0, true, dice.series);
  series("val_dice", "validation", 1, false, dice.series);
  series("val_dice_soft", "validation (soft)", 2, false, dice.series);
  return {loss, dice};
}

std::string base64(std::string_view bytes) {
  static const char* const kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const size_t n = std::min<size_t>(3, bytes.size() - i);
    uint32_t v = 0;
    for (size_t k = 0; k < 3; ++k) v = (v << 8) | (k < n ? static_cast<unsigned char>(bytes[i + k]) : 0u);
    for (size_t k = 0; k < 4; ++k) out += k <= n ? kAlphabet[(v >> (18 - 6 * k)) & 63] : '=';
  }
  return out;
}

data::Image stack_rows(const std::vector<data::Image>& rows, uint8_t fill) {
  if (rows.empty()) throw std::invalid_argument("stack_rows: no images");
  int64_t width = 0, height = 0;
  for (const data::Image& r : rows) {
    r.check("stack_rows");
    if (r.channels != 3) throw std::invalid_argument("stack_rows: expected RGB images, got " + data::image_str(r));
    width = std::max(width, r.width);
    height += r.height;
  }
  data::Image out = data::Image::blank(height, width, 3, fill);
  int64_t y0 = 0;
  for (const data::Image& r : rows) {
    for (int64_t y = 0; y < r.height; ++y) std::memcpy(out.row(y0 + y), r.row(y), static_cast<size_t>(r.width * 3));
    y0 += r.height;
  }
  return out;
}

std::string report_html(const ReportPage& p) {
  std::string h = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  if (p.running) h += "<meta http-equiv=\"refresh\" content=\"" + std::to_string(kReloadSeconds) + "\">\n";
  h += "<title>" + xml_escape("train_unet: " + p.run_name) + "</title>\n";
  h += "<style>\n"
       "body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }\n"
       "table { border-collapse: collapse; margin: 0.5em 0; }\n"
       "th, td { border: 1px solid #ccc; padding: 2px 8px; }\n"
       "td.n { text-align: right; font-variant-numeric: tabular-nums; }\n"
       "tr.best { background: #e4f2e4; }\n"
       "#status { font-weight: bold; } .running { color: #1f5fa0; } .ended { color: #2a7a2a; }\n"
       "code { background: #f2f2f2; padding: 1px 4px; }\n"
       "img { max-width: 100%; }\n"
       "</style>\n</head>\n<body>\n";
  h += cell("h1", "train_unet run " + p.run_name) + "\n";
  h += "<p id=\"status\" class=\"" + std::string(p.running ? "running" : "ended") + "\">" + xml_escape(p.status) +
       "</p>\n<p>updated " + xml_escape(p.updated) +
       (p.running ? " &middot; this page reloads itself every " + std::to_string(kReloadSeconds) + " s while the run goes on"
                  : std::string()) +
       "</p>\n";

  h += "<h2>Curves</h2>\n<div id=\"curves\">\n";
  h += p.curves_svg.empty() ? "<p>No epoch has finished yet.</p>\n" : p.curves_svg;
  h += "</div>\n";

  h += "<h2>Validation panel</h2>\n";
  if (p.panel_epoch > 0 && !p.panel_jpeg.empty()) {
    h += "<p>Epoch " + std::to_string(p.panel_epoch) +
         ": each row is photo | true mask | prediction, with the prediction's thresholded dice at the photo's resolution.</p>\n";
    h += "<img id=\"panel\" alt=\"validation panel of epoch " + std::to_string(p.panel_epoch) +
         "\" src=\"data:image/jpeg;base64," + base64(p.panel_jpeg) + "\">\n";
    if (!p.panel_dice.empty()) {
      h += "<table id=\"panel-dice\">\n<tr><th>photo</th><th>dice</th></tr>\n";
      for (const auto& [name, d] : p.panel_dice) h += "<tr>" + cell("td", name) + cell("td", fixed(d, 4), " class=\"n\"") + "</tr>\n";
      h += "</table>\n";
    }
  } else {
    h += "<p>No panel yet.</p>\n";
  }
  if (!p.panel_files.empty()) {
    h += "<p>Every epoch's panel:";
    for (const std::string& f : p.panel_files)
      h += " <a href=\"" + xml_escape(f) + "\">" + xml_escape(fs::path(f).stem().string()) + "</a>";
    h += "</p>\n";
  }

  h += "<h2>Metrics</h2>\n";
  if (p.metrics.rows.empty()) {
    h += "<p>No epoch has finished yet.</p>\n";
  } else {
    const Best best = p.metrics.has("val_dice") ? best_of(p.metrics, "val_dice") : Best{};
    const std::vector<double> epochs = p.metrics.epochs();
    h += "<table id=\"metrics\">\n<tr>";
    for (const std::string& c : p.metrics.columns) h += cell("th", c);
    h += "</tr>\n";
    for (size_t r = 0; r < p.metrics.rows.size(); ++r) {
      const bool is_best = best.found && epochs[r] == best.epoch;
      h += is_best ? "<tr class=\"best\">" : "<tr>";
      for (size_t c = 0; c < p.metrics.columns.size(); ++c) {
        h += cell("td", metric_text(p.metrics.columns[c], p.metrics.rows[r][c]), " class=\"n\"");
      }
      h += "</tr>\n";
    }
    h += "</table>\n";
    if (best.found)
      h += "<p>Best validation dice " + fixed(best.value, 4) + " at epoch " + fixed(best.epoch, 0) +
           " (highlighted). Dice is Kaggle's thresholded dice; val_dice_soft is the seed's soft dice.</p>\n";
  }

  h += "<h2>Split</h2>\n<ul>\n";
  for (const std::string& line : p.split) h += cell("li", line) + "\n";
  h += "</ul>\n";

  h += "<h2>Checkpoints</h2>\n";
  if (p.checkpoints.empty()) {
    h += "<p>None yet.</p>\n";
  } else {
    h += "<table id=\"checkpoints\">\n<tr><th>file</th><th>size</th><th>holds</th></tr>\n";
    for (const auto& f : p.checkpoints)
      h += "<tr>" + cell("td", f.name) + cell("td", size_text(f.bytes), " class=\"n\"") + cell("td", f.what) + "</tr>\n";
    h += "</table>\n";
  }
  for (const std::string& c : p.commands) h += "<p>" + cell("code", c) + "</p>\n";

  h += "<h2>Config</h2>\n<table id=\"config\">\n";
  try {
    const json::Value root = json::parse(p.config_json);
    for (const json::Member& m : root.object) h += "<tr>" + cell("th", m.key) + cell("td", value_text(m.value)) + "</tr>\n";
  } catch (const std::exception& e) {
    h += "<tr>" + cell("td", std::string("unreadable config: ") + e.what()) + "</tr>\n";
  }
  h += "</table>\n</body>\n</html>\n";
  return h;
}

// ---- RunReport ------------------------------------------------------------------------------------

RunReport::RunReport(const TrainConfig& cfg, const RunFolder& folder, const std::vector<data::Sample>& train,
                     const std::vector<data::Sample>& val, const std::string& split_source, Warn warn)
    : cfg_(cfg), folder_(folder), warn_(std::move(warn)) {
  split_ = {"data: " + split_source, "train: " + describe(train), "validation: " + describe(val)};
  for (const data::Sample& s : pick_panel_samples(val)) {
    try {
      PanelPhoto p{fs::path(s.image).filename().string(), data::read_image(s.image), data::read_mask(s.mask)};
      if (p.photo.height != p.truth.height || p.photo.width != p.truth.width)
        throw std::runtime_error(s.mask + ": mask " + data::image_str(p.truth) + " does not match the photo " +
                                 data::image_str(p.photo));
      photos_.push_back(std::move(p));
    } catch (const std::exception& e) {
      warn_(std::string("warning: the validation panel leaves out a photo: ") + e.what());
    }
  }
  if (!photos_.empty()) {
    std::string names;
    for (const PanelPhoto& p : photos_) names += (names.empty() ? "" : ", ") + p.name;
    split_.push_back("panel photos (validation): " + names);
  }
}

void RunReport::guarded(const char* what, const std::function<void()>& step) {
  try {
    step();
  } catch (const std::exception& e) {
    warn_(std::string("warning: could not write ") + what + " (" + e.what() + "); training goes on");
  }
}

void RunReport::start() {
  guarded("curves.svg", [&] {  // a resumed run has epochs to show already
    const fs::path metrics = folder_.file("metrics.csv");
    if (!fs::exists(metrics)) return;
    const MetricsTable table = read_metrics_csv(metrics.string());
    if (!table.rows.empty())
      write_file_atomic(folder_.view_path("curves.svg").string(), render_svg_panels(curve_charts(table), 480, 360));
  });
  // A resumed run shows the panel of its last finished epoch until it finishes another.
  const int64_t done = static_cast<int64_t>(folder_.metric_rows(cfg_.epochs).size());
  for (int64_t e = done; e >= 1 && panel_epoch_ == 0; --e)
    if (fs::exists(folder_.file("panels") / fs::path(panel_name(e)).filename())) panel_epoch_ = e;
  write_page("running: " + std::to_string(done) + " of " + std::to_string(cfg_.epochs) + " epochs done", true, true);
}

void RunReport::end_epoch(int64_t epoch, const std::shared_ptr<nn::UNet>& model, Device device) {
  if (!photos_.empty()) {
    guarded(panel_name(epoch).c_str(), [&] {
      Predictor predictor(model, cfg_.height, cfg_.width, device);  // eval mode
      std::vector<data::Image> photos;
      for (const PanelPhoto& p : photos_) photos.push_back(p.photo);
      std::vector<Tensor> probs;
      try {
        probs = predictor.predict_probability(photos);
      } catch (...) {
        model->train();
        throw;
      }
      model->train();
      std::vector<data::Image> rows;
      std::vector<std::pair<std::string, double>> dice;
      for (size_t k = 0; k < photos_.size(); ++k) {
        const data::Image mask = threshold_probability(probs[k], 0.5);
        const double d = mask_dice(mask, photos_[k].truth);
        dice.emplace_back(photos_[k].name, d);
        const std::string label = fs::path(photos_[k].name).stem().string() + " dice " + fixed(d, 4);
        rows.push_back(inference_panel(photos_[k].photo, &photos_[k].truth, {mask}, {label},
                                       std::min(kTileHeight, photos_[k].photo.height)));
      }
      data::write_jpeg(folder_.view_path(panel_name(epoch)).string(), stack_rows(rows), kPanelQuality);
      panel_epoch_ = epoch;
      panel_dice_ = std::move(dice);
    });
  }
  guarded("curves.svg", [&] {
    write_file_atomic(folder_.view_path("curves.svg").string(),
                      render_svg_panels(curve_charts(read_metrics_csv(folder_.file("metrics.csv").string())), 480, 360));
  });
  write_page("running: " + std::to_string(epoch) + " of " + std::to_string(cfg_.epochs) + " epochs done", true, true);
}

void RunReport::finish(const TrainResult& r) {
  std::string status;
  if (r.stop == StopReason::Finished)
    status = "finished: " + std::to_string(r.epochs_done) + " epochs in " + Progress::format_duration(r.seconds) +
             "; best validation dice " + fixed(r.best_val_dice, 4) + " at epoch " + std::to_string(r.best_epoch);
  else
    status = std::string("stopped (") + (r.stop == StopReason::MaxSteps ? "reached --max-steps" : "interrupted by a signal") +
             ") after " + std::to_string(r.epochs_done) + " of " + std::to_string(cfg_.epochs) + " epochs, step " +
             std::to_string(r.steps) + "; it can be resumed";
  write_page(status, false, r.stop != StopReason::Finished);
}

void RunReport::write_page(const std::string& status, bool running, bool resumable) {
  guarded("report.html", [&] {
    ReportPage p;
    p.run_name = fs::path(folder_.path()).lexically_normal().filename().string();
    if (p.run_name.empty()) p.run_name = folder_.path().string();
    p.status = status;
    p.running = running;
    p.updated = utc_now();
    p.config_json = cfg_.to_json();
    p.split = split_;
    const fs::path metrics = folder_.file("metrics.csv");
    if (fs::exists(metrics)) p.metrics = read_metrics_csv(metrics.string());
    const fs::path curves = folder_.file("curves.svg");
    if (!p.metrics.rows.empty() && fs::exists(curves)) p.curves_svg = read_bytes(curves);
    // The panels of the epochs in metrics.csv (a run resumed from an older checkpoint redraws later ones).
    std::error_code ec;
    for (size_t e = 1; e <= p.metrics.rows.size(); ++e) {
      const std::string name = panel_name(static_cast<int64_t>(e));
      if (fs::exists(folder_.path() / name, ec)) p.panel_files.push_back(name);
    }
    if (panel_epoch_ > 0) {
      p.panel_epoch = panel_epoch_;
      p.panel_jpeg = read_bytes(folder_.file("panels") / fs::path(panel_name(panel_epoch_)).filename());
      p.panel_dice = panel_dice_;
    }
    const Best best = p.metrics.has("val_dice") ? best_of(p.metrics, "val_dice") : Best{};
    const std::string best_what = best.found ? "epoch " + fixed(best.epoch, 0) + ", validation dice " + fixed(best.value, 4)
                                             : std::string("the best epoch");
    for (const auto& [path, what] : {std::pair{folder_.best(), best_what},
                                     std::pair{folder_.last(), std::string("the run's newest position (resume from it)")}}) {
      const uintmax_t bytes = fs::file_size(path, ec);
      if (!ec) p.checkpoints.push_back({path.filename().string(), what, bytes});
    }
    if (!p.checkpoints.empty()) {
      if (resumable && fs::exists(folder_.last()))
        p.commands.push_back("train_unet --resume " + folder_.last().string() + "   # continues the run");
      p.commands.push_back("predict_unet --checkpoint " + folder_.best().string() + " --input PHOTOS --output MASKS");
    }
    write_file_atomic(folder_.view_path("report.html").string(), report_html(p));
  });
}

}  // namespace tl::train
