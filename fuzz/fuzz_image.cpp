// data/image: the decode path of a photo from its first byte, through the public entry points on the
// bytes as a file: read_image_info (our header checks, then stb's header probe), read_image (the
// header first, then stb's decoder) and read_mask. Each refuses with std::runtime_error naming the
// file, or returns an image whose pieces agree with each other and with stb's header probe on the
// same bytes in memory (stbi_info_from_memory, asked only once our checks passed: stb's own probe
// is not safe on every input). The pixel limit is lowered so that no input costs much time or memory.
#include <stb_image.h>

#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "data/image.h"
#include "fuzz/fuzz_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = [] {
    tl::data::set_max_image_pixels(1 << 16);  // 256x256: every structure, little time per input
    return tl::fuzz::temp_path("image");
  }();
  if (size > INT_MAX) return 0;
  tl::fuzz::put_file(path, data, size);
  auto refused = [&](const std::runtime_error& e) {
    if (std::string(e.what()).rfind(path, 0) != 0) tl::fuzz::broken("an error that does not start with the path");
  };
  tl::data::ImageInfo info;
  try {
    info = tl::data::read_image_info(path);
  } catch (const std::runtime_error& e) {
    refused(e);
    return 0;
  }
  int w = 0, h = 0, c = 0;
  if (stbi_info_from_memory(data, static_cast<int>(size), &w, &h, &c) != 1 || info.height != h || info.width != w)
    tl::fuzz::broken("read_image_info disagrees with stbi_info_from_memory");
  if (info.height < 1 || info.width < 1 || info.height * info.width > tl::data::max_image_pixels())
    tl::fuzz::broken("read_image_info passed an empty image or one above the pixel limit");
  try {
    const tl::data::Image im = tl::data::read_image(path);
    if (im.height != h || im.width != w || im.numel() != static_cast<int64_t>(im.pixels.size()) || im.channels < 1 ||
        im.channels > 4)
      tl::fuzz::broken("the decoded image disagrees with its header or with itself");
  } catch (const std::runtime_error& e) {
    refused(e);
    return 0;
  }
  try {
    const tl::data::Image mask = tl::data::read_mask(path);
    if (mask.channels != 1 || mask.height != h || mask.width != w) tl::fuzz::broken("read_mask geometry");
    for (uint8_t v : mask.pixels)
      if (v > 1) tl::fuzz::broken("a mask value other than 0 and 1");
  } catch (const std::runtime_error& e) {
    refused(e);
  }
  return 0;
}
