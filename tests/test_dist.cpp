// Data-parallel training: the communicator's collectives, the autograd grad-ready hook, the gradient
// buckets and synchronized batch norm. Run as one process (the single-process communicator) and under
// `mpirun -np 2`; the test cases named "... 2 ranks ..." need exactly two ranks and are excluded from
// the one-process run. Every rank checks its own results; the exit status is non-zero on every rank
// when any rank failed.
#define DOCTEST_CONFIG_IMPLEMENT
#include <algorithm>
#include <chrono>
#include <cstring>
#include <numeric>
#include <thread>

#include "dist/communicator.h"
#include "dist/ddp.h"
#include "dist/sync_batch_norm.h"
#include "data/loader.h"
#include "nn/optim.h"
#include "nn/unet.h"
#include "autograd/grad_hooks.h"
#include "test_util.h"

using namespace tl;
using tl::testing::compare;

namespace {

dist::Communicator& comm() { return dist::world(); }

// Sizes that are neither powers of two nor multiples of a vector width, and empty.
const std::vector<size_t> kOddSizes = {0, 1, 3, 7, 1023, 65537, (size_t{1} << 20) + 3};

// An exactly representable value, different on each rank and index.
float value(int rank, size_t i) { return static_cast<float>(rank + 1) + 0.5f * static_cast<float>(i % 7); }
float expected_sum(int size, size_t i) {
  float s = 0;
  for (int r = 0; r < size; ++r) s += value(r, i);
  return s;
}

}  // namespace

TEST_CASE("communicator: rank, size and local rank are consistent") {
  const int size = comm().size(), rank = comm().rank();
  CHECK(size >= 1);
  CHECK(rank >= 0);
  CHECK(rank < size);
  CHECK(comm().local_rank() >= 0);
  CHECK(comm().local_rank() <= rank);  // ranks on one machine are numbered in order
  CHECK(comm().local_rank() < comm().local_size());
  CHECK(comm().local_size() <= size);
  CHECK(size == dist::launched_world_size());
  std::vector<int64_t> ranks(static_cast<size_t>(size), 0);
  ranks[static_cast<size_t>(rank)] = rank + 1;
  comm().all_reduce_sum(ranks.data(), ranks.size());
  for (int r = 0; r < size; ++r) CHECK(ranks[static_cast<size_t>(r)] == r + 1);  // each rank exactly once
}

TEST_CASE("communicator: all-reduce sums float32, float64 and int64 buffers of odd sizes") {
  const int size = comm().size(), rank = comm().rank();
  for (const size_t n : kOddSizes) {
    CAPTURE(n);
    std::vector<float> f(n);
    std::vector<double> d(n);
    std::vector<int64_t> k(n);
    for (size_t i = 0; i < n; ++i) {
      f[i] = value(rank, i);
      d[i] = 1e-3 * value(rank, i);
      k[i] = (int64_t{1} << 40) * (rank + 1) + static_cast<int64_t>(i);
    }
    comm().all_reduce_sum(f.data(), n);
    comm().all_reduce_sum(d.data(), n);
    comm().all_reduce_sum(k.data(), n);
    size_t bad_f = 0, bad_d = 0, bad_k = 0;
    for (size_t i = 0; i < n; ++i) {
      bad_f += f[i] != expected_sum(size, i);
      double want_d = 0;
      for (int r = 0; r < size; ++r) want_d += 1e-3 * value(r, i);
      bad_d += std::abs(d[i] - want_d) > 1e-15 * std::abs(want_d);
      bad_k += k[i] != (int64_t{1} << 40) * (size * (size + 1) / 2) + size * static_cast<int64_t>(i);
    }
    CHECK_MESSAGE(bad_f == 0, bad_f << " float32 sums wrong (exact values expected)");
    CHECK_MESSAGE(bad_d == 0, bad_d << " float64 sums off by more than 1e-15 relative");
    CHECK_MESSAGE(bad_k == 0, bad_k << " int64 sums wrong");
  }
}

