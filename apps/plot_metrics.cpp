// plot_metrics --runs DIR... --out dice_curves.svg [--metrics val_dice train_dice] [--title T]
// One line per run and metric from each run folder's metrics.csv, against the epoch; train_* dashed.
#include <iostream>
#include <string>
#include <vector>

#include "train/cli.h"
#include "train/metrics_log.h"
#include "train/svg.h"

int main(int argc, char** argv) {
  tl::cli::Flags flags("plot_metrics", "Plots metrics.csv columns of training runs against the epoch, as an SVG.");
  std::vector<std::string> runs, metric = {"val_dice"}, metrics;
  std::string out, title, y_range;
  flags.add_list("--runs", &runs, "run folders, each with metrics.csv (its config.json's activation names it)");
  flags.add("--out", &out, "the SVG file to write (required)");
  flags.add_list("--metric", &metric, "metrics.csv columns to plot, one line per run and column");
  flags.add_list("--metrics", &metrics, "the same as --metric");
  flags.add("--title", &title, "chart title; none: the metrics, then \"per epoch\"");
  flags.add("--y-range", &y_range, "fixed y axis LO,HI such as 0,1; none: fit the data");
  return tl::cli::run_main("plot_metrics", [&] {
    if (!flags.parse(argc, argv)) return 0;
    if (runs.empty()) throw tl::cli::UsageError("--runs is required");
    if (out.empty()) throw tl::cli::UsageError("--out is required");
    if (flags.was_set("--metric") && flags.was_set("--metrics"))
      throw tl::cli::UsageError("give --metric or --metrics, not both");
    if (flags.was_set("--metrics")) metric = metrics;

    tl::train::Chart chart = tl::train::metrics_chart(runs, metric);
    if (!title.empty()) chart.title = title;
    if (!y_range.empty()) chart.y_range = tl::train::parse_range("--y-range", y_range);
    tl::train::write_svg(out, chart);
    std::cout << "wrote " << out << " (" << chart.series.size() << " series)\n";
    return 0;
  });
}
