#pragma once
// A CUDA-event timer: GPU time between two points of a device's stream (cuda/runtime.h), the way
// torch.cuda.Event(enable_timing=True) measures it. Plain C++ (no CUDA headers); in a .cu file the
// events are cudaEvent_t.
//
//   cuda::EventTimer timer(device);
//   timer.start();   // queued on stream(device)
//   ...              // work queued on stream(device)
//   timer.stop();
//   double ms = timer.elapsed_ms();  // waits for the stop event
struct CUevent_st;  // cudaEvent_t is CUevent_st*

namespace tl::cuda {

class EventTimer {
 public:
  explicit EventTimer(int device);  // throws, like check_device, when the device is not available
  ~EventTimer();
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;

  void start();  // records the start event on stream(device)
  void stop();   // records the stop event on stream(device)
  // Milliseconds of GPU time from start to stop (about 0.5 us resolution). Blocks until the stop
  // event has completed; throws if start() and stop() were not both recorded.
  double elapsed_ms();

 private:
  int device_;
  CUevent_st* start_ = nullptr;
  CUevent_st* stop_ = nullptr;
  bool started_ = false, stopped_ = false;
};

}  // namespace tl::cuda
