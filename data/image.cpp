// Decoding and encoding go through Debian's compiled stb (libstb): the headers are included for the
// declarations only, no STB_*_IMPLEMENTATION here. stb_image keeps its failure reason per thread
// (STBI_THREAD_LOCAL), so decoding from several loader threads at once is safe.
#include "data/image.h"

#include <stb_image.h>
#include <stb_image_write.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "tensor/file_util.h"
#include "tensor/parallel.h"

namespace tl::data {

Image Image::blank(int64_t height, int64_t width, int64_t channels, uint8_t fill) {
  if (height < 0 || width < 0 || channels < 1 || channels > 4)
    throw std::invalid_argument("Image::blank: bad geometry " + std::to_string(height) + "x" + std::to_string(width) +
                                "x" + std::to_string(channels) + " (sizes >= 0, channels 1 to 4)");
  Image im{height, width, channels, {}};
  im.pixels.assign(static_cast<size_t>(height * width * channels), fill);
  return im;
}

std::string image_str(const Image& image) {
  return std::to_string(image.height) + "x" + std::to_string(image.width) + "x" + std::to_string(image.channels);
}

void Image::check(const char* op) const {
  std::string what;
  if (height < 1 || width < 1) what = "is empty";
  else if (channels < 1 || channels > 4) what = "has " + std::to_string(channels) + " channels (1 to 4 expected)";
  else if (static_cast<int64_t>(pixels.size()) != numel())
    what = "holds " + std::to_string(pixels.size()) + " bytes, expected " + std::to_string(numel());
  if (!what.empty()) throw std::invalid_argument(std::string(op) + ": image " + image_str(*this) + " " + what);
}

namespace {

struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};

// Decodes `path` with stb; `channels` 0 keeps the file's own count.
Image decode(const std::string& path, int64_t channels, const char* op) {
  if (channels < 0 || channels > 4)
    throw std::invalid_argument(std::string(op) + ": channels must be 0 (as stored) or 1 to 4, got " +
                                std::to_string(channels));
  std::unique_ptr<FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
  if (!file) {
    if (errno == ENOENT) throw std::runtime_error(path + ": no such file");
    throw std::runtime_error(path + ": cannot open (" + std::strerror(errno) + ")");
  }
  int w = 0, h = 0, stored = 0;
  std::unique_ptr<stbi_uc, void (*)(void*)> data(
      stbi_load_from_file(file.get(), &w, &h, &stored, static_cast<int>(channels)), stbi_image_free);
  if (!data) {
    const char* reason = stbi_failure_reason();
    throw std::runtime_error(path + ": cannot decode image (" + (reason ? reason : "unknown reason") + ")");
  }
  Image im{h, w, channels ? channels : stored, {}};
  im.pixels.assign(data.get(), data.get() + im.numel());
  return im;
}

// stb_image_write's output callback: appends to a byte vector.
void append_bytes(void* context, void* data, int size) {
  auto* out = static_cast<std::vector<uint8_t>*>(context);
  const auto* p = static_cast<const uint8_t*>(data);
  out->insert(out->end(), p, p + size);
}

void check_encodable(const Image& image, const char* op, int64_t max_side) {
  image.check(op);
  if (image.height > max_side || image.width > max_side)
    throw std::invalid_argument(std::string(op) + ": image " + image_str(image) + " is larger than " +
                                std::to_string(max_side) + " pixels on a side");
}

}  // namespace

Image read_image(const std::string& path, int64_t channels) { return decode(path, channels, "read_image"); }

Image read_mask(const std::string& path) {
  Image src = decode(path, 0, "read_mask");
  // Colour channels only: with 2 or 4 channels the last one is alpha.
  const int64_t c = src.channels, colours = (c == 2 || c == 4) ? c - 1 : c;
  Image mask{src.height, src.width, 1, std::vector<uint8_t>(static_cast<size_t>(src.height * src.width))};
  for (int64_t i = 0; i < src.height * src.width; ++i) {
    const uint8_t* p = src.pixels.data() + i * c;
    bool car = false;
    for (int64_t k = 0; k < colours; ++k) car = car || p[k] > 0;
    mask.pixels[static_cast<size_t>(i)] = car ? 1 : 0;
  }
  return mask;
}

