#pragma once
// Prediction with a trained checkpoint (behind apps/predict_unet and apps/inference_panel): photo ->
// probability of "car" per pixel at the photo's own resolution -> thresholded {0, 1} mask; and the
// pictures made from them: overlays and side-by-side inference panels.
//
// The pipeline of one photo (H x W, any of 1 to 4 channels):
//   1. converted to the model's channels (gray is replicated to RGB, alpha dropped; RGB to gray by
//      luma for a 1-channel model), resized to the model size h x w (data::resize, Interp::Auto:
//      area when shrinking, bilinear when growing) and scaled to [0, 1] (data::image_to_tensor);
//   2. one forward of the eval-mode UNet for the whole batch, under NoGradGuard, then sigmoid (on the
//      predictor's device; the probabilities come back to the CPU); with test-time augmentation
//      (set_tta) a second forward of the batch flipped left-right, whose output is flipped back,
//      and the mean of the two probability maps, (p(x) + flip(p(flip(x)))) / 2, at the model's size;
//   3. the probability map mapped back onto the photo's H x W frame with float bilinear interpolation
//      (probability_to_frame), never through 8 bits;
//   4. thresholded: probability > threshold is car (1), else 0.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "data/image.h"
#include "nn/unet.h"
#include "tensor/tensor.h"

namespace tl::train {

// The model size when neither the caller nor the checkpoint's "image_size" metadata gives one.
inline constexpr int64_t kDefaultPredictHeight = 160, kDefaultPredictWidth = 240;

class Predictor {
 public:
  // Loads `checkpoint` (nn::load_checkpoint; strict weights) into an eval-mode UNet on `device`. The
  // model input size is height x width when both are positive, else the checkpoint's "image_size"
  // metadata ("HxW", written by the trainer), else 160x240. Errors name the file: a missing or
  // unreadable checkpoint, malformed image_size, a model with more than one output channel.
  // Photos are prepared on the CPU, the batch runs on `device`, probabilities come back to the CPU.
  explicit Predictor(const std::string& checkpoint, int64_t height = 0, int64_t width = 0,
                     Device device = Device::cpu());
  // A model already in memory (the trainer's, for its validation panels) at input size height x
  // width, both positive; the model is switched to eval mode and stays shared with the caller.
  Predictor(std::shared_ptr<nn::UNet> model, int64_t height, int64_t width, Device device);

  // Test-time augmentation: the mean of the photo's and its horizontal mirror's probabilities (see
  // the pipeline above). Off by default; it doubles the cost of a forward.
  void set_tta(bool on) { tta_ = on; }
  bool tta() const { return tta_; }

  const std::string& checkpoint() const { return checkpoint_; }
  int64_t height() const { return height_; }  // model input size
  int64_t width() const { return width_; }
  const nn::UNetConfig& config() const { return model_->config(); }
  Device device() const { return device_; }

  // P(car) for every pixel of each photo: float32 (H, W) at that photo's own size, values in [0, 1].
  // All photos go through one forward, (N, C, height, width). Photos may differ in size.
  std::vector<Tensor> predict_probability(const std::vector<data::Image>& photos) const;
  Tensor predict_probability(const data::Image& photo) const;

  // {0, 1} masks (1 channel) at each photo's own size: probability > threshold.
  std::vector<data::Image> predict_mask(const std::vector<data::Image>& photos, double threshold = 0.5) const;
  data::Image predict_mask(const data::Image& photo, double threshold = 0.5) const;

