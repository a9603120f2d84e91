// bench_decode --dir DATA/train [--sizes 160x240,320x480,640x960] [--limit N] [--rounds R]
// Decode time per photo, stb (whole photo + area resize) against libjpeg-turbo (reduced DCT scale +
// area resize), one thread, and how far the turbo images are from the stb ones (max and mean absolute
// difference of the resized RGB bytes). Medians over the rounds of each photo's time.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "data/photo_decode.h"
#include "tensor/parallel.h"
#include "train/cli.h"

namespace fs = std::filesystem;
using tl::data::Image;
using tl::data::PhotoDecoder;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  tl::cli::Flags flags("bench_decode", "Decode time per photo and the difference of the resized images, stb against libjpeg-turbo.");
  std::string dir, sizes = "160x240,320x480,640x960";
  int64_t limit = 48, rounds = 3;
  bool all_scales = false;
  flags.add("--dir", &dir, "folder of JPEG photos (the Kaggle train/ folder); required");
  flags.add("--sizes", &sizes, "target sizes HxW, comma-separated");
  flags.add("--limit", &limit, "photos used (the first N, sorted by name)");
  flags.add("--rounds", &rounds, "times each photo is decoded per decoder (the median is kept)");
  flags.add_switch("--all-scales", &all_scales, "also force each DCT scale 1/1, 1/2, 1/4, 1/8 (where it is not below the target)");
  return tl::cli::run_main("bench_decode", [&] {
    if (!flags.parse(argc, argv)) return 0;
    if (dir.empty()) throw tl::cli::UsageError("--dir is required");
    if (!tl::data::turbo_jpeg_available()) throw std::runtime_error("this build has no libjpeg-turbo (libturbojpeg0-dev)");
    std::vector<std::string> photos;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".jpg") photos.push_back(e.path().string());
    std::sort(photos.begin(), photos.end());
    if (photos.size() > static_cast<size_t>(limit)) photos.resize(static_cast<size_t>(limit));
    if (photos.empty()) throw std::runtime_error(dir + ": no .jpg photo");
    std::vector<int64_t> scales = {0};
    if (all_scales) scales.insert(scales.end(), {1, 2, 4, 8});
    tl::set_num_threads(1);  // as a loader worker decodes: one photo per thread
    const tl::data::ImageInfo info = tl::data::read_image_info(photos[0]);
    std::printf("%zu photos of %lldx%lld from %s, 1 thread, median of %lld rounds per photo\n\n", photos.size(),
                static_cast<long long>(info.height), static_cast<long long>(info.width), dir.c_str(),
                static_cast<long long>(rounds));
    std::printf("| target HxW | turbo scale | stb ms/photo | turbo ms/photo | speed-up | max abs diff | mean abs diff |\n");
    std::printf("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    std::vector<std::pair<int64_t, int64_t>> targets;
    for (size_t at = 0; at <= sizes.size();) {
      const size_t comma = std::min(sizes.find(',', at), sizes.size());
      targets.push_back(tl::cli::parse_size("--sizes", sizes.substr(at, comma - at)));
      at = comma + 1;
    }
    for (const auto& [h, w] : targets)
      for (int64_t denominator : scales) {
        const int64_t d = denominator ? denominator : tl::data::turbo_scale_denominator(info.height, info.width, h, w);
        if ((info.height + d - 1) / d < h || (info.width + d - 1) / d < w) continue;  // that scale would grow
        std::vector<double> t_stb, t_turbo;
        int max_diff = 0;
        double sum_diff = 0, count = 0;
        for (const std::string& p : photos) {
          Image a, b;
          std::vector<double> ts, tt;
          for (int64_t r = 0; r < rounds; ++r) {
            auto t0 = std::chrono::steady_clock::now();
            a = tl::data::read_photo_resized(p, h, w, PhotoDecoder::Stb);
            ts.push_back(seconds_since(t0));
            t0 = std::chrono::steady_clock::now();
            b = tl::data::read_photo_resized(p, h, w, PhotoDecoder::Turbo, denominator);
            tt.push_back(seconds_since(t0));
          }
          t_stb.push_back(median(ts));
          t_turbo.push_back(median(tt));
          for (size_t i = 0; i < a.pixels.size(); ++i) {
            const int diff = std::abs(int{a.pixels[i]} - int{b.pixels[i]});
            max_diff = std::max(max_diff, diff);
            sum_diff += diff;
          }
          count += static_cast<double>(a.pixels.size());
        }
        const double ms_stb = 1e3 * median(t_stb), ms_turbo = 1e3 * median(t_turbo);
        std::printf("| %lldx%lld | 1/%lld%s | %.1f | %.1f | %.2fx | %d | %.3f |\n", static_cast<long long>(h),
                    static_cast<long long>(w), static_cast<long long>(d), denominator ? " (forced)" : " (chosen)",
                    ms_stb, ms_turbo, ms_stb / ms_turbo, max_diff, sum_diff / count);
      }
    return 0;
  });
}
