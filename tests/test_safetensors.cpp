// safetensors reading and writing (nn/safetensors.h) and the JSON reader under it (nn/json.h):
// round trips of every dtype, the exact bytes our writer produces, hand-built F16/BF16 files, one
// corrupt file per reader check, and the atomicity of save.
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <vector>

#include "nn/json.h"
#include "nn/safetensors.h"
#include "tests/test_util.h"

using namespace tl;
namespace fs = std::filesystem;

namespace {

// A fresh folder under the system temp dir, removed with everything in it at scope exit.
struct TempDir {
  fs::path dir;
  TempDir() {
    static int counter = 0;
    dir = fs::temp_directory_path() /
          ("tl_test_safetensors_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(dir);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string path(const std::string& name) const { return (dir / name).string(); }
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

std::string u64_le(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
  return s;
}

// A safetensors file built by hand: length prefix, header text as given, then `data`.
std::string st_file(const std::string& header, const std::string& data) {
  return u64_le(header.size()) + header + data;
}

template <typename T>
std::string le_bytes(const std::vector<T>& values) {
  std::string s(values.size() * sizeof(T), '\0');
  if (!values.empty()) std::memcpy(s.data(), values.data(), s.size());
  return s;
}

// The message load(path) throws, or "" when it does not throw. It must be a std::runtime_error.
std::string load_error(const std::string& path) {
  try {
    safetensors::load(path);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

template <typename T>
void check_same(const Tensor& got, const Tensor& want) {
  REQUIRE(got.dtype() == want.dtype());
  REQUIRE_MESSAGE(got.shape() == want.shape(), shape_str(got.shape()) << " vs " << shape_str(want.shape()));
  CHECK(got.is_contiguous());
  std::vector<T> g = got.to_vector<T>(), w = want.to_vector<T>();
  if (!g.empty()) CHECK(std::memcmp(g.data(), w.data(), g.size() * sizeof(T)) == 0);  // bit-exact, NaN too
}

}  // namespace

TEST_CASE("safetensors: every writable dtype round-trips bit-exactly, in order, any strides") {
  TempDir tmp;
  manual_seed(3);
  Tensor big = randn({3, 4});
  Tensor f64 = from_vector<double>({1.5, -0.0, 1e300, std::numeric_limits<double>::quiet_NaN()}, {2, 2});
  const int64_t lo = std::numeric_limits<int64_t>::min(), hi = std::numeric_limits<int64_t>::max();
  Tensor i64 = from_vector<int64_t>({lo, -1, 0, 7, hi, 42}, {3, 2});
  Tensor u8 = from_vector<uint8_t>({0, 1, 127, 128, 255}, {5});
  safetensors::NamedTensors ts = {
      {"z.f32", randn({2, 3, 4})},
      {"a.f64", f64},
      {"i64", i64},
      {"u8", u8},
      {"scalar", scalar_tensor(-3.25)},                            // 0-d: shape []
      {"empty", zeros({0, 3}, kFloat64)},                          // 0 elements: [k, k)
      {"transposed", big.t()},                                     // non-contiguous
      {"strided", big.slice(1, 0, 4, 2)},                          // step 2, offset 0
      {"offset", big.select(0, 2)},                                // storage offset 8
      {"expanded", tensor({1, 2, 3}).unsqueeze(0).expand({2, 3})}, // stride 0
      {"grad", randn({2}, TensorOptions().with_requires_grad())},  // requires grad: saved detached
  };
  const std::string path = tmp.path("all.safetensors");
  safetensors::save(path, ts);
  safetensors::File f = safetensors::load(path);
  REQUIRE(f.tensors.size() == ts.size());
  CHECK(f.metadata.empty());
  for (size_t i = 0; i < ts.size(); ++i) {
    CAPTURE(ts[i].first);
    CHECK(f.tensors[i].first == ts[i].first);  // our writer lays data out in the given order
    const Tensor& got = f.tensors[i].second;
    dispatch_all(ts[i].second.dtype(), [&]<typename T>() { check_same<T>(got, ts[i].second); });
  }
  CHECK(f.at("scalar").dim() == 0);
  CHECK(f.at("empty").shape() == Shape{0, 3});
  CHECK_FALSE(f.at("grad").requires_grad());
  CHECK(f.contains("u8"));
  CHECK_FALSE(f.contains("nope"));
  CHECK(f.as_map().size() == ts.size());
  CHECK_THROWS_WITH_AS(f.at("nope"), doctest::Contains("no tensor 'nope'"), std::runtime_error);
}

TEST_CASE("safetensors: metadata and awkward names round-trip") {
  TempDir tmp;
  const std::string path = tmp.path("meta.safetensors");
  safetensors::Metadata md = {{"model", "unet"},
                              {"features", "64,128,256,512"},
                              {"empty", ""},
                              {"quote\"back\\slash", "line\nbreak\ttab\x01\x1f/"},
                              {"unicode \xc3\xa9\xe2\x82\xac", "\xf0\x9f\x98\x80"}};
  safetensors::NamedTensors ts = {{"w\"eird\\ name\n", ones({2})}, {"\xce\xb8.weight", zeros({1}, kUInt8)}};
  safetensors::save(path, ts, md);
  safetensors::File f = safetensors::load(path);
  CHECK(f.metadata == md);
  REQUIRE(f.tensors.size() == 2);
  CHECK(f.tensors[0].first == ts[0].first);
  CHECK(f.tensors[1].first == ts[1].first);

  // No tensors at all is a valid file: "{}" padded to 8 bytes.
  const std::string none = tmp.path("none.safetensors");
  safetensors::save(none, {});
  CHECK(read_bytes(none) == u64_le(8) + "{}      ");
  safetensors::File nf = safetensors::load(none);
  CHECK(nf.tensors.empty());
  CHECK(nf.metadata.empty());
}

TEST_CASE("safetensors: the writer's bytes are the reference layout") {
  TempDir tmp;
  const std::string path = tmp.path("layout.safetensors");
  safetensors::save(path, {{"a", tensor({1, 2})}, {"b", from_vector<uint8_t>({9}, {1})}}, {{"k", "v"}});
  const std::string bytes = read_bytes(path);
  const std::string json = R"({"__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"U8","shape":[1],"data_offsets":[8,9]}})";
  const size_t n = (json.size() + 7) / 8 * 8;  // padded with spaces to a multiple of 8
  REQUIRE(bytes.size() == 8 + n + 9);
  CHECK(bytes.substr(0, 8) == u64_le(n));
  CHECK(bytes.substr(8, n) == json + std::string(n - json.size(), ' '));
  CHECK(bytes.substr(8 + n) == le_bytes<float>({1, 2}) + "\x09");
}

TEST_CASE("safetensors: F16 and BF16 are read as float32") {
  TempDir tmp;
  const std::string path = tmp.path("half.safetensors");
  // f16: 1, -2, inf, -inf, smallest subnormal, largest subnormal, largest normal, -0, NaN, signaling NaN
  const std::vector<uint16_t> f16 = {0x3C00, 0xC000, 0x7C00, 0xFC00, 0x0001, 0x03FF, 0x7BFF, 0x8000, 0x7E00, 0x7C01};
  // bf16: 1, -2, inf, 3.140625, smallest subnormal (2^-133)
  const std::vector<uint16_t> bf16 = {0x3F80, 0xC000, 0x7F80, 0x4049, 0x0001};
  const std::string header = R"({"h":{"dtype":"F16","shape":[10],"data_offsets":[0,20]},)"
                             R"("b":{"dtype":"BF16","shape":[5],"data_offsets":[20,30]}})";
  write_bytes(path, st_file(header, le_bytes(f16) + le_bytes(bf16)));
  safetensors::File f = safetensors::load(path);
  const Tensor& h = f.at("h");
  REQUIRE(h.dtype() == kFloat32);
  std::vector<float> hv = h.to_vector<float>();
  const float inf = std::numeric_limits<float>::infinity();
  CHECK(hv[0] == 1.0f);
  CHECK(hv[1] == -2.0f);
  CHECK(hv[2] == inf);
  CHECK(hv[3] == -inf);
  CHECK(hv[4] == std::ldexp(1.0f, -24));  // 5.96e-8
  CHECK(hv[5] == std::ldexp(1023.0f, -24));
  CHECK(hv[6] == 65504.0f);
  CHECK((hv[7] == 0.0f && std::signbit(hv[7])));
  CHECK(std::isnan(hv[8]));
  CHECK(std::bit_cast<uint32_t>(hv[9]) == 0x7FC02000u);  // payload kept, made quiet as torch's .float() does
  std::vector<float> bv = f.at("b").to_vector<float>();
  CHECK(f.at("b").dtype() == kFloat32);
  CHECK(bv[0] == 1.0f);
  CHECK(bv[1] == -2.0f);
  CHECK(bv[2] == inf);
  CHECK(bv[3] == 3.140625f);
  CHECK(bv[4] == std::ldexp(1.0f, -133));
}

TEST_CASE("safetensors: each reader check rejects its corrupt file with the path and the tensor") {
  TempDir tmp;
  const std::string f32x2 = le_bytes<float>({1, 2});  // 8 bytes of data
  struct Case {
    const char* what;
    std::string bytes;
    const char* message;  // a substring of the error, after "<path>: "
  };
  const std::vector<Case> cases = {
      {"truncated file", std::string("\x10\x00\x00", 3), "file is 3 bytes, too short for the 8-byte header length"},
      {"header length past the file", u64_le(1000) + "{}",
       "header length 1000 runs past the end of the file (10 bytes)"},
      {"header length past the limit", u64_le(uint64_t{1} << 40) + "{}", "exceeds the limit of 100000000 bytes"},
      {"invalid JSON", st_file(R"({"a": {"dtype": "F32",})", ""), "header is not valid JSON: expected a string key"},
      {"trailing garbage", st_file("{} x", ""),
       "expected the end of the text after the top-level value, got 'x' at byte 3"},
      {"duplicate key", st_file(R"({"a":{},"a":{}})", ""), "duplicate key \"a\" at byte 8"},
      {"top level is an array", st_file("[1, 2]", ""), "header must be a JSON object, got array"},
      {"entry not an object", st_file(R"({"a": 5})", ""), "tensor 'a': entry must be an object, got integer"},
      {"missing dtype", st_file(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", f32x2), "tensor 'a': missing 'dtype'"},
      {"extra key", st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", f32x2),
       "tensor 'a': unexpected key \"x\""},
      {"unsupported dtype", st_file(R"({"m":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})", f32x2),
       "tensor 'm': dtype \"I32\" is not supported"},
      {"unknown dtype", st_file(R"({"m":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", f32x2),
       "tensor 'm': dtype \"F33\" is not supported"},
      {"negative shape", st_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", f32x2),
       "tensor 'a': shape must be an array of non-negative integers, got -2"},
      {"fractional shape", st_file(R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", f32x2),
       "tensor 'a': shape must be an array of non-negative integers, got number"},
      {"offsets past the data", st_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", f32x2),
       "tensor 'a': data_offsets [0, 16) run past the data section of 8 bytes"},
      {"offsets reversed", st_file(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", f32x2),
       "tensor 'a': data_offsets [8, 0) end before they begin"},
      {"size mismatch", st_file(R"({"conv.weight":{"dtype":"F32","shape":[3,3],"data_offsets":[0,8]}})", f32x2),
       "tensor 'conv.weight': data_offsets [0, 8) hold 8 bytes, shape (3,3) F32 needs 36"},
      {"elements overflow",
       st_file(R"({"a":{"dtype":"U8","shape":[0,4294967296,4294967296],"data_offsets":[0,0]}})", ""),
       "tensor 'a': shape (0,4294967296,4294967296) has more than 2^63 elements"},
      {"bytes overflow", st_file(R"({"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]}})", f32x2),
       "F64 needs more than 2^64"},
      {"overlap", st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                          R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", f32x2),
       "tensor 'b': data_offsets [4, 8) overlap tensor 'a' [0, 8)"},
      {"hole", st_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                       R"("b":{"dtype":"U8","shape":[2],"data_offsets":[6,8]}})", f32x2),
       "tensor 'b': data_offsets [6, 8) leave a hole: bytes [4, 6) of the data section belong to no tensor"},
      {"trailing data", st_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", f32x2),
       "bytes [4, 8) of the data section belong to no tensor"},
      {"metadata not an object", st_file(R"({"__metadata__":["a"]})", ""), "__metadata__ must be an object, got array"},
      {"metadata value not a string", st_file(R"({"__metadata__":{"epoch":3}})", ""),
       "__metadata__ value of \"epoch\" must be a string, got integer"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    CAPTURE(c.what);
    const std::string path = tmp.path("bad" + std::to_string(i) + ".safetensors");
    write_bytes(path, c.bytes);
    CHECK_THROWS_AS(safetensors::load(path), std::runtime_error);
    const std::string msg = load_error(path);
    CHECK_MESSAGE(msg.rfind(path + ": ", 0) == 0, "message does not start with the path: " << msg);
    CHECK_MESSAGE(msg.find(c.message) != std::string::npos, "expected \"" << c.message << "\" in: " << msg);
  }
  const std::string missing = tmp.path("missing.safetensors");
  CHECK(load_error(missing).rfind(missing + ": cannot read", 0) == 0);
}

TEST_CASE("safetensors: save is atomic and refuses bad input before touching the file") {
  TempDir tmp;
  const std::string path = tmp.path("ckpt.safetensors");
  safetensors::save(path, {{"w", tensor({1, 2, 3})}});
  safetensors::save(path, {{"w", tensor({4, 5})}, {"v", tensor({6})}});  // replaces the old file
  safetensors::File f = safetensors::load(path);
  REQUIRE(f.tensors.size() == 2);
  CHECK(f.at("w").to_vector<float>() == std::vector<float>{4, 5});
  const std::string before = read_bytes(path);

  struct Bad {
    const char* what;
    safetensors::NamedTensors tensors;
    safetensors::Metadata metadata;
    const char* message;
  };
  const std::vector<Bad> bad = {
      {"reserved name", {{"ok", tensor({1})}, {"__metadata__", tensor({1})}}, {}, "'__metadata__' is reserved"},
      {"duplicate name", {{"w", tensor({1})}, {"w", tensor({2})}}, {}, "tensor 'w' appears twice"},
      {"empty name", {{"", tensor({1})}}, {}, "a tensor name is empty"},
      {"undefined tensor", {{"u", Tensor()}}, {}, "tensor 'u' is undefined"},
      {"name not UTF-8", {{"bad\xff", tensor({1})}}, {}, "is not valid UTF-8"},
      {"metadata not UTF-8", {{"w", tensor({1})}}, {{"k", "\xc3"}}, "__metadata__ entry \"k\" is not valid UTF-8"},
  };
  for (const Bad& b : bad) {
    CAPTURE(b.what);
    CHECK_THROWS_WITH_AS(safetensors::save(path, b.tensors, b.metadata), doctest::Contains((path + ": ").c_str()),
                         std::runtime_error);
    CHECK_THROWS_WITH_AS(safetensors::save(path, b.tensors, b.metadata), doctest::Contains(b.message),
                         std::runtime_error);
    CHECK(read_bytes(path) == before);  // the previous file is intact
  }

  // A folder that does not exist: the error names the path and no temporary file is left behind.
  const std::string nowhere = tmp.path("no/such/folder/x.safetensors");
  CHECK_THROWS_WITH_AS(safetensors::save(nowhere, {{"w", tensor({1})}}), doctest::Contains((nowhere + ": ").c_str()),
                       std::runtime_error);
  // The target is a folder: the rename fails after the temporary file was written, which must go.
  const std::string folder = tmp.path("a_folder");
  fs::create_directories(fs::path(folder) / "inside");
  CHECK_THROWS_WITH_AS(safetensors::save(folder, {{"w", tensor({1})}}),
                       doctest::Contains((folder + ": cannot write").c_str()), std::runtime_error);
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(tmp.dir)) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  CHECK(left == std::vector<std::string>{"a_folder", "ckpt.safetensors"});
}

TEST_CASE("json: values, escapes and UTF-16 surrogates") {
  json::Value v = json::parse(R"( {"a": [1, -0, -9223372036854775808, 2.5e1, true, false, null],
                                   "s": "q\" b\\ s\/ \b\f\n\r\t \u00e9 \ud83d\ude00 \u0000"} )");
  REQUIRE(v.is(json::Value::Type::Object));
  const json::Value* a = v.find("a");
  REQUIRE(a);
  REQUIRE(a->array.size() == 7);
  CHECK(a->array[0].integer == 1);
  CHECK(a->array[1].integer == 0);
  CHECK(a->array[2].integer == std::numeric_limits<int64_t>::min());
  CHECK(a->array[3].is(json::Value::Type::Real));
  CHECK(a->array[3].real == 25.0);
  CHECK(a->array[4].boolean);
  CHECK((a->array[5].is(json::Value::Type::Bool) && !a->array[5].boolean));
  CHECK(a->array[6].is(json::Value::Type::Null));
  static const char want[] = "q\" b\\ s/ \b\f\n\r\t \xc3\xa9 \xf0\x9f\x98\x80 \0";
  CHECK(v.find("s")->string == std::string(want, sizeof want - 1));
  CHECK(v.find("missing") == nullptr);
  // quote() then parse() is the identity, control characters and all.
  const std::string raw = std::string("a\"\\/\x01\x1f\n\xe2\x82\xac", 10) + '\0';
  CHECK(json::parse(json::quote(raw)).string == raw);
  CHECK(json::quote("\x01") == "\"\\u0001\"");
}

TEST_CASE("json: strict errors name what and where") {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "expected a value, got the end of the text at byte 0"},
      {"{\"a\":1,}", "expected a string key in object, got '}' at byte 7"},
      {"[1,]", "expected a value, got ']' at byte 3"},
      {"[1 2]", "expected ']' or ',' in array, got '2' at byte 3"},
      {"{\"a\" 1}", "expected ':' after an object key, got '1' at byte 5"},
      {"{\"a\":1,\"b\":2,\"a\":3}", "duplicate key \"a\" at byte 13"},
      {"01", "expected the end of the text after the top-level value, got '1' at byte 1"},
      {"9223372036854775808", "number 9223372036854775808 is out of range for int64 at byte 0"},
      {"1e400", "number 1e400 is out of range at byte 0"},
      {"-", "expected a digit, got the end of the text at byte 1"},
      {"1.", "expected a digit after '.'"},
      {"\"abc", "unterminated string"},
      {"\"a\x01\"", "unescaped control character in string, got byte 0x01 at byte 2"},
      {"\"\\x\"", "invalid escape in string, got 'x' at byte 2"},
      {"\"\\u12G4\"", "expected 4 hex digits after \\u"},
      {"\"\\udc00\"", "lone low surrogate"},
      {"\"\\ud83d\"", "expected a \\u low surrogate after a high surrogate"},
      {"\"\\ud83d\\u0041\"", "expected a low surrogate (DC00-DFFF)"},
      {"\"\xc3\x28\"", "invalid UTF-8 at byte 1"},
      {"\"\xc0\xaf\"", "invalid UTF-8 at byte 1"},  // overlong '/'
      {"\"\xed\xa0\x80\"", "invalid UTF-8 at byte 1"},  // an encoded surrogate
      {"nul", "expected a value, got 'n' at byte 0"},
      {"NaN", "expected a value"},
      {std::string(65, '[') + std::string(65, ']'), "nesting deeper than 64 levels, got '[' at byte 64"},
  };
  for (const auto& [text, message] : cases) {
    CAPTURE(text);
    CHECK_THROWS_WITH_AS(json::parse(text), doctest::Contains(message.c_str()), json::ParseError);
  }
  CHECK_NOTHROW(json::parse(std::string(64, '[') + std::string(64, ']')));
  try {
    json::parse("[1, x]");
  } catch (const json::ParseError& e) {
    CHECK(e.pos == 4);
  }
}
