// Every op, forward and backward, on cuda:0 against the CPU (a table of cases: odd sizes,
// broadcasting, non-contiguous views, float64), random draws and fills, the fused SGD/Adam/AdamW
// steps, clip_grad_norm_, and TF32. tests/cuda_test_util.h has the error measure and tolerances.
#define DOCTEST_CONFIG_IMPLEMENT
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "cuda/allocator.h"
#include "nn/optim.h"
#include "nn/unet.h"
#include "tests/cuda_test_util.h"

using namespace tl;
using namespace tl::testing;
// ---- every op, forward and backward, against the CPU --------------------------------------------

namespace {


using Ts = std::vector<Tensor>;

Generator gen(2024);  // every case's inputs, drawn once on the CPU

Tensor normal_t(const Shape& s, DType dt = kFloat32, double std = 1.0) { return normal(s, 0.0, std, dt, &gen); }
Tensor uniform_t(const Shape& s, double lo, double hi, DType dt = kFloat32) { return uniform(s, lo, hi, dt, &gen); }
// Integer values in [-2, 2] as floats: ties for max, pooling and the comparisons.
Tensor integers_t(const Shape& s) { return uniform(s, 0, 5, kFloat32, &gen).to(kInt64).to(kFloat32) - 2.0; }
// int64 class indices in [0, n).
Tensor classes_t(const Shape& s, int64_t n) { return uniform(s, 0, static_cast<double>(n), kFloat64, &gen).to(kInt64); }
// 0/1 values, a segmentation mask.
Tensor mask_t(const Shape& s, DType dt = kFloat32) { return gt(rand(s, dt, &gen), 0.5).to(dt); }

// One argument of a case: its CPU values (undefined: an optional argument left out), and whether the
// case takes its gradient. Only floating arguments can; running statistics must not.
struct Arg {
  Tensor value;
  bool grad = true;
  Arg(Tensor v, bool g = true) : value(std::move(v)), grad(g) {}  // NOLINT: implicit, cases list plain tensors
  bool takes_grad() const { return grad && value.defined() && is_floating(value.dtype()); }
};
Arg constant(Tensor t) { return Arg(std::move(t), false); }

// A named op under test: a function from its arguments, all on one device, to its outputs. Outputs
// that carry a gradient are backpropagated; the others (comparisons, running statistics updated in
// place) are only compared.
struct OpCase {
  std::string name;
  std::vector<Arg> args;
  std::function<Ts(const Ts&)> fn;
};

struct Run {
  Ts outputs;
  Ts grads;  // one per argument, undefined when the case takes none
};

// Runs a case on `device`: fresh leaf copies of the arguments, the outputs, then backward of
// sum_k sum(w_k * output_k) with weights w_k drawn on the CPU from one seed, so that both devices
// backpropagate the same random cotangents. The terms are summed in float64, whatever their dtypes.
Run run_case(const OpCase& c, Device device) {
  Ts in;
  for (const Arg& a : c.args) {
    if (!a.value.defined()) {
      in.emplace_back();
      continue;
    }
    Tensor t = copy_to(a.value, device);
    if (a.takes_grad()) t.requires_grad_();
    in.push_back(t);
  }
  Run r;
  r.outputs = c.fn(in);
  Generator weights(7);
  Tensor loss;
  for (const Tensor& o : r.outputs) {
    if (!o.defined() || !o.requires_grad()) continue;
    const Tensor term = sum(mul(o, uniform(o.shape(), -1, 1, o.dtype(), &weights).to(device))).to(kFloat64);
    loss = loss.defined() ? add(loss, term) : term;
  }
  if (loss.defined()) loss.backward();
  for (size_t i = 0; i < c.args.size(); ++i) r.grads.push_back(c.args[i].takes_grad() ? in[i].grad() : Tensor());
  return r;
}

// Runs the case on the CPU and on cuda:0 and compares every output and every argument's gradient.
// An exception (a missing kernel) fails this case only.
void check_case(const OpCase& c, double tol32 = kTol32) {
  INFO("case '" << c.name << "'");
  Run cpu, gpu;
  const std::string cpu_error = error_of([&] { cpu = run_case(c, Device::cpu()); });
  const std::string gpu_error = error_of([&] { gpu = run_case(c, kGpu); });
  CHECK_MESSAGE(cpu_error == "(no error)", "on the cpu: " << cpu_error);
  CHECK_MESSAGE(gpu_error == "(no error)", "on cuda:0: " << gpu_error);
  if (cpu_error != "(no error)" || gpu_error != "(no error)") return;
  REQUIRE(gpu.outputs.size() == cpu.outputs.size());
  for (size_t i = 0; i < cpu.outputs.size(); ++i)
    check_result("output " + std::to_string(i), gpu.outputs[i], cpu.outputs[i], tol32);
  for (size_t i = 0; i < cpu.grads.size(); ++i)
    check_result("gradient of argument " + std::to_string(i), gpu.grads[i], cpu.grads[i], tol32);
}

void check_table(const std::vector<OpCase>& cases, double tol32 = kTol32) {
  for (const OpCase& c : cases) check_case(c, tol32);
}

using TensorFn = std::function<Tensor(const Tensor&)>;

}  // namespace

