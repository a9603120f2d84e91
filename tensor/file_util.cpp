#include "tensor/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace tl {

namespace {

[[noreturn]] void fail(const std::string& path, const std::string& step, int err) {
  throw std::runtime_error(path + ": cannot write (" + step + ": " + std::strerror(err) + ")");
}

std::string parent_of(const std::string& p) {
  const auto slash = p.find_last_of('/');
  return slash == std::string::npos ? "." : (slash == 0 ? "/" : p.substr(0, slash));
}

std::string base_of(const std::string& p) {
  const auto slash = p.find_last_of('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

// The canonical folder that holds `p` ("" when it cannot be resolved).
std::string real_parent(const std::string& p) {
  char buf[PATH_MAX];
  return ::realpath(parent_of(p).c_str(), buf) ? std::string(buf) : std::string();
}

const char* kind_of(mode_t mode) {
  if (S_ISDIR(mode)) return "folder";
  if (S_ISBLK(mode)) return "block device";
  if (S_ISSOCK(mode)) return "socket";
  if (S_ISFIFO(mode)) return "FIFO";
  if (S_ISCHR(mode)) return "character device";
  return "special file";
}

// Where and how a write to `path` lands.
struct Target {
  std::string path;      // the file written: `path` itself, or the end of its chain of links
  bool direct = false;   // written in place (FIFO, device, open file of the process), not renamed over
  bool exists = false;   // for the atomic write: a regular file whose permissions the new one keeps
  mode_t mode = 0;
  const char* kind = "file";
  int own_fd = -1;  // /proc/<this process>/fd/N: write to descriptor N itself, sharing its offset
};

// The links under /proc/<pid>/fd (reached as /dev/stdout, /dev/fd/N, /proc/self/fd/N) name open
// files, not paths: their text ("pipe:[1234]", a deleted file) cannot be followed. They are opened
// as they are, or, for this process's own descriptors, written through the descriptor.
Target proc_target(const std::string& path, const std::string& p, const std::string& dir) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) fail(path, "stat " + p, errno);
  if (!S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode) && !S_ISCHR(st.st_mode))
    throw std::runtime_error(path + ": cannot write (it is an open " + kind_of(st.st_mode) +
                             "; only regular files, FIFOs and character devices are written)");
  Target t{p, true, false, st.st_mode, "open file of the process", -1};
  const std::string name = base_of(p);
  if (dir == "/proc/" + std::to_string(::getpid()) + "/fd" && !name.empty() && name.size() < 9 &&
      name.find_first_not_of("0123456789") == std::string::npos)
    t.own_fd = std::atoi(name.c_str());
  return t;
}

Target resolve(const std::string& path) {
  std::string p = path;
  for (int hop = 0; hop <= 40; ++hop) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) return {p, false, false, 0, "file", -1};  // created (or its error reported)
    if (S_ISREG(st.st_mode)) return {p, false, true, st.st_mode, "file", -1};
    if (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode)) return {p, true, true, st.st_mode, kind_of(st.st_mode), -1};
    if (!S_ISLNK(st.st_mode))
      throw std::runtime_error(path + ": cannot write (it is a " + kind_of(st.st_mode) +
                               "; only regular files, FIFOs and character devices are written)");
    const std::string dir = real_parent(p);
    if (dir == "/proc" || dir.rfind("/proc/", 0) == 0) return proc_target(path, p, dir);
    char buf[PATH_MAX];
    const ssize_t n = ::readlink(p.c_str(), buf, sizeof buf);
    if (n < 0) fail(path, "read link " + p, errno);
    const std::string to(buf, static_cast<size_t>(n));
    p = to.front() == '/' ? to : parent_of(p) + "/" + to;
  }
  throw std::runtime_error(path + ": cannot write (more than 40 symbolic links to follow)");
}

// Writes all of [data, data + size), across short writes and signals; false with errno set.
bool write_all(int fd, const void* data, size_t size) {
  const auto* bytes = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, bytes, size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) {
      errno = EIO;
      return false;
    }
    bytes += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

void write_direct(const std::string& path, const Target& t, const std::vector<ByteRange>& pieces) {
  const std::string what = std::string(t.kind) + (t.path == path ? "" : " " + t.path);
  int fd = -1;
  if (t.own_fd >= 0) {
    std::fflush(nullptr);  // what stdio holds for that descriptor goes first
    fd = ::fcntl(t.own_fd, F_DUPFD_CLOEXEC, 0);
  } else {
    // A FIFO's open waits for a reader; a regular file behind /proc is rewritten from its start.
    do fd = ::open(t.path.c_str(), O_WRONLY | O_CLOEXEC | (S_ISREG(t.mode) ? O_TRUNC : 0));
    while (fd < 0 && errno == EINTR);
  }
  if (fd < 0) fail(path, "open " + what, errno);
  for (const ByteRange& piece : pieces)
    if (!write_all(fd, piece.data, piece.size)) {
      const int err = errno;
      ::close(fd);
      fail(path, "write to " + what, err);
    }
  if (::close(fd) != 0) fail(path, "close " + what, errno);
}

void write_atomic(const std::string& path, const Target& t, const std::vector<ByteRange>& pieces) {
  static std::atomic<uint64_t> counter{0};
  const std::string tmp = t.path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  const std::string via = t.path == path ? "" : " (the target of the link)";
  auto fail_removing = [&](const std::string& step, int err) {
    ::unlink(tmp.c_str());
    fail(path, step, err);
  };
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) fail(path, "create " + tmp, errno);  // nothing was created: nothing to remove
  if (t.exists) (void)::fchmod(fd, t.mode & 07777);  // best effort: the replaced file's permissions
  for (const ByteRange& piece : pieces)
    if (!write_all(fd, piece.data, piece.size)) {
      const int err = errno;
      ::close(fd);
      fail_removing("write " + tmp, err);
    }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    fail_removing("fsync " + tmp, err);
  }
  if (::close(fd) != 0) fail_removing("close " + tmp, errno);
  if (std::rename(tmp.c_str(), t.path.c_str()) != 0) fail_removing("rename to " + t.path + via, errno);
  // Persist the rename itself; best effort, since some file systems refuse fsync on a folder.
  const int dfd = ::open(parent_of(t.path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace

void write_file_atomic(const std::string& path, const std::vector<ByteRange>& pieces) {
  if (path.empty()) throw std::runtime_error("cannot write a file with an empty name");
  const Target t = resolve(path);
  if (t.direct)
    write_direct(path, t, pieces);
  else
    write_atomic(path, t, pieces);
}

}  // namespace tl
