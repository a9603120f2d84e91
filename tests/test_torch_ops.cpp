// PyTorch parity of every op, forward and backward. tests/torch_ops_reference.py writes
// $TL_TORCH_REF_DIR/ops.safetensors: per case the float32 inputs, a random R, and PyTorch's output
// and gradients of sum(out * R) (computed in float64). Here each case is rebuilt from the table
// below, run in float32 three times (contiguous inputs; the first input strided; every input
// strided: copied into a permuted buffer with gaps), and compared by relative L2 error
// ||ours - torch|| / ||torch||: forward (and batch_norm's updated running stats) at most 1e-5,
// every gradient at most 1e-4.
// The table it prints shows the achieved parity beside PyTorch's own float32 error.
//
// Without the dump (no PyTorch, or run outside ctest) it prints "skipped: ..." and exits with 77,
// which ctest reports as skipped. It has its own main() for that reason (no tests/test_main.cpp).
#define DOCTEST_CONFIG_IMPLEMENT
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <string>

#include "nn/safetensors.h"
#include "tests/test_util.h"

using namespace tl;
using testing::rel_l2;

namespace {

constexpr double kFwdTol = 1e-5;
constexpr double kGradTol = 1e-4;
constexpr double kInf = std::numeric_limits<double>::infinity();

std::string g_dump_path;  // set by main() once the dump is known to exist

// ---- the table: one row per case of the dump, the op called with the inputs in0, in1, ... in the
// order the script uses. Extra results to compare (batch_norm's running stats) go into `extras`.
using In = std::vector<Tensor>;
using Extras = std::map<std::string, Tensor>;
using OpFn = std::function<Tensor(const In&, Extras&)>;
struct Row {
  const char* name;
  OpFn fn;
};

#define F(body) [](const In& x, Extras&) -> Tensor { return body; }

// batch_norm(x, weight, bias, running_mean, running_var): the running stats are inputs of the case
// (fresh copies per run), updated in place and compared with torch's.
OpFn bn(bool affine, bool stats, bool training, double momentum, double eps) {
  return [=](const In& x, Extras& e) -> Tensor {
    const Tensor w = affine ? x[1] : Tensor(), b = affine ? x[2] : Tensor();
    const size_t s = affine ? 3 : 1;
    const Tensor rm = stats ? x[s] : Tensor(), rv = stats ? x[s + 1] : Tensor();
    if (stats) {
      e["running_mean_out"] = rm;
      e["running_var_out"] = rv;
    }
    return batch_norm(x[0], w, b, rm, rv, training, momentum, eps);
  };
}

std::vector<Row> table() {
  return {
      // ---- elementwise, binary and scalar
      {"add_same", F(add(x[0], x[1]))},
      {"add_bcast", F(add(x[0], x[1]))},
      {"add_scalar", F(add(x[0], 2.5))},
      {"sub_bcast", F(sub(x[0], x[1]))},
      {"sub_bcast_rev", F(sub(x[0], x[1]))},
      {"sub_scalar", F(sub(x[0], 1.5))},
      {"rsub_scalar", F(rsub(x[0], 0.5))},
      {"mul_same", F(mul(x[0], x[1]))},
      {"mul_bcast", F(mul(x[0], x[1]))},
      {"mul_scalar", F(mul(x[0], -3.0))},
      {"div_same", F(div(x[0], x[1]))},
      {"div_bcast", F(div(x[0], x[1]))},
      {"div_scalar", F(div(x[0], 3.0))},
      {"rdiv_scalar", F(rdiv(x[0], 2.0))},
      // ---- elementwise, unary
      {"neg", F(neg(x[0]))},
      {"exp", F(exp(x[0]))},
      {"log", F(log(x[0]))},
      {"sqrt", F(sqrt(x[0]))},
      {"pow_3", F(pow(x[0], 3.0))},
      {"pow_2", F(pow(x[0], 2.0))},
      {"pow_m1_5", F(pow(x[0], -1.5))},
      {"pow_0_5", F(pow(x[0], 0.5))},
      {"abs", F(abs(x[0]))},
      {"clamp", F(clamp(x[0], -0.7, 0.9))},
      {"clamp_min", F(clamp(x[0], -0.5, kInf))},
      {"clamp_max", F(clamp(x[0], -kInf, 0.25))},
      {"sigmoid", F(sigmoid(x[0]))},
      {"tanh", F(tanh(x[0]))},
      {"relu", F(relu(x[0]))},
      {"gelu", F(gelu(x[0]))},
      {"silu", F(silu(x[0]))},
      {"pysilu", F(pysilu(x[0]))},
      // ---- comparisons (forward only, uint8)
      {"eq", F(eq(x[0], x[1]))},
      {"gt", F(gt(x[0], x[1]))},
      {"lt_bcast", F(lt(x[0], x[1]))},
      {"ge", F(ge(x[0], x[1]))},
      {"le", F(le(x[0], x[1]))},
      {"gt_scalar", F(gt(x[0], 0.25))},
      {"lt_scalar", F(lt(x[0], -0.1))},
      // ---- reductions
      {"sum_all", F(sum(x[0]))},
      {"sum_d02_keep", F(sum(x[0], {0, 2}, true))},
      {"sum_dlast", F(sum(x[0], {-1}))},
      {"sum_d13", F(sum(x[0], {1, 3}))},
      {"mean_all", F(mean(x[0]))},
      {"mean_d1", F(mean(x[0], {1}))},
      {"mean_d03_keep", F(mean(x[0], {0, 3}, true))},
      {"max_all", F(max(x[0]))},
      {"max_d1", F(max(x[0], {1}))},
      {"max_d02_keep", F(max(x[0], {0, 2}, true))},
      {"max_dlast", F(max(x[0], {-1}))},
      {"sum_to", F(sum_to(x[0], Shape{3, 1}))},
      // ---- views and copies
      {"view", F(x[0].view({2, 3, 35}))},
      {"reshape", F(x[0].t().reshape({5, -1}))},
      {"permute", F(x[0].permute({2, 0, 1}))},
      {"transpose", F(x[0].transpose(1, 3))},
      {"narrow", F(x[0].narrow(1, 2, 5))},
      {"slice_step", F(x[0].slice(0, 1, 10, 3))},
      {"select", F(x[0].select(1, -2))},
      {"expand", F(x[0].expand({2, 3, 7}))},
      {"squeeze_unsqueeze", F(x[0].squeeze().unsqueeze(0).unsqueeze(-1))},
      {"flatten", F(x[0].flatten(1, 2))},
      {"contiguous", F(x[0].t().contiguous())},
      {"clone", F(x[0].clone())},
      // ---- shape ops
      {"cat_d1", F(cat({x[0], x[1], x[2]}, 1))},
      {"cat_d0_4d", F(cat({x[0], x[1]}, 0))},
      {"cat_dlast", F(cat({x[0], x[1]}, -1))},
      {"pad_2d", F(pad(x[0], {1, 2, 0, 3}, 0.5))},
      {"pad_last", F(pad(x[0], {3, 1}))},
      {"pad_3d", F(pad(x[0], {0, 1, 2, 0, 1, 1}, -1.0))},
      {"center_crop", F(center_crop(x[0], 4, 5))},
      {"center_crop_same", F(center_crop(x[0], 6, 7))},
      {"center_crop_odd", F(center_crop(x[0], 10, 3))},
      // ---- linear algebra
      {"matmul_2d", F(matmul(x[0], x[1]))},
      {"matmul_batched", F(matmul(x[0], x[1]))},
      {"matmul_3d_2d", F(matmul(x[0], x[1]))},
      // ---- convolution: (x, weight, bias)
      {"conv_k3s1p1_bias", F(conv2d(x[0], x[1], x[2], 1, 1))},
      {"conv_k3s2p0", F(conv2d(x[0], x[1], Tensor(), 2, 0))},
      {"conv_k3s2p1_bias", F(conv2d(x[0], x[1], x[2], 2, 1))},
      {"conv_k1_bias", F(conv2d(x[0], x[1], x[2]))},
      {"conv_k5s1p0", F(conv2d(x[0], x[1]))},
      {"conv_k3x2_s21_p10", F(conv2d(x[0], x[1], x[2], Size2(2, 1), Size2(1, 0)))},
      {"conv_k3s1p1_wide", F(conv2d(x[0], x[1], Tensor(), 1, 1))},
      {"convT_k2s2_bias", F(conv_transpose2d(x[0], x[1], x[2], 2, 0))},
      {"convT_k3s2p1", F(conv_transpose2d(x[0], x[1], Tensor(), 2, 1))},
      {"convT_k3s2p1_bias", F(conv_transpose2d(x[0], x[1], x[2], 2, 1))},
      {"convT_k3s1p1_bias", F(conv_transpose2d(x[0], x[1], x[2], 1, 1))},
      // ---- pooling
      {"maxpool_k2s2", F(max_pool2d(x[0], 2))},
      {"maxpool_k3s2", F(max_pool2d(x[0], 3, 2))},
      {"maxpool_k32_s21", F(max_pool2d(x[0], Size2(3, 2), Size2(2, 1)))},
      // ---- batch norm: bn(affine, running stats, training, momentum, eps)
      {"bn_train_affine", bn(true, true, true, 0.1, 1e-5)},
      {"bn_train_noaffine_2d", bn(false, true, true, 0.1, 1e-5)},
      {"bn_train_nostats", bn(true, false, true, 0.1, 1e-5)},
      {"bn_train_mom03_eps1e3", bn(true, true, true, 0.3, 1e-3)},
      {"bn_eval_affine", bn(true, true, false, 0.1, 1e-5)},
      {"bn_eval_noaffine", bn(false, true, false, 0.1, 1e-5)},
      // ---- losses
      {"bce_logits_soft", F(binary_cross_entropy_with_logits(x[0], x[1]))},
      {"bce_logits_mask", F(binary_cross_entropy_with_logits(x[0], x[1]))},
      {"bce_logits_target_grad", F(binary_cross_entropy_with_logits(x[0], x[1]))},
      {"dice_loss", F(dice_loss(x[0], x[1], 1.0))},
      {"dice_loss_big", F(dice_loss(x[0], x[1], 1.0))},
      {"log_softmax_2d", F(log_softmax(x[0], 1))},
      {"log_softmax_4d", F(log_softmax(x[0], 1))},
      {"log_softmax_d0", F(log_softmax(x[0], 0))},
      {"log_softmax_big", F(log_softmax(x[0], -1))},
      {"nll_loss_2d", F(nll_loss(x[0], x[1]))},
      {"nll_loss_4d", F(nll_loss(x[0], x[1]))},
      {"cross_entropy_2d", F(cross_entropy(x[0], x[1]))},
      {"cross_entropy_4d", F(cross_entropy(x[0], x[1]))},
      {"cross_entropy_big", F(cross_entropy(x[0], x[1]))},
  };
}

#undef F

// A copy of `src` whose layout is neither contiguous nor in order: a buffer with every dim doubled,
// in reversed dim order, of which the view takes every other element along each dim, permuted
// back. Same values, strides (2*..., ..., 2) reversed. 0-d and one-element tensors stay contiguous.
Tensor strided_copy(const Tensor& src) {
  const int64_t n = src.dim();
  if (n == 0 || src.numel() <= 1) return src.clone();
  Shape big;
  std::vector<int64_t> perm;
  for (int64_t d = n - 1; d >= 0; --d) {
    big.push_back(2 * src.size(d));
    perm.push_back(d);
  }
  Tensor v = zeros(big, src.dtype());
  for (int64_t d = 0; d < n; ++d) v = v.slice(d, 0, big[d], 2);
  v = v.permute(perm);
  v.copy_(src);
  REQUIRE(!v.is_contiguous());
  return v;
}

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2e", v);
  return buf;
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

// Errors of one case in one layout; the CHECKs name the case, the layout and the tensor.
struct Errors {
  double fwd = 0;    // output and extras
  double grad = -1;  // worst gradient; -1 when the case has none
};

enum class Layout { Contiguous, FirstStrided, AllStrided };
const char* layout_name(Layout l) {
  return l == Layout::Contiguous     ? "contiguous inputs"
         : l == Layout::FirstStrided ? "first input strided"
                                     : "all inputs strided";
}

Errors run_case(const Row& row, const safetensors::File& dump, Layout layout_kind) {
  const std::string name = row.name, layout = layout_name(layout_kind);
  In inputs;
  std::vector<bool> wants_grad;
  for (int i = 0; dump.contains(name + ".in" + std::to_string(i)); ++i) {
    const Tensor& src = dump.at(name + ".in" + std::to_string(i));
    const bool strided = layout_kind == Layout::AllStrided || (layout_kind == Layout::FirstStrided && i == 0);
    Tensor t = strided ? strided_copy(src) : src.clone();
    const bool g = dump.contains(name + ".grad" + std::to_string(i));
    if (g) t.requires_grad_();
    inputs.push_back(t);
    wants_grad.push_back(g);
  }
  REQUIRE_MESSAGE(!inputs.empty(), name << ": no inputs in the dump");

  Errors e;
  Extras extras;
  const Tensor out = row.fn(inputs, extras);
  const Tensor& want = dump.at(name + ".out");
  if (!is_floating(want.dtype())) {  // comparisons: exact
    const bool same = out.shape() == want.shape() && out.dtype() == want.dtype() &&
                      out.to_vector<double>() == want.to_vector<double>();
    e.fwd = same ? 0.0 : kInf;
    CHECK_MESSAGE(same, name << " (" << layout << "): output " << shape_str(out.shape()) << " " << dtype_name(out.dtype())
                              << " differs from torch's " << shape_str(want.shape()) << " " << dtype_name(want.dtype()));
    return e;
  }
  e.fwd = rel_l2(out, want);
  CHECK_MESSAGE(e.fwd <= kFwdTol, name << " (" << layout << "): forward relative L2 error " << e.fwd << " > " << kFwdTol
                                        << " (ours " << shape_str(out.shape()) << ", torch " << shape_str(want.shape()) << ")");
  for (const auto& [key, t] : extras) {
    const double r = rel_l2(t, dump.at(name + "." + key));
    e.fwd = std::max(e.fwd, r);
    CHECK_MESSAGE(r <= kFwdTol, name << " (" << layout << "): " << key << " relative L2 error " << r << " > " << kFwdTol);
  }

  if (!dump.contains(name + ".R")) return e;
  sum(mul(out, dump.at(name + ".R"))).backward();
  e.grad = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!wants_grad[i]) continue;
    const Tensor g = inputs[i].grad();
    const Tensor& gw = dump.at(name + ".grad" + std::to_string(i));
    const double r = g.defined() ? rel_l2(g, gw) : kInf;
    e.grad = std::max(e.grad, r);
    CHECK_MESSAGE(r <= kGradTol, name << " (" << layout << "): gradient of input " << i << " "
                                      << (g.defined() ? "relative L2 error " + fmt(r) : std::string("missing"))
                                      << " > " << kGradTol << " (torch " << shape_str(gw.shape()) << ")");
  }
  return e;
}

}  // namespace

