#pragma once
// safetensors files: an 8-byte little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value", ...}}
// then the raw little-endian tensor bytes (offsets relative to the end of the header).
// Writes go through tl::write_file_atomic (tensor/file_util.h): atomic for regular files (a temporary
// file in the same folder, fsynced, then renamed), through a symlink to its target, and direct to a
// FIFO or a character device.
// The reader trusts nothing: header length, JSON, dtypes, shapes against byte ranges, overlaps,
// gaps and out-of-file offsets are each checked and reported with the file name and the tensor.
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace tl::safetensors {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;
using Metadata = std::map<std::string, std::string>;

struct File {
  std::string path;      // where it was read from (named by at()'s error)
  NamedTensors tensors;  // in the order of their data offsets
  Metadata metadata;

  bool contains(const std::string& name) const;
  const Tensor& at(const std::string& name) const;  // throws naming the file's missing tensor
  std::map<std::string, Tensor> as_map() const;
};

// Writes F32, F64, I64 and U8 tensors (any strides, CPU or not: copied to contiguous CPU bytes).
// Names must be unique and non-empty; "__metadata__" is reserved.
void save(const std::string& path, const NamedTensors& tensors, const Metadata& metadata = {});

// Reads F32, F64, I64, U8, and BF16/F16 (converted to float32). Throws std::runtime_error whose
// message starts with the path.
File load(const std::string& path);

}  // namespace tl::safetensors
