// The run logs and plots: metrics.csv parsing and its errors, run labels, nice ticks, the SVG writer's
// output (well-formed, escaped, one path per series) and the run summary behind summarize_runs.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <fstream>
#include <string>
#include <vector>

#include "tests/test_util.h"
#include "train/metrics_log.h"
#include "train/svg.h"

namespace fs = std::filesystem;
using namespace tl::train;
using tl::testing::error_of;

namespace {

// A fresh folder under the system's temporary folder, removed at the end of the test.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("tl_test_plots_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" + name);
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& rel, const std::string& text) const {
    const fs::path p = path / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }
};


size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t i = text.find(what); i != std::string::npos; i = text.find(what, i + 1)) ++n;
  return n;
}

// "" when every element is closed, in order; otherwise what is wrong.
std::string tag_balance(const std::string& xml) {
  std::vector<std::string> open;
  for (size_t i = xml.find('<'); i != std::string::npos; i = xml.find('<', i + 1)) {
    const size_t end = xml.find('>', i);
    if (end == std::string::npos) return "unterminated tag at byte " + std::to_string(i);
    const std::string tag = xml.substr(i + 1, end - i - 1);
    if (tag.empty()) return "empty tag at byte " + std::to_string(i);
    if (tag[0] == '/') {
      if (open.empty() || open.back() != tag.substr(1)) return "unexpected <" + tag + "> at byte " + std::to_string(i);
      open.pop_back();
    } else if (tag.back() != '/') {
      open.push_back(tag.substr(0, tag.find_first_of(" \n")));
    }
  }
  return open.empty() ? "" : "<" + open.back() + "> is never closed";
}

const char* kMetricsHeader = "epoch,train_loss,train_dice,train_acc,val_loss,val_dice,val_dice_soft,val_acc,lr,seconds\n";

// A metrics.csv with the trainer's columns; train_dice and val_dice per epoch, 10 s per epoch.
std::string metrics_csv(const std::vector<double>& train_dice, const std::vector<double>& val_dice) {
  std::string text = kMetricsHeader;
  for (size_t i = 0; i < val_dice.size(); ++i)
    text += std::to_string(i + 1) + ",0.3," + std::to_string(train_dice[i]) + ",0.9,0.35," +
            std::to_string(val_dice[i]) + ",0.8,0.9,0.001,10.5\n";
  return text;
}

}  // namespace

TEST_CASE("metrics.csv: columns and rows, CRLF and blank lines accepted") {
  const MetricsTable t = parse_metrics_csv("epoch,val_dice,lr\r\n1,0.5,1e-3\r\n\r\n2, 0.75 ,nan\r\n\n", "m.csv");
  REQUIRE(t.columns == std::vector<std::string>{"epoch", "val_dice", "lr"});
  REQUIRE(t.rows.size() == 2);
  CHECK(t.column("val_dice") == std::vector<double>{0.5, 0.75});
  CHECK(t.epochs() == std::vector<double>{1, 2});
  CHECK(t.rows[0][2] == 1e-3);
  CHECK(std::isnan(t.rows[1][2]));
  CHECK(t.has("lr"));
  CHECK_FALSE(t.has("seconds"));
  CHECK(error_of([&] { t.column("dice"); }) == "no column 'dice' (columns: epoch, val_dice, lr)");
  // Without an epoch column the rows are numbered from 1.
  CHECK(parse_metrics_csv("val_dice\n0.1\n0.2\n", "m.csv").epochs() == std::vector<double>{1, 2});
  // A header alone is a valid (empty) log.
  CHECK(parse_metrics_csv(kMetricsHeader, "m.csv").rows.empty());
}

