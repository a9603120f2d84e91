#include "nn/safetensors.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <stdexcept>
#include <tuple>

#include "nn/json.h"
#include "tensor/file_util.h"

// Tensor bytes are copied to and from the file as they are; the format is little-endian.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace tl::safetensors {

namespace {

// As the reference implementation: a header past this size is an attack or a corrupt length.
constexpr uint64_t kMaxHeader = 100'000'000;

// The dtypes of the format that this reader understands; `stored` is the element size in the file.
enum class Half : uint8_t { No, F16, BF16 };
struct FileDType {
  const char* name;
  size_t stored;
  DType dtype;  // what the tensor becomes in memory: F16 and BF16 widen to float32
  Half half;
};
constexpr FileDType kFileDTypes[] = {
    {"F32", 4, kFloat32, Half::No}, {"F64", 8, kFloat64, Half::No},  {"I64", 8, kInt64, Half::No},
    {"U8", 1, kUInt8, Half::No},    {"F16", 2, kFloat32, Half::F16}, {"BF16", 2, kFloat32, Half::BF16},
};

const char* file_dtype_name(DType t) {
  switch (t) {
    case DType::Float32: return "F32";
    case DType::Float64: return "F64";
    case DType::Int64: return "I64";
    case DType::UInt8: return "U8";
  }
  return "?";
}

float bf16_to_float(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

float f16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1F;
  const uint32_t mant = h & 0x3FF;
  if (exp == 0) {  // zero and subnormals: mant * 2^-24, exact in float32
    const float f = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -f : f;
  }
  if (exp == 31)  // inf, or NaN with its payload, made quiet as F16C hardware and torch's .float() do
    return std::bit_cast<float>(sign | 0x7F800000u | (mant << 13) | (mant ? 0x400000u : 0u));
  return std::bit_cast<float>(sign | ((exp + 127 - 15) << 23) | (mant << 13));  // rebias 15 -> 127
}

std::string range_str(uint64_t begin, uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + ")";
}

// One tensor entry of the header, checked against itself and the data section size.
struct Entry {
  std::string name;
  const FileDType* ftype = nullptr;
  Shape shape;
  uint64_t begin = 0, end = 0;
};

class HeaderReader {
 public:
  HeaderReader(const std::string& path, uint64_t data_size) : path_(path), data_size_(data_size) {}

  [[noreturn]] void fail(const std::string& what) const { throw std::runtime_error(path_ + ": " + what); }
  [[noreturn]] void fail(const std::string& name, const std::string& what) const {
    fail("tensor '" + name + "': " + what);
  }

