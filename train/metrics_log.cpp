#include "train/metrics_log.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <stdexcept>

#include "nn/json.h"

namespace tl::train {

namespace fs = std::filesystem;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    if (!fs::exists(path)) throw std::runtime_error(path + ": no such file");
    throw std::runtime_error(path + ": cannot open");
  }
  std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  if (file.bad()) throw std::runtime_error(path + ": read error");
  return text;
}

std::string trim(const std::string& s) {
  const auto first = s.find_first_not_of(" \t");
  if (first == std::string::npos) return "";
  return s.substr(first, s.find_last_not_of(" \t") - first + 1);
}

std::vector<std::string> split_fields(const std::string& line) {
  std::vector<std::string> fields;
  size_t start = 0;
  while (true) {
    const auto comma = line.find(',', start);
    fields.push_back(trim(line.substr(start, comma == std::string::npos ? std::string::npos : comma - start)));
    if (comma == std::string::npos) return fields;
    start = comma + 1;
  }
}

// A finite decimal number, or "nan" (no value). Anything else, inf included, is nullopt-like false.
bool parse_number(const std::string& text, double* out) {
  if (text == "nan" || text == "NaN" || text == "NAN") {
    *out = NAN;
    return true;
  }
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, *out);
  return !text.empty() && ec == std::errc() && ptr == end && std::isfinite(*out);
}

// The folder's own name, also for "runs/relu/" and ".".
std::string folder_name(const std::string& dir) {
  fs::path p = fs::path(dir).lexically_normal();
  std::string name = p.filename().string();
  if (name.empty()) name = p.parent_path().filename().string();
  if (name.empty() || name == "." || name == "..") name = fs::weakly_canonical(p).filename().string();
  return name.empty() ? dir : name;
}

std::string format_fixed(double v, int decimals) {
  if (!std::isfinite(v)) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string format_epoch(double epoch) {
  char buf[64];
  if (epoch == std::round(epoch)) std::snprintf(buf, sizeof buf, "%.0f", epoch);
  else std::snprintf(buf, sizeof buf, "%g", epoch);
  return buf;
}

std::string format_best(const Best& b) {
  return b.found ? format_fixed(b.value, 4) + " (epoch " + format_epoch(b.epoch) + ")" : "n/a";
}

}  // namespace

bool MetricsTable::has(const std::string& name) const {
  for (const std::string& c : columns)
    if (c == name) return true;
  return false;
}

size_t MetricsTable::index(const std::string& name) const {
  std::string list;
  for (size_t i = 0; i < columns.size(); ++i) {
    if (columns[i] == name) return i;
    list += (i ? ", " : "") + columns[i];
  }
  throw std::invalid_argument("no column '" + name + "' (columns: " + list + ")");
}

std::vector<double> MetricsTable::column(const std::string& name) const {
  const size_t c = index(name);
  std::vector<double> out;
  out.reserve(rows.size());
  for (const auto& row : rows) out.push_back(row[c]);
  return out;
}

std::vector<double> MetricsTable::epochs() const {
  if (has("epoch")) return column("epoch");
  std::vector<double> out(rows.size());
  for (size_t r = 0; r < rows.size(); ++r) out[r] = static_cast<double>(r + 1);
  return out;
}

MetricsTable parse_metrics_csv(const std::string& text, const std::string& path) {
  auto fail = [&](size_t line, const std::string& what) {
    throw std::runtime_error(path + ":" + std::to_string(line) + ": " + what);
  };
  MetricsTable table;
  bool have_header = false;
  size_t line_no = 0, start = 0;
  if (text.rfind("\xEF\xBB\xBF", 0) == 0) start = 3;  // a UTF-8 byte-order mark
  while (start < text.size()) {
    const auto nl = text.find('\n', start);
    std::string line = text.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
    start = nl == std::string::npos ? text.size() : nl + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (trim(line).empty()) continue;
    std::vector<std::string> fields = split_fields(line);
    if (!have_header) {
      for (size_t i = 0; i < fields.size(); ++i) {
        if (fields[i].empty()) fail(line_no, "empty column name in the header (column " + std::to_string(i + 1) + ")");
        for (size_t j = 0; j < i; ++j)
          if (fields[j] == fields[i]) fail(line_no, "column '" + fields[i] + "' appears twice in the header");
        double ignored = 0;
        if (parse_number(fields[i], &ignored)) fail(line_no, "expected a header line of column names, got '" + line + "'");
      }
      table.columns = std::move(fields);
      have_header = true;
      continue;
    }
    if (fields.size() != table.columns.size())
      fail(line_no, "expected " + std::to_string(table.columns.size()) + " fields, got " + std::to_string(fields.size()));
    std::vector<double> row(fields.size());
    for (size_t i = 0; i < fields.size(); ++i)
      if (!parse_number(fields[i], &row[i]))
        fail(line_no, "column '" + table.columns[i] + "': expected a number, got '" + fields[i] + "'");
    table.rows.push_back(std::move(row));
  }
  if (!have_header) fail(1, "empty file, expected a header line");
  return table;
}

MetricsTable read_metrics_csv(const std::string& path) { return parse_metrics_csv(read_text(path), path); }

MetricsTable read_run_metrics(const std::string& run_dir) {
  if (!fs::is_directory(run_dir)) throw std::runtime_error(run_dir + ": no such run folder");
  return read_metrics_csv((fs::path(run_dir) / "metrics.csv").string());
}