TEST_CASE("metrics.csv: errors name the file and the line") {
  struct Case {
    const char* text;
    const char* error;
  };
  const Case cases[] = {
      {"", "m.csv:1: empty file, expected a header line"},
      {"\n\n", "m.csv:1: empty file, expected a header line"},
      {"1,0.5\n", "m.csv:1: expected a header line of column names, got '1,0.5'"},
      {"epoch,,lr\n", "m.csv:1: empty column name in the header (column 2)"},
      {"epoch,lr,epoch\n", "m.csv:1: column 'epoch' appears twice in the header"},
      {"epoch,val_dice\n1,0.5\n2\n", "m.csv:3: expected 2 fields, got 1"},
      {"epoch,val_dice\n1,0.5,7\n", "m.csv:2: expected 2 fields, got 3"},
      {"epoch,val_dice\r\n1,0.5\r\n\r\n3,abc\r\n", "m.csv:4: column 'val_dice': expected a number, got 'abc'"},
      {"epoch,val_dice\n1,\n", "m.csv:2: column 'val_dice': expected a number, got ''"},
      {"epoch,val_dice\n1,inf\n", "m.csv:2: column 'val_dice': expected a number, got 'inf'"},
      {"epoch,val_dice\n1,0.5x\n", "m.csv:2: column 'val_dice': expected a number, got '0.5x'"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.text);
    CHECK(error_of([&] { parse_metrics_csv(c.text, "m.csv"); }) == c.error);
  }
}

TEST_CASE("metrics.csv: files and run folders") {
  TempDir dir("files");
  const std::string path = dir.file("run/metrics.csv", metrics_csv({0.5, 0.6}, {0.4, 0.7}));
  CHECK(read_metrics_csv(path).rows.size() == 2);
  CHECK(read_run_metrics((dir.path / "run").string()).column("val_dice") == std::vector<double>{0.4, 0.7});
  const std::string missing = (dir.path / "nope.csv").string();
  CHECK(error_of([&] { read_metrics_csv(missing); }) == missing + ": no such file");
  const std::string no_run = (dir.path / "no_run").string();
  CHECK(error_of([&] { read_run_metrics(no_run); }) == no_run + ": no such run folder");
  fs::create_directories(dir.path / "empty_run");
  CHECK(error_of([&] { read_run_metrics((dir.path / "empty_run").string()); }) ==
        (dir.path / "empty_run" / "metrics.csv").string() + ": no such file");
  dir.file("bad/metrics.csv", "epoch,val_dice\n1,x\n");
  CHECK(error_of([&] { read_run_metrics((dir.path / "bad").string()); }) ==
        (dir.path / "bad" / "metrics.csv").string() + ":2: column 'val_dice': expected a number, got 'x'");
}

TEST_CASE("run_label: config.json's activation, else the folder name") {
  TempDir dir("labels");
  dir.file("a/config.json", R"({"activation": "gelu", "epochs": 5, "image_size": "160x240", "augment": true})");
  dir.file("b/config.json", R"({"epochs": 5})");
  fs::create_directories(dir.path / "plain_run");
  dir.file("broken/config.json", R"({"activation": )");
  dir.file("c/config.json", R"({"activation": "gelu"})");
  CHECK(run_label((dir.path / "a").string()) == "gelu");
  CHECK(run_label((dir.path / "b").string()) == "b");
  CHECK(run_label((dir.path / "plain_run").string()) == "plain_run");
  CHECK(run_label((dir.path / "plain_run").string() + "/") == "plain_run");
  const std::string err = error_of([&] { run_label((dir.path / "broken").string()); });
  CHECK_MESSAGE(err.rfind((dir.path / "broken" / "config.json").string() + ": ", 0) == 0, err);
  // Two runs with the same activation are told apart by their folders.
  const std::string a = (dir.path / "a").string(), c = (dir.path / "c").string(), b = (dir.path / "b").string();
  CHECK(run_labels({a, b, c}) == std::vector<std::string>{"gelu (" + a + ")", "b", "gelu (" + c + ")"});
}

