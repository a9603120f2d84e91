#pragma once
// 8-bit images in memory, their decoding and encoding (stb_image, stb_image_write), and the
// conversions to and from tensors that the dataset and the prediction writer use.
#include <cstdint>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace tl::data {

// An 8-bit image, row-major HWC: pixel (y, x) channel c is pixels[(y * width + x) * channels + c].
// Channels: 1 gray (or a mask), 2 gray + alpha, 3 RGB, 4 RGBA. A plain aggregate, so
// `Image{h, w, c, pixels}` works; `check` verifies that the pieces agree.
struct Image {
  int64_t height = 0, width = 0, channels = 0;
  std::vector<uint8_t> pixels;  // (H, W, C), height * width * channels bytes

  // A height x width x channels image with every byte set to `fill`.
  static Image blank(int64_t height, int64_t width, int64_t channels, uint8_t fill = 0);

  uint8_t& at(int64_t y, int64_t x, int64_t c = 0) { return pixels[static_cast<size_t>((y * width + x) * channels + c)]; }
  uint8_t at(int64_t y, int64_t x, int64_t c = 0) const {
    return pixels[static_cast<size_t>((y * width + x) * channels + c)];
  }
  uint8_t* row(int64_t y) { return pixels.data() + y * width * channels; }
  const uint8_t* row(int64_t y) const { return pixels.data() + y * width * channels; }
  int64_t numel() const { return height * width * channels; }
  bool empty() const { return pixels.empty(); }

  // Throws std::invalid_argument "<op>: ..." unless the image is non-empty, has 1 to 4 channels
  // and holds exactly height * width * channels bytes.
  void check(const char* op) const;
};

// "HxWxC", as errors print an image's geometry.
std::string image_str(const Image& image);

// The most pixels (height * width) an image file may declare. A larger one is refused from its header,
// before anything is decoded: a decompression bomb (a 100 KB JPEG whose frame header claims 26000x26000)
// would otherwise cost gigabytes before failing, or be decoded into a 26000x26000 prediction. The
// default is Pillow's Image.MAX_IMAGE_PIXELS (1024 * 1024 * 1024 / 4 / 3, about 9459x9459).
inline constexpr int64_t kDefaultMaxImagePixels = 89'478'485;

// The process-wide limit that read_image_info, read_image and read_mask apply, as Pillow's module-level
// MAX_IMAGE_PIXELS; the apps set it from --max-pixels. Thread-safe (atomic). Throws
// std::invalid_argument unless pixels >= 1.
int64_t max_image_pixels();
void set_max_image_pixels(int64_t pixels);

// What a file's header declares, read without decoding the pixels.
struct ImageInfo {
  int64_t height = 0, width = 0, channels = 0;  // channels as stored (a GIF reports 4, RGBA)
};

// Reads the header of `path` only (stb's stbi_info): memory does not grow with the declared size.
// Errors are std::runtime_error naming the file: those of read_image for a missing, empty or
// undecodable file, and "<path>: declares HxW ... above the limit of N pixels ..." when height * width
// is above max_image_pixels(). Thread-safe.
ImageInfo read_image_info(const std::string& path);

// Decodes a JPEG, PNG, BMP, GIF (first frame), TGA, PSD, PNM or HDR file (8 bits per channel).
// channels: 0 keeps the file's own (a GIF decodes as 4, RGBA), 1 to 4 converts as Pillow's convert:
// 3 = RGB replicates gray into R, G and B and drops alpha, 1 = gray (luma). The header is checked
// first (read_image_info), so an image above max_image_pixels() is refused before any pixel memory is
// allocated; a GIF whose first frame ends early is refused as truncated (stb would fill the rest with
// garbage). Errors are std::runtime_error: "<path>: no such file", "<path>: cannot open (<reason>)",
// "<path>: empty file", "<path>: cannot decode image (<stb's reason>)", the limit's message above, or
// "<path>: truncated GIF (...)". Thread-safe.
Image read_image(const std::string& path, int64_t channels = 0);

// Decodes a segmentation mask into one channel of {0, 1}: a pixel is 1 ("car") when any of its colour
// channels is above 0 (alpha is ignored). A palette image (the Kaggle Carvana GIFs) stores indices
// {0, 1}; stb expands them through the palette, typically to black and white {0, 255}, and this rule
// gives {0, 1} whatever the palette's colours are, as long as index 0 is black. Masks must be stored
// losslessly (GIF, PNG, BMP): JPEG noise near black would count as car. Errors as read_image.
Image read_mask(const std::string& path);

// Encode and write atomically: the bytes go to a temporary file in the same folder, are flushed to
// disk, and replace `path` by a rename, so a reader never sees a partial file. On failure the
// temporary file is removed and a std::runtime_error names `path`; a bad image (see Image::check)
// or quality is std::invalid_argument, thrown before anything is written.
void write_png(const std::string& path, const Image& image);
void write_jpeg(const std::string& path, const Image& image, int quality = 90);  // quality 1..100; alpha dropped

// (H, W, C) uint8 -> float32 (C, H, W) in [0, 1] (value / 255), on the CPU.
Tensor image_to_tensor(const Image& image);
// A one-channel mask -> float32 (1, H, W) of {0, 1} (any value above 0 is 1).
Tensor mask_to_tensor(const Image& mask);
// float32 or float64 (C, H, W) with C in 1..4, or (H, W), on any device and with any strides ->
// an 8-bit image: each value clamped to [0, 1], times 255, rounded to nearest (NaN becomes 0).
Image tensor_to_image(const Tensor& t);

}  // namespace tl::data
