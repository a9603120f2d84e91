#include "train/svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <stdexcept>

#include "tensor/file_util.h"
#include "train/cli.h"

namespace tl::train {

namespace {

constexpr double kCharWidth = 6.6;  // average advance of a 12 px sans-serif glyph, for layout
constexpr double kEps = 1e-9;       // slack when deciding whether a value is a multiple of a step

bool finite(double v) { return std::isfinite(v); }

// A pixel coordinate: one decimal, "12" rather than "12.0".
std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  std::string s = buf;
  if (s.size() > 2 && s.compare(s.size() - 2, 2, ".0") == 0) s.resize(s.size() - 2);
  return s == "-0" ? "0" : s;
}

double label_width(const std::string& s) {
  size_t glyphs = 0;
  for (unsigned char c : s) glyphs += (c & 0xC0) != 0x80;  // UTF-8: count the lead bytes
  return kCharWidth * static_cast<double>(glyphs);
}

// A range the axis can use: finite and non-empty.
Range open_up(double lo, double hi) {
  if (!finite(lo) || !finite(hi)) return {0, 1};
  if (hi > lo) return {lo, hi};
  const double pad = lo != 0 ? std::abs(lo) * 0.1 : 1;
  return {lo - pad, hi + pad};
}

double nice_step(double span, int target) {
  const double raw = span / std::max(target, 1);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / magnitude;  // in [1, 10)
  return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * magnitude;
}

// The plot area of one panel and the data ranges it shows.
struct Frame {
  double left, top, width, height;
  Range x, y;
  double px(double v) const { return left + (v - x.lo) / (x.hi - x.lo) * width; }
  double py(double v) const { return top + (y.hi - v) / (y.hi - y.lo) * height; }
};

// The pixel points of a series, split where a value is not finite.
std::vector<std::vector<std::pair<double, double>>> polylines(const Series& s, const Frame& f) {
  std::vector<std::vector<std::pair<double, double>>> lines(1);
  for (size_t i = 0; i < s.x.size(); ++i) {
    if (finite(s.x[i]) && finite(s.y[i])) lines.back().emplace_back(f.px(s.x[i]), f.py(s.y[i]));
    else if (!lines.back().empty()) lines.emplace_back();
  }
  if (lines.back().empty()) lines.pop_back();
  return lines;
}

std::string path_data(const std::vector<std::vector<std::pair<double, double>>>& lines) {
  std::string d;
  for (const auto& line : lines) {
    for (size_t i = 0; i < line.size(); ++i)
      d += (d.empty() ? "" : " ") + std::string(i ? "L" : "M") + num(line[i].first) + " " + num(line[i].second);
    if (line.size() == 1) d += " h0";  // a lone point: drawn as a dot by the round line caps
  }
  return d;
}

struct Box {
  double x, y, w, h;
  bool contains(double px, double py) const { return px >= x && px <= x + w && py >= y && py <= y + h; }
};

// How much of the data a legend at `box` would hide: points along every segment, 8 per segment.
int hidden_points(const Box& box, const std::vector<std::vector<std::vector<std::pair<double, double>>>>& all) {
  int n = 0;
  for (const auto& lines : all)
    for (const auto& line : lines)
      for (size_t i = 0; i < line.size(); ++i) {
        n += box.contains(line[i].first, line[i].second);
        if (i == 0) continue;
        for (int k = 1; k < 8; ++k) {
          const double t = k / 8.0;
          n += box.contains(line[i - 1].first + t * (line[i].first - line[i - 1].first),
                            line[i - 1].second + t * (line[i].second - line[i - 1].second));
        }
      }
  return n;
}

// One chart drawn in the rectangle [0, W] x [0, H] of the group it opens; `id` keeps clip ids unique.
void render_panel(std::string& out, const Chart& c, double offset_x, int W, int H, int id) {
  for (const Series& s : c.series)
    if (s.x.size() != s.y.size())
      throw std::invalid_argument("render_svg: series '" + s.label + "' has " + std::to_string(s.x.size()) +
                                  " x values and " + std::to_string(s.y.size()) + " y values");
  if (c.y_range && !(finite(c.y_range->lo) && finite(c.y_range->hi) && c.y_range->hi > c.y_range->lo))
    throw std::invalid_argument("render_svg: y range [" + std::to_string(c.y_range->lo) + ", " +
                                std::to_string(c.y_range->hi) + "] is empty");

  // The data's extent; x is shown exactly, y is widened to nice ticks unless fixed.
  const double inf = std::numeric_limits<double>::infinity();
  double xmin = inf, xmax = -inf, ymin = inf, ymax = -inf;
  for (const Series& s : c.series)
    for (size_t i = 0; i < s.x.size(); ++i)
      if (finite(s.x[i]) && finite(s.y[i])) {
        xmin = std::min(xmin, s.x[i]), xmax = std::max(xmax, s.x[i]);
        ymin = std::min(ymin, s.y[i]), ymax = std::max(ymax, s.y[i]);
      }

  const double top = c.title.empty() ? 16 : 40, bottom = c.x_label.empty() ? 32 : 52;
  const double ph = H - top - bottom;
  const int y_target = std::max(2, static_cast<int>(ph / 50));
  const Range yr = c.y_range ? *c.y_range : nice_range(ymin, ymax, y_target);
  const Ticks yt = nice_ticks(yr.lo, yr.hi, y_target);
  double tick_w = 0;
  for (double v : yt.values) tick_w = std::max(tick_w, label_width(format_tick(v, yt.step)));
  const double left = (c.y_label.empty() ? 10 : 30) + tick_w + 8, right = 16;
  const double pw = W - left - right;
  if (ph < 40 || pw < 40) throw std::invalid_argument("render_svg: " + std::to_string(W) + "x" + std::to_string(H) +
                                                      " leaves no room for the plot");
  const Range xr = open_up(xmin, xmax);
  const Ticks xt = nice_ticks(xr.lo, xr.hi, std::max(2, static_cast<int>(pw / 80)), c.integer_x ? 1 : 0);
  const Frame f{left, top, pw, ph, xr, yr};

  out += "<g transform=\"translate(" + num(offset_x) + ",0)\">\n";
  const std::string clip = "plot-area-" + std::to_string(id);
  out += "<defs><clipPath id=\"" + clip + "\"><rect x=\"" + num(left) + "\" y=\"" + num(top) + "\" width=\"" +
         num(pw) + "\" height=\"" + num(ph) + "\"/></clipPath></defs>\n";
  if (!c.title.empty())
    out += "<text x=\"" + num(W / 2.0) + "\" y=\"24\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">" +
           xml_escape(c.title) + "</text>\n";

  // Grid lines at the ticks; the zero lines darker, as axes through the origin.
  auto hline = [&](double v, const char* stroke) {
    return "<line x1=\"" + num(left) + "\" x2=\"" + num(left + pw) + "\" y1=\"" + num(f.py(v)) + "\" y2=\"" +
           num(f.py(v)) + "\" stroke=\"" + stroke + "\"/>\n";
  };
  auto vline = [&](double v, const char* stroke) {
    return "<line x1=\"" + num(f.px(v)) + "\" x2=\"" + num(f.px(v)) + "\" y1=\"" + num(top) + "\" y2=\"" +
           num(top + ph) + "\" stroke=\"" + stroke + "\"/>\n";
  };
  out += "<g stroke-width=\"1\">\n";
  for (double v : yt.values) out += hline(v, v == 0 ? "#999999" : "#e6e6e6");
  for (double v : xt.values) out += vline(v, v == 0 ? "#999999" : "#e6e6e6");
  out += "</g>\n";
  out += "<rect x=\"" + num(left) + "\" y=\"" + num(top) + "\" width=\"" + num(pw) + "\" height=\"" + num(ph) +
         "\" fill=\"none\" stroke=\"#333333\"/>\n";

  // Tick labels and axis labels.
  out += "<g fill=\"#333333\">\n";
  for (double v : yt.values)
    out += "<text x=\"" + num(left - 6) + "\" y=\"" + num(f.py(v) + 4) + "\" text-anchor=\"end\">" +
           xml_escape(format_tick(v, yt.step)) + "</text>\n";
  for (double v : xt.values)
    out += "<text x=\"" + num(f.px(v)) + "\" y=\"" + num(top + ph + 17) + "\" text-anchor=\"middle\">" +
           xml_escape(format_tick(v, xt.step)) + "</text>\n";
  out += "</g>\n";
  if (!c.x_label.empty())
    out += "<text x=\"" + num(left + pw / 2) + "\" y=\"" + num(H - 12.0) + "\" text-anchor=\"middle\">" +
           xml_escape(c.x_label) + "</text>\n";
  if (!c.y_label.empty())
    out += "<text transform=\"translate(16," + num(top + ph / 2) + ") rotate(-90)\" text-anchor=\"middle\">" +
           xml_escape(c.y_label) + "</text>\n";

  // The series, clipped to the plot area (a fixed y range may cut them).
  std::vector<std::string> colors;
  std::vector<std::vector<std::vector<std::pair<double, double>>>> lines;
  for (size_t i = 0; i < c.series.size(); ++i) {
    colors.push_back(c.series[i].color.empty() ? default_color(i) : c.series[i].color);
    lines.push_back(polylines(c.series[i], f));
  }
  out += "<g clip-path=\"url(#" + clip + ")\" fill=\"none\" stroke-width=\"2\" stroke-linejoin=\"round\" "
         "stroke-linecap=\"round\">\n";
  for (size_t i = 0; i < c.series.size(); ++i) {
    if (lines[i].empty()) continue;  // nothing finite to draw
    out += "<path d=\"" + path_data(lines[i]) + "\" stroke=\"" + xml_escape(colors[i]) + "\"" +
           (c.series[i].dashed ? " stroke-dasharray=\"6 4\"" : "") + "/>\n";
  }
  out += "</g>\n";

  // The legend, in the plot corner where it hides the fewest points.
  std::vector<size_t> entries;
  double label_w = 0;
  for (size_t i = 0; i < c.series.size(); ++i)
    if (!c.series[i].label.empty()) entries.push_back(i), label_w = std::max(label_w, label_width(c.series[i].label));
  if (!entries.empty()) {
    const double row = 18, w = 10 + 24 + 6 + label_w + 10, h = 6 + row * static_cast<double>(entries.size());
    const double x_left = left + 8, x_right = left + pw - 8 - w, y_top = top + 8, y_bottom = top + ph - 8 - h;
    const Box corners[] = {{x_right, y_top, w, h}, {x_left, y_top, w, h}, {x_right, y_bottom, w, h},
                           {x_left, y_bottom, w, h}};
    Box box = corners[0];
    int least = hidden_points(box, lines);
    for (const Box& b : corners)
      if (const int n = hidden_points(b, lines); n < least) box = b, least = n;
    out += "<g>\n<rect x=\"" + num(box.x) + "\" y=\"" + num(box.y) + "\" width=\"" + num(w) + "\" height=\"" + num(h) +
           "\" fill=\"white\" fill-opacity=\"0.85\" stroke=\"#cccccc\"/>\n";
    for (size_t k = 0; k < entries.size(); ++k) {
      const Series& s = c.series[entries[k]];
      const double y = box.y + 3 + row * (static_cast<double>(k) + 0.5);
      out += "<line x1=\"" + num(box.x + 10) + "\" x2=\"" + num(box.x + 34) + "\" y1=\"" + num(y) + "\" y2=\"" +
             num(y) + "\" stroke=\"" + xml_escape(colors[entries[k]]) + "\" stroke-width=\"2\"" +
             (s.dashed ? " stroke-dasharray=\"6 4\"" : "") + "/>\n";
      out += "<text x=\"" + num(box.x + 40) + "\" y=\"" + num(y + 4) + "\">" + xml_escape(s.label) + "</text>\n";
    }
    out += "</g>\n";
  }
  out += "</g>\n";
}

}  // namespace

