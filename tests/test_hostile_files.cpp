// Hostile image files: decompression bombs (headers that declare huge sizes), truncated files, empty
// files, text saved as .jpg, masks of the wrong size. Every one is crafted here at run time from a
// small valid file. Each must give one clear error (a std::exception whose message names the file)
// at bounded memory: the peak resident memory of the process is measured around each case and must
// stay within kMemoryLimit of what it was before. The table of cases, their errors and peak memory is
// printed. Then the apps end to end: train_unet and predict_unet on a folder holding a bomb, and
// inference_panel on a bomb and on a mask of the wrong size.
#include <sys/resource.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <sstream>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/image.h"
#include "nn/checkpoint.h"
#include "tests/test_util.h"

using namespace tl;
using data::Image;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kMiB = 1024 * 1024;
constexpr int64_t kMemoryLimit = 200 * kMiB;  // above the peak before each case

struct TempDir : tl::testing::TempDir {
  TempDir() : tl::testing::TempDir("tl_test_hostile") {}
};

using Bytes = std::vector<uint8_t>;

Bytes read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

// Appends bytes one by one (vector::insert of a braced list trips a false -Warray-bounds in GCC 12).
void add(Bytes& b, std::initializer_list<int> bytes) {
  for (int v : bytes) b.push_back(static_cast<uint8_t>(v));
}

void write_bytes(const std::string& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

// ---- peak memory -------------------------------------------------------------------------------------

// A "VmHWM:" or "VmRSS:" line of /proc/self/status, in bytes (0 when unreadable).
int64_t proc_status_bytes(const std::string& key) {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind(key, 0) == 0) return std::stoll(line.substr(key.size())) * 1024;
  return 0;
}

// The peak resident memory of this process: VmHWM, else getrusage's ru_maxrss.
int64_t peak_rss() {
  if (const int64_t hwm = proc_status_bytes("VmHWM:")) return hwm;
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<int64_t>(ru.ru_maxrss) * 1024;
}

// Resets the peak to the current resident memory (Linux 4.0+: "5" to /proc/self/clear_refs). Where
// that is not permitted the peak counts from the process start, which only makes the check stricter
// for later cases as long as no earlier one was large.
bool reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return out.good();
}

// ---- crafted files -----------------------------------------------------------------------------------

uint32_t crc32(const uint8_t* p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}

void put_be32(Bytes& b, size_t at, uint32_t v) {
  for (int k = 0; k < 4; ++k) b[at + static_cast<size_t>(k)] = static_cast<uint8_t>(v >> (24 - 8 * k));
}

void append_be32(Bytes& b, uint32_t v) {
  b.resize(b.size() + 4);
  put_be32(b, b.size() - 4, v);
}

// A PNG chunk: length, type, data, CRC of type and data.
void append_png_chunk(Bytes& png, const char* type, const Bytes& data) {
  append_be32(png, static_cast<uint32_t>(data.size()));
  const size_t start = png.size();
  png.insert(png.end(), type, type + 4);
  png.insert(png.end(), data.begin(), data.end());
  append_be32(png, crc32(png.data() + start, png.size() - start));
}

Image pattern(int64_t h, int64_t w, int64_t c) {
  Image im = Image::blank(h, w, c);
  for (int64_t i = 0; i < im.numel(); ++i) im.pixels[static_cast<size_t>(i)] = static_cast<uint8_t>((i * 37) % 251);
  return im;
}

// A small valid JPEG (stb_image_write) whose SOF0 frame header is patched to declare height x width.
Bytes jpeg_declaring(const TempDir& dir, int64_t height, int64_t width) {
  data::write_jpeg(dir.file("small.jpg"), pattern(48, 64, 3));
  Bytes b = read_bytes(dir.file("small.jpg"));
  for (size_t i = 2; i + 9 < b.size(); ++i)
    if (b[i] == 0xFF && b[i + 1] == 0xC0) {  // FF C0, length (2), precision (1), height (2), width (2)
      b[i + 5] = static_cast<uint8_t>(height >> 8), b[i + 6] = static_cast<uint8_t>(height);
      b[i + 7] = static_cast<uint8_t>(width >> 8), b[i + 8] = static_cast<uint8_t>(width);
      return b;
    }
  FAIL("no SOF0 marker in the JPEG written by write_jpeg");
  return b;
}

