#pragma once
// The communicator: which process this is among the processes of one training run (rank, world
// size, and the rank among those on the same machine), and the collectives the trainer needs on
// float32 and float64 buffers: all-reduce (sum), broadcast, barrier.
//
// Two backends, chosen once by dist::init():
//   - single process: world size 1, every collective returns at once; no MPI is touched (a build
//     without MPI, or a process not started by mpirun, or mpirun -np 1);
//   - MPI (OpenMPI): one process per rank under `mpirun -np N`, CPU buffers. Collectives of the
//     calling thread run on MPI_COMM_WORLD; asynchronous all-reduces (all_reduce_async) run in order
//     on one communication thread of their own, over a duplicate of it, so they overlap the caller's
//     compute (this needs MPI_THREAD_MULTIPLE; where the library lacks it they run at wait()).
// Every rank must call the same collectives in the same order with the same sizes, as in MPI.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "tensor/tensor.h"

namespace tl::dist {

// A started asynchronous all-reduce. wait() returns when the buffer holds the sum (rethrowing the
// collective's error, if any); the buffer must stay alive and untouched until then.
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
  // When the collective began and ended on the communication thread (for timelines); valid after wait().
  std::chrono::steady_clock::time_point started, finished;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual int local_rank() const = 0;  // rank among the processes on this machine
  virtual int local_size() const = 0;  // processes of the run on this machine
  virtual const char* backend() const = 0;  // "single" | "mpi"

  virtual void all_reduce_sum(float* data, size_t n) = 0;
  virtual void all_reduce_sum(double* data, size_t n) = 0;
  virtual void all_reduce_sum(int64_t* data, size_t n) = 0;
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  virtual void barrier() = 0;
  virtual std::unique_ptr<Work> all_reduce_async(float* data, size_t n) = 0;
  // Ends every rank of the run at once with `code` (MPI_Abort), after the caller has printed why.
  [[noreturn]] virtual void abort(int code) = 0;

  // The same on contiguous CPU tensors (float32, float64; broadcast: any dtype), in place.
  void all_reduce_sum_(const Tensor& t);
  void broadcast_(const Tensor& t, int root);
};

// Starts the run's communicator once per process: MPI when the process was launched by mpirun (or
// another MPI launcher) with more than one rank, else the single-process one. Throws when launched
// with several ranks by a build that has no MPI. Later calls return the same communicator.
Communicator& init(int* argc, char*** argv);
// The communicator init() made; the single-process one when init() was never called.
Communicator& world();
// Finalizes MPI (when it was started); call before returning from main. Idempotent.
void finalize();

// Whether this build has the MPI backend.
bool mpi_available();
// The world size the environment's launcher asks for (OMPI_COMM_WORLD_SIZE, PMI_SIZE); 1 when none.
int launched_world_size();

namespace detail {
std::unique_ptr<Communicator> make_mpi_communicator(int* argc, char*** argv);  // mpi.cpp
}

}  // namespace tl::dist
