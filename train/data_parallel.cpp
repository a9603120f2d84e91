#include "train/data_parallel.h"

#include <stdexcept>

#include "dist/sync_batch_norm.h"

namespace tl::train {

DataParallel::DataParallel(dist::Communicator& comm, bool sync_bn) : comm_(comm), sync_bn_(sync_bn) {}

void DataParallel::prepare(nn::Module& model) {
  if (size() == 1) return;
  for (const auto& [name, t] : model.state_dict())
    if (!t.device().is_cpu())
      throw std::runtime_error("data-parallel training over MPI runs on the CPU, but " + name + " is on " + t.device().str() +
                               "; give --device cpu");
  dist::broadcast_module(comm_, model);
  if (sync_bn_) dist::convert_sync_batchnorm(model, comm_);
  reducer_ = std::make_unique<dist::GradReducer>(comm_, model.named_parameters());
}

void DataParallel::sync_buffers(nn::Module& model) {
  if (size() > 1 && !sync_bn_) dist::broadcast_buffers(comm_, model);
}

void DataParallel::backward(const Tensor& loss) {
  if (reducer_) reducer_->backward(loss);
  else loss.backward();
}

double DataParallel::mean(double value) {
  if (size() == 1) return value;
  comm_.all_reduce_sum(&value, 1);
  return value / size();
}

bool DataParallel::any_stop(bool stop) {
  if (size() == 1) return stop;
  int64_t v = stop ? 1 : 0;
  comm_.all_reduce_sum(&v, 1);
  return v > 0;
}

void DataParallel::reduce(SegmentationMetrics& m) {
  if (size() == 1) return;
  double d[3] = {m.loss_sum, m.soft_intersection, m.soft_predicted};
  int64_t k[6] = {m.samples, m.intersection, m.predicted, m.truth, m.correct, m.pixels};
  comm_.all_reduce_sum(d, 3);
  comm_.all_reduce_sum(k, 6);
  m.loss_sum = d[0];
  m.soft_intersection = d[1];
  m.soft_predicted = d[2];
  m.samples = k[0];
  m.intersection = k[1];
  m.predicted = k[2];
  m.truth = k[3];
  m.correct = k[4];
  m.pixels = k[5];
}

void DataParallel::barrier() { comm_.barrier(); }

std::string DataParallel::describe(int64_t batch_size) const {
  if (size() == 1) return "";
  return ", " + std::to_string(size()) + " ranks (" + comm_.backend() + ") x batch " + std::to_string(batch_size) +
         " = global batch " + std::to_string(size() * batch_size) + ", " +
         (sync_bn_ ? "synchronized batch norm" : "per-rank batch norm with rank 0's running statistics");
}

}  // namespace tl::train