void write_png(const std::string& path, const Image& image) {
  check_encodable(image, "write_png", INT_MAX / 4);
  std::vector<uint8_t> bytes;
  const int w = static_cast<int>(image.width), h = static_cast<int>(image.height), c = static_cast<int>(image.channels);
  if (!stbi_write_png_to_func(append_bytes, &bytes, w, h, c, image.pixels.data(), w * c))
    throw std::runtime_error(path + ": cannot encode PNG (" + image_str(image) + ")");
  write_file_atomic(path, bytes.data(), bytes.size());
}

void write_jpeg(const std::string& path, const Image& image, int quality) {
  check_encodable(image, "write_jpeg", 65535);  // the JPEG format's limit
  if (quality < 1 || quality > 100)
    throw std::invalid_argument("write_jpeg: quality must be 1 to 100, got " + std::to_string(quality));
  std::vector<uint8_t> bytes;
  if (!stbi_write_jpg_to_func(append_bytes, &bytes, static_cast<int>(image.width), static_cast<int>(image.height),
                              static_cast<int>(image.channels), image.pixels.data(), quality))
    throw std::runtime_error(path + ": cannot encode JPEG (" + image_str(image) + ")");
  write_file_atomic(path, bytes.data(), bytes.size());
}

Tensor image_to_tensor(const Image& image) {
  image.check("image_to_tensor");
  const int64_t H = image.height, W = image.width, C = image.channels;
  Tensor out = empty({C, H, W});
  float* dst = out.data_ptr<float>();  // (C, H, W)
  const uint8_t* src = image.pixels.data();  // (H, W, C)
  parallel_for(0, H, 16, [&](int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y)
      for (int64_t x = 0; x < W; ++x)
        for (int64_t c = 0; c < C; ++c) dst[(c * H + y) * W + x] = static_cast<float>(src[(y * W + x) * C + c]) / 255.0f;
  });
  return out;
}

Tensor mask_to_tensor(const Image& mask) {
  mask.check("mask_to_tensor");
  if (mask.channels != 1)
    throw std::invalid_argument("mask_to_tensor: a mask has 1 channel, got image " + image_str(mask));
  Tensor out = empty({1, mask.height, mask.width});
  float* dst = out.data_ptr<float>();  // (1, H, W)
  for (int64_t i = 0; i < mask.numel(); ++i) dst[i] = mask.pixels[static_cast<size_t>(i)] > 0 ? 1.0f : 0.0f;
  return out;
}

Image tensor_to_image(const Tensor& t) {
  if (!t.defined()) throw std::invalid_argument("tensor_to_image: undefined tensor");
  if (!is_floating(t.dtype()))
    throw std::invalid_argument(std::string("tensor_to_image: expected float32 or float64 values in [0, 1], got ") +
                                dtype_name(t.dtype()));
  const bool chw = t.dim() == 3;
  if (!(t.dim() == 2 || (chw && t.size(0) >= 1 && t.size(0) <= 4)) || t.numel() == 0)
    throw std::invalid_argument("tensor_to_image: expected (C, H, W) with C in 1..4 or (H, W), got " +
                                shape_str(t.shape()));
  const int64_t C = chw ? t.size(0) : 1, H = t.size(chw ? 1 : 0), W = t.size(chw ? 2 : 1);
  const std::vector<float> v = t.to_vector<float>();  // (C, H, W) row-major
  Image im = Image::blank(H, W, C);
  parallel_for(0, H, 16, [&](int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y)
      for (int64_t x = 0; x < W; ++x)
        for (int64_t c = 0; c < C; ++c) {
          float f = v[static_cast<size_t>((c * H + y) * W + x)];
          f = std::isnan(f) ? 0.0f : std::clamp(f, 0.0f, 1.0f);
          im.at(y, x, c) = static_cast<uint8_t>(std::lround(f * 255.0f));
        }
  });
  return im;
}

}  // namespace tl::data
