#pragma once
// The readers that take a path get the fuzzer's bytes through one file per process under the
// temporary folder, rewritten for every input.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace tl::fuzz {

// In TL_FUZZ_TMP when set (scripts/fuzz.sh makes one in /dev/shm and removes it after the run, crash
// or not), else in /dev/shm when there is one: memory, so that the writers' fsync costs nothing.
inline std::string temp_path(const char* name) {
  std::error_code ec;
  const char* env = std::getenv("TL_FUZZ_TMP");
  const std::filesystem::path dir = env && *env ? std::filesystem::path(env)
                                    : std::filesystem::is_directory("/dev/shm", ec) && ::access("/dev/shm", W_OK) == 0
                                        ? std::filesystem::path("/dev/shm")
                                        : std::filesystem::temp_directory_path();
  const std::string path = (dir / ("tl_fuzz_" + std::to_string(::getpid()) + "_" + name)).string();
  static std::vector<std::string>* made = [] {
    std::atexit([] {
      for (const std::string& p : *made) ::unlink(p.c_str());
    });
    return new std::vector<std::string>();
  }();
  made->push_back(path);
  return path;
}

// Writes [data, data + size) to `path`, replacing it; aborts when it cannot (that is no finding).
inline void put_file(const std::string& path, const uint8_t* data, size_t size) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || (size && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) {
    std::perror(path.c_str());
    std::abort();
  }
}

// A property the reader must keep was broken: report and crash, so the fuzzer saves the input.
[[noreturn]] inline void broken(const char* what) {
  std::fprintf(stderr, "fuzz: property broken: %s\n", what);
  std::abort();
}

}  // namespace tl::fuzz
