// Optimizers and LR schedules against plain re-implementations of torch 1.13's formulas (loops over
// std::vector<double>), state round trips, error messages, gradient clipping.
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <numbers>
#include <string>
#include <vector>

#include "nn/lr_scheduler.h"
#include "nn/optim.h"
#include "tests/test_util.h"

using namespace tl;
using namespace tl::optim;
using tl::testing::error_of;

namespace {

using Vec = std::vector<double>;

Tensor param(const Vec& v, const Shape& shape) { return from_vector<double>(v, shape).requires_grad_(); }

// Two small float64 parameters with distinct shapes and magnitudes.
struct Fixture {
  Vec w0{0.5, -1.25, 0.75, 2.0, -0.3, 0.01};  // (2, 3)
  Vec b0{0.1, -0.2, 0.05, 0.0};               // (4)
  Shape ws{2, 3}, bs{4};
  Tensor w = param(w0, ws), b = param(b0, bs);
  NamedParams named() const { return {{"layer.weight", w}, {"layer.bias", b}}; }
};

// Fixed synthetic gradients: a different, sign-changing pattern per parameter and step.
Vec synthetic_grad(size_t n, int which, int step, double scale) {
  Vec g(n);
  for (size_t i = 0; i < n; ++i)
    g[i] = scale * std::sin(0.37 * static_cast<double>(i + 1) * (step + 1) + 1.7 * which) + 0.1 * scale * which;
  return g;
}

// ---- plain reference optimizers: one parameter, its own state (as torch keeps it)
struct RefState {
  int64_t step = 0;  // updates applied
  Vec a, b;          // momentum_buffer | exp_avg, exp_avg_sq
};

void ref_sgd(const SGDOptions& o, Vec& p, const Vec& g, RefState& s) {
  Vec d = g;
  for (size_t i = 0; i < p.size(); ++i) d[i] += o.weight_decay * p[i];
  if (o.momentum != 0) {
    if (s.step == 0) {
      s.a = d;
    } else {
      for (size_t i = 0; i < p.size(); ++i) s.a[i] = o.momentum * s.a[i] + (1 - o.dampening) * d[i];
    }
    for (size_t i = 0; i < p.size(); ++i) d[i] = o.nesterov ? d[i] + o.momentum * s.a[i] : s.a[i];
  }
  for (size_t i = 0; i < p.size(); ++i) p[i] -= o.lr * d[i];
  ++s.step;
}

void ref_adam(const AdamOptions& o, bool decoupled, Vec& p, const Vec& g, RefState& s) {
  if (s.a.empty()) s.a.assign(p.size(), 0.0), s.b.assign(p.size(), 0.0);
  ++s.step;
  const double bc1 = 1 - std::pow(o.beta1, static_cast<double>(s.step));
  const double bc2 = 1 - std::pow(o.beta2, static_cast<double>(s.step));
  for (size_t i = 0; i < p.size(); ++i) {
    double gi = g[i];
    if (decoupled)
      p[i] *= 1 - o.lr * o.weight_decay;
    else
      gi += o.weight_decay * p[i];
    s.a[i] = o.beta1 * s.a[i] + (1 - o.beta1) * gi;
    s.b[i] = o.beta2 * s.b[i] + (1 - o.beta2) * gi * gi;
    const double denom = std::sqrt(s.b[i]) / std::sqrt(bc2) + o.eps;
    p[i] -= (o.lr / bc1) * s.a[i] / denom;
  }
}

using RefStep = std::function<void(Vec& p, const Vec& g, RefState& s)>;

// Runs `steps` steps of `opt` and of the reference on the fixture, the gradient of the bias present
// only on the steps where has_bias_grad says so, and checks both parameters after every step.
void check_against_reference(Optimizer& opt, Fixture& f, const RefStep& ref, const std::string& label, int steps = 5,
                             const std::function<bool(int)>& has_bias_grad = [](int) { return true; }) {
  Vec w = f.w0, b = f.b0;
  RefState sw, sb;
  double worst = 0;
  for (int k = 0; k < steps; ++k) {
    const Vec gw = synthetic_grad(w.size(), 0, k, 1.0);
    const Vec gb = synthetic_grad(b.size(), 1, k, 1e-3);
    f.w.set_grad(from_vector<double>(gw, f.ws));
    f.b.set_grad(has_bias_grad(k) ? from_vector<double>(gb, f.bs) : Tensor());
    opt.step();
    ref(w, gw, sw);
    if (has_bias_grad(k)) ref(b, gb, sb);
    const auto cw = testing::compare(f.w, from_vector<double>(w, f.ws));
    const auto cb = testing::compare(f.b, from_vector<double>(b, f.bs));
    CHECK_MESSAGE(cw.rel <= 1e-12, label << " step " << k + 1 << " weight: " << cw.str(1e-12));
    CHECK_MESSAGE(cb.rel <= 1e-12, label << " step " << k + 1 << " bias: " << cb.str(1e-12));
    worst = std::max({worst, cw.rel, cb.rel});
  }
  CHECK(opt.steps() == steps);
  MESSAGE(label << ": worst relative error over " << steps << " steps " << worst << " (tolerance 1e-12)");
}


#define CHECK_ERROR_CONTAINS(expr, text)                                                     \
  do {                                                                                       \
    const std::string tl_msg_ = error_of([&] { expr; });                                     \
    CHECK_MESSAGE(tl_msg_.find(text) != std::string::npos, "error was: " << tl_msg_);        \
  } while (0)

std::map<std::string, Tensor> as_map(const NamedParams& v) {
  std::map<std::string, Tensor> m;
  for (const auto& [k, t] : v) m[k] = t.clone();
  return m;
}

}  // namespace

