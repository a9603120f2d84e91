// Decoding and encoding go through Debian's compiled stb (libstb): the headers are included for the
// declarations only, no STB_*_IMPLEMENTATION here. stb_image keeps its failure reason per thread
// (STBI_THREAD_LOCAL), so decoding from several loader threads at once is safe.
#include "data/image.h"

#include <stb_image.h>
#include <stb_image_write.h>

#include <algorithm>
#include <atomic>
#include <cctype>
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

std::atomic<int64_t> g_max_image_pixels{kDefaultMaxImagePixels};

}  // namespace

int64_t max_image_pixels() { return g_max_image_pixels.load(std::memory_order_relaxed); }

void set_max_image_pixels(int64_t pixels) {
  if (pixels < 1)
    throw std::invalid_argument("set_max_image_pixels: the limit must be at least 1 pixel, got " + std::to_string(pixels));
  g_max_image_pixels.store(pixels, std::memory_order_relaxed);
}

namespace {

struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<FILE, FileCloser>;

File open_image(const std::string& path) {
  File file(std::fopen(path.c_str(), "rb"));
  if (!file) {
    if (errno == ENOENT) throw std::runtime_error(path + ": no such file");
    throw std::runtime_error(path + ": cannot open (" + std::strerror(errno) + ")");
  }
  return file;
}

[[noreturn]] void throw_decode_error(const std::string& path) {
  const char* reason = stbi_failure_reason();
  throw std::runtime_error(path + ": cannot decode image (" + (reason ? reason : "unknown reason") + ")");
}

// The format that the file's first bytes announce, or "" when none of the usual ones.
const char* sniff_format(FILE* file) {
  uint8_t sig[4] = {};
  const size_t n = std::fread(sig, 1, sizeof sig, file);
  std::rewind(file);
  if (n >= 2 && sig[0] == 0xFF && sig[1] == 0xD8) return "JPEG";
  if (n >= 4 && sig[0] == 0x89 && sig[1] == 'P' && sig[2] == 'N' && sig[3] == 'G') return "PNG";
  if (n >= 4 && std::memcmp(sig, "GIF8", 4) == 0) return "GIF";
  if (n >= 2 && sig[0] == 'B' && sig[1] == 'M') return "BMP";
  return "";
}

// stb_image (Debian's 2022-09 headers) trusts a JPEG's Huffman tables: a DHT segment whose 16 code
// counts add up to more than 256 makes it write that many symbol bytes into a 256-entry table, past
// the end of its decoder state, already in stbi_info (found by fuzz/fuzz_image). This walks the
// markers as stb does (fill bytes and junk between segments skipped, several tables per segment,
// entropy-coded data after SOS skipped up to the next marker) and finds such a table before stb
// reads the file. False: a table is too large. Anything else malformed is left to stb to report.
// The file is left at its start.
bool jpeg_huffman_tables_fit(FILE* file) {
  struct Rewind {
    FILE* f;
    ~Rewind() { std::rewind(f); }
  } rewind_at_exit{file};
  auto byte = [&] { return std::fgetc(file); };
  auto next_marker = [&] {  // as stb: scan to 0xFF, skip fill bytes; -1 at the end of the file
    int c = byte();
    while (c != EOF && c != 0xFF) c = byte();
    while (c == 0xFF) c = byte();
    return c;
  };
  if (byte() != 0xFF) return true;  // not a JPEG (stb wants 0xFF first, then fill bytes, then SOI)
  std::rewind(file);
  if (next_marker() != 0xD8) return true;
  for (int m = next_marker(); m != EOF && m != 0xD9;) {  // up to EOI
    if (m == 0x01 || m == 0xD8 || (m >= 0xD0 && m <= 0xD7)) {  // markers without a length
      m = next_marker();
      continue;
    }
    const int hi = byte(), lo = byte();
    if (lo == EOF) return true;
    int length = (hi << 8 | lo) - 2;
    if (m == 0xC4) {  // DHT: read exactly as stb reads it, past the segment's length if it says so
      while (length > 0) {
        const int q = byte();
        if (q == EOF || (q >> 4) > 1 || (q & 15) > 3) return true;  // stb refuses these itself
        int codes = 0;
        for (int i = 0; i < 16; ++i) codes += std::max(byte(), 0);  // stb reads 0 past the end
        if (codes > 256) return false;
        if (std::fseek(file, codes, SEEK_CUR) != 0) return true;
        length -= 17 + codes;
      }
      m = next_marker();
      continue;
    }
    if (length > 0 && std::fseek(file, length, SEEK_CUR) != 0) return true;
    if (m != 0xDA) {
      m = next_marker();
      continue;
    }
    // SOS: entropy-coded data up to the next marker that is not a stuffed 0xFF 0x00 or a restart.
    for (m = 0; m == 0;) {
      int c = byte();
      while (c != EOF && c != 0xFF) c = byte();
      while (c == 0xFF) c = byte();
      if (c == EOF) return true;
      if (c != 0x00 && !(c >= 0xD0 && c <= 0xD7)) m = c;
    }
  }
  return true;
}

// stb_image (the same headers) reads a PNM header's width, height and maximum value into an int
// without a bound: "P5 3000000000 ..." overflows it (undefined behaviour; found by fuzz/fuzz_image).
// This reads the three numbers as stb does (blanks and # comments between them) and says whether each
// fits. The file is left at its start.
bool pnm_numbers_fit(FILE* file) {
  struct Rewind {
    FILE* f;
    ~Rewind() { std::rewind(f); }
  } rewind_at_exit{file};
  const int p = std::fgetc(file), t = std::fgetc(file);
  if (p != 'P' || (t != '5' && t != '6')) return true;  // the only PNM kinds stb reads
  auto space = [](int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; };
  int c = std::fgetc(file);
  for (int number = 0; number < 3; ++number) {
    for (;;) {  // blanks and comments
      while (space(c)) c = std::fgetc(file);
      if (c != '#') break;
      while (c != EOF && c != '\n' && c != '\r') c = std::fgetc(file);
    }
    for (int64_t value = 0; c >= '0' && c <= '9'; c = std::fgetc(file)) {
      value = value * 10 + (c - '0');
      if (value > INT_MAX) return false;
    }
  }
  return true;
}

// stb_image checks a PNG chunk's declared length against the end of its buffer by forming the
// pointer `current + length`, which for a length near 2^32 overflows (undefined behaviour; found by
// fuzz/fuzz_image). This walks the chunks up to IEND and returns the first whose declared length runs
// past the end of the file, as "TYPE: N bytes", or "" when all fit (or the bytes are not a PNG).
std::string png_chunk_past_end(const std::vector<uint8_t>& bytes) {
  static const uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (bytes.size() < 8 || !std::equal(kSignature, kSignature + 8, bytes.begin())) return "";
  for (size_t at = 8; at + 8 <= bytes.size();) {
    const uint64_t length = (uint64_t{bytes[at]} << 24) | (uint64_t{bytes[at + 1]} << 16) |
                            (uint64_t{bytes[at + 2]} << 8) | uint64_t{bytes[at + 3]};
    std::string type(reinterpret_cast<const char*>(bytes.data() + at + 4), 4);
    for (char& c : type)
      if (!std::isalpha(static_cast<unsigned char>(c))) c = '?';  // a corrupt type is printed readably
    if (at + 12 + length > bytes.size()) return type + ": " + std::to_string(length) + " bytes";
    if (type == "IEND") return "";
    at += 12 + length;  // length, type, data, CRC
  }
  return "";
}

// The whole file, for stb's memory reader. stb's file reader "rewinds" between the probes of its
// formats only to the start of its current 128-byte buffer, so a file that one probe reads past byte
// 128 is probed by the next from the middle: a broken JPEG was taken for the PNM that starts at its
// byte 128 (found by fuzz/fuzz_image). stb takes an int length: larger files are refused.
std::vector<uint8_t> read_bytes(FILE* file, const std::string& path) {
  std::vector<uint8_t> bytes;
  // In growing chunks: pipes have no size to ask for, and a small file costs no large buffer.
  for (size_t n = 1, chunk = 1 << 16; n > 0; chunk = std::min<size_t>(2 * chunk, 1 << 24)) {
    const size_t at = bytes.size();
    if (at > static_cast<size_t>(INT_MAX))
      throw std::runtime_error(path + ": is more than the " + std::to_string(INT_MAX) +
                               " bytes an image file may have");
    bytes.resize(at + chunk);
    n = std::fread(bytes.data() + at, 1, chunk, file);
    bytes.resize(at + n);
  }
  if (std::ferror(file)) throw std::runtime_error(path + ": cannot read (" + std::strerror(errno) + ")");
  if (bytes.size() > static_cast<size_t>(INT_MAX))
    throw std::runtime_error(path + ": is more than the " + std::to_string(INT_MAX) + " bytes an image file may have");
  std::rewind(file);
  return bytes;
}

// The header of the open file (whose bytes are `bytes`), checked against the pixel limit; the file is
// left at its start.
ImageInfo read_header(FILE* file, const std::vector<uint8_t>& bytes, const std::string& path) {
  if (bytes.empty()) throw std::runtime_error(path + ": empty file");
  if (!jpeg_huffman_tables_fit(file))
    throw std::runtime_error(path + ": cannot decode image (corrupt JPEG: a Huffman table declares more than 256 "
                             "codes)");
  if (!pnm_numbers_fit(file))
    throw std::runtime_error(path + ": cannot decode image (corrupt PNM: a number in its header is too large)");
  int w = 0, h = 0, stored = 0;
  if (!stbi_info_from_memory(bytes.data(), static_cast<int>(bytes.size()), &w, &h, &stored)) {
    // stb tries every format in turn and keeps the last one's reason ("unknown image type"); name the
    // format the file announces instead, whose header is then cut short or corrupt.
    const std::string format = sniff_format(file);
    if (format.empty()) throw_decode_error(path);
    throw std::runtime_error(path + ": cannot decode image (its " + format +
                             " header is unreadable: truncated or corrupt)");
  }
  if (h < 1 || w < 1)  // a PNM header can say 0 (stb then "decodes" an image with no pixels)
    throw std::runtime_error(path + ": cannot decode image (its header declares " + std::to_string(h) + "x" +
                             std::to_string(w) + " pixels, HxW: an empty image)");
  const int64_t pixels = static_cast<int64_t>(h) * w, limit = max_image_pixels();
  if (pixels > limit)
    throw std::runtime_error(path + ": declares " + std::to_string(h) + "x" + std::to_string(w) + " pixels (HxW, " +
                             std::to_string(pixels) + " in all), above the limit of " + std::to_string(limit) +
                             " pixels; refused before decoding as a possible decompression bomb (raise the limit "
                             "with --max-pixels N)");
  return {h, w, stored};
}

// Skips GIF data sub-blocks (a size byte, then that many bytes) up to and including the terminator
// (size 0). False when the file ends first.
bool skip_gif_sub_blocks(FILE* file) {
  for (;;) {
    const int size = std::fgetc(file);
    if (size == EOF) return false;
    if (size == 0) return true;
    if (std::fseek(file, size, SEEK_CUR) != 0) return false;
  }
}

// stb decodes a GIF's first frame from whatever data there is and, when the file ends early, returns
// an image whose missing part is garbage; for a mask that is a silently wrong label. The frame is
// complete when its LZW data reaches its block terminator, so walk the blocks up to there (header,
// logical screen descriptor, global colour table, extensions, image descriptor, local colour table)
// without decoding. Anything else that is malformed is left to stb to report.
bool gif_first_frame_complete(FILE* file) {
  uint8_t head[13];  // "GIF89a", then the logical screen descriptor
  if (std::fread(head, 1, sizeof head, file) != sizeof head) return false;
  auto colour_table = [](uint8_t flags) -> long { return flags & 0x80 ? 3L << ((flags & 7) + 1) : 0; };
  if (std::fseek(file, colour_table(head[10]), SEEK_CUR) != 0) return false;
  for (;;) {
    const int tag = std::fgetc(file);
    if (tag == EOF) return false;
    if (tag == 0x21) {  // extension: a label, then sub-blocks
      if (std::fgetc(file) == EOF || !skip_gif_sub_blocks(file)) return false;
    } else if (tag == 0x2C) {  // image descriptor: position, size, flags; then the LZW code size and data
      uint8_t desc[9];
      if (std::fread(desc, 1, sizeof desc, file) != sizeof desc) return false;
      if (std::fseek(file, colour_table(desc[8]), SEEK_CUR) != 0) return false;
      return std::fgetc(file) != EOF && skip_gif_sub_blocks(file);
    } else {
      return true;
    }
  }
}

bool is_gif(FILE* file) {
  char sig[4] = {};
  const bool gif = std::fread(sig, 1, 4, file) == 4 && std::memcmp(sig, "GIF8", 4) == 0;
  std::rewind(file);
  return gif;
}

// Decodes `path` with stb; `channels` 0 keeps the file's own count. The header comes first, so a
// refused image costs no pixel memory.
Image decode(const std::string& path, int64_t channels, const char* op) {
  if (channels < 0 || channels > 4)
    throw std::invalid_argument(std::string(op) + ": channels must be 0 (as stored) or 1 to 4, got " +
                                std::to_string(channels));
  File file = open_image(path);
  const std::vector<uint8_t> bytes = read_bytes(file.get(), path);
  read_header(file.get(), bytes, path);
  // Only the decoder walks the chunks past IHDR, so the header alone (read_image_info) needs no check.
  if (const std::string chunk = png_chunk_past_end(bytes); !chunk.empty())
    throw std::runtime_error(path + ": cannot decode image (truncated or corrupt PNG: chunk " + chunk +
                             " run past the end of the file, " + std::to_string(bytes.size()) + " bytes)");
  if (is_gif(file.get())) {
    if (!gif_first_frame_complete(file.get()))
      throw std::runtime_error(path + ": truncated GIF (the file ends inside its first frame)");
    std::rewind(file.get());
  }
  int w = 0, h = 0, stored = 0;
  std::unique_ptr<stbi_uc, void (*)(void*)> data(
      stbi_load_from_memory(bytes.data(), static_cast<int>(bytes.size()), &w, &h, &stored, static_cast<int>(channels)),
      stbi_image_free);
  if (!data) throw_decode_error(path);
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

ImageInfo read_image_info(const std::string& path) {
  File file = open_image(path);
  return read_header(file.get(), read_bytes(file.get(), path), path);
}

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
