// nn/safetensors: load on any bytes refuses with std::runtime_error naming the file, or returns
// contiguous CPU tensors whose bytes are all there for their shapes and dtypes.
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "fuzz/fuzz_file.h"
#include "nn/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = tl::fuzz::temp_path("in.safetensors");
  tl::fuzz::put_file(path, data, size);
  tl::safetensors::File f;
  try {
    f = tl::safetensors::load(path);
  } catch (const std::runtime_error& e) {
    if (std::string(e.what()).rfind(path, 0) != 0) tl::fuzz::broken("an error that does not start with the path");
    return 0;
  }
  for (const auto& [name, t] : f.tensors) {
    if (name.empty() || name == "__metadata__") tl::fuzz::broken("a reserved or empty tensor name");
    if (!t.defined() || !t.device().is_cpu() || !t.is_contiguous()) tl::fuzz::broken("a tensor not contiguous on the CPU");
    if (t.numel() != tl::numel_of(t.shape())) tl::fuzz::broken("numel disagrees with the shape");
    // Touch every byte, so that the sanitizer sees a buffer shorter than its shape says.
    const auto* bytes = static_cast<const uint8_t*>(t.raw_data());
    uint8_t sum = 0;
    for (size_t i = 0; i < static_cast<size_t>(t.numel()) * tl::dtype_size(t.dtype()); ++i) sum ^= bytes[i];
    (void)sum;
  }
  return 0;
}