TEST_CASE("SGD matches torch's formulas for every option combination") {
  struct Case {
    const char* label;
    SGDOptions o;
  };
  const std::vector<Case> cases = {
      {"plain", {.lr = 0.1}},
      {"momentum", {.lr = 0.1, .momentum = 0.9}},
      {"momentum + dampening", {.lr = 0.05, .momentum = 0.8, .dampening = 0.3}},
      {"nesterov", {.lr = 0.1, .momentum = 0.9, .nesterov = true}},
      {"weight decay", {.lr = 0.1, .weight_decay = 0.05}},
      {"momentum + dampening + weight decay", {.lr = 0.1, .momentum = 0.7, .dampening = 0.1, .weight_decay = 0.01}},
      {"nesterov + weight decay", {.lr = 0.02, .momentum = 0.5, .weight_decay = 0.1, .nesterov = true}},
  };
  for (const Case& c : cases) {
    Fixture f;
    SGD opt(f.named(), c.o);
    check_against_reference(opt, f, [&](Vec& p, const Vec& g, RefState& s) { ref_sgd(c.o, p, g, s); },
                            std::string("SGD ") + c.label);
  }
}

TEST_CASE("Adam and AdamW match torch's formulas") {
  struct Case {
    const char* label;
    AdamOptions o;
    bool adamw;
  };
  const std::vector<Case> cases = {
      {"Adam defaults", {}, false},
      {"Adam weight decay", {.lr = 1e-2, .weight_decay = 0.1}, false},
      {"Adam betas, eps", {.lr = 3e-3, .beta1 = 0.5, .beta2 = 0.9, .eps = 1e-3}, false},
      {"AdamW defaults", {.weight_decay = 1e-2}, true},
      {"AdamW strong decay", {.lr = 5e-2, .beta1 = 0.8, .beta2 = 0.99, .weight_decay = 0.5}, true},
      {"AdamW no decay", {.lr = 1e-2, .weight_decay = 0}, true},
  };
  for (const Case& c : cases) {
    Fixture f;
    std::unique_ptr<Optimizer> opt;
    if (c.adamw)
      opt = std::make_unique<AdamW>(f.named(), AdamWOptions{c.o.lr, c.o.beta1, c.o.beta2, c.o.eps, c.o.weight_decay});
    else
      opt = std::make_unique<Adam>(f.named(), c.o);
    check_against_reference(*opt, f, [&](Vec& p, const Vec& g, RefState& s) { ref_adam(c.o, c.adamw, p, g, s); },
                            c.label);
  }
}

TEST_CASE("AdamW's default weight decay is torch's 1e-2; Adam's is 0") {
  CHECK(AdamWOptions{}.weight_decay == 1e-2);
  CHECK(AdamOptions{}.weight_decay == 0);
  CHECK(AdamOptions{}.lr == 1e-3);
}