Range parse_range(const std::string& what, const std::string& text) {
  const auto comma = text.find(',');
  if (comma == std::string::npos)
    throw cli::UsageError(what + ": expected LO,HI such as -5,5, got '" + text + "'");
  const Range r{cli::parse_double(what, text.substr(0, comma)), cli::parse_double(what, text.substr(comma + 1))};
  if (!(r.lo < r.hi)) throw cli::UsageError(what + ": LO must be below HI, got '" + text + "'");
  return r;
}

Ticks nice_ticks(double lo, double hi, int target, double min_step) {
  Ticks t;
  const Range r = open_up(lo, hi);
  t.lo = r.lo, t.hi = r.hi;
  t.step = std::max(nice_step(r.hi - r.lo, target), min_step);
  const double first = std::ceil(r.lo / t.step - kEps), last = std::floor(r.hi / t.step + kEps);
  for (double k = first; k <= last; ++k) {
    const double v = k * t.step;  // k * step rather than a running sum: no drift
    t.values.push_back(std::abs(v) < t.step * kEps ? 0.0 : v);
  }
  return t;
}

Range nice_range(double lo, double hi, int target) {
  const Ticks t = nice_ticks(lo, hi, target);
  return {std::floor(t.lo / t.step + kEps) * t.step, std::ceil(t.hi / t.step - kEps) * t.step};
}

