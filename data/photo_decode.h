#pragma once
// Decoding a photo straight to a training size. Two decoders:
//   Stb    the whole photo with stb (read_image), then the area resize (data/resize.h);
//   Turbo  a JPEG with libjpeg-turbo at a reduced DCT scale (1/2, 1/4 or 1/8: the decoder computes
//          only the low frequencies of each 8x8 block, so it does a fraction of the work), chosen as
//          the smallest that keeps at least kTurboMargin times the target size on both axes, then the
//          same area resize the rest of the way. A non-JPEG file, or a target close to the photo's
//          size, takes the Stb path. Built only with libturbojpeg0-dev (optional): without it Turbo
//          is refused by name.
// Both check the header first (read_image_info): the pixel limit and the hostile-file checks of
// data/image.h apply before any pixel memory is allocated.
#include <cstdint>
#include <string>

#include "data/image.h"

namespace tl::data {

enum class PhotoDecoder { Stb, Turbo };

const char* photo_decoder_name(PhotoDecoder d);  // "stb", "turbo"
// "stb" or "turbo"; anything else is std::invalid_argument listing both. "turbo" in a build without
// libjpeg-turbo is std::invalid_argument saying so.
PhotoDecoder parse_photo_decoder(const std::string& name);
bool turbo_jpeg_available();

// The reduced scale keeps at least this many times the target on both axes, so that the final area
// resize still averages over at least 2x2 decoded pixels.
inline constexpr int64_t kTurboMargin = 2;

// The DCT scale denominator (1, 2, 4 or 8) Turbo uses for a photo_h x photo_w JPEG and this target.
int64_t turbo_scale_denominator(int64_t photo_h, int64_t photo_w, int64_t height, int64_t width);

// The photo at `path` as RGB (gray replicated, alpha dropped, as read_image(path, 3)), resized to
// height x width with Interp::Auto. Errors as read_image, each naming the file.
// `denominator` 0 picks the scale with turbo_scale_denominator; 1, 2, 4 or 8 forces one (for measuring).
Image read_photo_resized(const std::string& path, int64_t height, int64_t width, PhotoDecoder decoder,
                         int64_t denominator = 0);

}  // namespace tl::data