// A small valid PNG whose IHDR is patched to declare height x width, with its CRC fixed so that only
// the size is wrong.
Bytes png_declaring(const TempDir& dir, int64_t height, int64_t width) {
  data::write_png(dir.file("small.png"), pattern(48, 64, 3));
  Bytes b = read_bytes(dir.file("small.png"));
  REQUIRE(b.size() > 33);
  REQUIRE(std::string(b.begin() + 12, b.begin() + 16) == "IHDR");
  put_be32(b, 16, static_cast<uint32_t>(width));
  put_be32(b, 20, static_cast<uint32_t>(height));
  put_be32(b, 29, crc32(b.data() + 12, 17));
  return b;
}

// A valid height x width 8-bit gray PNG of zeros: every pixel really is there, in a deflate stream of
// about 13 bits per 258 bytes (a literal 0, then matches of length 258 at distance 1, fixed Huffman
// codes), so a genuine 12000x12000 image (144 MB decoded) fits in under a megabyte.
Bytes zero_png(uint32_t height, uint32_t width) {
  const uint64_t raw = static_cast<uint64_t>(height) * (width + 1);  // a filter byte (0) per row
  Bytes z = {0x78, 0x01};                                             // zlib header: deflate, no dictionary
  uint32_t acc = 0;
  int nbits = 0;
  auto bits = [&](uint32_t v, int n) {  // LSB first, as deflate packs its fields
    acc |= v << nbits;
    nbits += n;
    while (nbits >= 8) z.push_back(static_cast<uint8_t>(acc)), acc >>= 8, nbits -= 8;
  };
  auto code = [&](uint32_t c, int n) {  // Huffman codes go most significant bit first
    for (int k = n - 1; k >= 0; --k) bits((c >> k) & 1u, 1);
  };
  bits(1, 1), bits(1, 2);  // the final block, fixed Huffman codes
  auto literal0 = [&] { code(0x30, 8); };
  literal0();
  uint64_t left = raw - 1;
  for (; left >= 258; left -= 258) code(0xC5, 8), code(0, 5);  // length 258 (symbol 285), distance 1
  for (; left > 0; --left) literal0();
  code(0, 7);  // end of block (symbol 256)
  if (nbits > 0) bits(0, 8 - nbits);
  const uint32_t adler = (static_cast<uint32_t>(raw % 65521) << 16) | 1u;  // a = 1, b = raw
  append_be32(z, adler);

  Bytes png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  Bytes ihdr(13, 0);
  put_be32(ihdr, 0, width);
  put_be32(ihdr, 4, height);
  ihdr[8] = 8;  // bit depth; colour type 0 (gray), deflate, filter 0, no interlace
  append_png_chunk(png, "IHDR", ihdr);
  append_png_chunk(png, "IDAT", z);
  append_png_chunk(png, "IEND", {});
  return png;
}

// A 2x2 GIF (white, black / black, white) with a logical screen of screen_h x screen_w and an image
// descriptor of image_h x image_w (both 2x2 for the valid file). The LZW data, with a minimum code size
// of 2: clear (4), 1, 0, 0 in 3 bits, then 1 and end (5) in 4 bits, packed from the low bit.
Bytes gif(uint16_t screen_h = 2, uint16_t screen_w = 2, uint16_t image_h = 2, uint16_t image_w = 2) {
  Bytes b = {'G', 'I', 'F', '8', '9', 'a'};
  auto le = [&b](uint16_t v) { add(b, {v & 0xFF, v >> 8}); };
  le(screen_w), le(screen_h);
  add(b, {0x80, 0, 0, 0, 0, 0, 255, 255, 255});  // global colour table of 2: black, white
  add(b, {0x2C, 0, 0, 0, 0});                    // image descriptor at (0, 0)
  le(image_w), le(image_h);
  add(b, {0x00, 0x02, 0x03, 0x0C, 0x10, 0x05, 0x00, 0x3B});
  return b;
}

