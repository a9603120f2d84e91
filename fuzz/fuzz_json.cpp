// nn/json: the strict parser must accept or refuse any bytes with a ParseError, never crash; a
// valid UTF-8 string quoted by quote() must parse back to itself.
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz/fuzz_file.h"
#include "nn/json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const tl::json::Value v = tl::json::parse(text);
    (void)v.type_name();
  } catch (const tl::json::ParseError& e) {
    if (e.pos > size) tl::fuzz::broken("a ParseError points past the end of the text");
  }
  if (tl::json::valid_utf8(text)) {
    tl::json::Value s;
    try {
      s = tl::json::parse(tl::json::quote(text));
    } catch (const tl::json::ParseError&) {
      tl::fuzz::broken("quote() of valid UTF-8 does not parse");
    }
    if (!s.is(tl::json::Value::Type::String) || s.string != text) tl::fuzz::broken("quote() does not round-trip");
  }
  return 0;
}
