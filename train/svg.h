#pragma once
// A small SVG line-chart writer for the training plots (plot_metrics, plot_activations): axes with
// "nice" tick values (1, 2 or 5 x 10^k), grid lines, one <path> per series, and a legend placed in
// the corner of the plot where it hides the fewest data points. Several charts can sit side by side
// in one file. Plain text out, no dependencies; any browser shows the result.
#include <optional>
#include <string>
#include <vector>

namespace tl::train {

struct Series {
  std::string label;         // legend text; an empty label gets no legend entry
  std::vector<double> x, y;  // same length; a non-finite value leaves a gap in the line
  bool dashed = false;
  std::string color;         // any SVG colour; empty: default_color(index of the series)
};

struct Range {
  double lo = 0, hi = 1;
};

struct Chart {
  std::string title, x_label, y_label;
  std::vector<Series> series;
  std::optional<Range> y_range;  // a fixed y axis; default: the data's range widened to nice ticks
  bool integer_x = false;        // x ticks on whole numbers only (epochs)
};

// "LO,HI" such as "-5,5" -> {-5, 5}, LO < HI; cli::UsageError naming `what` (the flag) otherwise.
Range parse_range(const std::string& what, const std::string& text);

// Axis ticks: a step of 1, 2 or 5 x 10^k (at least min_step) giving about `target` steps over
// [lo, hi], and every multiple of the step inside [lo, hi]. A degenerate or empty range is opened
// up around its value first.
struct Ticks {
  double lo = 0, hi = 1;  // the range the ticks were chosen for, after opening up
  double step = 1;
  std::vector<double> values;
};
Ticks nice_ticks(double lo, double hi, int target = 6, double min_step = 0);
// [lo, hi] widened outwards to the nearest multiples of its nice step, so the axis ends on ticks.
Range nice_range(double lo, double hi, int target = 6);
// A tick value with as many decimals as `step` needs: (0.5, 0.1) -> "0.5", (2, 1) -> "2".
std::string format_tick(double value, double step);

// A palette of distinct colours; wraps around after 10.
const std::string& default_color(size_t i);
// & < > " ' as entities, so any text is safe in an element or an attribute.
std::string xml_escape(const std::string& text);

// One chart as a standalone SVG document (it starts with "<svg"). std::invalid_argument for a
// series whose x and y lengths differ, or a y_range with lo >= hi.
std::string render_svg(const Chart& chart, int width = 720, int height = 440);
// The charts left to right, each panel_width wide, in one SVG document.
std::string render_svg_panels(const std::vector<Chart>& charts, int panel_width = 480, int height = 440);

// Writes the chart's SVG to `path` atomically (tl::write_file_atomic: a reader never sees a partial
// plot); std::runtime_error naming `path` on failure.
void write_svg(const std::string& path, const Chart& chart);

}  // namespace tl::train