TEST_CASE("unary ops match the CPU: contiguous, transposed with a step, expanded, float64") {
  struct UnaryOp {
    const char* name;
    TensorFn f;
    bool positive;  // defined (or tested) on positive inputs only
    bool f64;       // also in float64
  };
  const double inf = std::numeric_limits<double>::infinity();
  const std::vector<UnaryOp> ops = {
      {"relu", [](const Tensor& t) { return relu(t); }, false, false},
      {"gelu", [](const Tensor& t) { return gelu(t); }, false, true},
      {"silu", [](const Tensor& t) { return silu(t); }, false, false},
      {"pysilu", [](const Tensor& t) { return pysilu(t); }, false, true},
      {"sigmoid", [](const Tensor& t) { return sigmoid(t); }, false, true},
      {"tanh", [](const Tensor& t) { return tanh(t); }, false, false},
      {"exp", [](const Tensor& t) { return exp(t); }, false, false},
      {"neg", [](const Tensor& t) { return neg(t); }, false, false},
      {"abs", [](const Tensor& t) { return abs(t); }, false, false},
      {"log", [](const Tensor& t) { return log(t); }, true, true},
      {"sqrt", [](const Tensor& t) { return sqrt(t); }, true, false},
      {"pow 2.5", [](const Tensor& t) { return pow(t, 2.5); }, true, true},
      {"pow -1.5", [](const Tensor& t) { return pow(t, -1.5); }, true, false},
      {"pow 3", [](const Tensor& t) { return pow(t, 3.0); }, false, false},
      {"clamp(-0.5, 0.7)", [](const Tensor& t) { return clamp(t, -0.5, 0.7); }, false, false},
      {"clamp(-inf, 0.3)", [inf](const Tensor& t) { return clamp(t, -inf, 0.3); }, false, false},
      {"clamp(-0.2, inf)", [inf](const Tensor& t) { return clamp(t, -0.2, inf); }, false, false},
      {"x + 1.5", [](const Tensor& t) { return t + 1.5; }, false, false},
      {"x - 0.5", [](const Tensor& t) { return t - 0.5; }, false, false},
      {"2 - x", [](const Tensor& t) { return 2.0 - t; }, false, false},
      {"x * -3", [](const Tensor& t) { return t * -3.0; }, false, false},
      {"x / 3", [](const Tensor& t) { return t / 3.0; }, false, false},
      {"2 / x", [](const Tensor& t) { return 2.0 / t; }, true, true},
  };
  std::vector<OpCase> cases;
  for (const UnaryOp& op : ops) {
    auto input = [&](const Shape& s, DType dt) { return op.positive ? uniform_t(s, 0.1, 3, dt) : normal_t(s, dt, 2.0); };
    const TensorFn f = op.f;
    const std::string name = op.name;
    cases.push_back({name + " (3,5,7)", {input({3, 5, 7}, kFloat32)}, [f](const Ts& in) { return Ts{f(in[0])}; }});
    // (7, 10) -> t() (10, 7) -> every other column (10, 4): strides (1, 20)
    cases.push_back({name + " of a transposed view with step 2", {input({7, 10}, kFloat32)},
                     [f](const Ts& in) { return Ts{f(in[0].t().slice(1, 0, 7, 2))}; }});
    cases.push_back({name + " of an expanded view", {input({5, 1, 9}, kFloat32)},
                     [f](const Ts& in) { return Ts{f(in[0].expand({5, 3, 9}))}; }});
    if (op.f64)
      cases.push_back({name + " float64", {input({4, 9}, kFloat64)}, [f](const Ts& in) { return Ts{f(in[0])}; }});
  }
  check_table(cases);
}

TEST_CASE("binary ops with broadcasting and comparisons match the CPU") {
  std::vector<OpCase> cases = {
      {"add (4,1,5) + (3,1)", {normal_t({4, 1, 5}), normal_t({3, 1})}, [](const Ts& in) { return Ts{in[0] + in[1]}; }},
      {"sub (5,7) - (7)", {normal_t({5, 7}), normal_t({7})}, [](const Ts& in) { return Ts{in[0] - in[1]}; }},
      {"mul (2,3,1,5) * (3,4,1)", {normal_t({2, 3, 1, 5}), normal_t({3, 4, 1})},
       [](const Ts& in) { return Ts{in[0] * in[1]}; }},
      {"div (4,6) / (6)", {normal_t({4, 6}), uniform_t({6}, 0.5, 2)}, [](const Ts& in) { return Ts{in[0] / in[1]}; }},
      {"div (6) / (5,1), both broadcast", {normal_t({6}), uniform_t({5, 1}, -2, -0.5)},
       [](const Ts& in) { return Ts{in[0] / in[1]}; }},
      {"mul of a transposed view and a step-2 slice", {normal_t({7, 5}), normal_t({13})},
       [](const Ts& in) { return Ts{in[0].t() * in[1].slice(0, 0, 13, 2)}; }},
      {"add of an expanded view and a transposed one", {normal_t({1, 6}), normal_t({6, 4})},
       [](const Ts& in) { return Ts{in[0].expand({4, 6}) + in[1].t()}; }},
      {"(a - b) * a / (b + 3): inputs used twice", {normal_t({4, 5}), uniform_t({5}, 0.5, 2)},
       [](const Ts& in) { return Ts{(in[0] - in[1]) * in[0] / (in[1] + 3.0)}; }},
      {"div float64 (3,1,4) / (5,4)", {normal_t({3, 1, 4}, kFloat64), uniform_t({5, 4}, 0.5, 2, kFloat64)},
       [](const Ts& in) { return Ts{in[0] / in[1]}; }},
      {"mul float64 transposed", {normal_t({6, 3}, kFloat64), normal_t({3, 6}, kFloat64)},
       [](const Ts& in) { return Ts{in[0].t() * in[1]}; }},
      {"gt(x, 0.5), lt(x, -0.5)", {constant(normal_t({5, 7}))},
       [](const Ts& in) { return Ts{gt(in[0], 0.5), lt(in[0].t(), -0.5)}; }},
  };
  using Cmp = Tensor (*)(const Tensor&, const Tensor&);
  const std::vector<std::pair<const char*, Cmp>> comparisons = {
      {"eq", [](const Tensor& a, const Tensor& b) { return eq(a, b); }},
      {"gt", [](const Tensor& a, const Tensor& b) { return gt(a, b); }},
      {"lt", [](const Tensor& a, const Tensor& b) { return lt(a, b); }},
      {"ge", [](const Tensor& a, const Tensor& b) { return ge(a, b); }},
      {"le", [](const Tensor& a, const Tensor& b) { return le(a, b); }},
  };
  for (const auto& [name, cmp] : comparisons)
    cases.push_back({std::string(name) + " (4,1,6) vs (5,1), integer values with ties",
                     {constant(integers_t({4, 1, 6})), constant(integers_t({5, 1}))},
                     [cmp](const Ts& in) { return Ts{cmp(in[0], in[1]), cmp(in[0].squeeze(1).t(), in[1].narrow(0, 0, 4).t())}; }});
  check_table(cases);
}

