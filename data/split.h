#pragma once
// Train/validation splits of the Carvana data by car, and the split files.
//
// Kaggle names a photo `<car>_<angle>.jpg` (16 angles per car). Photos of one car are nearly the
// same picture, so a split by photo leaks: every car goes wholly to one side. Split files are CSV
// with the header `image,mask` (the seed's train_desc.csv / test_desc.csv), so a run can be repeated
// exactly and the split inspected or edited by hand.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tl::data {

struct Sample {
  std::string image, mask;  // file paths
  bool operator==(const Sample&) const = default;
};

// The car of a photo: its file name without folder and extension, up to the last '_'
// ("train/0cdf5b5d0ce1_07.jpg" -> "0cdf5b5d0ce1"). A name without '_' is its own id.
std::string car_id(const std::string& image_path);
// Whether the file name ends in the Kaggle angle suffix `_NN` (digits after the last '_'): without it
// car_id is the whole name, one car per image, and the split cannot keep a car's photos together.
bool has_angle_suffix(const std::string& image_path);

// Splits `all` into (train, validation) so that no car is on both sides. The result depends only on
// the set of samples, val_fraction and seed, not on the input order:
// 1. the samples are sorted by image path and the distinct car ids listed in sorted order;
// 2. the ids are shuffled by Fisher-Yates: for i = n-1 down to 1, swap ids[i] with ids[j],
//    j = floor(u * (i + 1)), u = philox::to_unit(o[0], o[1]) of o = philox4x32_10(3 << 62 | i, seed)
//    (tensor/random.h; the top bits keep these counters apart from other users of the seed);
// 3. the first round(val_fraction * n) shuffled cars go to validation, clamped to at least 1 when
//    val_fraction > 0 and n >= 2, and to at most n - 1 (training always keeps a car);
// 4. both sides come back sorted by image path.
// val_fraction must be in [0, 1] (std::invalid_argument otherwise).
std::pair<std::vector<Sample>, std::vector<Sample>> split_by_car(std::vector<Sample> all, double val_fraction,
                                                                 uint64_t seed);

// Writes the header `image,mask` and one row per sample ("\n" line ends). A field that holds a comma,
// a quote, CR or LF is quoted, with its quotes doubled (RFC 4180). Atomic: a temporary file beside
// `path`, fsynced, then renamed over it. Errors are std::runtime_error naming `path`.
void write_split_csv(const std::string& path, const std::vector<Sample>& samples);

// Reads a split file: the first line must be exactly `image,mask` (a UTF-8 byte-order mark and CRLF
// line ends are accepted); each further line is two fields, quoted or not. Blank lines are skipped.
// A relative path is resolved against the CSV's folder, so a split file can sit beside its data;
// with `data_dir` (train_unet's --data-dir), a bare file name (no folder in it, as in the seed's split
// files: `0cdf5b5d0ce1_01.jpg,0cdf5b5d0ce1_01_mask.gif`) is resolved against data_dir/train (images)
// and data_dir/train_masks (masks) instead. Resolved paths are absolute, so the split file a run
// writes into its folder names the same files from anywhere.
// Errors are std::runtime_error "<path>:<line>: <what>", e.g. "split.csv:3: expected 2 fields, got 1",
// or "<path>: no such file".
std::vector<Sample> read_split_csv(const std::string& path, const std::string& data_dir = "");

}  // namespace tl::data