TEST_CASE("parameters without a gradient are skipped and keep their own step count") {
  // The bias gets gradients only on steps 3..6: it is untouched before, its first update is its
  // own step 1 (Adam's bias correction, SGD's buffer initialization), as torch's per-parameter state.
  const auto bias_from_step_3 = [](int k) { return k >= 2; };
  {
    Fixture f;
    const AdamOptions o{.lr = 1e-2, .weight_decay = 0.01};
    Adam opt(f.named(), o);
    check_against_reference(opt, f, [&](Vec& p, const Vec& g, RefState& s) { ref_adam(o, false, p, g, s); },
                            "Adam, bias without grad on steps 1-2", 6, bias_from_step_3);
    const auto st = opt.state_dict();
    for (const auto& [k, t] : st) {
      if (k == "optim.layer.weight.step") CHECK(t.item() == 6);
      if (k == "optim.layer.bias.step") CHECK(t.item() == 4);
    }
  }
  {
    Fixture f;
    const SGDOptions o{.lr = 0.1, .momentum = 0.9, .dampening = 0.5};
    SGD opt(f.named(), o);
    check_against_reference(opt, f, [&](Vec& p, const Vec& g, RefState& s) { ref_sgd(o, p, g, s); },
                            "SGD momentum, bias without grad on steps 1-2", 6, bias_from_step_3);
  }
  {
    Fixture f;
    Adam opt(f.named());
    f.w.set_grad(ones(f.ws, kFloat64));
    opt.step();
    CHECK(f.b.to_vector<double>() == f.b0);
  }
}

TEST_CASE("zero_grad zeroes in place by default (torch 1.13) or drops the gradient") {
  Fixture f;
  SGD opt(f.named(), {.lr = 0.1});
  Tensor g = ones(f.ws, kFloat64);
  f.w.set_grad(g);
  opt.zero_grad();
  REQUIRE(f.w.grad().defined());
  CHECK(f.w.grad().is_same(g));
  CHECK(g.to_vector<double>() == Vec(6, 0.0));
  CHECK_FALSE(f.b.grad().defined());
  opt.zero_grad(/*set_to_none=*/true);
  CHECK_FALSE(f.w.grad().defined());
}

TEST_CASE("float32 parameters and strided (transposed) parameters") {
  // float32 against the float64 reference, to float32 accuracy.
  Tensor w32 = from_vector<float>({0.5f, -1.25f, 0.75f, 2.0f}, {4}).requires_grad_();
  Tensor wt = from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3}).t();  // (3, 2) view, a leaf
  wt.requires_grad_();
  const AdamOptions o{.lr = 1e-2, .weight_decay = 0.1};
  Adam opt({{"w32", w32}, {"wt", wt}}, o);
  Vec r32{0.5, -1.25, 0.75, 2.0}, rt = wt.to_vector<double>();
  RefState s32, st;
  for (int k = 0; k < 5; ++k) {
    const Vec g32 = synthetic_grad(4, 0, k, 1.0), gt = synthetic_grad(6, 1, k, 1.0);
    std::vector<float> g32f(g32.begin(), g32.end());
    w32.set_grad(from_vector<float>(g32f, {4}));
    wt.set_grad(from_vector<double>(gt, {3, 2}));
    opt.step();
    ref_adam(o, false, r32, Vec(g32f.begin(), g32f.end()), s32);
    ref_adam(o, false, rt, gt, st);
  }
  TL_CHECK_CLOSE(w32, from_vector<double>(r32, {4}).to(kFloat32), 1e-6);
  TL_CHECK_CLOSE(wt, from_vector<double>(rt, {3, 2}), 1e-12);
  CHECK(wt.strides() == Strides{1, 3});  // updated in place, still the same view
}

