// The MPI backend (OpenMPI): MPI_COMM_WORLD for the calling thread's collectives, a duplicate of it
// driven by one communication thread for the asynchronous all-reduces.
#include <mpi.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include "dist/communicator.h"

namespace tl::dist {

namespace {

void check(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw std::runtime_error(std::string(call) + " failed: " + std::string(text, static_cast<size_t>(len)));
}

// MPI counts are int: a larger buffer goes in pieces.
constexpr size_t kMaxCount = size_t{1} << 30;

template <typename T>
void all_reduce(T* data, size_t n, MPI_Datatype type, MPI_Comm comm) {
  for (size_t at = 0; at < n; at += kMaxCount) {
    const int count = static_cast<int>(std::min(kMaxCount, n - at));
    check(MPI_Allreduce(MPI_IN_PLACE, data + at, count, type, MPI_SUM, comm), "MPI_Allreduce");
  }
}

// What the communication thread and the waiting caller share (it outlives either side).
struct AsyncState {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::exception_ptr error;
  std::chrono::steady_clock::time_point started, finished;
};

class AsyncWork final : public Work {
 public:
  explicit AsyncWork(std::shared_ptr<AsyncState> state) : state_(std::move(state)) {}
  void wait() override {
    std::unique_lock lock(state_->mu);
    state_->cv.wait(lock, [&] { return state_->done; });
    started = state_->started;
    finished = state_->finished;
    if (state_->error) std::rethrow_exception(state_->error);
  }

 private:
  std::shared_ptr<AsyncState> state_;
};

// Runs the run-at-wait fallback: the all-reduce happens when someone waits for it.
class DeferredWork final : public Work {
 public:
  DeferredWork(std::function<void()> fn) : fn_(std::move(fn)) {}
  void wait() override {
    if (!fn_) return;
    started = std::chrono::steady_clock::now();
    auto fn = std::move(fn_);
    fn_ = nullptr;
    fn();
    finished = std::chrono::steady_clock::now();
  }

 private:
  std::function<void()> fn_;
};

class Mpi final : public Communicator {
 public:
  Mpi(int* argc, char*** argv) {
    int provided = MPI_THREAD_SINGLE;
    check(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided), "MPI_Init_thread");
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    MPI_Comm node;
    check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node), "MPI_Comm_split_type");
    MPI_Comm_rank(node, &local_rank_);
    MPI_Comm_size(node, &local_size_);
    MPI_Comm_free(&node);
    threaded_ = provided >= MPI_THREAD_MULTIPLE;
    if (threaded_) {
      check(MPI_Comm_dup(MPI_COMM_WORLD, &async_comm_), "MPI_Comm_dup");
      MPI_Comm_set_errhandler(async_comm_, MPI_ERRORS_RETURN);
      thread_ = std::thread([this] { run(); });
    }
  }

  ~Mpi() override {
    if (threaded_) {
      {
        std::lock_guard lock(mu_);
        stop_ = true;
      }
      cv_.notify_all();
      thread_.join();
      MPI_Comm_free(&async_comm_);
    }
    MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }
  const char* backend() const override { return "mpi"; }

  void all_reduce_sum(float* data, size_t n) override { all_reduce(data, n, MPI_FLOAT, MPI_COMM_WORLD); }
  void all_reduce_sum(double* data, size_t n) override { all_reduce(data, n, MPI_DOUBLE, MPI_COMM_WORLD); }
  void all_reduce_sum(int64_t* data, size_t n) override { all_reduce(data, n, MPI_INT64_T, MPI_COMM_WORLD); }

  void broadcast(void* data, size_t bytes, int root) override {
    if (root < 0 || root >= size_)
      throw std::invalid_argument("broadcast: root " + std::to_string(root) + " of a world of " + std::to_string(size_));
    auto* p = static_cast<char*>(data);
    for (size_t at = 0; at < bytes; at += kMaxCount) {
      const int count = static_cast<int>(std::min(kMaxCount, bytes - at));
      check(MPI_Bcast(p + at, count, MPI_BYTE, root, MPI_COMM_WORLD), "MPI_Bcast");
    }
  }

  void barrier() override { check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"); }

  std::unique_ptr<Work> all_reduce_async(float* data, size_t n) override {
    if (!threaded_)
      return std::make_unique<DeferredWork>([data, n] { all_reduce(data, n, MPI_FLOAT, MPI_COMM_WORLD); });
    auto state = std::make_shared<AsyncState>();
    {
      std::lock_guard lock(mu_);
      queue_.push_back({state, data, n});
    }
    cv_.notify_one();
    return std::make_unique<AsyncWork>(state);
  }

  [[noreturn]] void abort(int code) override {
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);  // MPI_Abort does not return; this satisfies [[noreturn]]
  }

 private:
  struct Job {
    std::shared_ptr<AsyncState> state;
    float* data;
    size_t n;
  };

  // The communication thread: the queued all-reduces in order, each on async_comm_.
  void run() {
    for (;;) {
      Job job;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stop_, nothing left
        job = queue_.front();
        queue_.pop_front();
      }
      const auto started = std::chrono::steady_clock::now();
      std::exception_ptr error;
      try {
        all_reduce(job.data, job.n, MPI_FLOAT, async_comm_);
      } catch (...) {
        error = std::current_exception();
      }
      {
        std::lock_guard lock(job.state->mu);
        job.state->started = started;
        job.state->finished = std::chrono::steady_clock::now();
        job.state->error = error;
        job.state->done = true;
      }
      job.state->cv.notify_all();
    }
  }

  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  bool threaded_ = false;
  MPI_Comm async_comm_ = MPI_COMM_NULL;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  bool stop_ = false;
};

}  // namespace

namespace detail {
std::unique_ptr<Communicator> make_mpi_communicator(int* argc, char*** argv) { return std::make_unique<Mpi>(argc, argv); }
}  // namespace detail

}  // namespace tl::dist