  Entry entry(const std::string& name, const json::Value& v) const {
    if (!v.is(json::Value::Type::Object)) fail(name, std::string("entry must be an object, got ") + v.type_name());
    for (const auto& [key, item] : v.object)
      if (key != "dtype" && key != "shape" && key != "data_offsets")
        fail(name, "unexpected key " + json::quote(key) + " (expected dtype, shape, data_offsets)");
    Entry e;
    e.name = name;
    const json::Value& dtype = field(name, v, "dtype", json::Value::Type::String);
    for (const FileDType& f : kFileDTypes)
      if (dtype.string == f.name) e.ftype = &f;
    if (!e.ftype)
      fail(name, "dtype " + json::quote(dtype.string) + " is not supported (readable: F32, F64, I64, U8, F16, BF16)");

    const json::Value& shape = field(name, v, "shape", json::Value::Type::Array);
    uint64_t numel = 1, nonzero = 1;  // `nonzero` keeps Shape arithmetic (int64) from overflowing
    for (const json::Value& d : shape.array) {
      if (!d.is(json::Value::Type::Int) || d.integer < 0)
        fail(name, "shape must be an array of non-negative integers, got " + describe(d));
      e.shape.push_back(d.integer);
      numel = mul_or_max(numel, static_cast<uint64_t>(d.integer));
      if (d.integer > 0) nonzero = mul_or_max(nonzero, static_cast<uint64_t>(d.integer));
    }
    if (nonzero > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail(name, "shape " + shape_str(e.shape) + " has more than 2^63 elements");

    const json::Value& offsets = field(name, v, "data_offsets", json::Value::Type::Array);
    if (offsets.array.size() != 2) fail(name, "data_offsets must be [begin, end]");
    for (const json::Value& o : offsets.array)
      if (!o.is(json::Value::Type::Int) || o.integer < 0)
        fail(name, "data_offsets must be non-negative integers, got " + describe(o));
    e.begin = static_cast<uint64_t>(offsets.array[0].integer);
    e.end = static_cast<uint64_t>(offsets.array[1].integer);
    if (e.begin > e.end) fail(name, "data_offsets " + range_str(e.begin, e.end) + " end before they begin");
    if (e.end > data_size_)
      fail(name, "data_offsets " + range_str(e.begin, e.end) + " run past the data section of " +
                     std::to_string(data_size_) + " bytes");
    const uint64_t need = mul_or_max(numel, e.ftype->stored);
    if (e.end - e.begin != need)
      fail(name, "data_offsets " + range_str(e.begin, e.end) + " hold " + std::to_string(e.end - e.begin) +
                     " bytes, shape " + shape_str(e.shape) + " " + e.ftype->name + " needs " +
                     (need == UINT64_MAX ? std::string("more than 2^64") : std::to_string(need)));
    return e;
  }

  Metadata metadata(const json::Value& v) const {
    if (!v.is(json::Value::Type::Object)) fail(std::string("__metadata__ must be an object, got ") + v.type_name());
    Metadata md;
    for (const auto& [key, item] : v.object) {
      if (!item.is(json::Value::Type::String))
        fail("__metadata__ value of " + json::quote(key) + " must be a string, got " + item.type_name());
      md[key] = item.string;
    }
    return md;
  }

 private:
  const json::Value& field(const std::string& name, const json::Value& v, const char* key, json::Value::Type t) const {
    const json::Value* f = v.find(key);
    if (!f) fail(name, std::string("missing '") + key + "'");
    if (!f->is(t)) fail(name, std::string("'") + key + "' has the wrong type (" + f->type_name() + ")");
    return *f;
  }
  static std::string describe(const json::Value& v) {
    return v.is(json::Value::Type::Int) ? std::to_string(v.integer) : v.type_name();
  }
  // Saturates instead of wrapping: a saturated count never equals a real byte range.
  static uint64_t mul_or_max(uint64_t a, uint64_t b) {
    return (b != 0 && a > std::numeric_limits<uint64_t>::max() / b) ? std::numeric_limits<uint64_t>::max() : a * b;
  }

  const std::string& path_;
  uint64_t data_size_;
};

}  // namespace

bool File::contains(const std::string& name) const {
  return std::any_of(tensors.begin(), tensors.end(), [&](const auto& e) { return e.first == name; });
}

const Tensor& File::at(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return t;
  std::string have;
  for (size_t i = 0; i < tensors.size() && i < 10; ++i) have += (i ? ", " : "") + tensors[i].first;
  if (tensors.size() > 10) have += ", ...";
  throw std::runtime_error((path.empty() ? std::string("safetensors") : path) + ": no tensor '" + name + "' (it holds " +
                           std::to_string(tensors.size()) + ": " + have + ")");
}

std::map<std::string, Tensor> File::as_map() const { return {tensors.begin(), tensors.end()}; }

File load(const std::string& path) {
  std::error_code ec;
  const uint64_t file_size = std::filesystem::file_size(path, ec);  // also refuses folders
  if (ec) throw std::runtime_error(path + ": cannot read: " + ec.message());
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open for reading: " + std::strerror(errno));
  if (file_size < 8)
    throw std::runtime_error(path + ": file is " + std::to_string(file_size) +
                             " bytes, too short for the 8-byte header length");
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  if (n > kMaxHeader)
    throw std::runtime_error(path + ": header length " + std::to_string(n) + " exceeds the limit of " +
                             std::to_string(kMaxHeader) + " bytes");
  if (n > file_size - 8)
    throw std::runtime_error(path + ": header length " + std::to_string(n) + " runs past the end of the file (" +
                             std::to_string(file_size) + " bytes)");
  std::string text(n, '\0');
  if (!in.read(text.data(), static_cast<std::streamsize>(n)))
    throw std::runtime_error(path + ": cannot read the " + std::to_string(n) + "-byte header");

  json::Value header;
  try {
    header = json::parse(text);
  } catch (const json::ParseError& e) {
    throw std::runtime_error(path + ": header is not valid JSON: " + e.what());
  }
  const uint64_t data_start = 8 + n, data_size = file_size - data_start;
  HeaderReader reader(path, data_size);
  if (!header.is(json::Value::Type::Object))
    reader.fail(std::string("header must be a JSON object, got ") + header.type_name());

  File file;
  file.path = path;
  std::vector<Entry> entries;
  for (const auto& [name, v] : header.object) {
    if (name == "__metadata__")
      file.metadata = reader.metadata(v);
    else
      entries.push_back(reader.entry(name, v));
  }

  // The byte ranges must tile the data section exactly, as the reference implementation requires:
  // an overlap aliases two tensors, a hole or trailing bytes mean a corrupt or foreign file.
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return std::tie(a.begin, a.end) < std::tie(b.begin, b.end); });
  uint64_t covered = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    if (e.begin < covered)
      reader.fail(e.name, "data_offsets " + range_str(e.begin, e.end) + " overlap tensor '" + entries[i - 1].name +
                              "' " + range_str(entries[i - 1].begin, entries[i - 1].end));
    if (e.begin > covered)
      reader.fail(e.name, "data_offsets " + range_str(e.begin, e.end) + " leave a hole: bytes " +
                              range_str(covered, e.begin) + " of the data section belong to no tensor");
    covered = e.end;
  }
  if (covered != data_size)
    reader.fail("bytes " + range_str(covered, data_size) + " of the data section belong to no tensor");

  for (const Entry& e : entries) {
    Tensor t = empty(e.shape, e.ftype->dtype);
    const size_t bytes = e.end - e.begin;
    in.seekg(static_cast<std::streamoff>(data_start + e.begin));
    auto read = [&](void* dst) {
      return bytes == 0 || in.read(static_cast<char*>(dst), static_cast<std::streamsize>(bytes));
    };
    bool ok = true;
    if (e.ftype->half == Half::No) {
      ok = read(t.raw_data());
    } else {  // F16 / BF16 widened to float32
      std::vector<uint16_t> half(bytes / 2);
      ok = read(half.data());
      const bool bf16 = e.ftype->half == Half::BF16;
      float* out = t.data_ptr<float>();
      for (size_t i = 0; i < half.size(); ++i) out[i] = bf16 ? bf16_to_float(half[i]) : f16_to_float(half[i]);
    }
    if (!ok) reader.fail(e.name, "cannot read data_offsets " + range_str(e.begin, e.end) + " (file truncated?)");
    file.tensors.emplace_back(e.name, std::move(t));
  }
  return file;
}

