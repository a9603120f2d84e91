#pragma once
// Kaggle's run-length encoding of binary masks, as in Carvana's train_masks.csv and its submissions.
//
// The mask is flattened row-major (pixel (y, x) is number y * width + x + 1: 1-indexed, along rows),
// and each run of car pixels is written as "start length"; pairs are separated by single spaces:
//   a 3x4 mask with rows 0110 / 0111 / 0000  ->  "2 2 6 3"
// An empty mask is the empty string.
#include <cstdint>
#include <string>

#include "data/image.h"

namespace tl::data {

// `mask` has one channel; a nonzero byte is car (so {0, 1} and {0, 255} masks encode the same).
// Throws std::invalid_argument for an image that is not a valid one-channel mask.
std::string rle_encode(const Image& mask);

// The height x width mask of {0, 1} that `rle` describes. Tokens are separated by spaces (tabs,
// several spaces and leading or trailing blanks are tolerated). Runs that touch (start = previous
// end + 1) are accepted, although the encoder merges them. Throws std::invalid_argument
// "rle_decode: ..." naming the problem and the 1-based token position: an odd number of tokens, a
// token that is not a decimal integer, a start of 0, a length of 0, a start that is not after the
// previous run's end (not increasing, or overlapping), or a run past the end of the mask.
Image rle_decode(const std::string& rle, int64_t height, int64_t width);

}  // namespace tl::data
