#include "dist/ddp.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "autograd/grad_hooks.h"
#include "autograd/grad_mode.h"

namespace tl::dist {

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0, Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(t - t0).count();
}

}  // namespace

void broadcast_module(Communicator& comm, nn::Module& module, int root) {
  if (comm.size() == 1) return;
  NoGradGuard no_grad;
  nn::NamedTensors state = module.state_dict();
  for (auto& [name, t] : state) {
    t = t.detach().clone();  // contiguous, on the CPU (the MPI backend's buffers)
    comm.broadcast_(t, root);
  }
  module.load_state_dict(state);
}

void broadcast_buffers(Communicator& comm, nn::Module& module, int root) {
  if (comm.size() == 1) return;
  std::vector<Tensor> buffers;
  size_t total = 0;
  for (const auto& [name, t] : module.named_buffers())
    if (t.dtype() == kFloat32) {
      if (!t.device().is_cpu() || !t.is_contiguous())
        throw std::invalid_argument("broadcast_buffers: buffer " + name + " is not a contiguous CPU tensor");
      buffers.push_back(t);
      total += static_cast<size_t>(t.numel());
    }
  std::vector<float> flat(total);
  size_t at = 0;
  if (comm.rank() == root)
    for (const Tensor& t : buffers) {
      std::memcpy(flat.data() + at, t.data_ptr<float>(), static_cast<size_t>(t.numel()) * sizeof(float));
      at += static_cast<size_t>(t.numel());
    }
  comm.broadcast(flat.data(), total * sizeof(float), root);
  at = 0;
  for (const Tensor& t : buffers) {
    std::memcpy(t.data_ptr<float>(), flat.data() + at, static_cast<size_t>(t.numel()) * sizeof(float));
    at += static_cast<size_t>(t.numel());
  }
}

GradReducer::GradReducer(Communicator& comm, const nn::NamedTensors& params, double bucket_mb) : comm_(comm) {
  if (!(bucket_mb > 0)) throw std::invalid_argument("GradReducer: bucket size must be positive, got " + std::to_string(bucket_mb) + " MB");
  cap_bytes_ = static_cast<size_t>(bucket_mb * 1024 * 1024);
  const size_t n = params.size();
  params_.reserve(n);
  bucket_of_.assign(n, 0);
  offset_of_.assign(n, 0);
  ready_.assign(n, false);
  for (size_t i = 0; i < n; ++i) {
    const auto& [name, p] = params[i];
    if (!p.device().is_cpu() || p.dtype() != kFloat32)
      throw std::invalid_argument("GradReducer: parameter " + name + " is " + dtype_name(p.dtype()) + " on " + p.device().str() +
                                  "; the MPI backend reduces CPU float32 gradients");
    params_.push_back(p);
    index_[p.impl()] = i;
  }
  // Reverse registration order: in a chain of layers the last ones' gradients are the first that
  // backward finishes.
  std::vector<size_t> order(n);
  for (size_t k = 0; k < n; ++k) order[k] = n - 1 - k;
  assign_buckets(order);
}

void GradReducer::assign_buckets(const std::vector<size_t>& order) {
  buckets_.clear();
  bucket_params_.clear();
  size_t bytes = 0;
  for (const size_t k : order) {
    const size_t pb = static_cast<size_t>(params_[k].numel()) * sizeof(float);
    if (buckets_.empty() || (bytes > 0 && bytes + pb > cap_bytes_)) {
      buckets_.emplace_back();
      bucket_params_.emplace_back();
      bytes = 0;
    }
    bucket_of_[k] = buckets_.size() - 1;
    offset_of_[k] = bytes / sizeof(float);
    bucket_params_.back().push_back(k);
    bytes += pb;
  }
  for (size_t b = 0; b < buckets_.size(); ++b) {
    size_t floats = 0;
    for (const size_t k : bucket_params_[b]) floats += static_cast<size_t>(params_[k].numel());
    buckets_[b].flat.assign(floats, 0.0f);
  }
}

