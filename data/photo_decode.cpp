#include "data/photo_decode.h"

#include <fstream>
#include <iterator>
#include <stdexcept>
#include <vector>

#include "data/resize.h"

#ifdef TL_WITH_TURBOJPEG
#include <turbojpeg.h>
#endif

namespace tl::data {

const char* photo_decoder_name(PhotoDecoder d) { return d == PhotoDecoder::Turbo ? "turbo" : "stb"; }

bool turbo_jpeg_available() {
#ifdef TL_WITH_TURBOJPEG
  return true;
#else
  return false;
#endif
}

PhotoDecoder parse_photo_decoder(const std::string& name) {
  if (name == "stb") return PhotoDecoder::Stb;
  if (name == "turbo") {
    if (!turbo_jpeg_available())
      throw std::invalid_argument("decoder 'turbo': this build has no libjpeg-turbo (install libturbojpeg0-dev and rebuild)");
    return PhotoDecoder::Turbo;
  }
  throw std::invalid_argument("decoder: expected stb or turbo, got '" + name + "'");
}

int64_t turbo_scale_denominator(int64_t photo_h, int64_t photo_w, int64_t height, int64_t width) {
  int64_t denom = 1;
  // libjpeg's scaled size is ceil(side / denom) (TJSCALED).
  for (int64_t d : {2, 4, 8}) {
    const int64_t h = (photo_h + d - 1) / d, w = (photo_w + d - 1) / d;
    if (h >= kTurboMargin * height && w >= kTurboMargin * width) denom = d;
  }
  return denom;
}

namespace {

Image stb_path(const std::string& path, int64_t height, int64_t width) {
  return resize(read_image(path, 3), height, width, Interp::Auto);
}

#ifdef TL_WITH_TURBOJPEG
bool is_jpeg(const std::vector<unsigned char>& bytes) {
  return bytes.size() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF;
}

std::vector<unsigned char> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

struct TjHandle {
  tjhandle h = tjInitDecompress();
  ~TjHandle() {
    if (h) tjDestroy(h);
  }
};
#endif

}  // namespace

Image read_photo_resized(const std::string& path, int64_t height, int64_t width, PhotoDecoder decoder,
                         int64_t denominator) {
  if (denominator != 0 && denominator != 1 && denominator != 2 && denominator != 4 && denominator != 8)
    throw std::invalid_argument("read_photo_resized: denominator must be 0 (automatic), 1, 2, 4 or 8, got " +
                                std::to_string(denominator));
  if (decoder == PhotoDecoder::Stb) return stb_path(path, height, width);
#ifndef TL_WITH_TURBOJPEG
  throw std::invalid_argument(path + ": decoder 'turbo': this build has no libjpeg-turbo");
#else
  // The header checks of data/image.h (pixel limit, hostile tables) come first, as for stb.
  const ImageInfo info = read_image_info(path);
  const int64_t denom = denominator ? denominator : turbo_scale_denominator(info.height, info.width, height, width);
  const std::vector<unsigned char> bytes = file_bytes(path);
  if (!is_jpeg(bytes)) return stb_path(path, height, width);
  TjHandle tj;
  if (!tj.h) throw std::runtime_error(path + ": cannot start the JPEG decoder (" + tjGetErrorStr2(nullptr) + ")");
  int w = 0, h = 0, subsamp = 0, colorspace = 0;
  if (tjDecompressHeader3(tj.h, bytes.data(), bytes.size(), &w, &h, &subsamp, &colorspace) != 0)
    throw std::runtime_error(path + ": cannot decode image (" + tjGetErrorStr2(tj.h) + ")");
  if (colorspace == TJCS_CMYK || colorspace == TJCS_YCCK) return stb_path(path, height, width);
  if (h != info.height || w != info.width)
    throw std::runtime_error(path + ": the JPEG decoder reads " + std::to_string(h) + "x" + std::to_string(w) +
                             " where the header said " + std::to_string(info.height) + "x" + std::to_string(info.width));
  const tjscalingfactor sf{1, static_cast<int>(denom)};
  const int sw = TJSCALED(w, sf), sh = TJSCALED(h, sf);
  Image scaled{sh, sw, 3, std::vector<uint8_t>(static_cast<size_t>(sh) * sw * 3)};
  // A warning (a truncated or corrupt stream) is an error too: the rest of the picture would be filler.
  if (tjDecompress2(tj.h, bytes.data(), bytes.size(), scaled.pixels.data(), sw, 0, sh, TJPF_RGB, 0) != 0)
    throw std::runtime_error(path + ": cannot decode image (" + tjGetErrorStr2(tj.h) + ")");
  return resize(scaled, height, width, Interp::Auto);
#endif
}

}  // namespace tl::data
