#pragma once
// A hook the backward engine calls when a leaf's gradient for the current backward is final: every
// node of the graph that sends it a gradient has run (like torch's post-accumulate-grad hooks). Data
// parallel training uses it to start a bucket's all-reduce while the rest of backward still runs.
//
// One hook per thread (backward runs on the calling thread); the guard installs it for its scope and
// restores the previous one. The hook receives the leaf (its `grad` is set, unless no gradient reached
// it) and runs on the backward's thread, inside backward, with grad mode off. With no hook installed
// the engine does no extra work.
#include <functional>

#include "tensor/tensor.h"

namespace tl {

using GradReadyHook = std::function<void(TensorImpl& leaf)>;

class GradReadyHookGuard {
 public:
  explicit GradReadyHookGuard(GradReadyHook hook);
  ~GradReadyHookGuard();
  GradReadyHookGuard(const GradReadyHookGuard&) = delete;
  GradReadyHookGuard& operator=(const GradReadyHookGuard&) = delete;

 private:
  GradReadyHook previous_;
};

// The calling thread's hook (empty when none).
const GradReadyHook& grad_ready_hook();

}  // namespace tl