TEST_CASE("communicator: asynchronous all-reduces, several in flight, complete with the sums") {
  const int size = comm().size(), rank = comm().rank();
  std::vector<std::vector<float>> bufs;
  for (const size_t n : kOddSizes) {
    bufs.emplace_back(n);
    for (size_t i = 0; i < n; ++i) bufs.back()[i] = value(rank, i);
  }
  std::vector<std::unique_ptr<dist::Work>> works;
  for (auto& b : bufs) works.push_back(comm().all_reduce_async(b.data(), b.size()));
  // A blocking collective on the calling thread while those run.
  int64_t one = 1;
  comm().all_reduce_sum(&one, 1);
  CHECK(one == size);
  for (size_t j = 0; j < bufs.size(); ++j) {
    works[j]->wait();
    CHECK(works[j]->finished >= works[j]->started);
    size_t bad = 0;
    for (size_t i = 0; i < bufs[j].size(); ++i) bad += bufs[j][i] != expected_sum(size, i);
    CHECK_MESSAGE(bad == 0, bad << " wrong sums in buffer of " << bufs[j].size());
  }
}

TEST_CASE("communicator: broadcast of odd byte counts from every root") {
  const int size = comm().size(), rank = comm().rank();
  for (int root = 0; root < size; ++root)
    for (const size_t n : {size_t{1}, size_t{13}, size_t{4099}, size_t{1000003}}) {
      CAPTURE(root);
      CAPTURE(n);
      std::vector<unsigned char> b(n);
      for (size_t i = 0; i < n; ++i) b[i] = static_cast<unsigned char>(rank == root ? (i * 31 + 7) : 0xEE);
      comm().broadcast(b.data(), n, root);
      size_t bad = 0;
      for (size_t i = 0; i < n; ++i) bad += b[i] != static_cast<unsigned char>(i * 31 + 7);
      CHECK_MESSAGE(bad == 0, bad << " bytes differ from the root's");
    }
  // A tensor: float64 of an odd shape, from the last rank.
  Tensor t = from_vector<double>({1.5 * rank, 2.5, -3.0 * rank}, {3});
  comm().broadcast_(t, size - 1);
  CHECK(t.to_vector<double>() == std::vector<double>{1.5 * (size - 1), 2.5, -3.0 * (size - 1)});
  CHECK_THROWS_WITH_AS(comm().broadcast(t.raw_data(), 8, size), doctest::Contains("root"), std::invalid_argument);
}

TEST_CASE("communicator: barrier holds every rank until the last arrives") {
  using Clock = std::chrono::steady_clock;
  const int rank = comm().rank(), size = comm().size();
  comm().barrier();
  const auto t0 = Clock::now();
  if (rank == size - 1) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  comm().barrier();
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  CAPTURE(ms);
  // Every rank, the sleeper included, leaves the barrier after the sleep (minus a timer's slack).
  CHECK(ms >= 290);
  CHECK(ms < 10000);
}

TEST_CASE("grad-ready hook: fires once per leaf, after its last contribution, and not without a guard") {
  Tensor a = tensor({1.0, 2.0}).requires_grad_();
  Tensor b = tensor({3.0, -1.0}).requires_grad_();
  std::vector<std::pair<TensorImpl*, std::vector<float>>> seen;
  {
    GradReadyHookGuard guard([&](TensorImpl& leaf) {
      seen.emplace_back(&leaf, Tensor(leaf.grad).to_vector<float>());
    });
    // a is used twice (two paths into it): its hook must see the sum of both.
    const Tensor y = ((a * b).sum() + (a * a).sum()) * 2.0;
    y.backward();
  }
  REQUIRE(seen.size() == 2);
  for (const auto& [leaf, grad] : seen) {
    if (leaf == a.impl()) CHECK(grad == std::vector<float>{2 * (3 + 2 * 1), 2 * (-1 + 2 * 2)});
    else CHECK((leaf == b.impl() && grad == std::vector<float>{2, 4}));
  }
  seen.clear();
  a.set_grad(Tensor());
  ((a * b).sum()).backward();
  CHECK(seen.empty());
}

