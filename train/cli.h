#pragma once
// Command-line flags for the apps: every flag is declared once with its default and help line, so
// `--help` lists them all with their defaults and a bad flag is one clear line and exit status 2.
//
//   tl::cli::Flags flags("train_unet", "Trains the UNet on Carvana-layout data.");
//   int64_t epochs = 5;
//   flags.add("--epochs", &epochs, "passes over the training set");
//   return tl::cli::run_main("train_unet", [&] {
//     if (!flags.parse(argc, argv)) return 0;  // --help was printed
//     ...
//   });
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace tl::cli {

// A mistake in the command line (unknown flag, missing or malformed value): exit status 2.
struct UsageError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

class Flags {
 public:
  Flags(std::string program, std::string summary);

  // Value flags: `--name VALUE` or `--name=VALUE`; the current value of *dst is the default.
  void add(const std::string& name, std::string* dst, const std::string& help);
  void add(const std::string& name, int64_t* dst, const std::string& help);
  void add(const std::string& name, double* dst, const std::string& help);
  // A switch: present = true. Default false.
  void add_switch(const std::string& name, bool* dst, const std::string& help);
  // A list: `--name A B C` takes the values up to the next argument starting with "--".
  void add_list(const std::string& name, std::vector<std::string>* dst, const std::string& help);

  // Parses argv; false when --help/-h was given (the usage is then printed on stdout).
  // Throws UsageError naming the flag. Each flag may be given once; was_set() tells which were.
  bool parse(int argc, char** argv);
  bool was_set(const std::string& name) const;
  std::string usage() const;

 private:
  enum class Kind { String, Int, Double, Switch, List };
  struct Flag {
    std::string name, help, default_text;
    Kind kind;
    void* dst;
    bool set = false;
  };
  Flag& find(const std::string& name);
  void add_flag(const std::string& name, Kind kind, void* dst, const std::string& help, std::string default_text);
  std::string program_, summary_;
  std::vector<Flag> flags_;
};

// Strict value parsers; the message names `what` (the flag) and the text.
int64_t parse_int(const std::string& what, const std::string& text);
double parse_double(const std::string& what, const std::string& text);
// "160x240" -> {160, 240}; both positive.
std::pair<int64_t, int64_t> parse_size(const std::string& what, const std::string& text);
// "64,128,256,512" -> {64, 128, 256, 512}; every entry positive.
std::vector<int64_t> parse_int_list(const std::string& what, const std::string& text);
// `text` must be one of `choices`.
void check_choice(const std::string& what, const std::string& text, const std::vector<std::string>& choices);

// Runs body and turns exceptions into one line on stderr: "<program>: <message>" with exit 1, and
// "<program>: <message> (see --help)" with exit 2 for a UsageError.
int run_main(const std::string& program, const std::function<int()>& body);

}  // namespace tl::cli
