// tensor/file_util: the project's one writer, on every kind of path it meets: a new or regular file
// (atomic, permissions kept), a symlink (written at its target, the link kept), a FIFO (written
// directly, read by a thread), /dev/null, /dev/full (ENOSPC reported, the device kept), a character
// device of our own (mknod, as root), the process's open files through /dev/fd, and what it refuses.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "nn/safetensors.h"
#include "tensor/file_util.h"
#include "tests/test_util.h"

using namespace tl;
namespace fs = std::filesystem;
using tl::testing::read_text;

namespace {

struct TempDir : tl::testing::TempDir {
  TempDir() : tl::testing::TempDir("tl_test_file_util") {}
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

std::string kind(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return "missing";
  if (S_ISREG(st.st_mode)) return "regular";
  if (S_ISLNK(st.st_mode)) return "symlink";
  if (S_ISFIFO(st.st_mode)) return "fifo";
  if (S_ISCHR(st.st_mode)) return "chardev";
  if (S_ISDIR(st.st_mode)) return "folder";
  return "other";
}

// The names in `dir`, sorted: a leftover temporary file shows up here.
std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

TEST_CASE("write_file_atomic: a regular file is replaced atomically and keeps its permissions") {
  TempDir dir;
  const std::string path = dir.file("a.txt");
  write_file_atomic(path, "first");
  CHECK(read_text(path) == "first");
  REQUIRE(::chmod(path.c_str(), 0600) == 0);
  struct stat before {};
  REQUIRE(::stat(path.c_str(), &before) == 0);
  write_file_atomic(path, std::vector<ByteRange>{{"sec", 3}, {"ond", 3}});
  struct stat after {};
  REQUIRE(::stat(path.c_str(), &after) == 0);
  char modes[64];
  std::snprintf(modes, sizeof modes, "mode before %o, after %o", before.st_mode & 07777u, after.st_mode & 07777u);
  MESSAGE(modes << "; inode " << before.st_ino << " -> " << after.st_ino);
  CHECK(read_text(path) == "second");
  CHECK((after.st_mode & 07777) == 0600);
  CHECK(after.st_ino != before.st_ino);  // a new file renamed over the old one
  CHECK(names_in(dir.path) == std::vector<std::string>{"a.txt"});
}

TEST_CASE("write_file_atomic: a symlink is written at its target and stays a link") {
  TempDir dir;
  fs::create_directories(dir.path / "real");
  const std::string target = dir.file("real/t.txt");
  write_file_atomic(target, "old");
  fs::create_symlink("real/t.txt", dir.path / "link");   // relative
  fs::create_symlink(dir.path / "link", dir.path / "link2");  // a chain: link2 -> link -> real/t.txt
  write_file_atomic(dir.file("link2"), "new");
  MESSAGE("link2 is " << kind(dir.file("link2")) << ", link is " << kind(dir.file("link")) << ", target is "
                      << kind(target) << " holding '" << read_text(target) << "'");
  CHECK(kind(dir.file("link2")) == "symlink");
  CHECK(kind(dir.file("link")) == "symlink");
  CHECK(kind(target) == "regular");
  CHECK(read_text(target) == "new");
  CHECK(names_in(dir.path / "real") == std::vector<std::string>{"t.txt"});

  // A dangling link creates its target.
  fs::create_symlink("real/fresh.txt", dir.path / "dangling");
  write_file_atomic(dir.file("dangling"), "made");
  CHECK(kind(dir.file("dangling")) == "symlink");
  CHECK(read_text(dir.file("real/fresh.txt")) == "made");

  // safetensors goes through the same writer.
  fs::create_symlink("real/w.safetensors", dir.path / "w_link.safetensors");
  safetensors::save(dir.file("w_link.safetensors"), {{"w", tl::full({3}, 2.0)}});
  CHECK(kind(dir.file("w_link.safetensors")) == "symlink");
  CHECK(safetensors::load(dir.file("real/w.safetensors")).at("w").to_vector<float>() == std::vector<float>{2, 2, 2});
}

TEST_CASE("write_file_atomic: a FIFO is written directly to its reader and stays a FIFO") {
  TempDir dir;
  const std::string fifo = dir.file("pipe");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  std::string payload(200000, 'x');  // more than a pipe buffer: the writer must wait for the reader
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>('a' + i % 26);
  // A second name for the same FIFO: should the writer replace "pipe", the test opens the FIFO by
  // this name to release the waiting reader, and fails instead of hanging.
  const std::string keep = dir.file("pipe_keep");
  REQUIRE(::link(fifo.c_str(), keep.c_str()) == 0);
  std::string got;
  std::thread reader([&] { got = read_text(keep); });
  write_file_atomic(fifo, payload);
  const std::string after = kind(fifo);
  if (after != "fifo") ::close(::open(keep.c_str(), O_WRONLY));
  reader.join();
  MESSAGE("the reader got " << got.size() << " of " << payload.size() << " bytes; the path is " << after);
  CHECK(got == payload);
  CHECK(after == "fifo");
  CHECK(names_in(dir.path) == std::vector<std::string>{"pipe", "pipe_keep"});
}

TEST_CASE("write_file_atomic: /dev/null takes the bytes, /dev/full fails clearly, both stay devices") {
  // First on a FIFO of our own: a writer that would rename over special files stops here, before it
  // could replace the real device nodes.
  TempDir dir;
  const std::string guard = dir.file("guard");
  REQUIRE(::mkfifo(guard.c_str(), 0600) == 0);
  const int held = ::open(guard.c_str(), O_RDWR | O_NONBLOCK);  // a reader, so the write need not wait
  REQUIRE(held >= 0);
  write_file_atomic(guard, "small");
  ::close(held);
  REQUIRE_MESSAGE(kind(guard) == "fifo", "the writer replaced a FIFO: not trying /dev/null and /dev/full");

  write_file_atomic("/dev/null", "nothing");
  CHECK(kind("/dev/null") == "chardev");

  const std::string e = error_of([] { write_file_atomic("/dev/full", "too much"); });
  MESSAGE("/dev/full: " << e);
  CHECK(e.rfind("/dev/full: cannot write (", 0) == 0);
  CHECK(e.find(std::strerror(ENOSPC)) != std::string::npos);
  CHECK(e.find("character device") != std::string::npos);
  CHECK(kind("/dev/full") == "chardev");

  // A checkpoint on /dev/full: the same clear error.
  const std::string s = error_of([] { safetensors::save("/dev/full", {{"w", tl::full({4}, 1.0)}}); });
  MESSAGE("safetensors on /dev/full: " << s);
  CHECK(s.find(std::strerror(ENOSPC)) != std::string::npos);
  CHECK(kind("/dev/full") == "chardev");
}

TEST_CASE("write_file_atomic: a character device of our own (mknod, as root) stays a device") {
  TempDir dir;
  const std::string dev = dir.file("null_copy");
  if (::mknod(dev.c_str(), S_IFCHR | 0600, makedev(1, 3)) != 0) {  // 1:3 is the null device
    MESSAGE("skipped: mknod needs root (" << std::strerror(errno) << ")");
    return;
  }
  write_file_atomic(dev, "into the device");
  MESSAGE(dev << " is " << kind(dev) << " after the write");
  CHECK(kind(dev) == "chardev");
  CHECK(names_in(dir.path) == std::vector<std::string>{"null_copy"});
}

TEST_CASE("write_file_atomic: the process's open files (/dev/fd/N, /proc/self/fd/N) are written through") {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  write_file_atomic("/dev/fd/" + std::to_string(fds[1]), "via dev fd;");
  write_file_atomic("/proc/self/fd/" + std::to_string(fds[1]), "via proc");
  ::close(fds[1]);
  std::string got;
  char buf[256];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) got.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  MESSAGE("the pipe got '" << got << "'");
  CHECK(got == "via dev fd;via proc");