void save(const std::string& path, const NamedTensors& tensors, const Metadata& metadata) {
  auto fail = [&](const std::string& what) { throw std::runtime_error(path + ": " + what); };

  // Validate everything and build the header before touching the file system.
  std::set<std::string> seen;
  std::vector<Tensor> data;  // contiguous CPU copies, in the given order
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      if (!json::valid_utf8(k) || !json::valid_utf8(v))
        fail("__metadata__ entry " + json::quote(k) + " is not valid UTF-8");
      header += (first ? "" : ",") + json::quote(k) + ":" + json::quote(v);
      first = false;
    }
    header += "}";
  }
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name.empty()) fail("a tensor name is empty");
    if (name == "__metadata__") fail("tensor name '__metadata__' is reserved for the metadata");
    if (!json::valid_utf8(name)) fail("tensor name " + json::quote(name) + " is not valid UTF-8");
    if (!seen.insert(name).second) fail("tensor '" + name + "' appears twice");
    if (!t.defined()) fail("tensor '" + name + "' is undefined");
    Tensor c = t.detach();
    if (!c.device().is_cpu()) c = c.to(Device::cpu());
    c = c.contiguous();
    const uint64_t bytes = static_cast<uint64_t>(c.numel()) * dtype_size(c.dtype());
    std::string shape;
    for (int64_t d : c.shape()) shape += (shape.empty() ? "" : ",") + std::to_string(d);
    header += (header.size() > 1 ? "," : "") + json::quote(name) + ":{\"dtype\":\"" + file_dtype_name(c.dtype()) +
              "\",\"shape\":[" + shape + "],\"data_offsets\":[" + std::to_string(offset) + "," +
              std::to_string(offset + bytes) + "]}";
    offset += bytes;
    data.push_back(std::move(c));
  }
  header += "}";
  // Spaces pad the header so that the data section starts 8-byte aligned, as the reference writer does.
  header.append((8 - header.size() % 8) % 8, ' ');
  const uint64_t n = header.size();

  // One atomic write (tl::write_file_atomic): readers see the old file or the new one, never a
  // partial one, and a failure leaves the old one.
  std::vector<ByteRange> pieces{{&n, 8}, {header.data(), header.size()}};
  for (const Tensor& t : data) pieces.push_back({t.raw_data(), static_cast<size_t>(t.numel()) * dtype_size(t.dtype())});
  write_file_atomic(path, pieces);
}

}  // namespace tl::safetensors
