// The NCCL backend (dist/nccl.h) on CUDA tensors: all-reduce (blocking and asynchronous) and
// broadcast over odd sizes, each rank on the GPU of its local rank, checked against the sums computed
// on the CPU. Run as one process it checks the code path at world size 1 (one GPU); under
// `mpirun -np N` on a machine with N GPUs it checks the sums. Exits 77 (skipped) without a GPU.
#define DOCTEST_CONFIG_IMPLEMENT
#include <cstdio>

#include "cuda/runtime.h"
#include "dist/communicator.h"
#include "dist/nccl.h"
#include "test_util.h"

using namespace tl;

namespace {

const std::vector<int64_t> kOddSizes = {1, 3, 7, 1023, 65537, (int64_t{1} << 20) + 3};

// Rank r's values, exactly representable, and their sum over the ranks.
Tensor values(int rank, int64_t n, DType dtype) {
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = (rank + 1) + 0.5 * static_cast<double>(i % 7);
  return from_vector<double>(v, {n}).to(dtype);
}
Tensor expected(int size, int64_t n, DType dtype) {
  Tensor s = values(0, n, kFloat64);
  for (int r = 1; r < size; ++r) s = s + values(r, n, kFloat64);
  return s.to(dtype);
}

dist::NcclCommunicator& nccl() {
  static dist::NcclCommunicator c(dist::world(), dist::world().local_rank());
  return c;
}

Device gpu() { return Device::cuda(dist::world().local_rank()); }

}  // namespace

TEST_CASE("nccl: all-reduce of CUDA float32 and float64 tensors of odd sizes") {
  for (const DType dtype : {kFloat32, kFloat64})
    for (const int64_t n : kOddSizes) {
      CAPTURE(n);
      const Tensor t = values(nccl().rank(), n, dtype).to(gpu());
      nccl().all_reduce_sum_(t);
      CHECK(t.to(Device::cpu()).to_vector<double>() == expected(nccl().size(), n, dtype).to_vector<double>());
    }
}

TEST_CASE("nccl: asynchronous all-reduces in flight together, ordered before later compute") {
  std::vector<Tensor> ts;
  std::vector<std::unique_ptr<dist::Work>> works;
  for (const int64_t n : kOddSizes) {
    ts.push_back(values(nccl().rank(), n, kFloat32).to(gpu()));
    works.push_back(nccl().all_reduce_async(ts.back()));
  }
  for (size_t k = 0; k < ts.size(); ++k) {
    works[k]->wait();              // the compute stream waits for it
    const Tensor twice = ts[k] * 2.0;  // queued on the compute stream after the all-reduce
    CHECK(twice.to(Device::cpu()).to_vector<double>() ==
          (expected(nccl().size(), kOddSizes[k], kFloat32) * 2.0).to_vector<double>());
  }
}

TEST_CASE("nccl: broadcast from every root") {
  for (int root = 0; root < nccl().size(); ++root) {
    const Tensor t = values(nccl().rank(), 4099, kFloat32).to(gpu());
    nccl().broadcast_(t, root);
    CHECK(t.to(Device::cpu()).to_vector<double>() == values(root, 4099, kFloat32).to_vector<double>());
  }
  CHECK_THROWS_AS(nccl().all_reduce_sum_(values(0, 3, kFloat32)), std::invalid_argument);  // a CPU tensor
}

int main(int argc, char** argv) {
  dist::Communicator& c = dist::init(&argc, &argv);
  if (cuda::device_count() <= c.local_rank()) {
    std::printf("skipped: no CUDA device for local rank %d (%d found)\n", c.local_rank(), cuda::device_count());
    dist::finalize();
    return 77;
  }
  doctest::Context ctx(argc, argv);
  int rc = ctx.run();
  dist::finalize();
  return rc;
}
