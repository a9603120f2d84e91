#pragma once
// The one file writer of the project: checkpoints, images, split files, logs and plots all go
// through write_file_atomic, so that a crash or a full disk never leaves a half-written file under
// the real name. What happens depends on what `path` names:
//   - nothing, or a regular file: the bytes go to a temporary file beside it, are fsynced, and the
//     temporary file is renamed over `path` (then the folder is fsynced, best effort). A reader sees
//     the old file or the new one, never a partial one; a failure leaves the old one. A replaced
//     file keeps its permission bits.
//   - a symbolic link (a chain of them, relative or absolute): followed to its final target, which
//     is then written as above. The link stays a link; a dangling link creates its target.
//   - a FIFO, a character device (/dev/null, a terminal), or an open file of the process named
//     through /proc (/dev/stdout, /dev/fd/N): written directly, without atomicity, since a rename
//     would replace the special file with a regular one. Opening a FIFO waits for its reader.
//   - anything else (a folder, a block device, a socket): refused before anything is written.
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace tl {

// One piece of the file's contents, written in order after the pieces before it.
struct ByteRange {
  const void* data;
  size_t size;
};

// Throws std::runtime_error "<path>: cannot write (<step>: <reason>)" (ENOSPC from /dev/full reads
// "write to character device /dev/full: No space left on device"); a temporary file is removed.
void write_file_atomic(const std::string& path, const std::vector<ByteRange>& pieces);
inline void write_file_atomic(const std::string& path, const void* data, size_t size) {
  write_file_atomic(path, std::vector<ByteRange>{{data, size}});
}
inline void write_file_atomic(const std::string& path, std::string_view text) {
  write_file_atomic(path, text.data(), text.size());
}

}  // namespace tl
