// plot_activations --out activations.svg [--range -5,5]
// The UNet's activations (relu, gelu, silu, pysilu) and their derivatives, side by side, drawn from
// the same functors (tensor/functors.h) that the CPU and CUDA kernels run.
#include <iostream>
#include <string>

#include "tensor/file_util.h"
#include "tensor/functors.h"
#include "train/cli.h"
#include "train/svg.h"

namespace {

// f(x) and f'(x) of functor F at n evenly spaced points of [lo, hi].
template <class F>
void add_curves(const std::string& name, F f, tl::train::Range r, int64_t n, tl::train::Chart& values,
                tl::train::Chart& derivatives) {
  tl::train::Series v{name, {}, {}, false, tl::train::default_color(values.series.size())};
  tl::train::Series d = v;
  for (int64_t i = 0; i < n; ++i) {
    const double x = r.lo + (r.hi - r.lo) * static_cast<double>(i) / static_cast<double>(n - 1);
    v.x.push_back(x), v.y.push_back(f(x));
    d.x.push_back(x), d.y.push_back(f.grad(x, 1.0));
  }
  values.series.push_back(std::move(v));
  derivatives.series.push_back(std::move(d));
}

}  // namespace

int main(int argc, char** argv) {
  tl::cli::Flags flags("plot_activations", "Plots relu, gelu, silu and pysilu and their derivatives, as an SVG.");
  std::string out, range = "-5,5";
  int64_t points = 401;
  flags.add("--out", &out, "the SVG file to write (required)");
  flags.add("--range", &range, "the x interval LO,HI");
  flags.add("--points", &points, "samples per curve (odd: x = 0 is one of them on a symmetric range)");
  return tl::cli::run_main("plot_activations", [&] {
    if (!flags.parse(argc, argv)) return 0;
    if (out.empty()) throw tl::cli::UsageError("--out is required");
    if (points < 2) throw tl::cli::UsageError("--points: expected at least 2, got " + std::to_string(points));
    const tl::train::Range r = tl::train::parse_range("--range", range);

    tl::train::Chart values{"Activations", "x", "f(x)", {}, {}, false};
    tl::train::Chart derivatives{"Derivatives", "x", "f'(x)", {}, {}, false};
    add_curves("relu", tl::fn::Relu{}, r, points, values, derivatives);
    add_curves("gelu", tl::fn::Gelu{}, r, points, values, derivatives);
    add_curves("silu", tl::fn::Silu{}, r, points, values, derivatives);
    add_curves("pysilu", tl::fn::PySilu{}, r, points, values, derivatives);
    tl::write_file_atomic(out, tl::train::render_svg_panels({values, derivatives}));
    std::cout << "wrote " << out << "\n";
    return 0;
  });
}
