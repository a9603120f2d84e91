#include "data/rle.h"

#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

namespace tl::data {

std::string rle_encode(const Image& mask) {
  mask.check("rle_encode");
  if (mask.channels != 1)
    throw std::invalid_argument("rle_encode: a mask has 1 channel, got image " + image_str(mask));
  std::string out;
  const uint8_t* p = mask.pixels.data();
  const int64_t n = mask.numel();
  for (int64_t i = 0; i < n;) {
    if (!p[i]) {
      ++i;
      continue;
    }
    const int64_t start = i;
    while (i < n && p[i]) ++i;
    if (!out.empty()) out += ' ';
    out += std::to_string(start + 1);
    out += ' ';
    out += std::to_string(i - start);
  }
  return out;
}

namespace {

struct Token {
  std::string text;
  int64_t position;  // 1-based
};

std::vector<Token> split_tokens(const std::string& s) {
  std::vector<Token> tokens;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
    if (i >= s.size()) break;
    const size_t b = i;
    while (i < s.size() && s[i] != ' ' && s[i] != '\t') ++i;
    tokens.push_back({s.substr(b, i - b), static_cast<int64_t>(tokens.size()) + 1});
  }
  return tokens;
}

[[noreturn]] void fail(const Token& t, const std::string& what) {
  throw std::invalid_argument("rle_decode: token " + std::to_string(t.position) + " ('" + t.text + "') " + what);
}

// Digits only (no sign, no blanks), below 2^62 so that start + length cannot overflow.
int64_t parse_count(const Token& t) {
  if (t.text.empty()) fail(t, "is empty");
  int64_t v = 0;
  for (const char c : t.text) {
    if (c < '0' || c > '9') fail(t, "is not a non-negative decimal integer");
    if (v > (std::numeric_limits<int64_t>::max() / 4 - 9) / 10) fail(t, "is too large");
    v = v * 10 + (c - '0');
  }
  return v;
}

}  // namespace

Image rle_decode(const std::string& rle, int64_t height, int64_t width) {
  if (height < 1 || width < 1)
    throw std::invalid_argument("rle_decode: mask size must be positive, got " + std::to_string(height) + "x" +
                                std::to_string(width));
  Image mask = Image::blank(height, width, 1, 0);
  const int64_t n = height * width;
  const std::vector<Token> tokens = split_tokens(rle);
  if (tokens.size() % 2 != 0)
    throw std::invalid_argument("rle_decode: odd number of tokens (" + std::to_string(tokens.size()) +
                                "): token " + std::to_string(tokens.size()) + " ('" + tokens.back().text +
                                "') is a start without a length");
  int64_t next_free = 1;  // the first pixel (1-based) that a following run may start at
  for (size_t k = 0; k < tokens.size(); k += 2) {
    const Token& ts = tokens[k];
    const Token& tn = tokens[k + 1];
    const int64_t start = parse_count(ts), length = parse_count(tn);
    if (start == 0) fail(ts, "is a start of 0 (pixels are numbered from 1)");
    if (length == 0) fail(tn, "is a run length of 0");
    if (start < next_free)
      fail(ts, "starts a run before the end of the previous one (starts must increase and runs must not overlap; "
               "the previous run ends at pixel " + std::to_string(next_free - 1) + ")");
    const int64_t end = start + length - 1;  // last pixel of the run, 1-based
    if (end > n)
      fail(tn, "makes the run " + std::to_string(start) + ".." + std::to_string(end) + " go past the end of the " +
                   std::to_string(height) + "x" + std::to_string(width) + " mask (" + std::to_string(n) +
                   " pixels)");
    std::memset(mask.pixels.data() + (start - 1), 1, static_cast<size_t>(length));
    next_free = end + 1;
  }
  return mask;
}

}  // namespace tl::data