TEST_CASE("sum, mean and max over various dims match the CPU") {
  using Reduction = Tensor (*)(const Tensor&, const std::vector<int64_t>&, bool);
  const std::vector<std::pair<const char*, Reduction>> reductions = {
      {"sum", [](const Tensor& t, const std::vector<int64_t>& d, bool k) { return sum(t, d, k); }},
      {"mean", [](const Tensor& t, const std::vector<int64_t>& d, bool k) { return mean(t, d, k); }},
      {"max", [](const Tensor& t, const std::vector<int64_t>& d, bool k) { return max(t, d, k); }},
  };
  std::vector<OpCase> cases;
  for (const auto& [name, reduce] : reductions) {
    const std::string n = name;
    cases.push_back({n + " all of (4,5,6)", {normal_t({4, 5, 6})}, [reduce](const Ts& in) { return Ts{reduce(in[0], {}, false)}; }});
    cases.push_back({n + " dim 1", {normal_t({4, 5, 6})}, [reduce](const Ts& in) { return Ts{reduce(in[0], {1}, false)}; }});
    cases.push_back({n + " dims {0,2} keepdim", {normal_t({4, 5, 6})},
                     [reduce](const Ts& in) { return Ts{reduce(in[0], {0, 2}, true)}; }});
    cases.push_back({n + " dim -1 of a transposed view", {normal_t({4, 5, 6})},
                     [reduce](const Ts& in) { return Ts{reduce(in[0].transpose(0, 2), {-1}, false)}; }});
    cases.push_back({n + " dim 0 of a step-3 slice", {normal_t({11, 7})},
                     [reduce](const Ts& in) { return Ts{reduce(in[0].slice(0, 1, 11, 3), {0}, true)}; }});
    cases.push_back({n + " of an expanded view", {normal_t({3, 1, 5})},
                     [reduce](const Ts& in) { return Ts{reduce(in[0].expand({3, 4, 5}), {1, 2}, false)}; }});
    cases.push_back({n + " (129,257) dim 0", {normal_t({129, 257})}, [reduce](const Ts& in) { return Ts{reduce(in[0], {0}, false)}; }});
    cases.push_back({n + " (129,257) dim 1", {normal_t({129, 257})}, [reduce](const Ts& in) { return Ts{reduce(in[0], {1}, false)}; }});
    cases.push_back({n + " (129,257) all", {normal_t({129, 257})}, [reduce](const Ts& in) { return Ts{reduce(in[0], {}, false)}; }});
    cases.push_back({n + " float64 dims {0,2}", {normal_t({3, 4, 5}, kFloat64)},
                     [reduce](const Ts& in) { return Ts{reduce(in[0], {0, 2}, false)}; }});
  }
  // max with ties shares the gradient among the tied elements (torch.amax): both devices alike.
  cases.push_back({"max dim 1 of integer values (ties)", {integers_t({6, 9})}, [](const Ts& in) { return Ts{max(in[0], {1})}; }});
  cases.push_back({"max all of integer values (ties)", {integers_t({5, 7})}, [](const Ts& in) { return Ts{max(in[0])}; }});
  cases.push_back({"sum_to (4,5,6) -> (5,1)", {normal_t({4, 5, 6})}, [](const Ts& in) { return Ts{sum_to(in[0], {5, 1})}; }});
  check_table(cases);
}

// A contiguous last dim with many outputs takes a warp per output (cuda/reduce.cu): 50000 rows is
// past the thread-per-output threshold of current GPUs (256 outputs per multiprocessor: 33792 on
// 132 SMs); 33 elements is just past the warp path's threshold of 32; (400, 60) is the short-row
// case with few outputs. Integer values give ties; NaN rows (forward only) must give NaN.
TEST_CASE("sum, mean and max over a contiguous last dim with many outputs match the CPU, NaN and ties included") {
  Tensor with_nan = normal_t({50000, 48});
  float* p = with_nan.data_ptr<float>();
  for (int64_t r : {0, 7, 12345, 49999}) p[r * 48 + (r % 48)] = std::nanf("");  // in different lanes
  p[100 * 48 + 47] = std::nanf("");                                               // the last element
  std::vector<OpCase> cases = {
      {"sum (50000,100) dim 1", {normal_t({50000, 100})}, [](const Ts& in) { return Ts{sum(in[0], {1})}; }},
      {"mean (50000,100) dim 1", {normal_t({50000, 100})}, [](const Ts& in) { return Ts{mean(in[0], {1})}; }},
      {"max (50000,100) dim 1", {normal_t({50000, 100})}, [](const Ts& in) { return Ts{max(in[0], {1})}; }},
      {"sum (50000,33) dim -1", {normal_t({50000, 33})}, [](const Ts& in) { return Ts{sum(in[0], {-1})}; }},
      {"max (50000,33) dim -1", {normal_t({50000, 33})}, [](const Ts& in) { return Ts{max(in[0], {-1})}; }},
      {"mean (200,300,37) dim 2 keepdim", {normal_t({200, 300, 37})},
       [](const Ts& in) { return Ts{mean(in[0], {2}, true)}; }},
      {"sum (400,60) dim 1 (few outputs)", {normal_t({400, 60})}, [](const Ts& in) { return Ts{sum(in[0], {1})}; }},
      {"max (400,60) dim 1 (few outputs)", {normal_t({400, 60})}, [](const Ts& in) { return Ts{max(in[0], {1})}; }},
      {"max (50000,40) dim 1 of integer values (ties)", {integers_t({50000, 40})},
       [](const Ts& in) { return Ts{max(in[0], {1})}; }},
      {"max (50000,48) dim 1 with NaN", {constant(with_nan)}, [](const Ts& in) { return Ts{max(in[0], {1})}; }},
      {"sum (50000,48) dim 1 with NaN", {constant(with_nan)}, [](const Ts& in) { return Ts{sum(in[0], {1})}; }},
      {"sum (50000,48) float64 dim 1", {normal_t({50000, 48}, kFloat64)}, [](const Ts& in) { return Ts{sum(in[0], {1})}; }},
  };
  check_table(cases);
  // The NaN rows, explicitly: NaN wins over every other value of its row.
  const Tensor m = max(with_nan.to(kGpu), {1}).to(Device::cpu());
  for (int64_t r : {int64_t{0}, int64_t{7}, int64_t{100}, int64_t{12345}, int64_t{49999}}) CHECK(std::isnan(m.data_ptr<float>()[r]));
  CHECK(!std::isnan(m.data_ptr<float>()[1]));
}