TEST_CASE("state_dict names, and a loaded optimizer continues exactly as the original") {
  auto run = [](Optimizer& opt, Fixture& f, int from, int to) {
    for (int k = from; k < to; ++k) {
      f.w.set_grad(from_vector<double>(synthetic_grad(6, 0, k, 1.0), f.ws));
      f.b.set_grad(from_vector<double>(synthetic_grad(4, 1, k, 1e-3), f.bs));
      opt.step();
    }
  };
  auto make = [](const std::string& kind, Fixture& f) -> std::unique_ptr<Optimizer> {
    if (kind == "Adam") return std::make_unique<Adam>(f.named(), AdamOptions{.lr = 1e-2, .weight_decay = 0.01});
    if (kind == "AdamW") return std::make_unique<AdamW>(f.named(), AdamWOptions{.lr = 1e-2});
    return std::make_unique<SGD>(f.named(), SGDOptions{.lr = 0.1, .momentum = 0.9, .dampening = 0.2});
  };
  for (const char* kind_name : {"Adam", "AdamW", "SGD"}) {
    const std::string kind = kind_name;
    CAPTURE(kind);
    Fixture a;
    auto opt_a = make(kind, a);
    run(*opt_a, a, 0, 3);
    opt_a->set_lr(opt_a->lr() * 0.5);  // the lr is part of the state

    std::vector<std::string> keys;
    for (const auto& [k, t] : opt_a->state_dict()) keys.push_back(k);
    const std::vector<std::string> want =
        kind == "SGD" ? std::vector<std::string>{"optim.step", "optim.lr", "optim.layer.weight.step",
                                                 "optim.layer.weight.momentum_buffer", "optim.layer.bias.step",
                                                 "optim.layer.bias.momentum_buffer"}
                      : std::vector<std::string>{"optim.step", "optim.lr", "optim.layer.weight.step",
                                                 "optim.layer.weight.exp_avg", "optim.layer.weight.exp_avg_sq",
                                                 "optim.layer.bias.step", "optim.layer.bias.exp_avg",
                                                 "optim.layer.bias.exp_avg_sq"};
    CHECK(keys == want);
    auto state = as_map(opt_a->state_dict());
    CHECK(state.at("optim.step").dtype() == kInt64);
    CHECK(state.at("optim.step").dim() == 0);
    CHECK(state.at("optim.step").item() == 3);
    state["model.weight"] = zeros({1});  // other entries of a checkpoint are ignored

    Fixture b;  // the same starting point, then the state and parameters of `a` after 3 steps
    {
      NoGradGuard no_grad;
      b.w.copy_(a.w);
      b.b.copy_(a.b);
    }
    auto opt_b = make(kind, b);
    opt_b->load_state_dict(state);
    CHECK(opt_b->steps() == 3);
    CHECK(opt_b->lr() == opt_a->lr());
    run(*opt_a, a, 3, 6);
    run(*opt_b, b, 3, 6);
    CHECK(a.w.to_vector<double>() == b.w.to_vector<double>());
    CHECK(a.b.to_vector<double>() == b.b.to_vector<double>());
  }
}

TEST_CASE("load_state_dict is strict and names every fault") {
  Fixture f;
  Adam opt(f.named());
  f.w.set_grad(ones(f.ws, kFloat64));
  opt.step();
  auto state = as_map(opt.state_dict());
  const Tensor before = f.w.clone();
  state.erase("optim.layer.weight.exp_avg");
  state["optim.layer.bias.exp_avg_sq"] = zeros({3}, kFloat64);
  state["optim.layer.bias.step"] = zeros({2}, kInt64);
  state["optim.layer.weight.momentum_buffer"] = zeros(f.ws, kFloat64);
  Fixture g;
  Adam fresh(g.named());
  const std::string msg = error_of([&] { fresh.load_state_dict(state); });
  CHECK(msg.find("Adam.load_state_dict: 4 problem(s)") != std::string::npos);
  CHECK(msg.find("missing optim.layer.weight.exp_avg") != std::string::npos);
  CHECK(msg.find("optim.layer.bias.exp_avg_sq has shape (3), expected (4)") != std::string::npos);
  CHECK(msg.find("optim.layer.bias.step has shape (2), expected ()") != std::string::npos);
  CHECK(msg.find("unexpected optim.layer.weight.momentum_buffer") != std::string::npos);
  MESSAGE("load_state_dict error: " << msg);
  CHECK(fresh.steps() == 0);  // nothing was applied
  for (const auto& [k, t] : fresh.state_dict())
    if (k.ends_with("exp_avg")) CHECK(t.to_vector<double>() == Vec(static_cast<size_t>(t.numel()), 0.0));

  CHECK_ERROR_CONTAINS(fresh.load_state_dict(std::map<std::string, Tensor>{}), "missing optim.step");
  CHECK_ERROR_CONTAINS(SGD(f.named(), {.lr = 0.1}).load_state_dict(as_map(opt.state_dict())),
                       "unexpected optim.layer.weight.exp_avg");
}