TEST_CASE("gradient reducer: buckets in reverse order under the cap, gradients averaged over ranks") {
  const int size = comm().size(), rank = comm().rank();
  // Parameters of 1000, 3, 2500, 7, 1200 floats; a cap of 8 KiB (2048 floats).
  nn::NamedTensors params;
  for (const int64_t n : {1000, 3, 2500, 7, 1200}) params.emplace_back("p" + std::to_string(n), zeros({n}).requires_grad_());
  dist::GradReducer reducer(comm(), params, 8.0 / 1024);
  // Reverse order, each bucket filled until the next parameter would pass the cap; a parameter
  // larger than the cap is a bucket of its own.
  const auto& buckets = reducer.bucket_params();
  REQUIRE(buckets.size() == 3);
  CHECK(buckets[0] == std::vector<size_t>{4, 3});
  CHECK(buckets[1] == std::vector<size_t>{2});
  CHECK(buckets[2] == std::vector<size_t>{1, 0});
  Generator gen(7);
  for (int pass = 0; pass < 2; ++pass) {  // the second backward reuses the buckets
    // loss = sum_i (rank + 1)(i + 1) <p_i, x_i>, x_i the same on every rank: the gradient of p_i is
    // (rank + 1)(i + 1) x_i, whose average over ranks is (size + 1) / 2 (i + 1) x_i.
    std::vector<Tensor> xs;
    Tensor loss;
    for (size_t i = 0; i < params.size(); ++i) {
      Tensor p = params[i].second;
      p.set_grad(Tensor());
      xs.push_back(rand(p.shape(), {}, &gen));
      const Tensor term = (p * xs.back()).sum() * static_cast<double>((rank + 1) * static_cast<int>(i + 1));
      loss = loss.defined() ? loss + term : term;
    }
    reducer.backward(loss);
    for (size_t i = 0; i < params.size(); ++i) {
      CAPTURE(i);
      const Tensor want = xs[i] * (0.5 * (size + 1) * static_cast<double>(i + 1));
      const auto c = compare(params[i].second.grad(), want);
      CHECK_MESSAGE(c.rel <= 1e-6, c.str(1e-6));  // float32: one rounding of the product and of the sum
    }
    const auto& t = reducer.last_step();
    CHECK(!t.buckets.empty());
    for (const auto& b : t.buckets) {
      CHECK(b.ready_ms <= b.finished_ms + 1e-9);
      CHECK(b.started_ms <= b.finished_ms);
    }
  }
}

TEST_CASE("gradient reducer: after the first backward the buckets follow the order backward finished them") {
  // Registered a, b, c; used as x * a * c * b, so backward finishes b, then c, then a.
  nn::NamedTensors params;
  for (const char* name : {"a", "b", "c"}) params.emplace_back(name, zeros({100}).requires_grad_());
  dist::GradReducer reducer(comm(), params, 400.0 / (1024 * 1024));  // one parameter per bucket
  CHECK(reducer.bucket_params() == std::vector<std::vector<size_t>>{{2}, {1}, {0}});
  CHECK_FALSE(reducer.rebuilt());
  Generator gen(3);
  const Tensor x = rand({100}, {}, &gen);
  for (int pass = 0; pass < 2; ++pass) {
    for (auto& [name, p] : params) {
      Tensor q = p;
      q.set_grad(Tensor());
    }
    const Tensor& a = params[0].second;
    const Tensor& b = params[1].second;
    const Tensor& c = params[2].second;
    reducer.backward(((x * a + 1.0) * (c + 2.0) * (b + 3.0)).sum());
    // d/db = (x a + 1)(c + 2) = 2 at a = b = c = 0, and so on: the same on every rank.
    CHECK(b.grad().to_vector<float>() == std::vector<float>(100, 2.0f));
    CHECK(c.grad().to_vector<float>() == std::vector<float>(100, 3.0f));
    CHECK(a.grad().to_vector<float>() == (x * 6.0).to_vector<float>());
    CHECK(reducer.rebuilt());
    CHECK(reducer.bucket_params() == std::vector<std::vector<size_t>>{{1}, {2}, {0}});
  }
}