TEST_CASE("matmul matches the CPU: transposed operands, batched broadcast, float64") {
  auto mm = [](const Ts& in) { return Ts{matmul(in[0], in[1])}; };
  check_table({
      {"(7,5) x (5,3)", {normal_t({7, 5}), normal_t({5, 3})}, mm},
      {"transposed x transposed", {normal_t({5, 7}), normal_t({3, 5})},
       [](const Ts& in) { return Ts{matmul(in[0].t(), in[1].t())}; }},
      {"transposed x plain", {normal_t({6, 9}), normal_t({6, 4})}, [](const Ts& in) { return Ts{matmul(in[0].t(), in[1])}; }},
      {"step-2 rows x plain", {normal_t({9, 5}), normal_t({5, 3})},
       [](const Ts& in) { return Ts{matmul(in[0].slice(0, 0, 9, 2), in[1])}; }},
      {"batched broadcast (2,1,4,6) x (3,6,5)", {normal_t({2, 1, 4, 6}), normal_t({3, 6, 5})}, mm},
      {"batched (3,4,6) x transposed (3,5,6)", {normal_t({3, 4, 6}), normal_t({3, 5, 6})},
       [](const Ts& in) { return Ts{matmul(in[0], in[1].transpose(1, 2))}; }},
      {"matrix x expanded batch", {normal_t({4, 3}), normal_t({3, 5})},
       [](const Ts& in) { return Ts{matmul(in[0], in[1].unsqueeze(0).expand({2, 3, 5}))}; }},
      {"(33,65) x (65,17)", {normal_t({33, 65}), normal_t({65, 17})}, mm},
      {"float64 (6,9) x (9,4)", {normal_t({6, 9}, kFloat64), normal_t({9, 4}, kFloat64)}, mm},
      {"float64 batched broadcast", {normal_t({2, 3, 5}, kFloat64), normal_t({5, 2}, kFloat64)}, mm},
  });
}

TEST_CASE("conv2d and conv_transpose2d match the CPU, forward and both backwards") {
  check_table({
      {"conv2d 3x3 pad 1 + bias", {normal_t({2, 3, 9, 11}), normal_t({5, 3, 3, 3}), normal_t({5})},
       [](const Ts& in) { return Ts{conv2d(in[0], in[1], in[2], 1, 1)}; }},
      {"conv2d 3x3 stride 2 pad 1, no bias", {normal_t({2, 5, 9, 10}), normal_t({7, 5, 3, 3})},
       [](const Ts& in) { return Ts{conv2d(in[0], in[1], Tensor(), 2, 1)}; }},
      {"conv2d 1x1 + bias, odd channels", {normal_t({3, 7, 5, 6}), normal_t({3, 7, 1, 1}), normal_t({3})},
       [](const Ts& in) { return Ts{conv2d(in[0], in[1], in[2])}; }},
      {"conv2d 3x2 kernel, stride (2,1), pad (1,0)", {normal_t({2, 3, 8, 7}), normal_t({5, 3, 3, 2}), normal_t({5})},
       [](const Ts& in) { return Ts{conv2d(in[0], in[1], in[2], Size2(2, 1), Size2(1, 0))}; }},
      {"conv2d 5x5 no padding", {normal_t({1, 3, 11, 9}), normal_t({2, 3, 5, 5})},
       [](const Ts& in) { return Ts{conv2d(in[0], in[1])}; }},
      {"conv2d of a permuted input, transposed weight", {normal_t({2, 3, 11, 9}), normal_t({5, 3, 3, 3}), normal_t({5})},
       [](const Ts& in) { return Ts{conv2d(in[0].permute({0, 1, 3, 2}), in[1].transpose(2, 3), in[2], 1, 1)}; }},
      {"conv2d float64 3x3 pad 1", {normal_t({2, 3, 7, 8}, kFloat64), normal_t({4, 3, 3, 3}, kFloat64), normal_t({4}, kFloat64)},
       [](const Ts& in) { return Ts{conv2d(in[0], in[1], in[2], 1, 1)}; }},
      {"conv_transpose2d k2 s2 + bias (the UNet's up)", {normal_t({2, 6, 5, 7}), normal_t({6, 3, 2, 2}), normal_t({3})},
       [](const Ts& in) { return Ts{conv_transpose2d(in[0], in[1], in[2], 2)}; }},
      {"conv_transpose2d k3 s2 pad 1, no bias", {normal_t({1, 4, 5, 6}), normal_t({4, 5, 3, 3})},
       [](const Ts& in) { return Ts{conv_transpose2d(in[0], in[1], Tensor(), 2, 1)}; }},
      {"conv_transpose2d k3 s1 + bias", {normal_t({2, 3, 4, 5}), normal_t({3, 2, 3, 3}), normal_t({2})},
       [](const Ts& in) { return Ts{conv_transpose2d(in[0], in[1], in[2])}; }},
      {"conv_transpose2d float64 k2 s2", {normal_t({2, 3, 4, 3}, kFloat64), normal_t({3, 5, 2, 2}, kFloat64), normal_t({5}, kFloat64)},
       [](const Ts& in) { return Ts{conv_transpose2d(in[0], in[1], in[2], 2)}; }},
  });
}

// The weight gradient sums over the images in chunks of kWorkspaceElems / (max(K, O) * L) images
// (cuda/conv.cu, kWorkspaceElems = 2^26), one GEMM per chunk with beta 1 after the first. These two
// take more images than one chunk, so the accumulation across chunks runs: the pointwise one has
// chunks of 16 and 1 image (K = 64, L = 256*256: 2^26 / 2^22 = 16), the strided one of 28 and 2
// (K = 144, L = 128*128: 2^26 / 2359296 = 28). O is small to keep the CPU's side cheap; float64, so
// the comparison is at 1e-12 and the sums over a million terms judge the indexing, not fp32 rounding.
TEST_CASE("conv2d's weight gradient over more images than one chunk matches the CPU (float64)") {
  check_table({
      {"conv2d 1x1, 17 images of (64,256,256)", {normal_t({17, 64, 256, 256}, kFloat64), normal_t({2, 64, 1, 1}, kFloat64)},
       [](const Ts& in) { return Ts{conv2d(in[0], in[1])}; }},
      {"conv2d 3x3 stride 2 pad 1, 30 images of (16,256,256)",
       {normal_t({30, 16, 256, 256}, kFloat64), normal_t({2, 16, 3, 3}, kFloat64), normal_t({2}, kFloat64)},
       [](const Ts& in) { return Ts{conv2d(in[0], in[1], in[2], 2, 1)}; }},
  });
}

