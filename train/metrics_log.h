#pragma once
// Reading what the trainer logged: a run folder's metrics.csv (one row per epoch) and config.json,
// and the per-run summary behind summarize_runs and the README's experiment tables.
//
// metrics.csv is a header line of column names, then one line per epoch with a plain decimal number
// in every field (columns: kMetricsColumns in train/trainer.h; this reader takes any column set).
// "nan" is accepted and means "no value" (a plot leaves a gap, a best-of ignores it).
#include <cstdint>
#include <string>
#include <vector>

#include "train/svg.h"

namespace tl::train {

struct MetricsTable {
  std::vector<std::string> columns;
  std::vector<std::vector<double>> rows;  // rows[r][c] is the value of columns[c] in data row r

  bool has(const std::string& name) const;
  // The position of `name` in `columns`; std::invalid_argument listing the columns when absent.
  size_t index(const std::string& name) const;
  std::vector<double> column(const std::string& name) const;  // one value per row
  // The "epoch" column when there is one, else 1, 2, 3, ...
  std::vector<double> epochs() const;
};

// `text` is the file's content; `path` only names it in messages. Errors are std::runtime_error
// "<path>:<line>: <what>", e.g. "runs/relu/metrics.csv:4: expected 10 fields, got 9".
MetricsTable parse_metrics_csv(const std::string& text, const std::string& path);
// Reads `path`; a missing file is "<path>: no such file".
MetricsTable read_metrics_csv(const std::string& path);
// <run_dir>/metrics.csv; a missing folder is "<run_dir>: no such run folder".
MetricsTable read_run_metrics(const std::string& run_dir);

// The name a run goes by in legends and tables: the "activation" of its config.json when present,
// else the folder's name. A config.json that is not valid JSON is an error naming it.
std::string run_label(const std::string& run_dir);
// run_label of each folder; a label that would repeat gets the folder as given added: "relu (runs/b/relu)".
std::vector<std::string> run_labels(const std::vector<std::string>& run_dirs);

// plot_metrics' chart: one series per run and metric against the epoch, coloured by run, train_*
// metrics dashed. The legend is the run's label (run_labels), followed by the metric when there are
// several. Errors name the run folder or its metrics.csv ("runs/x/metrics.csv: no column 'dice' ...").
Chart metrics_chart(const std::vector<std::string>& run_dirs, const std::vector<std::string>& metrics);

// The highest finite value of a column and the epoch it was reached (the earliest on a tie).
struct Best {
  double value = 0;
  double epoch = 0;
  bool found = false;  // false when the column has no finite value
};
Best best_of(const MetricsTable& table, const std::string& column);

struct RunSummary {
  std::string label;
  int64_t epochs = 0;  // rows logged
  double last_train_dice = 0, last_val_dice = 0;
  Best best_val_dice, best_train_dice;
  double seconds = 0;  // the sum of the per-epoch "seconds" column
};
// Needs the columns train_dice, val_dice and seconds, and at least one row.
RunSummary summarize_run(const MetricsTable& table, const std::string& label);
// summarize_run of each folder's metrics.csv, labelled by run_labels; errors name the folder or file.
std::vector<RunSummary> summarize_runs(const std::vector<std::string>& run_dirs);

// A Markdown table with one row per run: label, epochs, last train and val dice, best val dice and
// best train dice with their epochs ("0.9731 (epoch 7)"), and the total seconds when `seconds`.
// Dice values have 4 decimals; the columns are padded so the raw text lines up too.
std::string summary_markdown(const std::vector<RunSummary>& runs, bool seconds);

}  // namespace tl::train
