#include "train/cli.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <sstream>

namespace tl::cli {

Flags::Flags(std::string program, std::string summary) : program_(std::move(program)), summary_(std::move(summary)) {}

void Flags::add_flag(const std::string& name, Kind kind, void* dst, const std::string& help, std::string default_text) {
  if (name.rfind("--", 0) != 0) throw std::logic_error("flag names start with --: " + name);
  for (const Flag& f : flags_)
    if (f.name == name) throw std::logic_error("flag declared twice: " + name);
  flags_.push_back({name, help, std::move(default_text), kind, dst});
}

void Flags::add(const std::string& name, std::string* dst, const std::string& help) {
  add_flag(name, Kind::String, dst, help, dst->empty() ? "" : *dst);
}
void Flags::add(const std::string& name, int64_t* dst, const std::string& help) {
  add_flag(name, Kind::Int, dst, help, std::to_string(*dst));
}
void Flags::add(const std::string& name, double* dst, const std::string& help) {
  std::ostringstream s;
  s << *dst;
  add_flag(name, Kind::Double, dst, help, s.str());
}
void Flags::add_switch(const std::string& name, bool* dst, const std::string& help) {
  *dst = false;
  add_flag(name, Kind::Switch, dst, help, "");
}
void Flags::add_list(const std::string& name, std::vector<std::string>* dst, const std::string& help) {
  std::string text;
  for (const std::string& v : *dst) text += (text.empty() ? "" : " ") + v;
  add_flag(name, Kind::List, dst, help, text);
}

Flags::Flag& Flags::find(const std::string& name) {
  for (Flag& f : flags_)
    if (f.name == name) return f;
  throw UsageError("unknown flag " + name);
}

bool Flags::was_set(const std::string& name) const {
  for (const Flag& f : flags_)
    if (f.name == name) return f.set;
  throw std::logic_error("was_set: undeclared flag " + name);
}

bool Flags::parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << usage();
      return false;
    }
    if (arg.rfind("--", 0) != 0) throw UsageError("unexpected argument '" + arg + "'");
    std::string inline_value;
    bool has_inline = false;
    if (const auto eq = arg.find('='); eq != std::string::npos) {
      inline_value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_inline = true;
    }
    Flag& f = find(arg);
    if (f.set) throw UsageError(f.name + " given twice");
    f.set = true;
    if (f.kind == Kind::Switch) {
      if (has_inline) throw UsageError(f.name + " takes no value");
      *static_cast<bool*>(f.dst) = true;
      continue;
    }
    if (f.kind == Kind::List) {
      auto* list = static_cast<std::vector<std::string>*>(f.dst);
      list->clear();
      if (has_inline) list->push_back(inline_value);
      while (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) list->push_back(argv[++i]);
      if (list->empty()) throw UsageError(f.name + " needs at least one value");
      continue;
    }
    std::string value;
    if (has_inline) {
      value = inline_value;
    } else {
      if (i + 1 >= argc) throw UsageError(f.name + " needs a value");
      value = argv[++i];
    }
    switch (f.kind) {
      case Kind::String: *static_cast<std::string*>(f.dst) = value; break;
      case Kind::Int: *static_cast<int64_t*>(f.dst) = parse_int(f.name, value); break;
      case Kind::Double: *static_cast<double*>(f.dst) = parse_double(f.name, value); break;
      default: break;
    }
  }
  return true;
}

std::string Flags::usage() const {
  std::ostringstream s;
  s << "usage: " << program_ << " [flags]\n\n" << summary_ << "\n\nflags:\n";
  size_t width = 0;
  for (const Flag& f : flags_) width = std::max(width, f.name.size() + (f.kind == Kind::Switch ? 0 : 4));
  for (const Flag& f : flags_) {
    std::string head = f.name + (f.kind == Kind::Switch ? "" : f.kind == Kind::List ? " X.." : " X");
    s << "  " << head << std::string(width + 2 - head.size(), ' ') << f.help;
    if (f.kind != Kind::Switch) s << " (default: " << (f.default_text.empty() ? "none" : f.default_text) << ")";
    s << "\n";
  }
  s << "  --help" << std::string(width - 4, ' ') << "this text\n";
  return s.str();
}

int64_t parse_int(const std::string& what, const std::string& text) {
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno == ERANGE)
    throw UsageError(what + ": expected an integer, got '" + text + "'");
  return v;
}

double parse_double(const std::string& what, const std::string& text) {
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || errno == ERANGE || !std::isfinite(v))
    throw UsageError(what + ": expected a number, got '" + text + "'");
  return v;
}

std::pair<int64_t, int64_t> parse_size(const std::string& what, const std::string& text) {
  const auto x = text.find('x');
  if (x == std::string::npos) throw UsageError(what + ": expected HxW such as 160x240, got '" + text + "'");
  int64_t h = 0, w = 0;
  try {
    h = parse_int(what, text.substr(0, x));
    w = parse_int(what, text.substr(x + 1));
  } catch (const UsageError&) {
    throw UsageError(what + ": expected HxW such as 160x240, got '" + text + "'");
  }
  if (h <= 0 || w <= 0) throw UsageError(what + ": height and width must be positive, got '" + text + "'");
  return {h, w};
}

std::vector<int64_t> parse_int_list(const std::string& what, const std::string& text) {
  std::vector<int64_t> out;
  size_t start = 0;
  while (true) {
    const auto comma = text.find(',', start);
    const std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    int64_t v = 0;
    try {
      v = parse_int(what, item);
    } catch (const UsageError&) {
      throw UsageError(what + ": expected comma-separated integers such as 64,128,256,512, got '" + text + "'");
    }
    if (v <= 0) throw UsageError(what + ": entries must be positive, got '" + text + "'");
    out.push_back(v);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

void check_choice(const std::string& what, const std::string& text, const std::vector<std::string>& choices) {
  std::string list;
  for (const std::string& c : choices) {
    if (c == text) return;
    list += (list.empty() ? "" : "|") + c;
  }
  throw UsageError(what + ": expected " + list + ", got '" + text + "'");
}

int run_main(const std::string& program, const std::function<int()>& body) {
  try {
    return body();
  } catch (const UsageError& e) {
    std::cerr << program << ": " << e.what() << " (see --help)\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << program << ": " << e.what() << "\n";
    return 1;
  }
}

}  // namespace tl::cli