TEST_CASE("clip_grad_norm_") {
  Fixture f;
  Tensor none = param({1, 2}, {2});  // no gradient: ignored
  const Vec gw = {3, 0, 0, 0, 0, 0}, gb = {0, 4, 0, 0};
  f.w.set_grad(from_vector<double>(gw, f.ws));
  f.b.set_grad(from_vector<double>(gb, f.bs));
  SUBCASE("scales every gradient when the norm is above max_norm") {
    const double norm = clip_grad_norm_({f.w, f.b, none}, 1.0);
    CHECK(norm == doctest::Approx(5.0).epsilon(1e-15));
    const double coef = 1.0 / (5.0 + 1e-6);
    TL_CHECK_CLOSE(f.w.grad(), from_vector<double>({3 * coef, 0, 0, 0, 0, 0}, f.ws), 1e-15);
    TL_CHECK_CLOSE(f.b.grad(), from_vector<double>({0, 4 * coef, 0, 0}, f.bs), 1e-15);
    CHECK_FALSE(none.grad().defined());
  }
  SUBCASE("leaves gradients alone below max_norm") {
    CHECK(clip_grad_norm_({f.w, f.b}, 5.1) == doctest::Approx(5.0));
    CHECK(f.w.grad().to_vector<double>() == gw);
    CHECK(f.b.grad().to_vector<double>() == gb);
  }
  SUBCASE("a non-finite norm is returned, nothing scaled") {
    f.b.set_grad(from_vector<double>({0, INFINITY, 0, 0}, f.bs));
    CHECK(std::isinf(clip_grad_norm_({f.w, f.b}, 1.0)));
    CHECK(f.w.grad().to_vector<double>() == gw);
  }
  SUBCASE("no gradients: 0") { CHECK(clip_grad_norm_({none}, 1.0) == 0.0); }
  SUBCASE("float32") {
    Tensor p = from_vector<float>({1, 1}, {2}).requires_grad_();
    p.set_grad(from_vector<float>({6, 8}, {2}));
    CHECK(clip_grad_norm_({p}, 2.0) == doctest::Approx(10.0));
    TL_CHECK_CLOSE(p.grad(), from_vector<float>({1.2f, 1.6f}, {2}), 1e-6);
  }
}

TEST_CASE("StepLR follows base * gamma^floor(epoch / step_size)") {
  Fixture f;
  SGD opt(f.named(), {.lr = 0.1});
  StepLR sched(opt, 4, 0.5);
  CHECK(opt.lr() == 0.1);  // constructing does not change the lr
  CHECK(sched.last_lr() == 0.1);
  double worst = 0;
  for (int e = 1; e <= 30; ++e) {
    sched.step();
    const double want = 0.1 * std::pow(0.5, e / 4);
    worst = std::max(worst, std::abs(opt.lr() - want) / want);
    CHECK_MESSAGE(std::abs(opt.lr() - want) <= 1e-12 * want, "epoch " << e << ": " << opt.lr() << " vs " << want);
    CHECK(sched.last_lr() == opt.lr());
    CHECK(sched.last_epoch() == e);
  }
  MESSAGE("StepLR: worst relative error " << worst);
}

TEST_CASE("CosineAnnealingLR follows the closed form (torch's recursion)") {
  Fixture f;
  const double base = 0.1, eta_min = 1e-3;
  const int T = 10;
  Adam opt(f.named(), {.lr = base});
  CosineAnnealingLR sched(opt, T, eta_min);
  double worst = 0, worst_after = 0;
  for (int e = 1; e <= 30; ++e) {
    sched.step();
    const double want = eta_min + (base - eta_min) * (1 + std::cos(std::numbers::pi * e / T)) / 2;
    const double rel = std::abs(opt.lr() - want) / base;
    if (e <= T) {
      worst = std::max(worst, rel);
      CHECK_MESSAGE(rel <= 1e-12, "epoch " << e << ": " << opt.lr() << " vs " << want);
    } else {
      // Past T_max torch's recursion is its periodic continuation, up to rounding.
      worst_after = std::max(worst_after, rel);
      CHECK_MESSAGE(rel <= 1e-11, "epoch " << e << ": " << opt.lr() << " vs " << want);
    }
    if (e == T) CHECK(opt.lr() == eta_min);
  }
  MESSAGE("CosineAnnealingLR: worst relative error " << worst << " (t <= T_max), " << worst_after << " after");
}

