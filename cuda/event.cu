#include <stdexcept>

#include "cuda/check.h"
#include "cuda/event.h"
#include "cuda/runtime.h"

namespace tl::cuda {

EventTimer::EventTimer(int device) : device_(device) {
  check_device(device);
  DeviceGuard guard(device);
  TL_CUDA_CHECK(cudaEventCreate(&start_));
  const cudaError_t err = cudaEventCreate(&stop_);
  if (err != cudaSuccess) {
    (void)cudaEventDestroy(start_);  // the destructor does not run for a throwing constructor
    TL_CUDA_CHECK(err);
  }
}

EventTimer::~EventTimer() {
  // Never throws; an event still pending is destroyed once it completes (CUDA's rule).
  (void)cudaEventDestroy(start_);
  (void)cudaEventDestroy(stop_);
}

void EventTimer::start() {
  DeviceGuard guard(device_);
  TL_CUDA_CHECK(cudaEventRecord(start_, stream(device_)));
  started_ = true;
  stopped_ = false;
}

void EventTimer::stop() {
  if (!started_) throw std::logic_error("EventTimer: stop() before start()");
  DeviceGuard guard(device_);
  TL_CUDA_CHECK(cudaEventRecord(stop_, stream(device_)));
  stopped_ = true;
}

double EventTimer::elapsed_ms() {
  if (!stopped_) throw std::logic_error("EventTimer: elapsed_ms() needs start() and stop() first");
  TL_CUDA_CHECK(cudaEventSynchronize(stop_));
  float ms = 0;
  TL_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
  return static_cast<double>(ms);
}

}  // namespace tl::cuda