TEST_CASE("nice_ticks: steps of 1, 2 or 5 x 10^k covering the range") {
  struct Case {
    double lo, hi;
    int target;
    double min_step;
    double step;
    std::vector<double> values;
  };
  const Case cases[] = {
      {0, 1, 5, 0, 0.2, {0, 0.2, 0.4, 0.6, 0.8, 1}},
      {-5, 5, 6, 0, 2, {-4, -2, 0, 2, 4}},
      {0.931, 0.978, 5, 0, 0.01, {0.94, 0.95, 0.96, 0.97}},
      {1, 10, 4, 1, 2, {2, 4, 6, 8, 10}},
      {1, 3, 6, 1, 1, {1, 2, 3}},  // epochs: never a half step
      {0, 120, 6, 0, 20, {0, 20, 40, 60, 80, 100, 120}},
      {5, 5, 4, 0, 0.2, {4.6, 4.8, 5, 5.2, 5.4}},  // degenerate: opened to [4.5, 5.5]
  };
  for (const Case& c : cases) {
    CAPTURE(c.lo);
    CAPTURE(c.hi);
    const Ticks t = nice_ticks(c.lo, c.hi, c.target, c.min_step);
    CHECK(t.step == doctest::Approx(c.step));
    REQUIRE(t.values.size() == c.values.size());
    for (size_t i = 0; i < c.values.size(); ++i) CHECK(t.values[i] == doctest::Approx(c.values[i]));
  }
  // Over many ranges: the mantissa of the step is 1, 2 or 5, the ticks are inside and evenly spaced.
  for (int k = 0; k < 500; ++k) {
    const double lo = std::sin(k * 1.7) * std::pow(10.0, k % 7 - 3), hi = lo + std::pow(10.0, (k * 3) % 9 - 4) * (1 + k % 13);
    const Ticks t = nice_ticks(lo, hi, 6);
    const double mantissa = t.step / std::pow(10.0, std::floor(std::log10(t.step) + 1e-9));
    CAPTURE(lo);
    CAPTURE(hi);
    CHECK((std::abs(mantissa - 1) < 1e-6 || std::abs(mantissa - 2) < 1e-6 || std::abs(mantissa - 5) < 1e-6));
    CHECK(t.values.size() >= 3);
    CHECK(t.values.size() <= 13);
    for (size_t i = 0; i < t.values.size(); ++i) {
      CHECK(t.values[i] >= lo - t.step * 1e-6);
      CHECK(t.values[i] <= hi + t.step * 1e-6);
      if (i) CHECK(t.values[i] - t.values[i - 1] == doctest::Approx(t.step));
    }
  }
}

TEST_CASE("nice_range and tick labels") {
  const Range r = nice_range(0.931, 0.978, 5);
  CHECK(r.lo == doctest::Approx(0.93));
  CHECK(r.hi == doctest::Approx(0.98));
  const Range z = nice_range(-0.12, 1.08, 6);
  CHECK(z.lo == doctest::Approx(-0.2));
  CHECK(z.hi == doctest::Approx(1.2));
  CHECK(format_tick(0.5, 0.1) == "0.5");
  CHECK(format_tick(2, 1) == "2");
  CHECK(format_tick(0.05, 0.05) == "0.05");
  CHECK(format_tick(0.94, 0.01) == "0.94");
  CHECK(format_tick(1000, 500) == "1000");
  CHECK(format_tick(-1e-17, 0.2) == "0.0");  // never "-0.0"
}

TEST_CASE("parse_range") {
  CHECK(parse_range("--range", "-5,5").lo == -5);
  CHECK(parse_range("--range", "-5,5").hi == 5);
  CHECK(error_of([] { parse_range("--range", "5"); }) == "--range: expected LO,HI such as -5,5, got '5'");
  CHECK(error_of([] { parse_range("--range", "5,-5"); }) == "--range: LO must be below HI, got '5,-5'");
  CHECK(error_of([] { parse_range("--range", "a,5"); }) == "--range: expected a number, got 'a'");
}