TEST_CASE("max_pool2d matches the CPU, with overlapping windows and ties") {
  check_table({
      {"max_pool2d 2x2 of (2,3,9,11)", {normal_t({2, 3, 9, 11})}, [](const Ts& in) { return Ts{max_pool2d(in[0], 2)}; }},
      {"max_pool2d 3x3 stride 2, overlapping", {normal_t({2, 3, 11, 10})},
       [](const Ts& in) { return Ts{max_pool2d(in[0], 3, 2)}; }},
      {"max_pool2d 3x2 stride (2,1)", {normal_t({1, 4, 9, 7})},
       [](const Ts& in) { return Ts{max_pool2d(in[0], Size2(3, 2), Size2(2, 1))}; }},
      {"max_pool2d 2x2 of relu (ties at zero)", {normal_t({2, 3, 8, 9})},
       [](const Ts& in) { return Ts{max_pool2d(relu(in[0]), 2)}; }},
      {"max_pool2d 3x3 stride 2 of integer values (ties)", {integers_t({2, 2, 9, 9})},
       [](const Ts& in) { return Ts{max_pool2d(in[0], 3, 2)}; }},
      {"max_pool2d 2x2 of a transposed input", {normal_t({2, 3, 10, 9})},
       [](const Ts& in) { return Ts{max_pool2d(in[0].transpose(2, 3), 2)}; }},
      {"max_pool2d float64 3x3 stride 2", {normal_t({1, 3, 9, 10}, kFloat64)},
       [](const Ts& in) { return Ts{max_pool2d(in[0], 3, 2)}; }},
  });
}

TEST_CASE("batch_norm matches the CPU in training and eval, running statistics included") {
  // Arguments: x, weight, bias, running_mean, running_var. Outputs: y and the running statistics
  // after the call (updated in place in training).
  auto stats = [](int64_t c, DType dt = kFloat32) {
    return std::vector<Arg>{constant(normal_t({c}, dt, 0.1)), constant(uniform_t({c}, 0.5, 2, dt))};
  };
  auto with = [](std::vector<Arg> head, const std::vector<Arg>& tail) {
    head.insert(head.end(), tail.begin(), tail.end());
    return head;
  };
  auto bn = [](bool training, double momentum = 0.1, double eps = 1e-5) {
    return [=](const Ts& in) {
      return Ts{batch_norm(in[0], in[1], in[2], in[3], in[4], training, momentum, eps), in[3], in[4]};
    };
  };
  check_table({
      {"training (4,5,3,7)", with({normal_t({4, 5, 3, 7}, kFloat32, 2.0), uniform_t({5}, 0.5, 1.5), normal_t({5})}, stats(5)),
       bn(true)},
      {"eval (4,5,3,7)", with({normal_t({4, 5, 3, 7}), uniform_t({5}, 0.5, 1.5), normal_t({5})}, stats(5)), bn(false)},
      {"training (9,5), momentum 0.3, eps 1e-3", with({normal_t({9, 5}), uniform_t({5}, 0.5, 1.5), normal_t({5})}, stats(5)),
       bn(true, 0.3, 1e-3)},
      {"training (6,4,5)", with({normal_t({6, 4, 5}), uniform_t({4}, 0.5, 1.5), normal_t({4})}, stats(4)), bn(true)},
      {"training without running statistics", {normal_t({3, 5, 4, 4}), uniform_t({5}, 0.5, 1.5), normal_t({5}), Tensor(), Tensor()},
       bn(true)},
      {"training without affine", with({normal_t({3, 5, 4, 4}), Tensor(), Tensor()}, stats(5)), bn(true)},
      {"training with bias only", with({normal_t({3, 5, 4, 4}), Tensor(), normal_t({5})}, stats(5)), bn(true)},
      {"eval without affine", with({normal_t({3, 5, 4, 4}), Tensor(), Tensor()}, stats(5)), bn(false)},
      {"training of a permuted input", with({normal_t({4, 7, 3, 5}), uniform_t({5}, 0.5, 1.5), normal_t({5})}, stats(5)),
       [](const Ts& in) {
         return Ts{batch_norm(in[0].permute({0, 3, 2, 1}), in[1], in[2], in[3], in[4], true), in[3], in[4]};
       }},
      {"training float64",
       with({normal_t({4, 3, 5, 6}, kFloat64), uniform_t({3}, 0.5, 1.5, kFloat64), normal_t({3}, kFloat64)}, stats(3, kFloat64)),
       bn(true)},
      // M = 32768 per channel: the sums split over several blocks; |mean| >> std tests the shifted
      // one-pass variance.
      {"training (8,3,64,64), mean 100", with({uniform_t({8, 3, 64, 64}, 99, 101), uniform_t({3}, 0.5, 1.5), normal_t({3})}, stats(3)),
       bn(true)},
      {"training with strided weight, bias and running statistics",
       {normal_t({3, 5, 4, 4}), uniform_t({10}, 0.5, 1.5), normal_t({10}), constant(normal_t({10}, kFloat32, 0.1)),
        constant(uniform_t({10}, 0.5, 2))},
       [](const Ts& in) {
         auto every_other = [](const Tensor& t) { return t.slice(0, 0, 10, 2); };
         return Ts{batch_norm(in[0], every_other(in[1]), every_other(in[2]), every_other(in[3]), every_other(in[4]), true),
                   in[3], in[4]};
       }},
      {"eval of an empty batch", with({normal_t({0, 5, 3, 3}), uniform_t({5}, 0.5, 1.5), normal_t({5})}, stats(5)), bn(false)},
  });
}

