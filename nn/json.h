#pragma once
// A small strict JSON reader and a string escaper, enough for safetensors headers.
// Strict means RFC 8259 and nothing more: no comments, no trailing commas, no NaN, UTF-8 input
// only, plus the limits a file header deserves: duplicate keys, integers outside int64 and nesting
// deeper than `max_depth` are errors. Every error says what was expected and at which byte.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tl::json {

struct Member;  // one key of an object and its value

struct Value {
  enum class Type : uint8_t { Null, Bool, Int, Real, String, Array, Object };
  Type type = Type::Null;
  bool boolean = false;
  int64_t integer = 0;  // Type::Int: a number without fraction or exponent
  double real = 0;      // Type::Real: a number with a fraction or an exponent
  std::string string;
  std::vector<Value> array;
  // In document order; keys are unique. Members, not std::pair<std::string, Value>: a pair of the
  // still incomplete Value is undefined behaviour (clang with libstdc++ refuses it); a vector of an
  // incomplete type is allowed.
  std::vector<Member> object;
  size_t pos = 0;  // byte offset of the value in the text

  bool is(Type t) const { return type == t; }
  const Value* find(std::string_view key) const;  // nullptr when absent (objects only)
  const char* type_name() const;                  // "null", "bool", "integer", ... for messages
};

struct Member {
  std::string key;
  Value value;
};

// Thrown by parse(): "<what> at byte <pos>".
struct ParseError : std::runtime_error {
  size_t pos;
  ParseError(const std::string& what, size_t p) : std::runtime_error(what + " at byte " + std::to_string(p)), pos(p) {}
};

Value parse(std::string_view text, int max_depth = 64);

// `s` as a JSON string literal, quotes included. Control characters are escaped; other bytes,
// UTF-8 included, are copied as they are.
std::string quote(std::string_view s);

// True when `s` is well-formed UTF-8 (no overlong forms, no surrogates, nothing past U+10FFFF).
bool valid_utf8(std::string_view s);

}  // namespace tl::json
