// data/rle: rle_decode on any text and mask size refuses with std::invalid_argument or returns a
// {0, 1} mask of that size, which rle_encode and rle_decode carry unchanged.
// Input: byte 0 and byte 1 give the mask's height and width (1 to 64), the rest is the RLE text.
#include <cstdint>
#include <stdexcept>
#include <string>

#include "data/rle.h"
#include "fuzz/fuzz_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const int64_t height = 1 + data[0] % 64, width = 1 + data[1] % 64;
  const std::string text(reinterpret_cast<const char*>(data + 2), size - 2);
  tl::data::Image mask;
  try {
    mask = tl::data::rle_decode(text, height, width);
  } catch (const std::invalid_argument&) {
    return 0;
  }
  if (mask.height != height || mask.width != width || mask.channels != 1) tl::fuzz::broken("wrong mask geometry");
  for (uint8_t v : mask.pixels)
    if (v > 1) tl::fuzz::broken("a mask value other than 0 and 1");
  const std::string canonical = tl::data::rle_encode(mask);
  if (tl::data::rle_decode(canonical, height, width).pixels != mask.pixels) tl::fuzz::broken("encode/decode round trip");
  if (tl::data::rle_encode(tl::data::rle_decode(canonical, height, width)) != canonical)
    tl::fuzz::broken("the encoding is not canonical");
  return 0;
}