TEST_CASE("shard_order: rank-strided shards of one order, padded to equal length for training") {
  const std::vector<int64_t> order = data::epoch_order(10, true, 20, 3);  // the same on every rank
  // Padded (training): 10 samples over 4 ranks -> 12 = order + its first 2, 3 each.
  std::vector<int64_t> all;
  for (int64_t r = 0; r < 4; ++r) {
    const auto s = data::shard_order(order, 4, r, true);
    REQUIRE(s.size() == 3);
    for (size_t k = 0; k < s.size(); ++k) CHECK(s[k] == order[(static_cast<size_t>(r) + 4 * k) % order.size()]);
    all.insert(all.end(), s.begin(), s.end());
  }
  std::sort(all.begin(), all.end());
  std::vector<int64_t> want(order.begin(), order.end());
  want.push_back(order[0]);
  want.push_back(order[1]);
  std::sort(want.begin(), want.end());
  CHECK(all == want);  // every sample, and the padding's two once more
  // Unpadded (validation): an exact partition, lengths 3, 3, 2, 2.
  all.clear();
  for (int64_t r = 0; r < 4; ++r) {
    const auto s = data::shard_order(order, 4, r, false);
    CHECK(s.size() == static_cast<size_t>(r < 2 ? 3 : 2));
    all.insert(all.end(), s.begin(), s.end());
  }
  std::sort(all.begin(), all.end());
  CHECK(all == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  CHECK(data::shard_order(order, 1, 0, true) == order);  // one process: the order itself
  CHECK(data::shard_order({}, 3, 2, true).empty());
  CHECK_THROWS_WITH_AS(data::shard_order(order, 2, 2, true), doctest::Contains("rank 2 of 2"), std::invalid_argument);
}

namespace {

// The equivalence set-up: a small UNet (widths 4, 8) on 4 images of 16x16, the same on every rank.
constexpr int64_t kGlobalBatch = 4, kSide = 16, kSteps = 5;

nn::UNetConfig small_unet() {
  nn::UNetConfig c;
  c.features = {4, 8};
  c.activation = "gelu";  // smooth: a float32 difference cannot flip a ReLU's branch (max pooling still can, rarely)
  return c;
}

struct Data {
  Tensor images, masks;  // (4, 3, 16, 16), (4, 1, 16, 16) in {0, 1}
};

Data make_data(uint64_t seed) {
  Generator gen(seed);
  Data d;
  d.images = rand({kGlobalBatch, 3, kSide, kSide}, {}, &gen);
  std::vector<float> m = rand({kGlobalBatch, 1, kSide, kSide}, {}, &gen).to_vector<float>();
  for (float& v : m) v = v > 0.5f ? 1.0f : 0.0f;
  d.masks = from_vector<float>(m, {kGlobalBatch, 1, kSide, kSide});
  return d;
}

// The worst relative error (max abs error / max |reference|) over a list of tensors.
struct Worst {
  double rel = 0;
  std::string where;
  void add(const std::string& name, const Tensor& got, const Tensor& want) {
    const auto c = compare(got, want);
    if (c.rel > rel || where.empty()) {
      rel = c.rel;
      where = name + ": " + c.str(0);
    }
  }
};

}  // namespace

// Float32 summation order is all that differs: the batch statistics and gradient sums are taken over
// the two halves and added, rather than over the whole batch at once. Measured worst errors are
// printed (measured: loss 4e-8, gradients 6e-6, weights 2e-6); the tolerance is relative to the
// largest magnitude of each tensor, about 170 float32 ulps of it.
constexpr double kEquivTol = 2e-5;

TEST_CASE("data parallel, 2 ranks: --sync-bn with batch 2 each equals one process with batch 4 over 5 Adam steps") {
  REQUIRE(comm().size() == 2);
  const int rank = comm().rank();
  const Data data = make_data(11);
  // The reference: one process, the whole batch, no communication (every rank computes it).
  Generator g_ref(5), g_dp(5 + 1000 * static_cast<uint64_t>(rank));  // rank 1 starts different: the broadcast must fix it
  nn::UNet ref(small_unet(), &g_ref);
  nn::UNet dp(small_unet(), &g_dp);
  dist::broadcast_module(comm(), dp);
  CHECK(dist::convert_sync_batchnorm(dp, comm()) == 10);  // two in each of 5 DoubleConvs
  optim::Adam opt_ref(ref.named_parameters(), optim::AdamOptions{1e-3});
  optim::Adam opt_dp(dp.named_parameters(), optim::AdamOptions{1e-3});
  dist::GradReducer reducer(comm(), dp.named_parameters());
  const Tensor my_images = data.images.narrow(0, 2 * rank, 2).contiguous();
  const Tensor my_masks = data.masks.narrow(0, 2 * rank, 2).contiguous();
  Worst loss_err, grad_err;
  for (int64_t step = 0; step < kSteps; ++step) {
    opt_ref.zero_grad(true);
    const Tensor loss_ref = binary_cross_entropy_with_logits(ref.forward(data.images), data.masks);
    loss_ref.backward();
    opt_dp.zero_grad(true);
    const Tensor loss_dp = binary_cross_entropy_with_logits(dp.forward(my_images), my_masks);
    double global_loss = loss_dp.item();
    comm().all_reduce_sum(&global_loss, 1);
    global_loss /= 2;  // the mean of two equal halves' means: the whole batch's mean
    reducer.backward(loss_dp);
    loss_err.add("loss, step " + std::to_string(step + 1), from_vector<double>({global_loss}, {1}),
                 from_vector<double>({loss_ref.item()}, {1}));
    const auto pr = ref.named_parameters(), pd = dp.named_parameters();
    for (size_t i = 0; i < pr.size(); ++i)
      grad_err.add("grad of " + pr[i].first + ", step " + std::to_string(step + 1), pd[i].second.grad(), pr[i].second.grad());
    opt_ref.step();
    opt_dp.step();
  }
  Worst weight_err;
  const auto sr = ref.state_dict(), sd = dp.state_dict();
  for (size_t i = 0; i < sr.size(); ++i)
    if (sr[i].second.dtype() == kFloat32) weight_err.add(sr[i].first, sd[i].second, sr[i].second);
  MESSAGE("rank " << rank << " worst relative errors over " << kSteps << " steps: loss " << loss_err.rel << ", gradients "
                  << grad_err.rel << " (" << grad_err.where << "), weights and running statistics " << weight_err.rel
                  << " (" << weight_err.where << ")");
  CHECK_MESSAGE(loss_err.rel <= kEquivTol, loss_err.where);
  CHECK_MESSAGE(grad_err.rel <= kEquivTol, grad_err.where);
  CHECK_MESSAGE(weight_err.rel <= kEquivTol, weight_err.where);
}

TEST_CASE("data parallel, 2 ranks: without --sync-bn the gradients are the average of the ranks' own gradients") {
  REQUIRE(comm().size() == 2);
  const int rank = comm().rank();
  const Data data = make_data(12);
  Generator gen(9);
  nn::UNet dp(small_unet(), &gen);
  dist::broadcast_module(comm(), dp);
  const nn::NamedTensors params = dp.named_parameters();
  dist::GradReducer reducer(comm(), params, /*bucket_mb=*/0.01);  // several buckets
  CHECK(reducer.num_buckets() > 1);
  const Tensor my_images = data.images.narrow(0, 2 * rank, 2).contiguous();
  const Tensor my_masks = data.masks.narrow(0, 2 * rank, 2).contiguous();
  // This rank's own gradients, by a plain backward; their average by hand.
  dp.zero_grad();
  binary_cross_entropy_with_logits(dp.forward(my_images), my_masks).backward();
  std::vector<Tensor> want;
  for (const auto& [name, p] : params) {
    Tensor g = p.grad().clone();
    comm().all_reduce_sum_(g);
    want.push_back(g * 0.5);
  }
  dp.zero_grad();
  reducer.backward(binary_cross_entropy_with_logits(dp.forward(my_images), my_masks));
  // The same two float32 values are added either way (a + b = b + a exactly) and halved: bit-equal.
  Worst err;
  for (size_t i = 0; i < params.size(); ++i) err.add(params[i].first, params[i].second.grad(), want[i]);
  MESSAGE("rank " << rank << ": worst relative error " << err.rel << " (tolerance 0)");
  CHECK_MESSAGE(err.rel == 0, err.where);
  // The per-rank batch statistics differ, so the running statistics do; the buffer broadcast makes
  // them rank 0's on every rank.
  Tensor rm = dp.named_buffers()[0].second.clone();  // running_mean of the first layer
  dist::broadcast_buffers(comm(), dp);
  Tensor rm0 = rm.clone();
  comm().broadcast_(rm0, 0);
  CHECK(dp.named_buffers()[0].second.to_vector<float>() == rm0.to_vector<float>());
  if (rank == 1) CHECK(rm.to_vector<float>() != rm0.to_vector<float>());
}

int main(int argc, char** argv) {
  int rc = 0;
  try {
    dist::Communicator& c = dist::init(&argc, &argv);
    doctest::Context ctx(argc, argv);
    rc = ctx.run();
    if (ctx.shouldExit()) return rc;
    int64_t failed = rc != 0;
    c.all_reduce_sum(&failed, 1);  // every rank reports the failure of any
    if (failed && rc == 0) std::fprintf(stderr, "rank %d: another rank failed\n", c.rank());
    rc = failed ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "test_dist: %s\n", e.what());
    rc = 1;
  }
  dist::finalize();
  return rc;
}