TEST_CASE("SVG: well-formed, escaped, one path per series, legend entries") {
  Chart chart;
  chart.title = "Dice <per> epoch & \"more\"";
  chart.x_label = "epoch";
  chart.y_label = "val_dice";
  chart.integer_x = true;
  chart.series.push_back({"relu", {1, 2, 3}, {0.5, 0.8, 0.9}, false, ""});
  chart.series.push_back({"gelu's <run>", {1, 2, 3}, {0.4, 0.7, 0.95}, true, ""});
  chart.series.push_back({"silu", {1, 2, 3, 4}, {0.3, NAN, 0.8, 0.85}, false, "#123456"});
  const std::string svg = render_svg(chart);
  CHECK(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0) == 0);
  CHECK(svg.find("width=\"720\" height=\"440\"") != std::string::npos);
  CHECK_MESSAGE(tag_balance(svg).empty(), tag_balance(svg));
  CHECK(svg.find("Dice &lt;per&gt; epoch &amp; &quot;more&quot;") != std::string::npos);
  CHECK(svg.find("gelu&apos;s &lt;run&gt;") != std::string::npos);
  CHECK(svg.find("<per>") == std::string::npos);
  CHECK(count(svg, "<path ") == 3);
  // The NaN splits the third line into two pieces (the first a lone point).
  const size_t third = svg.find("stroke=\"#123456\"");
  REQUIRE(third != std::string::npos);
  const std::string d = svg.substr(svg.rfind("<path", third), third - svg.rfind("<path", third));
  CHECK(count(d, "M") == 2);
  CHECK(d.find("h0") != std::string::npos);
  // Default colours differ; dashes on the dashed series and its legend sample.
  CHECK(svg.find(default_color(0)) != std::string::npos);
  CHECK(svg.find(default_color(1)) != std::string::npos);
  CHECK(default_color(0) != default_color(1));
  CHECK(count(svg, "stroke-dasharray") == 2);
  CHECK(svg.find(">relu</text>") != std::string::npos);
  CHECK(svg.find(">silu</text>") != std::string::npos);
  // Epoch ticks are whole numbers.
  CHECK(svg.find(">2</text>") != std::string::npos);
  CHECK(svg.find(">1.5</text>") == std::string::npos);
}

TEST_CASE("SVG: panels side by side, and the errors") {
  Chart a{"Activations", "x", "f(x)", {{"relu", {-1, 0, 1}, {0, 0, 1}, false, ""}}, {}, false};
  Chart b{"Derivatives", "x", "f'(x)", {{"relu", {-1, 0, 1}, {0, 0, 1}, false, ""}}, Range{-0.5, 1.5}, false};
  const std::string svg = render_svg_panels({a, b}, 400, 300);
  CHECK(svg.rfind("<svg", 0) == 0);
  CHECK(svg.find("width=\"800\" height=\"300\"") != std::string::npos);
  CHECK_MESSAGE(tag_balance(svg).empty(), tag_balance(svg));
  CHECK(count(svg, "<clipPath id=") == 2);
  CHECK(count(svg, "<path ") == 2);
  CHECK(svg.find("f&apos;(x)") != std::string::npos);
  // An empty chart still draws its axes.
  CHECK(tag_balance(render_svg(Chart{})).empty());

  Chart bad = a;
  bad.series[0].y.pop_back();
  CHECK(error_of([&] { render_svg(bad); }) == "render_svg: series 'relu' has 3 x values and 2 y values");
  bad = a;
  bad.y_range = Range{1, 1};
  CHECK(error_of([&] { render_svg(bad); }).find("render_svg: y range") == 0);
}

