#pragma once
// Storage: reference-counted bytes on one device. Tensors are views into a Storage; many views may
// share one. CPU bytes are 64-byte aligned so that vector loads never straddle a cache line.
#include <cstddef>
#include <memory>

#include "tensor/device.h"

namespace tl {

class Storage {
 public:
  Storage(size_t nbytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() { return data_; }
  const void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
};

using StoragePtr = std::shared_ptr<Storage>;

}  // namespace tl