TEST_CASE("batch norm with a fused activation matches the CPU, forward and backward") {
  auto bn_act = [](Activation act, bool training) {
    return [=](const Ts& in) {
      return Ts{batch_norm_activation(in[0], in[1], in[2], in[3], in[4], training, 0.1, 1e-5, act), in[3], in[4]};
    };
  };
  auto args = [](DType dt = kFloat32) {
    return std::vector<Arg>{normal_t({4, 5, 7, 3}, dt, 1.5), uniform_t({5}, 0.5, 1.5, dt), normal_t({5}, dt),
                            constant(normal_t({5}, dt, 0.1)), constant(uniform_t({5}, 0.5, 2, dt))};
  };
  check_table({
      {"relu, training", args(), bn_act(Activation::Relu, true)},
      {"gelu, training", args(), bn_act(Activation::Gelu, true)},
      {"silu, training", args(), bn_act(Activation::Silu, true)},
      {"pysilu, training", args(), bn_act(Activation::PySilu, true)},
      {"relu, eval", args(), bn_act(Activation::Relu, false)},
      {"gelu, training, float64", args(kFloat64), bn_act(Activation::Gelu, true)},
      {"silu, training, bias without weight", {normal_t({3, 5, 4, 4}), Tensor(), normal_t({5}), Tensor(), Tensor()},
       bn_act(Activation::Silu, true)},
      {"relu of a permuted input", {normal_t({4, 7, 5, 3}), uniform_t({5}, 0.5, 1.5), normal_t({5})}, [](const Ts& in) {
         return Ts{batch_norm_activation(in[0].permute({0, 2, 1, 3}), in[1], in[2], Tensor(), Tensor(), true, 0.1,
                                         1e-5, Activation::Relu)};
       }},
  });
}

TEST_CASE("losses match the CPU: BCE with logits, the trainer's dice, log_softmax, nll_loss, cross_entropy") {
  check_table({
      {"bce_with_logits, soft targets (both take gradients)", {normal_t({3, 1, 7, 9}, kFloat32, 2.0), uniform_t({3, 1, 7, 9}, 0, 1)},
       [](const Ts& in) { return Ts{binary_cross_entropy_with_logits(in[0], in[1])}; }},
      {"bce_with_logits, 0/1 targets, large logits", {normal_t({2, 1, 9, 8}, kFloat32, 8.0), constant(mask_t({2, 1, 9, 8}))},
       [](const Ts& in) { return Ts{binary_cross_entropy_with_logits(in[0], in[1])}; }},
      {"bce_with_logits of a transposed view", {normal_t({5, 7}), constant(mask_t({7, 5}))},
       [](const Ts& in) { return Ts{binary_cross_entropy_with_logits(in[0].t(), in[1])}; }},
      {"dice_loss, 0/1 targets", {normal_t({2, 1, 9, 11}, kFloat32, 2.0), constant(mask_t({2, 1, 9, 11}))},
       [](const Ts& in) { return Ts{dice_loss(in[0], in[1])}; }},
      {"dice_loss smooth 0.5, soft targets", {normal_t({3, 13}), uniform_t({3, 13}, 0, 1)},
       [](const Ts& in) { return Ts{dice_loss(in[0], in[1], 0.5)}; }},
      {"bce + dice (the trainer's loss)", {normal_t({2, 1, 8, 12}, kFloat32, 2.0), constant(mask_t({2, 1, 8, 12}))},
       [](const Ts& in) { return Ts{binary_cross_entropy_with_logits(in[0], in[1]) + dice_loss(in[0], in[1])}; }},
      {"bce + dice float64", {normal_t({2, 1, 5, 7}, kFloat64, 2.0), constant(mask_t({2, 1, 5, 7}, kFloat64))},
       [](const Ts& in) { return Ts{binary_cross_entropy_with_logits(in[0], in[1]) + dice_loss(in[0], in[1])}; }},
      {"log_softmax dim 1 of (3,7,5)", {normal_t({3, 7, 5}, kFloat32, 3.0)}, [](const Ts& in) { return Ts{log_softmax(in[0], 1)}; }},
      {"log_softmax dim -1 of a transposed view", {normal_t({9, 4})}, [](const Ts& in) { return Ts{log_softmax(in[0].t(), -1)}; }},
      {"log_softmax of large logits", {normal_t({4, 9}, kFloat32, 20.0)}, [](const Ts& in) { return Ts{log_softmax(in[0], 1)}; }},
      {"nll_loss(log_softmax) (6,5)", {normal_t({6, 5}), classes_t({6}, 5)},
       [](const Ts& in) { return Ts{nll_loss(log_softmax(in[0], 1), in[1])}; }},
      {"nll_loss (2,4,3,5) per pixel", {normal_t({2, 4, 3, 5}), classes_t({2, 3, 5}, 4)},
       [](const Ts& in) { return Ts{nll_loss(log_softmax(in[0], 1), in[1])}; }},
      {"cross_entropy (4,5,3,6)", {normal_t({4, 5, 3, 6}, kFloat32, 2.0), classes_t({4, 3, 6}, 5)},
       [](const Ts& in) { return Ts{cross_entropy(in[0], in[1])}; }},
      {"cross_entropy (7,3)", {normal_t({7, 3}), classes_t({7}, 3)}, [](const Ts& in) { return Ts{cross_entropy(in[0], in[1])}; }},
      {"cross_entropy float64", {normal_t({5, 4, 3}, kFloat64), classes_t({5, 3}, 4)},
       [](const Ts& in) { return Ts{cross_entropy(in[0], in[1])}; }},
  });
}

// The CUDA forward checks the targets on the device and names the first bad one as the CPU does.
TEST_CASE("nll_loss with targets out of range raises the CPU's error on cuda; strided targets work") {
  const Tensor logp = log_softmax(normal_t({2, 4, 3, 5}), 1);
  Tensor target = classes_t({2, 3, 5}, 4);
  target.data_ptr<int64_t>()[17] = 4;   // the first bad one: position (1,0,2)
  target.data_ptr<int64_t>()[23] = -1;  // a later one
  const std::string cpu_error = error_of([&] { nll_loss(logp, target); });
  CHECK(cpu_error == "nll_loss: target 4 at position (1,0,2) of target (2,3,5) is out of bounds for 4 classes [0, 4)");
  CHECK(error_of([&] { nll_loss(logp.to(kGpu), target.to(kGpu)); }) == cpu_error);
  // A strided view (the same one on each device): the position is the view's own, row-major over
  // its shape, on both.
  const std::string cpu_view_error = error_of([&] { nll_loss(logp, target.reshape({2, 5, 3}).transpose(1, 2)); });
  CHECK(cpu_view_error.find("nll_loss: target ") == 0);
  const Tensor gpu_view = target.to(kGpu).reshape({2, 5, 3}).transpose(1, 2);
  CHECK(!gpu_view.is_contiguous());
  CHECK(error_of([&] { nll_loss(logp.to(kGpu), gpu_view); }) == cpu_view_error);
  // The device is still usable, and valid strided targets give the CPU's loss and gradient.
  check_case({"nll_loss of a transposed target", {normal_t({2, 4, 3, 5}), classes_t({2, 5, 3}, 4)},
              [](const Ts& in) { return Ts{nll_loss(log_softmax(in[0], 1), in[1].transpose(1, 2))}; }});
}