// An 8x8 one-component (grayscale) baseline JPEG of value 160, encoded by hand: stb_image_write always
// writes three components. Quantization all 1; one Huffman code per table ("0": DC category 9, AC
// end-of-block), so the scan is DC 256 (= 8 * (160 - 128)) then end-of-block: 0 100000000 0, padded
// with ones.
Bytes gray_jpeg() {
  Bytes b;
  auto repeat = [&b](int n, uint8_t v) {
    for (int i = 0; i < n; ++i) b.push_back(v);
  };
  add(b, {0xFF, 0xD8, 0xFF, 0xDB, 0x00, 0x43, 0x00});  // start of image; quantization table 0
  repeat(64, 1);
  add(b, {0xFF, 0xC0, 0x00, 0x0B, 0x08, 0x00, 0x08, 0x00, 0x08, 0x01, 0x01, 0x11, 0x00});  // 8x8, 1 component
  for (int table : {0x00, 0x10}) {  // DC 0 with symbol 9, AC 0 with symbol 0 (end of block)
    add(b, {0xFF, 0xC4, 0x00, 0x14, table, 0x01});
    repeat(15, 0);
    add(b, {table == 0x00 ? 0x09 : 0x00});
  }
  add(b, {0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00, 0x40, 0x1F, 0xFF, 0xD9});  // scan, end
  return b;
}

Bytes head(const Bytes& b, size_t n) { return Bytes(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(n)); }

// ---- the table ---------------------------------------------------------------------------------------

struct Outcome {
  std::string error;  // empty: no exception
  int64_t peak = 0;   // bytes above the resident memory before the case
};

Outcome measure(const std::function<void()>& body) {
  reset_peak_rss();
  const int64_t before = std::max(peak_rss(), proc_status_bytes("VmRSS:"));
  Outcome out;
  try {
    body();
  } catch (const std::exception& e) {
    out.error = e.what();
  }
  out.peak = std::max<int64_t>(0, peak_rss() - before);
  return out;
}

struct Case {
  std::string name, file;  // the file the error must name
  std::string expect;      // a part of the message
  std::function<void()> body;
};

void run_table(const std::vector<Case>& cases) {
  std::printf("%-34s %9s  %s\n", "case", "peak MiB", "error");
  for (const Case& c : cases) {
    const Outcome o = measure(c.body);
    std::printf("%-34s %9.1f  %s\n", c.name.c_str(), static_cast<double>(o.peak) / kMiB, o.error.c_str());
    CAPTURE(c.name);
    CAPTURE(o.error);
    CHECK_MESSAGE(!o.error.empty(), "no error");
    CHECK_MESSAGE(o.error.find(c.file) != std::string::npos, "the message does not name " << c.file);
    CHECK_MESSAGE(o.error.find(c.expect) != std::string::npos, "the message lacks '" << c.expect << "'");
    CHECK_MESSAGE(o.error.find('\n') == std::string::npos, "the message is more than one line");
    CHECK_MESSAGE(o.peak < kMemoryLimit, "peak memory " << o.peak / kMiB << " MiB above the baseline, limit "
                                                       << kMemoryLimit / kMiB << " MiB");
  }
  std::fflush(stdout);
}

struct LimitScope {  // restores the default pixel limit when a case changed it
  ~LimitScope() { data::set_max_image_pixels(data::kDefaultMaxImagePixels); }
};

}  // namespace

