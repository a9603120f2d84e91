// data/split: read_split_csv on any bytes refuses with std::runtime_error naming the file, or
// returns samples with both paths non-empty; write_split_csv then read_split_csv gives them back.
#include <cstdint>
#include <stdexcept>
#include <string>

#include "data/split.h"
#include "fuzz/fuzz_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = tl::fuzz::temp_path("split.csv"), again = tl::fuzz::temp_path("split_again.csv");
  tl::fuzz::put_file(path, data, size);
  std::vector<tl::data::Sample> samples;
  try {
    samples = tl::data::read_split_csv(path);
  } catch (const std::runtime_error& e) {
    if (std::string(e.what()).rfind(path, 0) != 0) tl::fuzz::broken("an error that does not start with the path");
    return 0;
  }
  for (const tl::data::Sample& s : samples)
    if (s.image.empty() || s.mask.empty()) tl::fuzz::broken("an empty path was accepted");
  // The reader resolves relative paths against the file's folder, so they come back absolute: the
  // round trip compares what a second read of the written file resolves to.
  tl::data::write_split_csv(again, samples);
  if (tl::data::read_split_csv(again) != samples) tl::fuzz::broken("write/read round trip");
  return 0;
}