TEST_CASE("ReduceLROnPlateau: threshold, patience, cooldown, min_lr") {
  Fixture f;
  SGD opt(f.named(), {.lr = 0.1});
  ReduceLROnPlateau sched(opt, {.mode = "min", .factor = 0.5, .patience = 2, .cooldown = 1, .min_lr = 0.02});
  CHECK(std::isinf(sched.best()));
  // 0.89995 is not better than 0.9 by the relative threshold 1e-4.
  const Vec metrics = {1.0, 0.9, 0.89995, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95,
                       0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.5};
  const Vec lrs = {0.1,   0.1,   0.1,   0.1,   0.05, 0.05, 0.05, 0.05, 0.025,
                   0.025, 0.025, 0.025, 0.02, 0.02, 0.02, 0.02, 0.02, 0.02};
  const std::vector<int64_t> bad = {0, 0, 1, 2, 0, 0, 1, 2, 0, 0, 1, 2, 0, 0, 1, 2, 0, 0};
  for (size_t e = 0; e < metrics.size(); ++e) {
    sched.step(metrics[e]);
    CAPTURE(e + 1);
    CHECK(opt.lr() == doctest::Approx(lrs[e]).epsilon(1e-15));
    CHECK(sched.last_lr() == opt.lr());
    CHECK(sched.num_bad_epochs() == bad[e]);
  }
  CHECK(sched.best() == 0.5);
  CHECK(sched.last_epoch() == 18);
}

TEST_CASE("ReduceLROnPlateau: the eps rule, mode max with an absolute threshold, state restore") {
  {
    Fixture f;
    SGD opt(f.named(), {.lr = 1e-7});
    ReduceLROnPlateau sched(opt, {.factor = 0.5, .patience = 0});
    const Vec lrs = {1e-7, 5e-8, 2.5e-8, 1.25e-8, 1.25e-8, 1.25e-8};  // a cut of 6.25e-9 < eps is skipped
    for (double want : lrs) {
      sched.step(1.0);
      CHECK(opt.lr() == doctest::Approx(want).epsilon(1e-15));
    }
  }
  {
    Fixture f;
    SGD opt(f.named(), {.lr = 0.1});
    ReduceLROnPlateau sched(opt,
                            {.mode = "max", .factor = 0.1, .patience = 1, .threshold = 0.1, .threshold_mode = "abs"});
    const Vec metrics = {1.0, 1.05, 1.2, 1.25, 1.29, 1.3};
    const Vec lrs = {0.1, 0.1, 0.1, 0.1, 0.01, 0.01};
    for (size_t e = 0; e < metrics.size(); ++e) {
      sched.step(metrics[e]);
      CAPTURE(e + 1);
      CHECK(opt.lr() == doctest::Approx(lrs[e]).epsilon(1e-15));
    }
    CHECK(sched.best() == 1.2);

    // Restored into a fresh optimizer and scheduler, it continues identically.
    SGD opt2(f.named(), {.lr = 0.1});
    opt2.set_lr(opt.lr());
    ReduceLROnPlateau sched2(opt2, sched.options());
    sched2.load_state(sched.state());
    for (double m : {1.0, 1.0, 1.0, 1.5, 1.0, 1.0}) {
      sched.step(m);
      sched2.step(m);
      CHECK(opt.lr() == opt2.lr());
      CHECK(sched.num_bad_epochs() == sched2.num_bad_epochs());
    }
  }
}

TEST_CASE("LR schedulers restore their state") {
  Fixture f;
  SGD opt(f.named(), {.lr = 0.1});
  CosineAnnealingLR sched(opt, 7, 0.001);
  for (int e = 0; e < 5; ++e) sched.step();
  SGD opt2(f.named(), {.lr = 0.1});
  opt2.set_lr(opt.lr());
  CosineAnnealingLR sched2(opt2, 7, 0.001);
  sched2.load_state(sched.state());
  for (int e = 0; e < 12; ++e) {
    sched.step();
    sched2.step();
    CHECK(opt.lr() == opt2.lr());
  }
  CHECK(sched2.last_epoch() == 17);
  CHECK(sched2.base_lr() == 0.1);
}