TEST_CASE("hostile files: the crafted files are what they claim") {
  TempDir dir;
  // The hand-made GIF decodes to its 2x2 pattern, so its bombs and truncations differ from a valid file
  // in one respect only.
  write_bytes(dir.file("ok.gif"), gif());
  const Image m = data::read_mask(dir.file("ok.gif"));
  CHECK(m.pixels == std::vector<uint8_t>{1, 0, 0, 1});
  // The gray JPEG has one component and decodes to 160.
  write_bytes(dir.file("gray.jpg"), gray_jpeg());
  CHECK(data::read_image_info(dir.file("gray.jpg")).channels == 1);
  const Image g = data::read_image(dir.file("gray.jpg"));
  CHECK(g.channels == 1);
  for (uint8_t v : g.pixels) CHECK(std::abs(v - 160) <= 1);
  // The zero PNG is a valid image (decoded here at a small size).
  write_bytes(dir.file("zero.png"), zero_png(300, 700));
  const Image z = data::read_image(dir.file("zero.png"));
  CHECK(data::image_str(z) == "300x700x1");
  CHECK(std::all_of(z.pixels.begin(), z.pixels.end(), [](uint8_t v) { return v == 0; }));
  // The header of a patched file declares the patched size without decoding.
  write_bytes(dir.file("big.jpg"), jpeg_declaring(dir, 9000, 9000));
  CHECK(data::read_image_info(dir.file("big.jpg")).height == 9000);
  write_bytes(dir.file("big.png"), png_declaring(dir, 9000, 9000));
  CHECK(data::read_image_info(dir.file("big.png")).width == 9000);
}