void GradReducer::rebuild_buckets() {
  rebuilt_ = true;
  // Parameters backward never reached go last, in reverse registration order.
  std::vector<bool> seen(params_.size(), false);
  for (const size_t k : ready_order_) seen[k] = true;
  for (size_t k = params_.size(); k-- > 0;)
    if (!seen[k]) ready_order_.push_back(k);
  // Rank 0's order on every rank: the buckets must match one to one.
  std::vector<int64_t> order(ready_order_.begin(), ready_order_.end());
  comm_.broadcast(order.data(), order.size() * sizeof(int64_t), 0);
  std::vector<size_t> o(order.begin(), order.end());
  ready_order_.clear();
  assign_buckets(o);
}

void GradReducer::on_grad_ready(TensorImpl& leaf) {
  const auto it = index_.find(&leaf);
  if (it != index_.end() && !ready_[it->second]) mark_ready(it->second);
}

void GradReducer::mark_ready(size_t i) {
  ready_[i] = true;
  if (!rebuilt_) ready_order_.push_back(i);
  Bucket& b = buckets_[bucket_of_[i]];
  float* dst = b.flat.data() + offset_of_[i];
  const auto n = static_cast<size_t>(params_[i].numel());
  const Tensor g = params_[i].grad();
  if (g.defined()) {
    const Tensor c = g.contiguous();
    std::memcpy(dst, c.data_ptr<float>(), n * sizeof(float));
  } else {
    std::fill(dst, dst + n, 0.0f);
  }
  if (--b.pending == 0) launch_ready_buckets();
}

void GradReducer::launch_ready_buckets() {
  // In bucket order on every rank, whatever order backward completes them in: the collectives of
  // all ranks must match one to one.
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].pending == 0) {
    Bucket& b = buckets_[next_launch_];
    timing_.buckets[next_launch_].ready_ms = ms_since(t0_, Clock::now());
    b.work = comm_.all_reduce_async(b.flat.data(), b.flat.size());
    ++next_launch_;
  }
}

void GradReducer::backward(const Tensor& loss) {
  t0_ = Clock::now();
  timing_ = {};
  timing_.buckets.resize(buckets_.size());
  for (size_t k = 0; k < buckets_.size(); ++k) {
    buckets_[k].pending = bucket_params_[k].size();
    buckets_[k].work.reset();
    timing_.buckets[k].params = bucket_params_[k].size();
    timing_.buckets[k].bytes = buckets_[k].flat.size() * sizeof(float);
  }
  std::fill(ready_.begin(), ready_.end(), false);
  next_launch_ = 0;
  {
    GradReadyHookGuard hook([this](TensorImpl& leaf) { on_grad_ready(leaf); });
    loss.backward();
  }
  const auto after_backward = Clock::now();
  timing_.backward_ms = ms_since(t0_, after_backward);
  // Parameters that backward did not reach (none in a model whose every parameter is used).
  const size_t reached = ready_order_.size();
  for (size_t i = 0; i < params_.size(); ++i)
    if (!ready_[i]) mark_ready(i);
  if (!rebuilt_) ready_order_.resize(reached);
  NoGradGuard no_grad;
  const float inv = 1.0f / static_cast<float>(comm_.size());
  for (size_t k = 0; k < buckets_.size(); ++k) {
    Bucket& b = buckets_[k];
    b.work->wait();
    timing_.buckets[k].started_ms = ms_since(t0_, b.work->started);
    timing_.buckets[k].finished_ms = ms_since(t0_, b.work->finished);
    for (const size_t i : bucket_params_[k]) {
      Tensor g = params_[i].grad();
      if (!g.defined() || !g.is_contiguous()) {
        g = empty(params_[i].shape(), params_[i].options().with_requires_grad(false));
        params_[i].set_grad(g);
      }
      const float* src = b.flat.data() + offset_of_[i];
      float* dst = g.data_ptr<float>();
      const auto n = static_cast<size_t>(g.numel());
      for (size_t e = 0; e < n; ++e) dst[e] = src[e] * inv;
    }
  }
  timing_.wait_ms = ms_since(after_backward, Clock::now());
  if (!rebuilt_) rebuild_buckets();
}

}  // namespace tl::dist
