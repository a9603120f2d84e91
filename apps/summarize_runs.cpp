// summarize_runs --runs DIR... --out table.md [--seconds]
// One Markdown table row per run: last and best dice (with the epoch of the best), from metrics.csv.
#include <iostream>
#include <string>
#include <vector>

#include "tensor/file_util.h"
#include "train/cli.h"
#include "train/metrics_log.h"

int main(int argc, char** argv) {
  tl::cli::Flags flags("summarize_runs", "Summarizes training runs' metrics.csv as a Markdown table (also printed).");
  std::vector<std::string> runs;
  std::string out;
  bool seconds = false;
  flags.add_list("--runs", &runs, "run folders, each with metrics.csv (its config.json's activation names it)");
  flags.add("--out", &out, "the Markdown file to write (required)");
  flags.add_switch("--seconds", &seconds, "add a column with each run's total training seconds");
  return tl::cli::run_main("summarize_runs", [&] {
    if (!flags.parse(argc, argv)) return 0;
    if (runs.empty()) throw tl::cli::UsageError("--runs is required");
    if (out.empty()) throw tl::cli::UsageError("--out is required");
    const std::string table = tl::train::summary_markdown(tl::train::summarize_runs(runs), seconds);
    tl::write_file_atomic(out, table);
    std::cout << table;
    return 0;
  });
}