TEST_CASE("shape ops match the CPU: cat, pad, center_crop, reshape, permute, views, casts") {
  check_table({
      {"cat dim 1 of three, one transposed", {normal_t({2, 3, 5}), normal_t({2, 5, 4}), normal_t({2, 1, 5})},
       [](const Ts& in) { return Ts{cat({in[0], in[1].transpose(1, 2), in[2]}, 1)}; }},
      {"cat dim 0", {normal_t({2, 7}), normal_t({5, 7})}, [](const Ts& in) { return Ts{cat({in[0], in[1]}, 0)}; }},
      {"cat dim -1 float64", {normal_t({3, 2}, kFloat64), normal_t({3, 5}, kFloat64)},
       [](const Ts& in) { return Ts{cat({in[0], in[1]}, -1)}; }},
      {"pad (1,2,0,3) with 0.5", {normal_t({2, 3, 4, 5})}, [](const Ts& in) { return Ts{pad(in[0], {1, 2, 0, 3}, 0.5)}; }},
      {"center_crop (2,3,9,11) to 6x7", {normal_t({2, 3, 9, 11})}, [](const Ts& in) { return Ts{center_crop(in[0], 6, 7)}; }},
      {"reshape of a transposed view (a copy)", {normal_t({4, 6})}, [](const Ts& in) { return Ts{in[0].t().reshape({3, 8})}; }},
      {"permute then contiguous", {normal_t({2, 3, 4, 5})},
       [](const Ts& in) { return Ts{in[0].permute({2, 0, 3, 1}).contiguous()}; }},
      {"select, squeeze, unsqueeze, flatten", {normal_t({3, 1, 4, 5})},
       [](const Ts& in) { return Ts{in[0].select(2, 1).squeeze(1).unsqueeze(0).flatten()}; }},
      {"narrow then slice with step 3", {normal_t({7, 9})}, [](const Ts& in) { return Ts{in[0].narrow(0, 1, 5).slice(1, 1, 9, 3)}; }},
      {"expand then multiply", {normal_t({3, 1}), normal_t({3, 4})}, [](const Ts& in) { return Ts{in[0].expand({3, 4}) * in[1]}; }},
      {"to(float64) and back", {normal_t({4, 5}), normal_t({4, 5}, kFloat64)},
       [](const Ts& in) { return Ts{in[0].to(kFloat64) * in[1], (in[1] * 2.0).to(kFloat32)}; }},
      {"clone of a strided view", {normal_t({6, 8})}, [](const Ts& in) { return Ts{in[0].slice(1, 0, 8, 2).t().clone()}; }},
  });
}

TEST_CASE("random draws and fills on cuda equal the CPU's") {
  for (DType dt : {kFloat32, kFloat64}) {
    CAPTURE(dtype_name(dt));
    const double tol = dt == kFloat64 ? kTol64 : kTol32;
    const TensorOptions on_gpu = TensorOptions(dt).with_device(kGpu);
    Generator a(11), b(11);  // (seed, offset) decide every value, whatever the device
    TL_CHECK_CLOSE(uniform({513, 7}, -2, 3, on_gpu, &a), uniform({513, 7}, -2, 3, dt, &b), tol);
    TL_CHECK_CLOSE(normal({1001}, 0.5, 2, on_gpu, &a), normal({1001}, 0.5, 2, dt, &b), tol);
    TL_CHECK_CLOSE(randn({3, 5}, on_gpu, &a), randn({3, 5}, dt, &b), tol);
    CHECK(uniform({2}, 0, 1, on_gpu, &a).device() == kGpu);  // drawn there, not on the CPU and moved
    CHECK(uniform({2}, 0, 1, dt, &b).device() == Device::cpu());
    Tensor d = empty({6, 9}, on_gpu), h = empty({6, 9}, dt);
    CHECK(d.device() == kGpu);
    uniform_(d, -1, 1, &a);
    uniform_(h, -1, 1, &b);
    TL_CHECK_CLOSE(d, h, tol);
    normal_(d, 0, 3, &a);
    normal_(h, 0, 3, &b);
    TL_CHECK_CLOSE(d, h, tol);
    CHECK(a.offset() == b.offset());
    // fill_ of a whole tensor and of a strided view; full()
    Tensor fd = zeros({5, 8}, on_gpu), fh = zeros({5, 8}, dt);
    fd.slice(1, 1, 8, 3).fill_(2.5);
    fh.slice(1, 1, 8, 3).fill_(2.5);
    TL_CHECK_CLOSE(fd, fh, 0.0);
    TL_CHECK_CLOSE(full({3, 5}, -1.25, on_gpu), full({3, 5}, -1.25, dt), 0.0);
    TL_CHECK_CLOSE(ones_like(fd), ones({5, 8}, dt), 0.0);
  }
}

// ---- the optimizers -----------------------------------------------------------------------------

namespace {

// A leaf parameter on `device` holding `value`. transposed: stored as the transpose of a contiguous
// (cols, rows) buffer, a strided parameter, which the fused step must write back in place.
Tensor make_param(const Tensor& value, Device device, bool transposed) {
  Tensor p = transposed ? empty({value.size(1), value.size(0)}, TensorOptions(value.dtype()).with_device(device)).t()
                        : empty(value.shape(), TensorOptions(value.dtype()).with_device(device));
  p.copy_(value);
  return p.requires_grad_();
}

// The same parameters on the CPU and on cuda:0: odd shapes, a strided one, a float64 one.
struct ParamPair {
  optim::NamedParams cpu, gpu;
  ParamPair() {
    const std::vector<std::tuple<const char*, Tensor, bool>> init = {
        {"conv.weight", normal_t({5, 3, 3, 3}), false},   {"conv.bias", normal_t({5}), false},
        {"big", normal_t({1031}), false},                 {"strided", normal_t({7, 5}), true},
        {"double", normal_t({4, 3}, kFloat64), false},
    };
    for (const auto& [name, value, transposed] : init) {
      cpu.emplace_back(name, make_param(value, Device::cpu(), transposed));
      gpu.emplace_back(name, make_param(value, kGpu, transposed));
    }
  }
  // The same random gradient on both sides; parameter `skip` gets none (it is skipped by the step).
  void set_grads(size_t skip = SIZE_MAX) {
    for (size_t i = 0; i < cpu.size(); ++i) {
      const Tensor g = i == skip ? Tensor() : normal_t(cpu[i].second.shape(), cpu[i].second.dtype());
      cpu[i].second.set_grad(g);
      gpu[i].second.set_grad(g.defined() ? copy_to(g, kGpu) : Tensor());
    }
  }
};

}  // namespace

