#include "dist/communicator.h"

#include <cstdlib>
#include <stdexcept>
#include <string>

namespace tl::dist {

namespace {

class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  int local_size() const override { return 1; }
  const char* backend() const override { return "single"; }
  void all_reduce_sum(float*, size_t) override {}
  void all_reduce_sum(double*, size_t) override {}
  void all_reduce_sum(int64_t*, size_t) override {}
  void broadcast(void*, size_t, int root) override {
    if (root != 0) throw std::invalid_argument("broadcast: root " + std::to_string(root) + " of a world of 1");
  }
  void barrier() override {}
  std::unique_ptr<Work> all_reduce_async(float*, size_t) override {
    struct Done final : Work {
      Done() { started = finished = std::chrono::steady_clock::now(); }
      void wait() override {}
    };
    return std::make_unique<Done>();
  }
  [[noreturn]] void abort(int code) override { std::_Exit(code); }
};

std::unique_ptr<Communicator>& instance() {
  static std::unique_ptr<Communicator> c;
  return c;
}

void check_cpu_contiguous(const Tensor& t, const char* op) {
  if (!t.defined()) throw std::invalid_argument(std::string(op) + ": undefined tensor");
  if (!t.device().is_cpu())
    throw std::invalid_argument(std::string(op) + ": tensor " + shape_str(t.shape()) + " is on " + t.device().str() +
                                "; the MPI backend takes CPU tensors");
  if (!t.is_contiguous()) throw std::invalid_argument(std::string(op) + ": tensor " + shape_str(t.shape()) + " is not contiguous");
}

}  // namespace

void Communicator::all_reduce_sum_(const Tensor& t) {
  check_cpu_contiguous(t, "all_reduce_sum_");
  const auto n = static_cast<size_t>(t.numel());
  if (t.dtype() == kFloat32) all_reduce_sum(t.data_ptr<float>(), n);
  else if (t.dtype() == kFloat64) all_reduce_sum(t.data_ptr<double>(), n);
  else if (t.dtype() == kInt64) all_reduce_sum(t.data_ptr<int64_t>(), n);
  else throw std::invalid_argument(std::string("all_reduce_sum_: dtype ") + dtype_name(t.dtype()) + " is not supported");
}

void Communicator::broadcast_(const Tensor& t, int root) {
  check_cpu_contiguous(t, "broadcast_");
  broadcast(t.raw_data(),
            static_cast<size_t>(t.numel()) * dtype_size(t.dtype()), root);
}

int launched_world_size() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"})
    if (const char* v = std::getenv(var)) {
      const int n = std::atoi(v);
      if (n > 0) return n;
    }
  return 1;
}

#ifdef TL_WITH_MPI
bool mpi_available() { return true; }
#else
bool mpi_available() { return false; }
namespace detail {
std::unique_ptr<Communicator> make_mpi_communicator(int*, char***) {
  throw std::runtime_error("launched with " + std::to_string(launched_world_size()) +
                           " ranks, but this build has no MPI backend (install libopenmpi-dev and rebuild)");
}
}  // namespace detail
#endif

Communicator& init(int* argc, char*** argv) {
  auto& c = instance();
  if (!c) {
    // World size 1 never starts MPI: one process behaves exactly as a build without it.
    if (launched_world_size() > 1) c = detail::make_mpi_communicator(argc, argv);
    else c = std::make_unique<SingleProcess>();
  }
  return *c;
}

Communicator& world() {
  auto& c = instance();
  if (!c) c = std::make_unique<SingleProcess>();
  return *c;
}

void finalize() { instance().reset(); }

}  // namespace tl::dist
