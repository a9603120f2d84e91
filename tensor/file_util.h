#pragma once
// Writing files so that a crash or a full disk never leaves a half-written file under the real
// name: the bytes go to a temporary file beside `path`, are fsynced, and the temporary file is
// renamed over `path` (then the folder is fsynced, best effort). Used by every writer of the
// project: checkpoints, images, split files, logs and plots.
#include <cstddef>
#include <string>
#include <string_view>

namespace tl {

// Throws std::runtime_error "<path>: cannot write (<step>: <reason>)"; the temporary file is removed.
void write_file_atomic(const std::string& path, const void* data, size_t size);
inline void write_file_atomic(const std::string& path, std::string_view text) {
  write_file_atomic(path, text.data(), text.size());
}

}  // namespace tl