TEST_CASE("summarize_run: last values, best epochs (earliest on a tie), seconds") {
  const MetricsTable t =
      parse_metrics_csv(metrics_csv({0.5, 0.7, 0.9, 0.8}, {0.6, 0.9, 0.9, 0.85}), "m.csv");
  const RunSummary s = summarize_run(t, "relu");
  CHECK(s.label == "relu");
  CHECK(s.epochs == 4);
  CHECK(s.last_train_dice == doctest::Approx(0.8));
  CHECK(s.last_val_dice == doctest::Approx(0.85));
  CHECK(s.best_val_dice.found);
  CHECK(s.best_val_dice.value == doctest::Approx(0.9));
  CHECK(s.best_val_dice.epoch == 2);
  CHECK(s.best_train_dice.epoch == 3);
  CHECK(s.seconds == doctest::Approx(42));

  // NaN is no value: skipped by the best, shown as n/a.
  const MetricsTable n = parse_metrics_csv("epoch,train_dice,val_dice,seconds\n1,0.5,nan,1\n2,0.6,0.7,1\n3,0.7,nan,1\n", "m.csv");
  const Best b = best_of(n, "val_dice");
  CHECK(b.value == doctest::Approx(0.7));
  CHECK(b.epoch == 2);
  CHECK_FALSE(best_of(parse_metrics_csv("epoch,val_dice\n1,nan\n", "m.csv"), "val_dice").found);
  CHECK(error_of([] { summarize_run(parse_metrics_csv(kMetricsHeader, "m.csv"), "x"); }) ==
        "no epochs logged (a header and no rows)");

  const std::string md = summary_markdown({s, summarize_run(n, "gelu")}, true);
  CHECK(md.find("| run  | epochs | train dice (last) | val dice (last) |") == 0);
  CHECK(md.find("| relu |      4 |            0.8000 |          0.8500 | 0.9000 (epoch 2) |") != std::string::npos);
  CHECK(md.find("n/a") != std::string::npos);
  CHECK(md.find("42.0") != std::string::npos);
  CHECK(count(md, "\n") == 4);  // header, alignment row, two runs
  CHECK(summary_markdown({s}, false).find("seconds") == std::string::npos);
}

TEST_CASE("summarize_runs and metrics_chart on run folders") {
  TempDir dir("runs");
  dir.file("relu/metrics.csv", metrics_csv({0.5, 0.7}, {0.6, 0.8}));
  dir.file("relu/config.json", R"({"activation": "relu"})");
  dir.file("gelu/metrics.csv", metrics_csv({0.4, 0.75, 0.8}, {0.5, 0.85, 0.82}));
  dir.file("gelu/config.json", R"({"activation": "gelu"})");
  const std::vector<std::string> runs = {(dir.path / "relu").string(), (dir.path / "gelu").string()};

  const std::vector<RunSummary> s = summarize_runs(runs);
  REQUIRE(s.size() == 2);
  CHECK(s[1].label == "gelu");
  CHECK(s[1].best_val_dice.epoch == 2);

  const Chart c = metrics_chart(runs, {"val_dice", "train_dice"});
  REQUIRE(c.series.size() == 4);
  CHECK(c.series[0].label == "relu val_dice");
  CHECK_FALSE(c.series[0].dashed);
  CHECK(c.series[1].label == "relu train_dice");
  CHECK(c.series[1].dashed);
  CHECK(c.series[0].color == c.series[1].color);  // one colour per run
  CHECK(c.series[0].color != c.series[2].color);
  CHECK(c.series[2].x == std::vector<double>{1, 2, 3});
  CHECK(metrics_chart(runs, {"val_dice"}).series[1].label == "gelu");
  CHECK(count(render_svg(c), "<path ") == 4);

  CHECK(error_of([&] { metrics_chart(runs, {"dice"}); }) ==
        runs[0] + "/metrics.csv: no column 'dice' (columns: epoch, train_loss, train_dice, train_acc, val_loss, "
                  "val_dice, val_dice_soft, val_acc, lr, seconds)");
  const std::string missing = (dir.path / "silu").string();
  CHECK(error_of([&] { metrics_chart({runs[0], missing}, {"val_dice"}); }) == missing + ": no such run folder");
  CHECK(error_of([&] { summarize_runs({missing}); }) == missing + ": no such run folder");
}