  // A regular file open on a descriptor (as stdout redirected to a file): written at the
  // descriptor's offset, the same file, never replaced by a rename.
  TempDir dir;
  const std::string path = dir.file("out.txt");
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, "head;", 5) == 5);
  struct stat before {};
  REQUIRE(::stat(path.c_str(), &before) == 0);
  write_file_atomic("/dev/fd/" + std::to_string(fd), "body");
  REQUIRE(::write(fd, ";tail", 5) == 5);
  ::close(fd);
  struct stat after {};
  REQUIRE(::stat(path.c_str(), &after) == 0);
  MESSAGE("the file holds '" << read_text(path) << "'");
  CHECK(read_text(path) == "head;body;tail");
  CHECK(after.st_ino == before.st_ino);
}

TEST_CASE("write_file_atomic: a folder is refused before anything is written") {
  TempDir dir;
  fs::create_directories(dir.path / "sub");
  const std::string e = error_of([&] { write_file_atomic(dir.file("sub"), "x"); });
  MESSAGE(e);
  CHECK(e == dir.file("sub") + ": cannot write (it is a folder; only regular files, FIFOs and character devices are written)");
  CHECK(names_in(dir.path) == std::vector<std::string>{"sub"});
  const std::string missing = error_of([&] { write_file_atomic(dir.file("no/such/x.txt"), "x"); });
  MESSAGE(missing);
  CHECK(missing.rfind(dir.file("no/such/x.txt") + ": cannot write (create ", 0) == 0);
}
