// The car split (a seeded Fisher-Yates over sorted car ids) and the split files (RFC 4180 CSV).
#include "data/split.h"


#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <stdexcept>

#include "tensor/file_util.h"
#include "tensor/random.h"

namespace tl::data {

namespace fs = std::filesystem;

bool has_angle_suffix(const std::string& image_path) {
  const std::string stem = fs::path(image_path).stem().string();
  const size_t cut = stem.rfind('_');
  return cut != std::string::npos && cut + 1 < stem.size() && cut > 0 &&
         stem.find_first_not_of("0123456789", cut + 1) == std::string::npos;
}

std::string car_id(const std::string& image_path) {
  const std::string stem = fs::path(image_path).stem().string();
  const size_t cut = stem.rfind('_');
  return cut == std::string::npos ? stem : stem.substr(0, cut);
}

std::pair<std::vector<Sample>, std::vector<Sample>> split_by_car(std::vector<Sample> all, double val_fraction,
                                                                 uint64_t seed) {
  if (!(val_fraction >= 0 && val_fraction <= 1))
    throw std::invalid_argument("split_by_car: val_fraction must be in [0, 1], got " + std::to_string(val_fraction));
  std::sort(all.begin(), all.end(),
            [](const Sample& a, const Sample& b) { return a.image != b.image ? a.image < b.image : a.mask < b.mask; });
  std::vector<std::string> cars;
  for (const Sample& s : all) cars.push_back(car_id(s.image));
  std::sort(cars.begin(), cars.end());
  cars.erase(std::unique(cars.begin(), cars.end()), cars.end());

  const int64_t n = static_cast<int64_t>(cars.size());
  for (int64_t i = n - 1; i >= 1; --i) {
    const philox::Out o = philox::philox4x32_10((uint64_t{3} << 62) | static_cast<uint64_t>(i), seed);
    const auto j = std::min(i, static_cast<int64_t>(philox::to_unit(o.v[0], o.v[1]) * static_cast<double>(i + 1)));
    std::swap(cars[static_cast<size_t>(i)], cars[static_cast<size_t>(j)]);
  }
  auto n_val = static_cast<int64_t>(std::llround(val_fraction * static_cast<double>(n)));
  if (val_fraction > 0 && n >= 2) n_val = std::max<int64_t>(n_val, 1);
  n_val = std::min(n_val, std::max<int64_t>(n - 1, 0));

  const std::set<std::string> val_cars(cars.begin(), cars.begin() + n_val);
  std::pair<std::vector<Sample>, std::vector<Sample>> out;
  for (Sample& s : all) (val_cars.count(car_id(s.image)) ? out.second : out.first).push_back(std::move(s));
  return out;  // both sides keep the sorted order of `all`
}

namespace {

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

// One CSV record and the line it starts on.
struct Record {
  int64_t line;
  std::vector<std::string> fields;
  bool blank;  // an empty line
};

// Splits `text` into records (RFC 4180: quoted fields may hold commas, doubled quotes, line breaks;
// a CR before a line break is dropped). Syntax errors throw "<path>:<line>: ...".
std::vector<Record> parse_csv(const std::string& text, const std::string& path) {
  std::vector<Record> records;
  const size_t n = text.size();
  size_t i = 0;
  int64_t line = 1;
  auto fail = [&](int64_t at, const std::string& what) {
    throw std::runtime_error(path + ":" + std::to_string(at) + ": " + what);
  };
  while (i < n) {
    Record r{line, {}, false};
    bool any_quoted = false;
    for (;;) {  // one field per pass
      std::string f;
      if (i < n && text[i] == '"') {
        any_quoted = true;
        for (++i;; ++i) {
          if (i >= n) fail(r.line, "unterminated quoted field");
          if (text[i] == '"') {
            if (i + 1 < n && text[i + 1] == '"') { f += '"'; ++i; continue; }
            ++i;
            break;
          }
          if (text[i] == '\n') ++line;
          f += text[i];
        }
        if (i < n && text[i] == '\r' && (i + 1 == n || text[i + 1] == '\n')) ++i;
        if (i < n && text[i] != ',' && text[i] != '\n') fail(line, "unexpected character after a closing quote");
      } else {
        while (i < n && text[i] != ',' && text[i] != '\n') {
          if (text[i] == '"') fail(line, "unexpected quote inside an unquoted field");
          f += text[i++];
        }
        if (!f.empty() && f.back() == '\r' && (i == n || text[i] == '\n')) f.pop_back();
      }
      r.fields.push_back(std::move(f));
      if (i < n && text[i] == ',') { ++i; continue; }
      if (i < n) { ++i; ++line; }  // the '\n'
      break;
    }
    r.blank = !any_quoted && r.fields.size() == 1 && r.fields[0].empty();
    records.push_back(std::move(r));
  }
  return records;
}

}  // namespace

void write_split_csv(const std::string& path, const std::vector<Sample>& samples) {
  std::string text = "image,mask\n";
  for (const Sample& s : samples) text += csv_field(s.image) + "," + csv_field(s.mask) + "\n";
  write_file_atomic(path, text);
}

std::vector<Sample> read_split_csv(const std::string& path, const std::string& data_dir) {
  // A folder opens as a stream on Linux and fails only on the first read, with a library message.
  if (fs::is_directory(path)) throw std::runtime_error(path + ": is a folder, not a split file (CSV with the header image,mask)");
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    const int err = errno;
    if (!fs::exists(path)) throw std::runtime_error(path + ": no such file");
    throw std::runtime_error(path + ": cannot open (" + std::strerror(err) + ")");
  }
  std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  if (file.bad()) throw std::runtime_error(path + ": read error");
  if (text.rfind("\xEF\xBB\xBF", 0) == 0) text.erase(0, 3);  // UTF-8 byte-order mark

  std::string first = text.substr(0, text.find('\n'));
  if (!first.empty() && first.back() == '\r') first.pop_back();
  if (first != "image,mask")
    throw std::runtime_error(path + ":1: expected the header 'image,mask', got " +
                             (text.empty() ? std::string("an empty file") : "'" + first + "'"));

  const fs::path dir = fs::absolute(path).parent_path();
  auto resolve = [&](const std::string& p, const char* data_subdir) {
    const fs::path f(p);
    if (!f.is_relative()) return p;
    if (!data_dir.empty() && !f.has_parent_path()) return (fs::absolute(data_dir) / data_subdir / f).string();
    return (dir / f).string();
  };
  std::vector<Sample> out;
  const std::vector<Record> records = parse_csv(text, path);
  for (size_t k = 1; k < records.size(); ++k) {
    const Record& r = records[k];
    if (r.blank) continue;
    auto fail = [&](const std::string& what) {
      throw std::runtime_error(path + ":" + std::to_string(r.line) + ": " + what);
    };
    if (r.fields.size() != 2)
      fail("expected 2 fields, got " + std::to_string(r.fields.size()));
    if (r.fields[0].empty()) fail("empty image path");
    if (r.fields[1].empty()) fail("empty mask path");
    out.push_back({resolve(r.fields[0], "train"), resolve(r.fields[1], "train_masks")});
  }
  return out;
}

}  // namespace tl::data