TEST_CASE("hostile files: each gives one clear error naming the file, at bounded memory") {
  TempDir dir;
  const bool reset = reset_peak_rss();
  std::printf("peak memory measured as VmHWM%s\n", reset ? ", reset before each case" : " (not resettable here)");
  auto file = [&](const std::string& name, const Bytes& bytes) {
    write_bytes(dir.file(name), bytes);
    return dir.file(name);
  };
  const std::string jpeg_bomb = file("bomb_26000x26000.jpg", jpeg_declaring(dir, 26000, 26000));
  const std::string png_bomb = file("bomb_18000x18000.png", png_declaring(dir, 18000, 18000));
  const std::string png_genuine = file("zeros_12000x12000.png", zero_png(12000, 12000));
  const std::string gif_screen = file("bomb_screen.gif", gif(20000, 20000));
  const std::string gif_descriptor = file("bomb_descriptor.gif", gif(2, 2, 20000, 20000));
  data::write_jpeg(dir.file("ok.jpg"), pattern(48, 64, 3));
  data::write_png(dir.file("ok.png"), pattern(48, 64, 3));
  const Bytes ok_jpg = read_bytes(dir.file("ok.jpg")), ok_png = read_bytes(dir.file("ok.png")), ok_gif = gif();
  const std::string jpg_half = file("truncated_half.jpg", head(ok_jpg, ok_jpg.size() / 2));
  const std::string jpg_header = file("truncated_header.jpg", head(ok_jpg, 100));
  const std::string png_half = file("truncated_half.png", head(ok_png, ok_png.size() / 2));
  const std::string gif_cut = file("truncated_frame.gif", head(ok_gif, ok_gif.size() - 4));
  const std::string gif_descr = file("truncated_descriptor.gif", head(ok_gif, 25));
  const std::string empty_jpg = file("empty.jpg", {});
  const std::string empty_png = file("empty.png", {});
  const std::string text_jpg = file("text.jpg", Bytes{'n', 'o', 't', ' ', 'a', ' ', 'p', 'h', 'o', 't', 'o', '\n'});
  const char* limit_text = "above the limit of 89478485 pixels";

  // Samples for the dataset: a good photo with a bomb as its mask; a mask of the wrong size; and a
  // mask whose header says the wrong size but whose data is cut off: the size check from the headers
  // must come before any decoding.
  data::write_png(dir.file("mask_48x64.png"), Image::blank(48, 64, 1, 255));
  data::write_png(dir.file("mask_24x32.png"), Image::blank(24, 32, 1, 255));
  const Bytes mask96 = [&] {
    data::write_png(dir.file("mask_96x64_full.png"), pattern(96, 64, 1));
    return read_bytes(dir.file("mask_96x64_full.png"));
  }();
  const std::string mask_cut = file("mask_96x64_truncated.png", head(mask96, mask96.size() / 2));
  const std::string mask_bomb = file("mask_bomb.png", png_declaring(dir, 18000, 18000));
  auto dataset = [&](const std::string& image, const std::string& mask) {
    return [image, mask] {
      data::DatasetOptions o;
      o.height = 16, o.width = 16, o.threads = 2;
      data::SegmentationDataset ds({{image, mask}}, o);
    };
  };
  auto image = [](const std::string& path) { return [path] { data::read_image(path); }; };
  auto mask = [](const std::string& path) { return [path] { data::read_mask(path); }; };

  run_table({
      {"JPEG SOF0 26000x26000", jpeg_bomb, limit_text, image(jpeg_bomb)},
      {"JPEG SOF0 26000x26000, header only", jpeg_bomb, "26000x26000", [&] { data::read_image_info(jpeg_bomb); }},
      {"PNG IHDR 18000x18000", png_bomb, "declares 18000x18000", image(png_bomb)},
      {"PNG valid 12000x12000 (zeros)", png_genuine, limit_text, image(png_genuine)},
      {"PNG valid 12000x12000 as mask", png_genuine, limit_text, mask(png_genuine)},
      {"GIF screen 20000x20000", gif_screen, limit_text, mask(gif_screen)},
      {"GIF descriptor 20000x20000", gif_descriptor, "cannot decode image", mask(gif_descriptor)},
      {"JPEG truncated at half", jpg_half, "cannot decode image", image(jpg_half)},
      {"JPEG truncated in header", jpg_header, "cannot decode image (its JPEG header is unreadable", image(jpg_header)},
      {"PNG truncated at half", png_half, "cannot decode image", image(png_half)},
      {"GIF truncated in frame data", gif_cut, "truncated GIF", mask(gif_cut)},
      {"GIF truncated in descriptor", gif_descr, "truncated GIF", mask(gif_descr)},
      {"zero-byte .jpg", empty_jpg, "empty file", image(empty_jpg)},
      {"zero-byte .png mask", empty_png, "empty file", mask(empty_png)},
      {"text saved as .jpg", text_jpg, "cannot decode image (unknown image type)", image(text_jpg)},
      {"missing file", dir.file("absent.jpg"), "no such file", image(dir.file("absent.jpg"))},
      {"dataset: bomb image", jpeg_bomb, limit_text, dataset(jpeg_bomb, dir.file("mask_48x64.png"))},
      {"dataset: bomb mask", mask_bomb, limit_text, dataset(dir.file("ok.jpg"), mask_bomb)},
      {"dataset: mask 24x32 for 48x64", dir.file("mask_24x32.png"), "image is 64x48 but its mask",
       dataset(dir.file("ok.jpg"), dir.file("mask_24x32.png"))},
      {"dataset: cut mask of wrong size", mask_cut, "image is 64x48 but its mask", dataset(dir.file("ok.jpg"), mask_cut)},
      {"dataset: truncated image", jpg_half, "cannot decode image", dataset(jpg_half, dir.file("mask_48x64.png"))},
      {"dataset: text as image", text_jpg, "unknown image type", dataset(text_jpg, dir.file("mask_48x64.png"))},
  });
}

TEST_CASE("hostile files: the pixel limit is inclusive and can be raised or lowered") {
  TempDir dir;
  LimitScope restore;
  data::write_png(dir.file("a.png"), pattern(48, 64, 3));
  CHECK(data::max_image_pixels() == data::kDefaultMaxImagePixels);
  data::set_max_image_pixels(48 * 64);
  CHECK(data::image_str(data::read_image(dir.file("a.png"))) == "48x64x3");
  data::set_max_image_pixels(48 * 64 - 1);
  try {
    data::read_image(dir.file("a.png"));
    FAIL("no error below the limit");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()) ==
          dir.file("a.png") + ": declares 48x64 pixels (HxW, 3072 in all), above the limit of 3071 pixels; refused "
                              "before decoding as a possible decompression bomb (raise the limit with --max-pixels N)");
  }
  CHECK_THROWS_AS(data::read_mask(dir.file("a.png")), std::runtime_error);
  CHECK_THROWS_AS(data::set_max_image_pixels(0), std::invalid_argument);
  CHECK(data::max_image_pixels() == 48 * 64 - 1);
}

