// The gradient check: every differentiable op, float64 central differences, several cases each
// (odd sizes, broadcasting, non-contiguous inputs, stride 2 and padding 0/1, training-mode batch
// norm). Tolerance: relative error at most 1e-6. Prints each op's worst error.
#include <cstdio>
#include <limits>
#include <map>

#include "autograd/gradcheck.h"
#include "tests/test_util.h"

using namespace tl;

namespace {

constexpr double kTol = 1e-6;
Generator gen(1234);

Tensor leaf(const Shape& s, double lo = -2, double hi = 2) {
  return uniform(s, lo, hi, kFloat64, &gen).requires_grad_();
}
// A non-contiguous leaf of shape s: the transpose of a contiguous tensor of the reversed shape.
Tensor nc_leaf(const Shape& s, double lo = -2, double hi = 2) {
  Shape r(s.rbegin(), s.rend());
  std::vector<int64_t> perm;
  for (int64_t i = static_cast<int64_t>(s.size()) - 1; i >= 0; --i) perm.push_back(i);
  Tensor t = uniform(r, lo, hi, kFloat64, &gen).permute(perm);
  REQUIRE(!t.is_contiguous());
  return t.requires_grad_();
}
// Values in [lo, hi] that stay at least `gap` away from 0 (for kinks at zero: abs, relu).
Tensor away_from_zero(const Shape& s, double gap = 0.05) {
  Tensor u = uniform(s, gap, 2.0, kFloat64, &gen);
  Tensor sign = sub(mul(gt(uniform(s, -1, 1, kFloat64, &gen), 0.0).to(kFloat64), 2.0), 1.0);
  return mul(u, sign).detach().requires_grad_();
}
Tensor mask01(const Shape& s) { return gt(rand(s, kFloat64, &gen), 0.5).to(kFloat64); }

struct Case {
  const char* op;
  const char* what;
  std::function<std::pair<GradcheckFn, std::vector<Tensor>>()> make;
};

using In = std::vector<Tensor>;
#define F(body) [](const In& x) -> Tensor { return body; }

std::vector<Case> cases() {
  return {
      // ---- elementwise, binary
      {"add", "same shape", [] { return std::pair{GradcheckFn(F(add(x[0], x[1]))), In{leaf({3, 5}), leaf({3, 5})}}; }},
      {"add", "broadcast (4,1,3)+(5,1)", [] { return std::pair{GradcheckFn(F(add(x[0], x[1]))), In{leaf({4, 1, 3}), leaf({5, 1})}}; }},
      {"add", "non-contiguous + scalar", [] { return std::pair{GradcheckFn(F(add(x[0], 2.5) + x[1])), In{nc_leaf({3, 4}), leaf({4})}}; }},
      {"sub", "broadcast", [] { return std::pair{GradcheckFn(F(sub(x[0], x[1]))), In{leaf({2, 3}), leaf({3})}}; }},
      {"sub", "scalar both sides", [] { return std::pair{GradcheckFn(F(sub(x[0], 1.5) * rsub(x[0], 0.5))), In{nc_leaf({3, 2})}}; }},
      {"mul", "broadcast (2,3,4)*(3,1)", [] { return std::pair{GradcheckFn(F(mul(x[0], x[1]))), In{leaf({2, 3, 4}), leaf({3, 1})}}; }},
      {"mul", "non-contiguous, scalar", [] { return std::pair{GradcheckFn(F(mul(x[0], x[1]) * 3.0)), In{nc_leaf({4, 3}), nc_leaf({4, 3})}}; }},
      {"div", "broadcast", [] { return std::pair{GradcheckFn(F(div(x[0], x[1]))), In{leaf({3, 4}), leaf({4}, 0.5, 2)}}; }},
      {"div", "scalar both sides", [] { return std::pair{GradcheckFn(F(div(x[0], 3.0) + rdiv(x[0], 2.0))), In{leaf({5}, 0.5, 2)}}; }},
      // ---- elementwise, unary
      {"neg", "non-contiguous", [] { return std::pair{GradcheckFn(F(neg(x[0]))), In{nc_leaf({3, 5})}}; }},
      {"exp", "odd size", [] { return std::pair{GradcheckFn(F(exp(x[0]))), In{leaf({7, 3})}}; }},
      {"log", "positive", [] { return std::pair{GradcheckFn(F(log(x[0]))), In{nc_leaf({4, 3}, 0.2, 3)}}; }},
      {"sqrt", "positive", [] { return std::pair{GradcheckFn(F(sqrt(x[0]))), In{leaf({6}, 0.2, 3)}}; }},
      {"pow", "x^3, any sign", [] { return std::pair{GradcheckFn(F(pow(x[0], 3.0))), In{leaf({3, 3})}}; }},
      {"pow", "x^-1.5, positive", [] { return std::pair{GradcheckFn(F(pow(x[0], -1.5))), In{nc_leaf({2, 5}, 0.3, 2)}}; }},
      {"abs", "away from 0", [] { return std::pair{GradcheckFn(F(abs(x[0]))), In{away_from_zero({4, 5})}}; }},
      {"clamp", "both bounds", [] { return std::pair{GradcheckFn(F(clamp(x[0], -0.77, 0.93))), In{leaf({5, 5})}}; }},
      {"clamp", "one-sided (min only)", [] { return std::pair{GradcheckFn(F(clamp(x[0], -0.5, std::numeric_limits<double>::infinity()))), In{nc_leaf({3, 4})}}; }},
      {"sigmoid", "wide range", [] { return std::pair{GradcheckFn(F(sigmoid(x[0]))), In{leaf({9}, -8, 8)}}; }},
      {"tanh", "non-contiguous", [] { return std::pair{GradcheckFn(F(tanh(x[0]))), In{nc_leaf({3, 4}, -3, 3)}}; }},
      {"relu", "away from 0", [] { return std::pair{GradcheckFn(F(relu(x[0]))), In{away_from_zero({5, 4})}}; }},
      {"gelu", "odd size", [] { return std::pair{GradcheckFn(F(gelu(x[0]))), In{leaf({7, 5}, -4, 4)}}; }},
      {"silu", "non-contiguous", [] { return std::pair{GradcheckFn(F(silu(x[0]))), In{nc_leaf({5, 3}, -6, 6)}}; }},
      {"pysilu", "both branches", [] { return std::pair{GradcheckFn(F(pysilu(x[0]))), In{leaf({6, 5}, -5, 5)}}; }},
      // ---- reductions
      {"sum", "all", [] { return std::pair{GradcheckFn(F(sum(x[0]))), In{nc_leaf({3, 4, 5})}}; }},
      {"sum", "dims {0,2} keepdim", [] { return std::pair{GradcheckFn(F(sum(x[0], {0, 2}, true))), In{leaf({3, 4, 5})}}; }},
      {"sum", "dim -1", [] { return std::pair{GradcheckFn(F(sum(x[0], {-1}))), In{nc_leaf({2, 3, 7})}}; }},
      {"mean", "dims {1}", [] { return std::pair{GradcheckFn(F(mean(x[0], {1}))), In{leaf({3, 5, 2})}}; }},
      {"mean", "all, non-contiguous", [] { return std::pair{GradcheckFn(F(mean(x[0]))), In{nc_leaf({4, 3})}}; }},
      {"max", "dim 1", [] { return std::pair{GradcheckFn(F(max(x[0], {1}))), In{leaf({3, 7})}}; }},
      {"max", "dims {0,2} keepdim, non-contiguous", [] { return std::pair{GradcheckFn(F(max(x[0], {0, 2}, true))), In{nc_leaf({3, 4, 5})}}; }},
      {"max", "all", [] { return std::pair{GradcheckFn(F(max(x[0]))), In{leaf({5, 4})}}; }},
      // ---- views and copies
      {"reshape", "non-contiguous (copies)", [] { return std::pair{GradcheckFn(F(x[0].reshape({6, -1}))), In{nc_leaf({3, 4})}}; }},
      {"view", "split a dim", [] { return std::pair{GradcheckFn(F(x[0].view({2, 3, 4}))), In{leaf({6, 4})}}; }},
      {"permute", "3-d", [] { return std::pair{GradcheckFn(F(mul(x[0].permute({2, 0, 1}), x[1]))), In{leaf({2, 3, 4}), leaf({4, 2, 3})}}; }},
      {"transpose", "then matmul", [] { return std::pair{GradcheckFn(F(x[0].transpose(0, 1) * 2.0)), In{leaf({3, 5})}}; }},
      {"narrow", "middle", [] { return std::pair{GradcheckFn(F(x[0].narrow(1, 1, 3))), In{nc_leaf({4, 6})}}; }},
      {"slice", "step 2", [] { return std::pair{GradcheckFn(F(x[0].slice(0, 1, 7, 2))), In{leaf({7, 3})}}; }},
      {"select", "dim 1", [] { return std::pair{GradcheckFn(F(x[0].select(1, -1))), In{leaf({3, 4})}}; }},
      {"expand", "(3,1)->(2,3,4)", [] { return std::pair{GradcheckFn(F(x[0].expand({2, 3, 4}))), In{leaf({3, 1})}}; }},
      {"squeeze", "and unsqueeze", [] { return std::pair{GradcheckFn(F(x[0].squeeze().unsqueeze(0).unsqueeze(-1))), In{leaf({1, 4, 1, 3})}}; }},
      {"flatten", "dims 1..2", [] { return std::pair{GradcheckFn(F(x[0].flatten(1, 2))), In{nc_leaf({2, 3, 4})}}; }},
      {"contiguous", "of a transpose", [] { return std::pair{GradcheckFn(F(x[0].contiguous())), In{nc_leaf({3, 5})}}; }},
      {"clone", "then scale", [] { return std::pair{GradcheckFn(F(x[0].clone() * 2.0)), In{leaf({4})}}; }},
      // ---- shape ops
      {"cat", "dim 1, three inputs", [] { return std::pair{GradcheckFn(F(cat({x[0], x[1], x[2]}, 1))), In{leaf({2, 3}), nc_leaf({2, 2}), leaf({2, 4})}}; }},
      {"cat", "dim 0 of 4-d", [] { return std::pair{GradcheckFn(F(cat({x[0], x[1]}, 0))), In{leaf({1, 2, 3, 3}), leaf({2, 2, 3, 3})}}; }},
      {"pad", "last two dims, value 0.5", [] { return std::pair{GradcheckFn(F(pad(x[0], {1, 2, 0, 3}, 0.5))), In{nc_leaf({2, 3, 4})}}; }},
      {"center_crop", "odd difference", [] { return std::pair{GradcheckFn(F(center_crop(x[0], 3, 4))), In{leaf({2, 2, 6, 7})}}; }},
      // ---- linear algebra
      {"matmul", "2-d, odd sizes", [] { return std::pair{GradcheckFn(F(matmul(x[0], x[1]))), In{leaf({5, 3}), leaf({3, 7})}}; }},
      {"matmul", "transposed inputs", [] { return std::pair{GradcheckFn(F(matmul(x[0], x[1]))), In{nc_leaf({4, 3}), nc_leaf({3, 2})}}; }},
      {"matmul", "batched, broadcast batch", [] { return std::pair{GradcheckFn(F(matmul(x[0], x[1]))), In{leaf({2, 1, 3, 4}), leaf({3, 4, 2})}}; }},
      // ---- convolution
      {"conv2d", "3x3 stride 1 pad 1, bias", [] { return std::pair{GradcheckFn(F(conv2d(x[0], x[1], x[2], 1, 1))), In{leaf({2, 3, 5, 6}), leaf({4, 3, 3, 3}), leaf({4})}}; }},
      {"conv2d", "3x3 stride 2 pad 0, odd size", [] { return std::pair{GradcheckFn(F(conv2d(x[0], x[1], Tensor(), 2, 0))), In{leaf({1, 2, 7, 5}), leaf({3, 2, 3, 3})}}; }},
      {"conv2d", "3x2 stride (2,1) pad (1,0), non-contiguous", [] { return std::pair{GradcheckFn(F(conv2d(x[0], x[1], x[2], Size2(2, 1), Size2(1, 0)))), In{nc_leaf({2, 2, 6, 5}), leaf({3, 2, 3, 2}), leaf({3})}}; }},
      {"conv2d", "1x1", [] { return std::pair{GradcheckFn(F(conv2d(x[0], x[1], x[2]))), In{leaf({2, 4, 3, 5}), leaf({2, 4, 1, 1}), leaf({2})}}; }},
      {"conv_transpose2d", "2x2 stride 2, bias", [] { return std::pair{GradcheckFn(F(conv_transpose2d(x[0], x[1], x[2], 2, 0))), In{leaf({2, 3, 3, 4}), leaf({3, 2, 2, 2}), leaf({2})}}; }},
      {"conv_transpose2d", "3x3 stride 2 pad 1, odd size", [] { return std::pair{GradcheckFn(F(conv_transpose2d(x[0], x[1], Tensor(), 2, 1))), In{leaf({1, 2, 5, 3}), leaf({2, 3, 3, 3})}}; }},
      {"conv_transpose2d", "3x3 stride 1 pad 1, non-contiguous", [] { return std::pair{GradcheckFn(F(conv_transpose2d(x[0], x[1], x[2], 1, 1))), In{nc_leaf({2, 2, 4, 5}), leaf({2, 3, 3, 3}), leaf({3})}}; }},
      // ---- pooling
      {"max_pool2d", "2x2 stride 2, odd size", [] { return std::pair{GradcheckFn(F(max_pool2d(x[0], 2))), In{leaf({2, 3, 7, 5})}}; }},
      {"max_pool2d", "3x3 stride 2 (overlapping), non-contiguous", [] { return std::pair{GradcheckFn(F(max_pool2d(x[0], 3, 2))), In{nc_leaf({2, 2, 7, 6})}}; }},
      // ---- normalization
      {"batch_norm", "training, 4-d, affine", [] { return std::pair{GradcheckFn(F(batch_norm(x[0], x[1], x[2], Tensor(), Tensor(), true))), In{leaf({3, 4, 3, 5}), leaf({4}), leaf({4})}}; }},
      {"batch_norm", "training, 2-d, non-contiguous, no affine", [] { return std::pair{GradcheckFn(F(batch_norm(x[0], Tensor(), Tensor(), Tensor(), Tensor(), true))), In{nc_leaf({6, 3})}}; }},
      {"batch_norm", "training, running stats updated", [] {
         Tensor rm = zeros({3}, kFloat64), rv = ones({3}, kFloat64);
         return std::pair{GradcheckFn([rm, rv](const In& x) { return batch_norm(x[0], x[1], x[2], rm, rv, true); }), In{leaf({4, 3, 2, 3}), leaf({3}), leaf({3})}}; }},
      {"batch_norm", "eval, running stats", [] {
         Tensor rm = uniform({3}, -1, 1, kFloat64, &gen), rv = uniform({3}, 0.5, 2, kFloat64, &gen);
         return std::pair{GradcheckFn([rm, rv](const In& x) { return batch_norm(x[0], x[1], x[2], rm, rv, false); }), In{leaf({2, 3, 4, 3}), leaf({3}), leaf({3})}}; }},
      {"batch_norm_activation", "relu, training, affine", [] { return std::pair{GradcheckFn(F(batch_norm_activation(x[0], x[1], x[2], Tensor(), Tensor(), true, 0.1, 1e-5, Activation::Relu))), In{leaf({3, 4, 3, 5}), leaf({4}), leaf({4})}}; }},
      {"batch_norm_activation", "gelu, training, non-contiguous", [] { return std::pair{GradcheckFn(F(batch_norm_activation(x[0], x[1], x[2], Tensor(), Tensor(), true, 0.1, 1e-5, Activation::Gelu))), In{nc_leaf({4, 3, 2, 3}), leaf({3}), leaf({3})}}; }},
      {"batch_norm_activation", "silu, training, bias without weight", [] { return std::pair{GradcheckFn(F(batch_norm_activation(x[0], Tensor(), x[1], Tensor(), Tensor(), true, 0.1, 1e-5, Activation::Silu))), In{leaf({5, 3, 4}), leaf({3})}}; }},
      {"batch_norm_activation", "pysilu, eval, running stats", [] {
         Tensor rm = uniform({3}, -1, 1, kFloat64, &gen), rv = uniform({3}, 0.5, 2, kFloat64, &gen);
         return std::pair{GradcheckFn([rm, rv](const In& x) { return batch_norm_activation(x[0], x[1], x[2], rm, rv, false, 0.1, 1e-5, Activation::PySilu); }), In{leaf({2, 3, 4, 3}), leaf({3}), leaf({3})}}; }},
      // ---- losses
      {"binary_cross_entropy_with_logits", "logits and target", [] { return std::pair{GradcheckFn(F(binary_cross_entropy_with_logits(x[0], x[1]))), In{leaf({2, 1, 4, 5}, -6, 6), leaf({2, 1, 4, 5}, 0, 1)}}; }},
      {"binary_cross_entropy_with_logits", "0/1 mask, non-contiguous", [] { Tensor t = mask01({3, 4}); return std::pair{GradcheckFn([t](const In& x) { return binary_cross_entropy_with_logits(x[0], t); }), In{nc_leaf({3, 4}, -4, 4)}}; }},
      {"dice_loss", "0/1 mask", [] { Tensor t = mask01({2, 1, 5, 4}); return std::pair{GradcheckFn([t](const In& x) { return dice_loss(x[0], t); }), In{leaf({2, 1, 5, 4}, -3, 3)}}; }},
      {"log_softmax", "dim 1", [] { return std::pair{GradcheckFn(F(log_softmax(x[0], 1))), In{leaf({3, 5}, -4, 4)}}; }},
      {"log_softmax", "dim 1 of 4-d, non-contiguous", [] { return std::pair{GradcheckFn(F(log_softmax(x[0], 1))), In{nc_leaf({2, 3, 2, 4}, -4, 4)}}; }},
      {"nll_loss", "(N,C)", [] { Tensor t = from_vector<int64_t>({0, 2, 1, 2}, {4}); return std::pair{GradcheckFn([t](const In& x) { return nll_loss(x[0], t); }), In{leaf({4, 3})}}; }},
      {"cross_entropy", "(N,C)", [] { Tensor t = from_vector<int64_t>({1, 0, 3}, {3}); return std::pair{GradcheckFn([t](const In& x) { return cross_entropy(x[0], t); }), In{leaf({3, 4}, -3, 3)}}; }},
      {"cross_entropy", "(N,C,H,W)", [] { Tensor t = from_vector<int64_t>({0, 1, 2, 2, 1, 0, 0, 0, 1, 2, 2, 1}, {2, 2, 3}); return std::pair{GradcheckFn([t](const In& x) { return cross_entropy(x[0], t); }), In{nc_leaf({2, 3, 2, 3}, -3, 3)}}; }},
  };
}

}  // namespace

TEST_CASE("gradcheck: every differentiable op, float64 central differences") {
  std::map<std::string, std::pair<double, int>> worst;  // op -> (worst error, cases)
  for (const Case& c : cases()) {
    auto [f, inputs] = c.make();
    GradcheckResult r = gradcheck(f, inputs);
    auto& w = worst[c.op];
    w.first = std::max(w.first, r.max_rel_error);
    w.second += 1;
    CHECK_MESSAGE(r.max_rel_error <= kTol, std::string(c.op) << " (" << std::string(c.what) << "): relative error " << r.max_rel_error
                                                << " > " << kTol << " at " << r.worst);
  }
  std::printf("\n%-36s %6s %14s\n", "op", "cases", "worst rel err");
  for (const auto& [op, w] : worst) std::printf("%-36s %6d %14.3e\n", op.c_str(), w.second, w.first);
  std::printf("%zu ops checked, tolerance %.0e\n\n", worst.size(), kTol);
}
