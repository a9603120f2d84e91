#include "nn/json.h"

#include <charconv>
#include <cstdio>
#include <unordered_set>

namespace tl::json {

namespace {

// Offset of the first byte that does not start or continue a well-formed UTF-8 sequence, or npos.
size_t first_invalid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) { ++i; continue; }
    size_t n;       // continuation bytes
    uint32_t cp, min;  // min rejects overlong encodings
    if ((c & 0xE0) == 0xC0) { n = 1; cp = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { n = 2; cp = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { n = 3; cp = c & 0x07; min = 0x10000; }
    else return i;
    if (s.size() - i <= n) return i;
    for (size_t k = 1; k <= n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (d & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += n + 1;
  }
  return std::string_view::npos;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

class Parser {
 public:
  Parser(std::string_view text, int max_depth) : s_(text), max_depth_(max_depth) {}

  Value document() {
    Value v = value(0);
    skip_ws();
    if (!eof()) fail("expected the end of the text after the top-level value");
    return v;
  }

 private:
  // Every message names what was expected and what was found instead.
  [[noreturn]] void fail(const std::string& what) const { fail_at(what + ", got " + found(), i_); }
  [[noreturn]] void fail_at(const std::string& what, size_t pos) const { throw ParseError(what, pos); }
  std::string found() const {
    if (eof()) return "the end of the text";
    const auto c = static_cast<unsigned char>(s_[i_]);
    if (c >= 0x20 && c < 0x7F) return std::string("'") + static_cast<char>(c) + "'";
    char buf[16];
    std::snprintf(buf, sizeof buf, "byte 0x%02X", c);
    return buf;
  }
  bool eof() const { return i_ >= s_.size(); }
  bool at(char c) const { return !eof() && s_[i_] == c; }
  bool at_digit() const { return !eof() && is_digit(s_[i_]); }
  void skip_ws() {
    while (at(' ') || at('\t') || at('\n') || at('\r')) ++i_;
  }
  void expect(char c, const char* context) {
    if (!at(c)) fail(std::string("expected '") + c + "' " + context);
    ++i_;
  }

  Value value(int depth) {
    skip_ws();
    Value v;
    v.pos = i_;
    if (at('{') || at('[')) {
      if (depth >= max_depth_) fail("nesting deeper than " + std::to_string(max_depth_) + " levels");
      at('{') ? object(v, depth + 1) : array(v, depth + 1);
    } else if (at('"')) {
      v.type = Value::Type::String;
      v.string = string();
    } else if (at('-') || at_digit()) {
      number(v);
    } else if (s_.substr(i_, 4) == "true" || s_.substr(i_, 4) == "null") {
      v.type = s_[i_] == 't' ? Value::Type::Bool : Value::Type::Null;
      v.boolean = v.type == Value::Type::Bool;
      i_ += 4;
    } else if (s_.substr(i_, 5) == "false") {
      v.type = Value::Type::Bool;
      i_ += 5;
    } else {
      fail("expected a value");
    }
    return v;
  }

  void object(Value& v, int depth) {
    v.type = Value::Type::Object;
    ++i_;
    skip_ws();
    if (at('}')) { ++i_; return; }
    std::unordered_set<std::string> keys;
    for (;;) {
      skip_ws();
      const size_t key_pos = i_;
      if (!at('"')) fail("expected a string key in object");
      std::string key = string();
      if (!keys.insert(key).second) fail_at("duplicate key " + quote(key), key_pos);
      skip_ws();
      expect(':', "after an object key");
      Value item = value(depth);
      v.object.push_back({std::move(key), std::move(item)});
      skip_ws();
      if (at(',')) { ++i_; continue; }
      expect('}', "or ',' in object");
      return;
    }
  }

  void array(Value& v, int depth) {
    v.type = Value::Type::Array;
    ++i_;
    skip_ws();
    if (at(']')) { ++i_; return; }
    for (;;) {
      v.array.push_back(value(depth));
      skip_ws();
      if (at(',')) { ++i_; continue; }
      expect(']', "or ',' in array");
      return;
    }
  }

  uint32_t hex4() {
    uint32_t cp = 0;
    for (int k = 0; k < 4; ++k, ++i_) {
      const char c = eof() ? '\0' : s_[i_];
      const int d = is_digit(c)                ? c - '0'
                    : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                    : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                             : -1;
      if (d < 0) fail("expected 4 hex digits after \\u");
      cp = cp * 16 + static_cast<uint32_t>(d);
    }
    return cp;
  }

  std::string string() {
    ++i_;  // the opening quote
    std::string out;
    for (;;) {
      if (eof()) fail("unterminated string");
      const char c = s_[i_];
      if (c == '"') { ++i_; return out; }
      if (static_cast<unsigned char>(c) < 0x20) fail("unescaped control character in string");
      ++i_;
      if (c != '\\') { out += c; continue; }
      const char e = eof() ? '\0' : s_[i_];
      ++i_;
      switch (e) {
        case '"': case '\\': case '/': out += e; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) fail_at("lone low surrogate in \\u escape", i_ - 6);
          if (cp >= 0xD800 && cp <= 0xDBFF) {  // UTF-16 pair: the low half must follow at once
            if (s_.substr(i_, 2) != "\\u") fail("expected a \\u low surrogate after a high surrogate");
            i_ += 2;
            const uint32_t lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail_at("expected a low surrogate (DC00-DFFF)", i_ - 4);
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default: --i_; fail("invalid escape in string");
      }
    }
  }

  void number(Value& v) {
    const size_t start = i_;
    if (at('-')) ++i_;
    if (at('0')) {
      ++i_;  // a leading zero stands alone: "01" is not JSON
    } else {
      if (!at_digit()) fail("expected a digit");
      while (at_digit()) ++i_;
    }
    bool integral = true;
    if (at('.')) {
      integral = false;
      ++i_;
      if (!at_digit()) fail("expected a digit after '.'");
      while (at_digit()) ++i_;
    }
    if (at('e') || at('E')) {
      integral = false;
      ++i_;
      if (at('+') || at('-')) ++i_;
      if (!at_digit()) fail("expected a digit in the exponent");
      while (at_digit()) ++i_;
    }
    const char* first = s_.data() + start;
    const char* last = s_.data() + i_;
    const auto ec = integral ? (v.type = Value::Type::Int, std::from_chars(first, last, v.integer).ec)
                             : (v.type = Value::Type::Real, std::from_chars(first, last, v.real).ec);
    if (ec != std::errc())
      fail_at("number " + std::string(first, last) + " is out of range" + (integral ? " for int64" : ""), start);
  }

  std::string_view s_;
  size_t i_ = 0;
  int max_depth_;
};

}  // namespace

const Value* Value::find(std::string_view key) const {
  for (const auto& [k, v] : object)
    if (k == key) return &v;
  return nullptr;
}

const char* Value::type_name() const {
  switch (type) {
    case Type::Null: return "null";
    case Type::Bool: return "boolean";
    case Type::Int: return "integer";
    case Type::Real: return "number";
    case Type::String: return "string";
    case Type::Array: return "array";
    case Type::Object: return "object";
  }
  return "?";
}

Value parse(std::string_view text, int max_depth) {
  if (size_t bad = first_invalid_utf8(text); bad != std::string_view::npos) throw ParseError("invalid UTF-8", bad);
  return Parser(text, max_depth).document();
}

std::string quote(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

bool valid_utf8(std::string_view s) { return first_invalid_utf8(s) == std::string_view::npos; }

}  // namespace tl::json