TEST_CASE("hostile files: gray, gray + alpha and RGBA photos train as RGB") {
  TempDir dir;
  write_bytes(dir.file("gray.jpg"), gray_jpeg());
  data::write_png(dir.file("gray_mask.png"), Image::blank(8, 8, 1, 1));
  Image ga = pattern(8, 8, 2), rgba = pattern(8, 8, 4);
  data::write_png(dir.file("ga.png"), ga);
  data::write_png(dir.file("rgba.png"), rgba);
  data::DatasetOptions o;
  o.height = 8, o.width = 8, o.threads = 1;
  const data::SegmentationDataset ds(
      {{dir.file("gray.jpg"), dir.file("gray_mask.png")}, {dir.file("ga.png"), dir.file("gray_mask.png")},
       {dir.file("rgba.png"), dir.file("gray_mask.png")}},
      o);
  REQUIRE(ds.size() == 3);
  for (int64_t i = 0; i < 3; ++i) CHECK(ds.image(i).channels == 3);
  for (int64_t p = 0; p < 64; ++p) {
    const uint8_t* g = ds.image(0).pixels.data() + 3 * p;
    CHECK(std::abs(g[0] - 160) <= 1);
    CHECK((g[0] == g[1] && g[1] == g[2]));
    const uint8_t* a = ds.image(1).pixels.data() + 3 * p;  // gray replicated, alpha dropped
    CHECK((a[0] == ga.pixels[static_cast<size_t>(2 * p)] && a[1] == a[0] && a[2] == a[0]));
    const uint8_t* r = ds.image(2).pixels.data() + 3 * p;  // RGB kept, alpha dropped
    for (int c = 0; c < 3; ++c) CHECK(r[c] == rgba.pixels[static_cast<size_t>(4 * p + c)]);
  }
}