 private:
  std::string checkpoint_;
  int64_t height_ = kDefaultPredictHeight, width_ = kDefaultPredictWidth;
  Device device_;
  std::shared_ptr<nn::UNet> model_;
  bool tta_ = false;
};

// A float32 tensor of any rank >= 1, mirrored along its last axis (left-right for (..., H, W)), on the
// CPU: out[..., x] = in[..., W - 1 - x].
Tensor flip_width(const Tensor& t);

// Maps a model output plane onto the full frame of the original photo, bilinearly in float.
//   prob: (h', w') float32, the output of a model run on an input of model_height x model_width.
// When the input side is a multiple of 2^depth (the trainer's sizes always are), h' = model_height
// and this is the half-pixel bilinear resize of PyTorch's interpolate (align_corners=False): an
// original pixel y (centre y + 0.5) reads output coordinate (y + 0.5) * model_height / height - 0.5.
// Otherwise the UNet floors its output (h' < model_height) and its output pixel i is no longer one
// input pixel: the top-level skip is center-cropped, so it carries input pixel i + c with
// c = floor((model_height - h') / 2), while the deeper path (floor pooling, stride-2 up-convolutions)
// is aligned to the top-left, input pixel i. Output pixel i is therefore placed at input pixel
// i + c / 2, between the two: the coordinate read is the one above minus c / 2, clamped to the grid,
// so the border strip that no output covers (fewer than 2^depth input pixels per axis in all)
// repeats the nearest prediction. Measured on the real sample with a small model trained at 80x120
// run at 84x124, 87x127, 95x135, 166x246 and 175x255: offset c / 2 gave the best dice of
// {0, c/4, c/2, 3c/4, c} at every size (for example 0.947 against 0.912 for c and 0.932 for 0 at
// 87x127). Returns (height, width) float32; rows run in parallel.
Tensor probability_to_frame(const Tensor& prob, int64_t model_height, int64_t model_width, int64_t height,
                            int64_t width);

// (H, W) probabilities -> a {0, 1} one-channel mask: value > threshold is 1.
data::Image threshold_probability(const Tensor& prob, double threshold);

// The photo as RGB (gray replicated, alpha dropped).
data::Image to_rgb(const data::Image& photo);

// The photo (as RGB) with the car (mask > 0, same height and width) tinted 50% toward green and its
// outline drawn in yellow: car pixels within 1 pixel (2 when the shorter side is 512 or more) of a
// non-car pixel. Throws naming both geometries when the sizes differ.
data::Image overlay(const data::Image& photo, const data::Image& mask);

// Kaggle's dice of two masks of the same size (nonzero = car): 2|P ∩ T| / (|P| + |T|), 1 when both
// are empty.
double mask_dice(const data::Image& prediction, const data::Image& truth);

// A side-by-side picture, left to right: the photo | the true mask (when given) | each prediction.
// Every tile is resized to tile_height rows (widths keep each image's aspect ratio; data::resize,
// Interp::Auto), masks are drawn white on black. Above each tile a label strip holds its name in the
// 5x7 font (train/text.h; scale 2 when tile_height >= 240, else 1; names too wide for their tile are
// cut and end in ".."): "image", "true mask", then labels[k] (or "prediction k+1" when labels is
// empty). Tiles and strips sit on a dark gray background with a 4-pixel margin around and between
// them. labels must be empty or have one entry per prediction.
data::Image inference_panel(const data::Image& photo, const data::Image* true_mask,
                            const std::vector<data::Image>& predictions, const std::vector<std::string>& labels = {},
                            int64_t tile_height = 320);

// The photos named by `path`: the file itself, or every .jpg/.jpeg/.png/.gif/.bmp (any case) directly
// in the folder, sorted by name. Throws std::runtime_error naming the path when it does not exist, or
// when the folder holds no such file.
std::vector<std::string> list_photos(const std::string& path);

// A Kaggle submission: header "img,rle_mask", then one "name,rle" row per entry, written atomically
// (tl::write_file_atomic). Throws naming the file.
void write_submission_csv(const std::string& path, const std::vector<std::pair<std::string, std::string>>& rows);

// Output checks made before the first photo is read, so that a long run never fails at its end on a
// path it could have refused at its start. Errors are std::runtime_error naming the path and what to do.
//   check_output_folder: creates `folder` when missing; it must be a folder that takes a new file
//     (a file is created and removed in it: this sees permissions, read-only mounts and root alike).
//   check_output_file: `path` is an existing FIFO or character device open for writing (/dev/stdout),
//     or a regular file or a new name (through symlinks: their target) whose folder exists and takes
//     a new file. A folder or another special file is refused.
void check_output_folder(const std::string& folder);
void check_output_file(const std::string& path);

// predict_unet's run over files: for each photo (in batches of options.batch_size, one forward per
// batch) <output>/<stem>_mask.png (0/255), with overlay also <stem>_overlay.png, and, when rle is
// set, the submission CSV (one row per photo done, in order) written once at the end.
//   A photo that cannot be read (missing, undecodable, over the pixel limit, ...): with skip_bad it is
//   skipped and reported (on_skip, then in PredictReport::skipped) and the run goes on; the run fails
//   only when every photo was skipped. Without skip_bad the run stops there, after the photos before it
//   in its batch are written.
//   On any stop by error the masks written stay, the submission gets the rows of the photos done, and
//   the error (std::runtime_error) keeps the cause's message first, then says what was kept and how
//   to go on.
struct PredictOptions {
  std::string output;  // folder of the masks; it must exist
  std::string rle;     // the submission CSV; empty: none
  double threshold = 0.5;
  int64_t batch_size = 4;
  bool overlay = false;
  bool skip_bad = false;
  bool largest_region = false;  // keep_largest_region on each mask (train/mask_cleanup.h), then
  bool fill_holes = false;      // fill_holes: before the PNG, the overlay and the RLE row
};
struct PredictReport {
  int64_t done = 0;                                         // photos whose files were written
  std::vector<std::pair<std::string, std::string>> skipped;  // (photo, why), in order
  double mean_car_fraction = 0;                             // over the photos done
};
PredictReport predict_files(const Predictor& predictor, const std::vector<std::string>& photos,
                            const PredictOptions& options,
                            const std::function<void(const std::string& photo, const std::string& why)>& on_skip = {});

}  // namespace tl::train