TEST_CASE("invalid options are errors") {
  Fixture f;
  CHECK_ERROR_CONTAINS(SGD(f.named(), {}), "SGD: lr is required");
  CHECK_ERROR_CONTAINS(SGD(f.named(), {.lr = -0.1}), "SGD: invalid learning rate: -0.1");
  CHECK_ERROR_CONTAINS(SGD(f.named(), {.lr = 0.1, .momentum = -1}), "SGD: invalid momentum value: -1");
  CHECK_ERROR_CONTAINS(SGD(f.named(), {.lr = 0.1, .weight_decay = -1}), "SGD: invalid weight_decay value: -1");
  CHECK_ERROR_CONTAINS(SGD(f.named(), {.lr = 0.1, .nesterov = true}),
                       "SGD: Nesterov momentum requires a momentum and zero dampening");
  CHECK_ERROR_CONTAINS(SGD(f.named(), {.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .nesterov = true}),
                       "SGD: Nesterov momentum requires a momentum and zero dampening");
  CHECK_ERROR_CONTAINS(Adam(f.named(), {.lr = -1e-3}), "Adam: invalid learning rate: -0.001");
  CHECK_ERROR_CONTAINS(Adam(f.named(), {.beta1 = 1.0}), "Adam: invalid beta parameter at index 0: 1");
  CHECK_ERROR_CONTAINS(Adam(f.named(), {.beta1 = -0.1}), "Adam: invalid beta parameter at index 0: -0.1");
  CHECK_ERROR_CONTAINS(Adam(f.named(), {.beta2 = 1.5}), "Adam: invalid beta parameter at index 1: 1.5");
  CHECK_ERROR_CONTAINS(Adam(f.named(), {.eps = -1}), "Adam: invalid epsilon value: -1");
  CHECK_ERROR_CONTAINS(AdamW(f.named(), {.weight_decay = -0.1}), "AdamW: invalid weight_decay value: -0.1");
  CHECK_ERROR_CONTAINS(AdamW(f.named(), {.beta2 = 1.0}), "AdamW: invalid beta parameter at index 1: 1");
  CHECK_ERROR_CONTAINS(Adam(NamedParams{}), "Adam: optimizer got an empty parameter list");
  CHECK_ERROR_CONTAINS(Adam(NamedParams{{"w", f.w}, {"w", f.b}}), "Adam: parameter name 'w' appears twice");
  CHECK_ERROR_CONTAINS(SGD(NamedParams{{"a.w", f.w}, {"b.w", f.w}}, {.lr = 0.1}),
                       "SGD: parameter 'b.w' is the same tensor as 'a.w'; list a shared parameter once");
  CHECK_ERROR_CONTAINS(Adam(NamedParams{{"w", f.w * 2.0}}), "Adam: can't optimize a non-leaf tensor ('w'");
  CHECK_ERROR_CONTAINS(clip_grad_norm_({f.w}, -1.0), "clip_grad_norm_: max_norm must be >= 0");

  SGD opt(f.named(), {.lr = 0.1});
  CHECK_ERROR_CONTAINS(opt.set_lr(-1), "SGD: invalid learning rate: -1");
  CHECK_ERROR_CONTAINS(StepLR(opt, 0), "StepLR: step_size must be >= 1, got 0");
  CHECK_ERROR_CONTAINS(CosineAnnealingLR(opt, 0), "CosineAnnealingLR: T_max must be >= 1, got 0");
  CHECK_ERROR_CONTAINS(ReduceLROnPlateau(opt, {.factor = 1.0}), "ReduceLROnPlateau: factor should be < 1.0, got 1");
  CHECK_ERROR_CONTAINS(ReduceLROnPlateau(opt, {.mode = "lowest"}), "ReduceLROnPlateau: mode 'lowest' is unknown");
  CHECK_ERROR_CONTAINS(ReduceLROnPlateau(opt, {.threshold_mode = "pct"}),
                       "ReduceLROnPlateau: threshold mode 'pct' is unknown");
}
