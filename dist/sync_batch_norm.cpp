#include "dist/sync_batch_norm.h"

#include <cmath>
#include <string>
#include <vector>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "tensor/kernels.h"
#include "tensor/parallel.h"

namespace tl::dist {

namespace {

// x (N, C, S) contiguous float32: per channel, sum over n and s of f(c, value).
template <typename F>
std::vector<double> channel_sums(const Tensor& x, const F& f) {
  const int64_t n = x.size(0), c = x.size(1), s = x.numel() / (n * c == 0 ? 1 : n * c);
  std::vector<double> out(static_cast<size_t>(c), 0.0);
  const float* p = x.data_ptr<float>();
  parallel_for(0, c, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t ch = cb; ch < ce; ++ch) {
      double acc = 0;
      for (int64_t i = 0; i < n; ++i) {
        const float* row = p + (i * c + ch) * s;
        for (int64_t k = 0; k < s; ++k) acc += f(ch, static_cast<double>(row[k]));
      }
      out[static_cast<size_t>(ch)] = acc;
    }
  });
  return out;
}

}  // namespace

// x (N, C, H, W) -> act(batch_norm(x)) (N, C, H, W), statistics over every rank's batch
Tensor SyncBatchNorm::forward(const nn::BatchNorm2d& bn, const Tensor& x_in, Activation act) {
  if (!x_in.device().is_cpu() || x_in.dtype() != kFloat32)
    throw_op_error("sync_batch_norm", "expected a CPU float32 input, got " + std::string(dtype_name(x_in.dtype())) + " " +
                                          shape_str(x_in.shape()) + " on " + x_in.device().str());
  if (!bn.weight.defined() || !bn.bias.defined())
    throw_op_error("sync_batch_norm", "the layer must have a weight and a bias");
  const Tensor x = x_in.detach().contiguous();
  const int64_t c = x.size(1);
  if (bn.weight.shape() != Shape{c})
    throw_op_error("sync_batch_norm", "weight " + shape_str(bn.weight.shape()) + " does not match input " + shape_str(x.shape()));

  // 1. the global mean, and the global count as the last element
  std::vector<double> s1 = channel_sums(x, [](int64_t, double v) { return v; });
  s1.push_back(static_cast<double>(x.numel() / c));
  comm_.all_reduce_sum(s1.data(), s1.size());
  const double m = s1.back();
  if (m <= 1)
    throw_op_error("sync_batch_norm", "Expected more than 1 value per channel when training, got " +
                                          std::to_string(static_cast<int64_t>(m)) + " over all ranks (input " +
                                          shape_str(x.shape()) + " here)");
  std::vector<double> mean(static_cast<size_t>(c));
  for (int64_t k = 0; k < c; ++k) mean[static_cast<size_t>(k)] = s1[static_cast<size_t>(k)] / m;
  // 2. the global biased variance
  std::vector<double> s2 = channel_sums(x, [&](int64_t ch, double v) {
    const double d = v - mean[static_cast<size_t>(ch)];
    return d * d;
  });
  comm_.all_reduce_sum(s2.data(), s2.size());

  Tensor mean_t = empty({c}), var_t = empty({c});
  {
    NoGradGuard no_grad;
    float* rm = bn.running_mean.defined() ? bn.running_mean.data_ptr<float>() : nullptr;
    float* rv = bn.running_var.defined() ? bn.running_var.data_ptr<float>() : nullptr;
    for (int64_t k = 0; k < c; ++k) {
      const auto kk = static_cast<size_t>(k);
      const double var = s2[kk] / m;
      mean_t.data_ptr<float>()[k] = static_cast<float>(mean[kk]);
      var_t.data_ptr<float>()[k] = static_cast<float>(var);
      if (rm) rm[k] = static_cast<float>((1.0 - bn.momentum) * static_cast<double>(rm[k]) + bn.momentum * mean[kk]);
      if (rv) rv[k] = static_cast<float>((1.0 - bn.momentum) * static_cast<double>(rv[k]) + bn.momentum * var * m / (m - 1));
    }
  }
  // 3. normalize with these statistics (the kernel's evaluation-mode path reads them as given)
  kernels::BatchNormOutput r = kernels::batch_norm(x, bn.weight.detach(), bn.bias.detach(), mean_t, var_t,
                                                   /*training=*/false, 0.0, bn.eps, act);
  Communicator* comm = &comm_;
  return record("sync_batch_norm", r.y, {x_in, bn.weight, bn.bias},
                [comm, x, w = bn.weight.detach(), b = bn.bias.detach(), mu = r.mean, invstd = r.invstd, m,
                 act](const Tensor& g, const std::vector<bool>& needs) {
                  // dx_local = w invstd g (evaluation mode); dweight = sum(g xhat), dbias = sum(g), local
                  kernels::BatchNormGrads gr = kernels::batch_norm_backward(g, x, w, b, mu, invstd, false, act);
                  const int64_t ch = x.size(1);
                  std::vector<double> sums(static_cast<size_t>(2 * ch));
                  for (int64_t k = 0; k < ch; ++k) {
                    sums[static_cast<size_t>(k)] = static_cast<double>(gr.dbias.data_ptr<float>()[k]);
                    sums[static_cast<size_t>(ch + k)] = static_cast<double>(gr.dweight.data_ptr<float>()[k]);
                  }
                  comm->all_reduce_sum(sums.data(), sums.size());
                  if (needs[0]) {
                    // The kernel's training formula (kernels::NormGradCoef) with the global sums.
                    const int64_t n = x.size(0), s = x.numel() / (n * ch);
                    const float* xp = x.data_ptr<float>();
                    float* dxp = gr.dx.data_ptr<float>();
                    const float* wp = w.data_ptr<float>();
                    const double* mup = mu.data_ptr<double>();
                    const double* isp = invstd.data_ptr<double>();
                    parallel_for(0, ch, 1, [&](int64_t cb, int64_t ce) {
                      for (int64_t k = cb; k < ce; ++k) {
                        const double a = static_cast<double>(wp[k]) * isp[k];
                        const double bcoef = -a * sums[static_cast<size_t>(ch + k)] * isp[k] / m;
                        const double kcoef = -a * sums[static_cast<size_t>(k)] / m;
                        for (int64_t i = 0; i < n; ++i) {
                          const int64_t base = (i * ch + k) * s;
                          for (int64_t e = 0; e < s; ++e)
                            dxp[base + e] = static_cast<float>(static_cast<double>(dxp[base + e]) +
                                                               bcoef * (static_cast<double>(xp[base + e]) - mup[k]) + kcoef);
                        }
                      }
                    });
                  }
                  return std::vector<Tensor>{needs[0] ? gr.dx : Tensor(), needs[1] ? gr.dweight : Tensor(),
                                             needs[2] ? gr.dbias : Tensor()};
                });
}

int convert_sync_batchnorm(nn::Module& module, Communicator& comm) {
  int converted = 0;
  auto op = std::make_shared<SyncBatchNorm>(comm);
  std::vector<nn::Module*> stack{&module};
  while (!stack.empty()) {
    nn::Module* m = stack.back();
    stack.pop_back();
    if (auto* bn = dynamic_cast<nn::BatchNorm2d*>(m)) {
      bn->training_op = op;
      ++converted;
    }
    for (const auto& [name, child] : m->children()) stack.push_back(child.get());
  }
  return converted;
}

}  // namespace tl::dist
