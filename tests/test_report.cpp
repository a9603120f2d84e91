// train/run_report: the pieces of the run folder's views (base64, the panel photos, stacked panels,
// the curves, the page) and a real run that writes them: a panel per epoch whose dice is the
// photos' full-resolution dice, curves.svg from metrics.csv, and report.html through a stop and a
// resume.
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "data/image.h"
#include "tests/test_util.h"
#include "train/metrics_log.h"
#include "train/predict.h"
#include "train/run_report.h"
#include "train/trainer.h"

using namespace tl;
using namespace tl::train;
namespace fs = std::filesystem;
using tl::testing::read_text;

namespace {

struct TempDir : tl::testing::TempDir {
  TempDir() : tl::testing::TempDir("tl_test_report") {}
};

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

std::vector<data::Sample> cars(int n_cars, int views) {
  std::vector<data::Sample> s;
  for (int c = 0; c < n_cars; ++c)
    for (int v = 1; v <= views; ++v) {
      const std::string stem = "car" + std::to_string(c) + "_" + (v < 10 ? "0" : "") + std::to_string(v);
      s.push_back({"/d/train/" + stem + ".jpg", "/d/train_masks/" + stem + "_mask.gif"});
    }
  return s;
}

}  // namespace

TEST_CASE("report: base64 is RFC 4648's") {
  const std::pair<const char*, const char*> vectors[] = {{"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},
                                                         {"foo", "Zm9v"},  {"foob", "Zm9vYg=="},  {"fooba", "Zm9vYmE="},
                                                         {"foobar", "Zm9vYmFy"}};
  for (const auto& [in, out] : vectors) CHECK(base64(in) == out);
  CHECK(base64(std::string("\0\xff\xfe", 3)) == "AP/+");
}

TEST_CASE("report: the panel photos are 4 cars at 4 angles, or spread over the photos when cars are few") {
  const auto six = cars(6, 16);  // cars 0, 2, 3, 5 of 6; angles 2, 6, 10, 14 of 16 (0-based)
  const auto picked = pick_panel_samples(six);
  REQUIRE(picked.size() == 4);
  CHECK(picked[0].image == "/d/train/car0_03.jpg");
  CHECK(picked[1].image == "/d/train/car2_07.jpg");
  CHECK(picked[2].image == "/d/train/car3_11.jpg");
  CHECK(picked[3].image == "/d/train/car5_15.jpg");
  CHECK(picked[3].mask == "/d/train_masks/car5_15_mask.gif");
  CHECK(pick_panel_samples(six) == picked);  // a pure function of the list

  const auto few = cars(2, 3);  // 2 cars: samples 0, 2, 3, 5 of 6
  const auto spread = pick_panel_samples(few);
  REQUIRE(spread.size() == 4);
  CHECK(spread[0] == few[0]);
  CHECK(spread[1] == few[2]);
  CHECK(spread[2] == few[3]);
  CHECK(spread[3] == few[5]);
  CHECK(pick_panel_samples(cars(1, 2)).size() == 2);
  CHECK(pick_panel_samples({}).empty());
}

TEST_CASE("report: stack_rows stacks RGB images, left-aligned, on the fill") {
  data::Image a = data::Image::blank(2, 3, 3, 200), b = data::Image::blank(1, 5, 3, 100);
  const data::Image s = stack_rows({a, b}, 7);
  REQUIRE(s.height == 3);
  REQUIRE(s.width == 5);
  CHECK(s.at(0, 0, 0) == 200);
  CHECK(s.at(1, 2, 2) == 200);
  CHECK(s.at(0, 3, 0) == 7);  // right of the narrower row
  CHECK(s.at(1, 4, 1) == 7);
  CHECK(s.at(2, 4, 0) == 100);
  CHECK_THROWS_AS(stack_rows({}), std::invalid_argument);
  CHECK_THROWS_AS(stack_rows({data::Image::blank(2, 2, 1)}), std::invalid_argument);
}

TEST_CASE("report: the curves are loss and dice per epoch, train dashed") {
  const MetricsTable t = parse_metrics_csv(std::string(kMetricsColumns) + "\n1,0.5,0.6,0.7,0.55,0.65,0.6,0.8,0.001,3\n"
                                                                          "2,0.4,0.7,0.8,0.45,0.75,0.7,0.9,0.0005,3\n",
                                           "m.csv");
  const std::vector<Chart> charts = curve_charts(t);
  REQUIRE(charts.size() == 2);
  CHECK(charts[0].title == "loss");
  REQUIRE(charts[0].series.size() == 2);
  CHECK(charts[0].series[0].label == "train");
  CHECK(charts[0].series[0].dashed);
  CHECK(charts[0].series[1].y == std::vector<double>{0.55, 0.45});
  CHECK_FALSE(charts[0].series[1].dashed);
  REQUIRE(charts[1].series.size() == 3);
  CHECK(charts[1].series[1].y == std::vector<double>{0.65, 0.75});
  CHECK(charts[1].series[2].label == "validation (soft)");
  CHECK(charts[1].series[0].x == std::vector<double>{1, 2});
  const std::string svg = render_svg_panels(charts, 480, 360);
  CHECK(count_of(svg, "<path ") == 5);
}

TEST_CASE("report: the page escapes its text, inlines the curves and the panel, and reloads only while running") {
  ReportPage p;
  p.run_name = "a<b>&c";
  p.status = "running: 1 of 2 epochs done";
  p.updated = "2026-01-01 00:00:00 UTC";
  p.config_json = TrainConfig{}.to_json();
  p.split = {"data: x & y"};
  p.metrics = parse_metrics_csv(std::string(kMetricsColumns) + "\n1,0.5,0.6,0.7,0.55,0.65,0.6,0.8,0.001,3\n", "m.csv");
  p.curves_svg = render_svg_panels(curve_charts(p.metrics), 480, 360);
  p.panel_epoch = 1;
  p.panel_jpeg = "\xff\xd8jpeg";
  p.panel_files = {"panels/epoch_001.jpg"};
  p.panel_dice = {{"car0_01.jpg", 0.98765}};
  p.checkpoints = {{"best.safetensors", "epoch 1", 2048}};
  const std::string html = report_html(p);
  CHECK(html.rfind("<!DOCTYPE html>", 0) == 0);
  CHECK(html.size() > 100);
  CHECK(html.substr(html.size() - 8) == "</html>\n");
  CHECK(html.find("a&lt;b&gt;&amp;c") != std::string::npos);
  CHECK(html.find("a<b>") == std::string::npos);
  CHECK(html.find("data: x &amp; y") != std::string::npos);
  CHECK(html.find("<meta http-equiv=\"refresh\" content=\"30\">") != std::string::npos);
  CHECK(html.find("<svg xmlns=") != std::string::npos);
  CHECK(html.find("src=\"data:image/jpeg;base64," + base64(p.panel_jpeg) + "\"") != std::string::npos);
  CHECK(html.find("<a href=\"panels/epoch_001.jpg\">epoch_001</a>") != std::string::npos);
  CHECK(html.find("<td class=\"n\">0.9877</td>") != std::string::npos);
  CHECK(html.find("<tr class=\"best\">") != std::string::npos);
  CHECK(html.find("<th>activation</th><td>relu</td>") != std::string::npos);
  CHECK(html.find("2.0 KiB") != std::string::npos);
  p.running = false;
  CHECK(report_html(p).find("http-equiv=\"refresh\"") == std::string::npos);
}

TEST_CASE("report: a run writes report.html, curves.svg and a panel per epoch, through a stop and a resume") {
  TempDir dir;
  const fs::path out = dir.path / "run";
  TrainConfig c;
  c.synthetic_count = 32;  // 4 cars, 8 views each; 2 cars in validation
  c.val_fraction = 0.5;
  c.height = 32;
  c.width = 48;
  c.features = {4, 8};
  c.epochs = 2;
  c.batch_size = 4;
  c.lr = 3e-3;
  c.workers = 1;
  c.threads = 1;
  c.device = "cpu";
  c.quiet = true;
  c.out = out.string();
  c.max_steps = 4;  // the end of epoch 1
  std::ostringstream console;
  REQUIRE(train::train(c, console, false).stop == StopReason::MaxSteps);
  REQUIRE(fs::exists(out / "panels/epoch_001.jpg"));
  CHECK_FALSE(fs::exists(out / "panels/epoch_002.jpg"));
  std::string html = read_text(out / "report.html");
  CHECK_MESSAGE(html.find("stopped (reached --max-steps) after 1 of 2 epochs") != std::string::npos, html.substr(0, 2000));
  CHECK(html.find("train_unet --resume " + (out / "last.safetensors").string()) != std::string::npos);
  CHECK(html.find("http-equiv=\"refresh\"") == std::string::npos);

  TrainConfig resume = c;
  resume.resume = (out / "last.safetensors").string();
  // A resume that stops at once (--max-steps reached) still shows the panel of its last epoch.
  REQUIRE(train::train(resume, console, false).stop == StopReason::MaxSteps);
  CHECK(read_text(out / "report.html").find(base64(read_text(out / "panels/epoch_001.jpg"))) != std::string::npos);
  resume.max_steps = 0;
  const TrainResult r = train::train(resume, console, false);
  REQUIRE(r.stop == StopReason::Finished);
  CHECK(console.str().find("warning") == std::string::npos);

  // Two epochs: two panels, two points per curve, two metric rows.
  const data::Image panel = data::read_image((out / "panels/epoch_002.jpg").string());
  CHECK(panel.channels == 3);
  const std::string svg = read_text(out / "curves.svg");
  CHECK(svg.rfind("<svg", 0) == 0);
  CHECK(count_of(svg, "<path ") == 5);
  html = read_text(out / "report.html");
  CHECK(html.find("finished: 2 epochs") != std::string::npos);
  CHECK(html.find(svg) != std::string::npos);  // the curves, inline
  CHECK(html.find("src=\"data:image/jpeg;base64," + base64(read_text(out / "panels/epoch_002.jpg")) + "\"") !=
        std::string::npos);
  CHECK(html.find("<a href=\"panels/epoch_001.jpg\">") != std::string::npos);
  for (const char* f : {"best.safetensors", "last.safetensors"}) CHECK(html.find(std::string("<td>") + f + "</td>") != std::string::npos);
  CHECK(html.find("validation: 16 images of 2 cars") != std::string::npos);

  // The panel's dice is each photo's thresholded dice at its own resolution, by the final weights.
  const std::vector<data::Sample> val = data::read_split_csv((out / "val.csv").string());
  const std::vector<data::Sample> photos = pick_panel_samples(val);
  REQUIRE(photos.size() == 4);
  const Predictor predictor((out / "last.safetensors").string());
  for (const data::Sample& s : photos) {
    const data::Image photo = data::read_image(s.image), truth = data::read_mask(s.mask);
    const double dice = mask_dice(predictor.predict_mask(photo), truth);
    char row[200];
    std::snprintf(row, sizeof row, "<tr><td>%s</td><td class=\"n\">%.4f</td></tr>", fs::path(s.image).filename().c_str(), dice);
    CHECK_MESSAGE(html.find(row) != std::string::npos, "missing panel row " << row);
  }
  // Nothing temporary is left, at the top or in panels/.
  for (const fs::path& d : {out, out / "panels"})
    for (const auto& e : fs::directory_iterator(d)) CHECK_MESSAGE(e.path().string().find(".tmp.") == std::string::npos, e.path());
}