#if defined(TL_TRAIN_UNET) && defined(TL_PREDICT_UNET) && defined(TL_INFERENCE_PANEL)
namespace {

// Runs `command`; its stdout and stderr land in *out and *err; returns the exit status.
int run(const std::string& command, const TempDir& dir, std::string* out, std::string* err) {
  const int status = std::system((command + " > '" + dir.file("stdout.txt") + "' 2> '" + dir.file("stderr.txt") + "'").c_str());
  auto slurp = [](const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  *out = slurp(dir.file("stdout.txt"));
  *err = slurp(dir.file("stderr.txt"));
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

TEST_CASE("hostile files: train_unet, predict_unet and inference_panel stop at a bomb with one line naming it") {
  TempDir dir;
  LimitScope restore;
  const std::string data_dir = dir.file("data");
  fs::create_directories(data_dir + "/train");
  fs::create_directories(data_dir + "/train_masks");
  for (const char* car : {"aaaa_01", "bbbb_01", "cccc_01", "dddd_01", "eeee_01"}) {
    data::write_jpeg(data_dir + "/train/" + car + ".jpg", pattern(48, 64, 3));
    data::write_png(data_dir + "/train_masks/" + car + "_mask.png", Image::blank(48, 64, 1, 1));
  }
  const std::string bomb = data_dir + "/train/cccc_01.jpg";
  write_bytes(bomb, jpeg_declaring(dir, 26000, 26000));
  const std::string train_app = TL_TRAIN_UNET, predict_app = TL_PREDICT_UNET;
  std::string out, err;
  auto one_line = [](const std::string& s) { return !s.empty() && s.find('\n') == s.size() - 1; };
  auto timed = [&](const std::string& command) {
    const auto t0 = std::chrono::steady_clock::now();
    const int rc = run(command, dir, &out, &err);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%s\n  exit %d after %.2f s, stderr: %s", command.c_str(), rc, s, err.empty() ? "(none)\n" : err.c_str());
    CHECK(s < 60);
    return rc;
  };

  const std::string train = train_app + " --data-dir " + data_dir + " --image-size 32x32 --features 4,8 --epochs 1" +
                            " --batch-size 2 --threads 2 --device cpu --quiet --out ";
  CHECK(timed(train + dir.file("run1")) == 1);
  CHECK_MESSAGE(one_line(err), err);
  CHECK_MESSAGE(err.rfind("train_unet: " + bomb + ": declares 26000x26000 pixels", 0) == 0, err);
  CHECK_MESSAGE(err.find("above the limit of 89478485 pixels") != std::string::npos, err);
  // --max-pixels lowers the limit below the good photos too.
  CHECK(timed(train + dir.file("run2") + " --max-pixels 3000") == 1);
  CHECK_MESSAGE(err.find("above the limit of 3000 pixels") != std::string::npos, err);
  CHECK(timed(train + dir.file("run3") + " --max-pixels 0") == 2);
  CHECK_MESSAGE(err == "train_unet: --max-pixels: expected at least 1, got 0 (see --help)\n", err);

  Generator g(3);
  nn::UNetConfig cfg;
  cfg.features = {4, 8};
  nn::UNet net(cfg, &g);
  const std::string ckpt = dir.file("m.safetensors");
  safetensors::Metadata extra;
  extra["image_size"] = "32x32";
  nn::save_checkpoint(ckpt, net, nullptr, {}, extra);
  const std::string predict = predict_app + " --checkpoint " + ckpt + " --input " + data_dir + "/train --threads 2" +
                              " --device cpu --batch-size 1 --output ";
  CHECK(timed(predict + dir.file("pred1")) == 1);
  CHECK_MESSAGE(one_line(err), err);
  CHECK_MESSAGE(err.rfind("predict_unet: " + bomb + ": declares 26000x26000 pixels", 0) == 0, err);
  CHECK_MESSAGE(err.find("2 of 5 photos were written") != std::string::npos, err);
  CHECK(!fs::exists(dir.file("pred1/cccc_01_mask.png")));
  CHECK(timed(predict + dir.file("pred2") + " --max-pixels 100") == 1);
  CHECK_MESSAGE(err.find(data_dir + "/train/aaaa_01.jpg: declares 48x64 pixels") != std::string::npos, err);

  // inference_panel: the photo against its mask from the headers, then the limit.
  const std::string panel = std::string(TL_INFERENCE_PANEL) + " --checkpoints " + ckpt + " --out " +
                            dir.file("panel.png") + " --threads 2 --image ";
  const std::string good = data_dir + "/train/aaaa_01.jpg", good_mask = data_dir + "/train_masks/aaaa_01_mask.png";
  data::write_png(dir.file("mask_24x32.png"), Image::blank(24, 32, 1, 1));
  CHECK(timed(panel + good + " --mask " + dir.file("mask_24x32.png")) == 1);
  CHECK_MESSAGE(err == "inference_panel: " + dir.file("mask_24x32.png") + ": mask 24x32 does not match the photo 48x64\n", err);
  CHECK(timed(panel + bomb + " --mask " + good_mask) == 1);
  CHECK_MESSAGE(err.rfind("inference_panel: " + bomb + ": declares 26000x26000 pixels", 0) == 0, err);
  CHECK(timed(panel + good + " --mask " + good_mask + " --max-pixels 3071") == 1);
  CHECK_MESSAGE(err.find("above the limit of 3071 pixels") != std::string::npos, err);
  CHECK(timed(panel + good + " --mask " + good_mask) == 0);

  // The children's peak resident memory (the largest of them): none decoded the bomb.
  rusage ru{};
  getrusage(RUSAGE_CHILDREN, &ru);
  const int64_t child_peak = static_cast<int64_t>(ru.ru_maxrss) * 1024;
  std::printf("peak resident memory of the app runs: %.1f MiB\n", static_cast<double>(child_peak) / kMiB);
  CHECK(child_peak < kMemoryLimit + 300 * kMiB);
}
#endif
