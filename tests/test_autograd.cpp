// Autograd: accumulation, explicit gradients, graph freeing, no-grad mode, detach, deep graphs.
#include "autograd/node.h"
#include "tests/test_util.h"

using namespace tl;

namespace {
std::vector<double> vals(const Tensor& t) { return t.to_vector<double>(); }
Tensor leaf(std::vector<double> v) {
  const auto n = static_cast<int64_t>(v.size());
  return from_vector<double>(v, {n}).requires_grad_();
}
}  // namespace

TEST_CASE("leaf gradients accumulate over backward calls and uses") {
  Tensor x = leaf({1, 2, 3});
  Tensor y = sum(x * x + x);  // dy/dx = 2x + 1, x used twice
  y.backward();
  CHECK(vals(x.grad()) == std::vector<double>{3, 5, 7});
  const Tensor first = x.grad();
  sum(x * 3.0).backward();
  CHECK(vals(x.grad()) == std::vector<double>{6, 8, 10});
  // Accumulated in place, as torch: the same tensor, so accumulation steps allocate no gradients.
  CHECK(x.grad().is_same(first));
  CHECK(vals(first) == std::vector<double>{6, 8, 10});
  // A gradient set by hand as a broadcast view (overlapping itself) gets a new tensor instead.
  x.set_grad(from_vector<double>({1}, {1}).expand({3}));
  sum(x * 2.0).backward();
  CHECK(vals(x.grad()) == std::vector<double>{3, 3, 3});
  x.set_grad(Tensor());
  CHECK_FALSE(x.grad().defined());
}

TEST_CASE("backward with an explicit gradient") {
  Tensor x = leaf({1, 2});
  Tensor y = x * x;
  CHECK_THROWS_WITH_AS(y.backward(), "backward: a gradient can be implied only for a one-element tensor; this one is (2), pass the gradient explicitly",
                       std::invalid_argument);
  y.backward(from_vector<double>({1, 10}, {2}));
  CHECK(vals(x.grad()) == std::vector<double>{2, 40});
  CHECK_THROWS_WITH_AS(sum(x * 2.0).backward(ones({2}, kFloat64)),
                       "backward: gradient (2) float64 does not match the tensor () float64", std::invalid_argument);
}

TEST_CASE("broadcast inputs get gradients of their own shape") {
  Tensor a = zeros({3, 1}, kFloat64).requires_grad_();
  Tensor b = zeros({4}, kFloat64).requires_grad_();
  sum(a + b).backward();
  CHECK(a.grad().shape() == Shape{3, 1});
  CHECK(vals(a.grad()) == std::vector<double>{4, 4, 4});
  CHECK(vals(b.grad()) == std::vector<double>{3, 3, 3, 3});
}

TEST_CASE("the graph is freed after backward; a second backward is a clear error") {
  Tensor x = leaf({1, 2});
  Tensor y = sum(exp(x));
  std::weak_ptr<Node> node = y.grad_fn();
  y.backward();
  CHECK(y.grad_fn()->released);
  CHECK_FALSE(y.grad_fn()->backward);  // saved tensors dropped
  CHECK_THROWS_WITH_AS(y.backward(),
                       "backward: the graph through sum was already freed by an earlier backward; call "
                       "backward(grad, /*retain_graph=*/true) the first time to go through it twice",
                       std::runtime_error);
  // With retain_graph, twice is fine and accumulates.
  Tensor z = sum(x * 2.0);
  z.backward(Tensor(), true);
  z.backward();
  CHECK(vals(x.grad()) == vals(exp(x.detach()) + 4.0));
  // Dropping the output frees every node.
  Tensor w = sum(x * x);
  std::weak_ptr<Node> wn = w.grad_fn();
  w = Tensor();
  CHECK(wn.expired());
}

TEST_CASE("NoGradGuard and detach cut the graph") {
  Tensor x = leaf({1, 2});
  {
    NoGradGuard g;
    Tensor y = x * 2.0;
    CHECK_FALSE(y.requires_grad());
    CHECK(GradMode::is_enabled() == false);
  }
  CHECK(GradMode::is_enabled());
  Tensor d = x.detach();
  CHECK_FALSE(d.requires_grad());
  CHECK(d.storage() == x.storage());
  Tensor y = sum(x * d);  // d is a constant
  y.backward();
  CHECK(vals(x.grad()) == std::vector<double>{1, 2});
  CHECK_THROWS_WITH_AS(sum(d).backward(), "backward: tensor () does not require grad and has no grad_fn",
                       std::invalid_argument);
}

TEST_CASE("in-place changes of a leaf that requires grad are refused outside no-grad mode") {
  Tensor w = leaf({1, 2});
  CHECK_THROWS_WITH_AS(w.fill_(0),
                       "fill_: tensor (2) is a leaf that requires grad and cannot be modified in place while grad "
                       "mode is on (use NoGradGuard)",
                       std::invalid_argument);
  {
    NoGradGuard g;
    w.copy_(w * 0.5);
  }
  CHECK(vals(w) == std::vector<double>{0.5, 1});
  CHECK(w.is_leaf());
  CHECK_THROWS_AS((w * 2.0).requires_grad_(false), std::invalid_argument);
}

TEST_CASE("a deep graph does not recurse") {
  Tensor x = leaf({0.5});
  Tensor y = x;
  for (int i = 0; i < 100000; ++i) y = y * 1.0 + 0.0;
  sum(y).backward();
  CHECK(vals(x.grad()) == std::vector<double>{1});
  // Dropping a deep graph that never ran backward must not recurse either.
  Tensor z = x;
  for (int i = 0; i < 200000; ++i) z = z * 1.0;
  z = Tensor();
  CHECK(x.is_leaf());
}

TEST_CASE("a diamond graph sums both paths") {
  Tensor x = leaf({3});
  Tensor a = x * 2.0, b = x * x;
  Tensor y = sum(a * b);  // 2x^3 -> 6x^2 = 54
  y.backward();
  CHECK(vals(x.grad()) == std::vector<double>{54});
}

TEST_CASE("gradients through dtype conversion and views") {
  Tensor x = from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3}).requires_grad_();
  Tensor y = sum(x.to(kFloat32).t().narrow(0, 1, 2) * 2.0f);
  y.backward();
  CHECK(x.grad().dtype() == kFloat64);
  CHECK(vals(x.grad()) == std::vector<double>{0, 2, 2, 0, 2, 2});
}

TEST_CASE("only leaves keep .grad; intermediate tensors do not") {
  Tensor x = leaf({1});
  Tensor h = x * 3.0;
  sum(h * h).backward();
  CHECK_FALSE(h.is_leaf());
  CHECK_FALSE(h.grad().defined());
  CHECK(vals(x.grad()) == std::vector<double>{18});
}