TEST_CASE("the fused SGD, Adam and AdamW steps match the CPU's") {
  using Make = std::function<std::unique_ptr<optim::Optimizer>(optim::NamedParams)>;
  const std::vector<std::pair<const char*, Make>> optimizers = {
      {"SGD", [](optim::NamedParams p) { return std::make_unique<optim::SGD>(std::move(p), optim::SGDOptions{.lr = 0.1}); }},
      {"SGD momentum, dampening, weight decay",
       [](optim::NamedParams p) {
         return std::make_unique<optim::SGD>(
             std::move(p), optim::SGDOptions{.lr = 0.05, .momentum = 0.9, .dampening = 0.1, .weight_decay = 1e-2});
       }},
      {"SGD Nesterov",
       [](optim::NamedParams p) {
         return std::make_unique<optim::SGD>(std::move(p), optim::SGDOptions{.lr = 0.05, .momentum = 0.9, .nesterov = true});
       }},
      {"Adam", [](optim::NamedParams p) { return std::make_unique<optim::Adam>(std::move(p)); }},
      {"Adam weight decay",
       [](optim::NamedParams p) {
         return std::make_unique<optim::Adam>(std::move(p), optim::AdamOptions{.lr = 1e-2, .weight_decay = 0.1});
       }},
      {"AdamW", [](optim::NamedParams p) { return std::make_unique<optim::AdamW>(std::move(p), optim::AdamWOptions{.lr = 1e-2}); }},
  };
  for (const auto& [name, make] : optimizers) {
    INFO(name);
    ParamPair params;
    auto cpu_opt = make(params.cpu), gpu_opt = make(params.gpu);
    for (int step = 0; step < 5; ++step) {
      params.set_grads(step == 2 ? 1 : SIZE_MAX);  // at step 2 conv.bias has no gradient: its count stays
      cpu_opt->step();
      gpu_opt->step();
    }
    for (size_t i = 0; i < params.cpu.size(); ++i)
      check_result("parameter " + params.cpu[i].first, params.gpu[i].second, params.cpu[i].second, kTol32);
    const optim::NamedParams cpu_state = cpu_opt->state_dict(), gpu_state = gpu_opt->state_dict();
    REQUIRE(cpu_state.size() == gpu_state.size());
    for (size_t i = 0; i < cpu_state.size(); ++i) {
      INFO("state " << cpu_state[i].first);
      CHECK(gpu_state[i].first == cpu_state[i].first);
      TL_CHECK_CLOSE(gpu_state[i].second, cpu_state[i].second, cpu_state[i].second.dtype() == kFloat64 ? kTol64 : kTol32);
    }
  }
}

TEST_CASE("clip_grad_norm_ on cuda matches the CPU") {
  for (double max_norm : {0.5, 1e6}) {  // scales every gradient; leaves them alone
    CAPTURE(max_norm);
    ParamPair params;
    params.set_grads(3);
    std::vector<Tensor> cpu, gpu;
    for (size_t i = 0; i < params.cpu.size(); ++i) {
      cpu.push_back(params.cpu[i].second);
      gpu.push_back(params.gpu[i].second);
    }
    const double cpu_norm = optim::clip_grad_norm_(cpu, max_norm), gpu_norm = optim::clip_grad_norm_(gpu, max_norm);
    CAPTURE(cpu_norm);
    CAPTURE(gpu_norm);
    CHECK(std::abs(gpu_norm - cpu_norm) <= kTol32 * cpu_norm);
    for (size_t i = 0; i < cpu.size(); ++i)
      check_result("gradient of " + params.cpu[i].first, gpu[i].grad(), cpu[i].grad(), kTol32);
  }
}

TEST_CASE("TF32 GEMMs stay within 1e-2 of the CPU; strict fp32 is back within 1e-5") {
  struct RestoreStrictFp32 {
    ~RestoreStrictFp32() { set_allow_tf32(false); }
  } restore;
  const std::vector<OpCase> large = {
      {"conv2d 3x3 pad 1, (2,32,33,31) x (48,32,3,3)", {normal_t({2, 32, 33, 31}), normal_t({48, 32, 3, 3}), normal_t({48})},
       [](const Ts& in) { return Ts{conv2d(in[0], in[1], in[2], 1, 1)}; }},
      {"conv_transpose2d k2 s2, (2,48,17,15) x (48,24,2,2)", {normal_t({2, 48, 17, 15}), normal_t({48, 24, 2, 2}), normal_t({24})},
       [](const Ts& in) { return Ts{conv_transpose2d(in[0], in[1], in[2], 2)}; }},
      {"matmul (257,513) x (513,129)", {normal_t({257, 513}), normal_t({513, 129})},
       [](const Ts& in) { return Ts{matmul(in[0], in[1])}; }},
  };
  set_allow_tf32(true);
  check_table(large, kTolTf32);
  // TF32 really is on: its 10-bit mantissa inputs put a K = 513 matmul well outside strict fp32's
  // tolerance (a switch that did nothing would pass the table above).
  const Tensor a = normal_t({257, 513}), b = normal_t({513, 129});
  const Comparison tf32 = compare(matmul(a.to(kGpu), b.to(kGpu)), matmul(a, b));
  CHECK_MESSAGE(tf32.rel > kTol32, "TF32 matmul is as exact as strict fp32: " << tf32.str(kTol32));
  set_allow_tf32(false);
  check_table(large, kTol32);
}

TL_CUDA_TEST_MAIN()