std::string run_label(const std::string& run_dir) {
  const std::string config = (fs::path(run_dir) / "config.json").string();
  if (fs::exists(config)) {
    json::Value root;
    try {
      root = json::parse(read_text(config));
    } catch (const json::ParseError& e) {
      throw std::runtime_error(config + ": " + e.what());
    }
    if (!root.is(json::Value::Type::Object)) throw std::runtime_error(config + ": expected a JSON object");
    const json::Value* activation = root.find("activation");
    if (activation && activation->is(json::Value::Type::String) && !activation->string.empty())
      return activation->string;
  }
  return folder_name(run_dir);
}

std::vector<std::string> run_labels(const std::vector<std::string>& run_dirs) {
  std::vector<std::string> labels;
  std::map<std::string, int> count;
  for (const std::string& dir : run_dirs) ++count[labels.emplace_back(run_label(dir))];
  for (size_t i = 0; i < labels.size(); ++i)
    if (count[labels[i]] > 1) labels[i] += " (" + run_dirs[i] + ")";
  return labels;
}

Chart metrics_chart(const std::vector<std::string>& run_dirs, const std::vector<std::string>& metrics) {
  if (metrics.empty()) throw std::invalid_argument("metrics_chart: no metrics to plot");
  std::vector<MetricsTable> tables;
  for (const std::string& dir : run_dirs) {
    tables.push_back(read_run_metrics(dir));
    for (const std::string& m : metrics) {
      try {
        tables.back().index(m);
      } catch (const std::invalid_argument& e) {
        throw std::runtime_error((fs::path(dir) / "metrics.csv").string() + ": " + e.what());
      }
    }
  }
  const std::vector<std::string> labels = run_labels(run_dirs);
  Chart chart;
  std::string joined;
  for (const std::string& m : metrics) joined += (joined.empty() ? "" : ", ") + m;
  chart.title = joined + " per epoch";
  chart.x_label = "epoch";
  chart.y_label = metrics.size() == 1 ? metrics[0] : "value";
  chart.integer_x = true;
  for (size_t r = 0; r < run_dirs.size(); ++r)
    for (const std::string& m : metrics) {
      Series s;
      s.label = metrics.size() == 1 ? labels[r] : labels[r] + " " + m;
      s.x = tables[r].epochs();
      s.y = tables[r].column(m);
      s.dashed = m.rfind("train_", 0) == 0;
      s.color = default_color(r);
      chart.series.push_back(std::move(s));
    }
  return chart;
}

Best best_of(const MetricsTable& table, const std::string& column) {
  const std::vector<double> values = table.column(column), epochs = table.epochs();
  Best best;
  for (size_t r = 0; r < values.size(); ++r) {
    if (!std::isfinite(values[r]) || (best.found && values[r] <= best.value)) continue;
    best = {values[r], epochs[r], true};
  }
  return best;
}

RunSummary summarize_run(const MetricsTable& table, const std::string& label) {
  if (table.rows.empty()) throw std::invalid_argument("no epochs logged (a header and no rows)");
  RunSummary s;
  s.label = label;
  s.epochs = static_cast<int64_t>(table.rows.size());
  s.last_train_dice = table.column("train_dice").back();
  s.last_val_dice = table.column("val_dice").back();
  s.best_val_dice = best_of(table, "val_dice");
  s.best_train_dice = best_of(table, "train_dice");
  for (double v : table.column("seconds"))
    if (std::isfinite(v)) s.seconds += v;
  return s;
}

std::vector<RunSummary> summarize_runs(const std::vector<std::string>& run_dirs) {
  std::vector<MetricsTable> tables;
  for (const std::string& dir : run_dirs) tables.push_back(read_run_metrics(dir));
  const std::vector<std::string> labels = run_labels(run_dirs);
  std::vector<RunSummary> out;
  for (size_t i = 0; i < run_dirs.size(); ++i) {
    try {
      out.push_back(summarize_run(tables[i], labels[i]));
    } catch (const std::invalid_argument& e) {
      throw std::runtime_error((fs::path(run_dirs[i]) / "metrics.csv").string() + ": " + e.what());
    }
  }
  return out;
}

std::string summary_markdown(const std::vector<RunSummary>& runs, bool seconds) {
  std::vector<std::vector<std::string>> cells = {
      {"run", "epochs", "train dice (last)", "val dice (last)", "best val dice", "best train dice"}};
  if (seconds) cells[0].push_back("seconds");
  for (const RunSummary& r : runs) {
    cells.push_back({r.label, std::to_string(r.epochs), format_fixed(r.last_train_dice, 4),
                     format_fixed(r.last_val_dice, 4), format_best(r.best_val_dice), format_best(r.best_train_dice)});
    if (seconds) cells.back().push_back(format_fixed(r.seconds, 1));
  }
  std::vector<size_t> width(cells[0].size(), 3);
  for (const auto& row : cells)
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  // The label column is left-aligned, the numbers right-aligned.
  auto pad = [&](const std::string& s, size_t c) {
    const std::string fill(width[c] - s.size(), ' ');
    return c == 0 ? s + fill : fill + s;
  };
  std::string out;
  for (size_t r = 0; r < cells.size(); ++r) {
    out += "|";
    for (size_t c = 0; c < cells[r].size(); ++c) out += " " + pad(cells[r][c], c) + " |";
    out += "\n";
    if (r == 0) {
      out += "|";
      for (size_t c = 0; c < width.size(); ++c)
        out += c == 0 ? " " + std::string(width[c], '-') + " |" : " " + std::string(width[c] - 1, '-') + ": |";
      out += "\n";
    }
  }
  return out;
}

}  // namespace tl::train