std::string format_tick(double value, double step) {
  const int decimals = step >= 1 ? 0 : static_cast<int>(std::ceil(-std::log10(step) - kEps));
  if (std::abs(value) < step * kEps) value = 0;  // never "-0.0"
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
  return buf;
}

const std::string& default_color(size_t i) {
  static const std::vector<std::string> palette = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                                   "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"};
  return palette[i % palette.size()];
}

std::string xml_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char ch : text) {
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out += ch;
    }
  }
  return out;
}

std::string render_svg_panels(const std::vector<Chart>& charts, int panel_width, int height) {
  const int width = panel_width * static_cast<int>(std::max<size_t>(charts.size(), 1));
  std::string out = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(width) + "\" height=\"" +
                    std::to_string(height) + "\" viewBox=\"0 0 " + std::to_string(width) + " " +
                    std::to_string(height) + "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  out += "<rect width=\"" + std::to_string(width) + "\" height=\"" + std::to_string(height) + "\" fill=\"white\"/>\n";
  for (size_t i = 0; i < charts.size(); ++i)
    render_panel(out, charts[i], static_cast<double>(i) * panel_width, panel_width, height, static_cast<int>(i));
  out += "</svg>\n";
  return out;
}

std::string render_svg(const Chart& chart, int width, int height) { return render_svg_panels({chart}, width, height); }

void write_svg(const std::string& path, const Chart& chart) { write_file_atomic(path, render_svg(chart)); }

}  // namespace tl::train