TEST_CASE("torch parity: every op, forward and backward, against PyTorch") {
  const safetensors::File dump = safetensors::load(g_dump_path);
  const std::vector<std::string> cases = split_commas(dump.metadata.count("cases") ? dump.metadata.at("cases") : "");
  REQUIRE_MESSAGE(!cases.empty(), g_dump_path << " lists no cases in its metadata");

  // The dump and the table must cover the same cases: a new op needs a row on both sides.
  std::map<std::string, const Row*> rows;
  const std::vector<Row> tab = table();
  for (const Row& r : tab) rows[r.name] = &r;
  const std::set<std::string> in_dump(cases.begin(), cases.end());
  for (const Row& r : tab) CHECK_MESSAGE(in_dump.count(r.name), "case " << r.name << " is in the table but not in the dump");

  auto meta = [&](const std::string& key) {
    auto it = dump.metadata.find(key);
    return it == dump.metadata.end() ? std::string("-") : it->second;
  };
  std::printf("\n%-24s %13s %13s %13s %13s\n", "case", "fwd rel L2", "grad rel L2", "torch32 fwd", "torch32 grad");
  double worst_fwd = 0, worst_grad = 0;
  int checked = 0;
  for (const std::string& name : cases) {
    auto it = rows.find(name);
    CHECK_MESSAGE(it != rows.end(), "case " << name << " of the dump has no row in the table");
    if (it == rows.end()) continue;
    Errors e;
    for (Layout layout : {Layout::Contiguous, Layout::FirstStrided, Layout::AllStrided}) {
      try {
        const Errors r = run_case(*it->second, dump, layout);
        e.fwd = std::max(e.fwd, r.fwd);
        e.grad = std::max(e.grad, r.grad);
      } catch (const std::exception& ex) {
        FAIL_CHECK(name << " (" << layout_name(layout) << ") threw: " << ex.what());
        e.fwd = kInf;
      }
    }
    worst_fwd = std::max(worst_fwd, e.fwd);
    worst_grad = std::max(worst_grad, e.grad);
    ++checked;
    std::printf("%-24s %13s %13s %13s %13s\n", name.c_str(), fmt(e.fwd).c_str(), e.grad < 0 ? "-" : fmt(e.grad).c_str(),
                meta(name + ".torch_f32_fwd").c_str(), meta(name + ".torch_f32_grad").c_str());
  }
  std::printf("%d cases, each with contiguous, first-strided and all-strided inputs; worst forward %s "
              "(tolerance %.0e), worst gradient %s (tolerance %.0e)\n"
              "torch32: PyTorch's own float32 error against the same float64 reference\n\n",
              checked, fmt(worst_fwd).c_str(), kFwdTol, fmt(worst_grad).c_str(), kGradTol);
}

int main(int argc, char** argv) {
  const char* dir = std::getenv("TL_TORCH_REF_DIR");
  const std::string path = dir ? (std::filesystem::path(dir) / "ops.safetensors").string() : std::string();
  if (!dir || !std::filesystem::exists(path)) {
    std::printf("skipped: PyTorch reference dump not found (%s; tests/torch_ops_reference.py writes it)\n",
                dir ? (path + " does not exist").c_str() : "TL_TORCH_REF_DIR is not set");
    return 77;
  }
  g_dump_path = path;
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
