#include "train/predict.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <exception>
#include <filesystem>
#include <stdexcept>
#include <tuple>

#include "autograd/grad_mode.h"
#include "autograd/ops.h"
#include "data/resize.h"
#include "data/rle.h"
#include "nn/checkpoint.h"
#include "tensor/file_util.h"
#include "tensor/parallel.h"
#include "train/mask_cleanup.h"
#include "train/text.h"

namespace tl::train {

using data::Image;

namespace {

std::string size_str(int64_t h, int64_t w) { return std::to_string(h) + "x" + std::to_string(w); }

// "HxW" with both positive, else throws naming the checkpoint.
std::pair<int64_t, int64_t> parse_image_size(const std::string& path, const std::string& text) {
  const auto x = text.find('x');
  auto number = [&](const std::string& s) -> int64_t {
    if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string::npos) return 0;
    return std::stoll(s);
  };
  const int64_t h = x == std::string::npos ? 0 : number(text.substr(0, x));
  const int64_t w = x == std::string::npos ? 0 : number(text.substr(x + 1));
  if (h <= 0 || w <= 0)
    throw std::runtime_error(path + ": metadata 'image_size' = '" + text + "' is not HxW such as 160x240");
  return {h, w};
}

// Luma with the weights of ITU-R BT.601, in integers (as stb converts RGB to gray).
uint8_t luma(uint8_t r, uint8_t g, uint8_t b) { return static_cast<uint8_t>((r * 77 + g * 150 + b * 29) >> 8); }

// The photo with `channels` channels, as the model expects them.
Image to_channels(const Image& photo, int64_t channels) {
  if (photo.channels == channels) return photo;
  if (channels == 3) return to_rgb(photo);
  if (channels == 1) {
    Image out = Image::blank(photo.height, photo.width, 1);
    const int64_t C = photo.channels;
    for (int64_t i = 0; i < photo.height * photo.width; ++i) {
      const uint8_t* p = photo.pixels.data() + i * C;
      out.pixels[static_cast<size_t>(i)] = C <= 2 ? p[0] : luma(p[0], p[1], p[2]);
    }
    return out;
  }
  throw std::invalid_argument("predict: the model takes " + std::to_string(channels) + " channels, the photo " +
                              data::image_str(photo) + " has " + std::to_string(photo.channels));
}

// One axis of probability_to_frame: output index o reads grid[i0] + w * (grid[i1] - grid[i0]).
struct Tap {
  int64_t i0, i1;
  float w;
};

std::vector<Tap> make_taps(int64_t out, int64_t model, int64_t grid, double offset) {
  std::vector<Tap> taps(static_cast<size_t>(out));
  const double scale = static_cast<double>(model) / static_cast<double>(out);
  for (int64_t o = 0; o < out; ++o) {
    const double s = (static_cast<double>(o) + 0.5) * scale - 0.5 - offset;
    Tap& t = taps[static_cast<size_t>(o)];
    if (s <= 0) {
      t = {0, 0, 0.0f};
    } else if (s >= static_cast<double>(grid - 1)) {
      t = {grid - 1, grid - 1, 0.0f};
    } else {
      const int64_t i0 = static_cast<int64_t>(std::floor(s));
      t = {i0, i0 + 1, static_cast<float>(s - static_cast<double>(i0))};
    }
  }
  return taps;
}

// a + w (b - a), kept within [min(a, b), max(a, b)] despite rounding (so a probability of exactly 1
// next to a small one never becomes 1.0000001).
inline float lerp(float a, float b, float w) {
  const float v = a + w * (b - a);
  return std::clamp(v, std::min(a, b), std::max(a, b));
}

}  // namespace

Predictor::Predictor(const std::string& checkpoint, int64_t height, int64_t width, Device device)
    : checkpoint_(checkpoint), device_(device) {
  const nn::Checkpoint ckpt = nn::load_checkpoint(checkpoint);
  if (ckpt.config.out_channels != 1)
    throw std::runtime_error(checkpoint + ": the predictor needs a model with 1 output channel (car), this one has " +
                             std::to_string(ckpt.config.out_channels));
  try {
    model_ = nn::unet_from_checkpoint(ckpt);
  } catch (const std::exception& e) {
    throw std::runtime_error(checkpoint + ": " + e.what());
  }
  model_->eval();
  model_->to(device);
  if (height > 0 && width > 0) {
    height_ = height;
    width_ = width;
  } else if (auto it = ckpt.metadata.find("image_size"); it != ckpt.metadata.end()) {
    std::tie(height_, width_) = parse_image_size(checkpoint, it->second);
  }
}

Predictor::Predictor(std::shared_ptr<nn::UNet> model, int64_t height, int64_t width, Device device)
    : checkpoint_("(model in memory)"), height_(height), width_(width), device_(device), model_(std::move(model)) {
  if (!model_) throw std::invalid_argument("Predictor: no model");
  if (height <= 0 || width <= 0)
    throw std::invalid_argument("Predictor: model input size " + size_str(height, width) + " must be positive");
  if (model_->config().out_channels != 1)
    throw std::invalid_argument("Predictor: the predictor needs a model with 1 output channel (car), this one has " +
                                std::to_string(model_->config().out_channels));
  model_->eval();
}

Tensor flip_width(const Tensor& t) {
  if (!t.defined() || t.dim() < 1 || t.dtype() != kFloat32)
    throw std::invalid_argument("flip_width: expected a float32 tensor of rank 1 or more");
  const Tensor src_t = t.to(Device::cpu()).contiguous();
  const int64_t W = src_t.size(src_t.dim() - 1), rows = W == 0 ? 0 : src_t.numel() / W;
  Tensor out = empty(src_t.shape());
  const float* src = src_t.data_ptr<float>();  // (rows, W)
  float* dst = out.data_ptr<float>();
  parallel_for(0, rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t x = 0; x < W; ++x) dst[r * W + x] = src[r * W + W - 1 - x];
  });
  return out;
}

std::vector<Tensor> Predictor::predict_probability(const std::vector<Image>& photos) const {
  if (photos.empty()) return {};
  const int64_t N = static_cast<int64_t>(photos.size()), C = model_->config().in_channels;
  Tensor batch = empty({N, C, height_, width_});  // (N, C, h, w) in [0, 1]
  const int64_t plane = C * height_ * width_;
  for (int64_t n = 0; n < N; ++n) {
    const Image& photo = photos[static_cast<size_t>(n)];
    photo.check("predict");
    const Tensor x = data::image_to_tensor(data::resize(to_channels(photo, C), height_, width_, data::Interp::Auto));
    std::memcpy(batch.data_ptr<float>() + n * plane, x.data_ptr<float>(), static_cast<size_t>(plane) * sizeof(float));
  }
  Tensor prob;
  {
    NoGradGuard no_grad;
    prob = sigmoid(model_->forward(batch.to(device_))).to(Device::cpu()).contiguous();  // (N, 1, h', w'), h' <= h
    if (tta_) {  // the mirrored photos, their probabilities mirrored back, and the mean of the two
      const Tensor mirrored = flip_width(sigmoid(model_->forward(flip_width(batch).to(device_))));
      prob = ((prob + mirrored) * 0.5).contiguous();
    }
  }
  std::vector<Tensor> out;
  out.reserve(photos.size());
  for (int64_t n = 0; n < N; ++n) {
    const Image& photo = photos[static_cast<size_t>(n)];
    out.push_back(probability_to_frame(prob.select(0, n).select(0, 0).contiguous(), height_, width_, photo.height,
                                       photo.width));
  }
  return out;
}

Tensor Predictor::predict_probability(const Image& photo) const { return predict_probability(std::vector<Image>{photo})[0]; }

std::vector<Image> Predictor::predict_mask(const std::vector<Image>& photos, double threshold) const {
  std::vector<Image> masks;
  for (const Tensor& p : predict_probability(photos)) masks.push_back(threshold_probability(p, threshold));
  return masks;
}

Image Predictor::predict_mask(const Image& photo, double threshold) const {
  return threshold_probability(predict_probability(photo), threshold);
}

Tensor probability_to_frame(const Tensor& prob, int64_t model_height, int64_t model_width, int64_t height,
                            int64_t width) {
  if (!prob.defined() || prob.dim() != 2 || prob.dtype() != kFloat32)
    throw std::invalid_argument("probability_to_frame: expected a float32 (H, W) tensor");
  const int64_t gh = prob.size(0), gw = prob.size(1);
  if (gh < 1 || gw < 1 || gh > model_height || gw > model_width || height < 1 || width < 1)
    throw std::invalid_argument("probability_to_frame: cannot map a " + size_str(gh, gw) + " output of a " +
                                size_str(model_height, model_width) + " input onto " + size_str(height, width));
  const Tensor src_t = prob.to(Device::cpu()).contiguous();
  const float* src = src_t.data_ptr<float>();  // (gh, gw)
  // Half the top-level skip crop: see the header.
  const std::vector<Tap> ty = make_taps(height, model_height, gh, static_cast<double>((model_height - gh) / 2) / 2);
  const std::vector<Tap> tx = make_taps(width, model_width, gw, static_cast<double>((model_width - gw) / 2) / 2);
  Tensor out = empty({height, width});
  float* dst = out.data_ptr<float>();  // (height, width)
  parallel_for(0, height, 16, [&](int64_t y0, int64_t y1) {
    std::vector<float> row(static_cast<size_t>(gw));  // (gw): the two source rows blended
    for (int64_t y = y0; y < y1; ++y) {
      const Tap& t = ty[static_cast<size_t>(y)];
      const float* a = src + t.i0 * gw;
      const float* b = src + t.i1 * gw;
      for (int64_t j = 0; j < gw; ++j) row[static_cast<size_t>(j)] = lerp(a[j], b[j], t.w);
      float* d = dst + y * width;
      for (int64_t x = 0; x < width; ++x) {
        const Tap& s = tx[static_cast<size_t>(x)];
        d[x] = lerp(row[static_cast<size_t>(s.i0)], row[static_cast<size_t>(s.i1)], s.w);
      }
    }
  });
  return out;
}

Image threshold_probability(const Tensor& prob, double threshold) {
  if (!prob.defined() || prob.dim() != 2 || prob.dtype() != kFloat32)
    throw std::invalid_argument("threshold_probability: expected a float32 (H, W) tensor");
  if (std::isnan(threshold)) throw std::invalid_argument("threshold_probability: threshold is NaN");
  const Tensor p = prob.to(Device::cpu()).contiguous();
  const float* src = p.data_ptr<float>();
  Image mask = Image::blank(p.size(0), p.size(1), 1);
  for (int64_t i = 0; i < mask.numel(); ++i)
    mask.pixels[static_cast<size_t>(i)] = static_cast<double>(src[i]) > threshold ? 1 : 0;
  return mask;
}

Image to_rgb(const Image& photo) {
  photo.check("to_rgb");
  const int64_t C = photo.channels;
  if (C == 3) return photo;
  Image out = Image::blank(photo.height, photo.width, 3);
  for (int64_t i = 0; i < photo.height * photo.width; ++i) {
    const uint8_t* p = photo.pixels.data() + i * C;
    uint8_t* q = out.pixels.data() + i * 3;
    if (C <= 2) q[0] = q[1] = q[2] = p[0];
    else std::memcpy(q, p, 3);  // RGBA: alpha dropped
  }
  return out;
}

namespace {

void check_same_size(const char* op, const Image& a, const Image& b) {
  if (a.height != b.height || a.width != b.width)
    throw std::invalid_argument(std::string(op) + ": image " + data::image_str(a) + " and mask " + data::image_str(b) +
                                " differ in size");
}

void check_mask(const char* op, const Image& mask) {
  mask.check(op);
  if (mask.channels != 1)
    throw std::invalid_argument(std::string(op) + ": a mask has 1 channel, got image " + data::image_str(mask));
}

// A mask (nonzero = car) as a white-on-black RGB image.
Image mask_to_rgb(const Image& mask) {
  Image out = Image::blank(mask.height, mask.width, 3);
  for (size_t i = 0; i < mask.pixels.size(); ++i)
    if (mask.pixels[i]) out.pixels[3 * i] = out.pixels[3 * i + 1] = out.pixels[3 * i + 2] = 255;
  return out;
}

}  // namespace

Image overlay(const Image& photo, const Image& mask) {
  photo.check("overlay");
  check_mask("overlay", mask);
  check_same_size("overlay", photo, mask);
  constexpr uint8_t kTint[3] = {0, 255, 64}, kOutline[3] = {255, 220, 0};
  const int64_t H = photo.height, W = photo.width;
  const int64_t radius = std::min(H, W) >= 512 ? 2 : 1;
  Image out = to_rgb(photo);
  auto car = [&](int64_t y, int64_t x) { return mask.pixels[static_cast<size_t>(y * W + x)] != 0; };
  parallel_for(0, H, 16, [&](int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y)
      for (int64_t x = 0; x < W; ++x) {
        if (!car(y, x)) continue;
        bool edge = false;  // a non-car pixel within `radius` (Chebyshev), inside the image
        for (int64_t dy = -radius; dy <= radius && !edge; ++dy)
          for (int64_t dx = -radius; dx <= radius && !edge; ++dx) {
            const int64_t yy = y + dy, xx = x + dx;
            edge = yy >= 0 && yy < H && xx >= 0 && xx < W && !car(yy, xx);
          }
        uint8_t* q = out.pixels.data() + (y * W + x) * 3;
        for (int c = 0; c < 3; ++c)
          q[c] = edge ? kOutline[c] : static_cast<uint8_t>((q[c] + kTint[c] + 1) / 2);
      }
  });
  return out;
}

double mask_dice(const Image& prediction, const Image& truth) {
  check_mask("mask_dice", prediction);
  check_mask("mask_dice", truth);
  check_same_size("mask_dice", prediction, truth);
  int64_t inter = 0, p = 0, t = 0;
  for (size_t i = 0; i < prediction.pixels.size(); ++i) {
    const bool a = prediction.pixels[i] != 0, b = truth.pixels[i] != 0;
    inter += a && b;
    p += a;
    t += b;
  }
  return p + t == 0 ? 1.0 : 2.0 * static_cast<double>(inter) / static_cast<double>(p + t);
}

Image inference_panel(const Image& photo, const Image* true_mask, const std::vector<Image>& predictions,
                      const std::vector<std::string>& labels, int64_t tile_height) {
  photo.check("inference_panel");
  if (tile_height < 1)
    throw std::invalid_argument("inference_panel: tile_height must be positive, got " + std::to_string(tile_height));
  if (!labels.empty() && labels.size() != predictions.size())
    throw std::invalid_argument("inference_panel: " + std::to_string(labels.size()) + " labels for " +
                                std::to_string(predictions.size()) + " predictions");
  std::vector<Image> sources;  // RGB, full size
  std::vector<std::string> names;
  sources.push_back(to_rgb(photo));
  names.push_back("image");
  if (true_mask) {
    check_mask("inference_panel", *true_mask);
    sources.push_back(mask_to_rgb(*true_mask));
    names.push_back("true mask");
  }
  for (size_t k = 0; k < predictions.size(); ++k) {
    check_mask("inference_panel", predictions[k]);
    sources.push_back(mask_to_rgb(predictions[k]));
    names.push_back(labels.empty() ? "prediction " + std::to_string(k + 1) : labels[k]);
  }

  constexpr int64_t kMargin = 4;
  constexpr uint8_t kBackground = 40;
  const int64_t scale = tile_height >= 240 ? 2 : 1;
  const int64_t strip = text_height(scale) + 2 * scale;  // label strip above each tile
  std::vector<Image> tiles;
  int64_t panel_width = kMargin;
  for (const Image& s : sources) {
    const int64_t w = std::max<int64_t>(
        1, static_cast<int64_t>(std::llround(static_cast<double>(s.width) * static_cast<double>(tile_height) /
                                             static_cast<double>(s.height))));
    tiles.push_back(data::resize(s, tile_height, w, data::Interp::Auto));
    panel_width += w + kMargin;
  }
  const int64_t panel_height = kMargin + strip + tile_height + kMargin;
  Image panel = Image::blank(panel_height, panel_width, 3, kBackground);
  int64_t x0 = kMargin;
  for (size_t k = 0; k < tiles.size(); ++k) {
    const Image& t = tiles[k];
    const int64_t top = kMargin + strip;
    for (int64_t y = 0; y < t.height; ++y)
      std::memcpy(panel.row(top + y) + x0 * 3, t.row(y), static_cast<size_t>(t.width * 3));
    std::string name = names[k];
    const size_t fits = static_cast<size_t>(t.width / (kGlyphCellWidth * scale));
    if (name.size() > fits) name = fits >= 3 ? name.substr(0, fits - 2) + ".." : name.substr(0, fits);
    draw_text(panel, x0, kMargin + scale, name, scale, {235, 235, 235});
    x0 += t.width + kMargin;
  }
  return panel;
}

std::vector<std::string> list_photos(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) throw std::runtime_error(path + ": no such file or folder");
  if (!fs::is_directory(st)) return {path};
  std::vector<std::string> photos;
  for (const fs::directory_entry& e : fs::directory_iterator(path, ec)) {
    if (!e.is_regular_file(ec)) continue;
    std::string ext = e.path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".gif" || ext == ".bmp")
      photos.push_back(e.path().string());
  }
  if (ec) throw std::runtime_error(path + ": cannot list folder (" + ec.message() + ")");
  if (photos.empty()) throw std::runtime_error(path + ": no .jpg, .jpeg, .png, .gif or .bmp files in this folder");
  std::sort(photos.begin(), photos.end());
  return photos;
}

void write_submission_csv(const std::string& path, const std::vector<std::pair<std::string, std::string>>& rows) {
  std::string text = "img,rle_mask\n";
  for (const auto& [name, rle] : rows) {
    if (name.find_first_of(",\"\r\n") != std::string::npos)
      throw std::runtime_error(path + ": image name '" + name + "' cannot be written as a CSV field");
    text += name + ',' + rle + '\n';
  }
  write_file_atomic(path, text);
}

namespace {

// A file created and removed in `dir`: the one test of "can I write here" that sees permissions,
// read-only mounts and root alike (access() says yes to root on a read-only mount).
void probe_folder(const std::string& dir, const std::string& path, const char* what_to_do) {
  const std::string probe = (std::filesystem::path(dir) / (".write_check." + std::to_string(::getpid()))).string();
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0)
    throw std::runtime_error(path + ": cannot write there: the folder " + dir + " takes no new file (" +
                             std::strerror(errno) + "); " + what_to_do);
  ::close(fd);
  ::unlink(probe.c_str());
}

}  // namespace

void check_output_folder(const std::string& folder) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(folder, ec);
  if (ec)
    throw std::runtime_error(folder + ": cannot create the output folder (" + ec.message() +
                             "); pick another --output or fix the permissions of its parent");
  if (!fs::is_directory(folder, ec))
    throw std::runtime_error(folder + ": is not a folder; pick another --output");
  probe_folder(folder, folder, "pick another --output or fix its permissions");
}

void check_output_file(const std::string& path) {
  namespace fs = std::filesystem;
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {  // follows symlinks: what a write reaches
    if (S_ISDIR(st.st_mode))
      throw std::runtime_error(path + ": is a folder; give a file name, such as " +
                               (fs::path(path) / "submission.csv").string());
    if (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode)) {
      if (::access(path.c_str(), W_OK) != 0)
        throw std::runtime_error(path + ": cannot write there (" + std::strerror(errno) + ")");
      return;
    }
    if (!S_ISREG(st.st_mode))
      throw std::runtime_error(path + ": is neither a regular file, a FIFO nor a character device; pick another path");
  }
  std::error_code ec;
  fs::path target = fs::weakly_canonical(path, ec);  // a symlink's target is what gets replaced
  if (ec) target = path;
  std::string dir = target.parent_path().string();
  if (dir.empty()) dir = ".";
  if (!fs::is_directory(dir, ec))
    throw std::runtime_error(path + ": cannot write there: the folder " + dir +
                             " does not exist; create it first or pick another path");
  probe_folder(dir, path, "pick another path or fix the folder's permissions");
}

PredictReport predict_files(const Predictor& predictor, const std::vector<std::string>& photos,
                            const PredictOptions& options,
                            const std::function<void(const std::string&, const std::string&)>& on_skip) {
  namespace fs = std::filesystem;
  if (options.batch_size < 1)
    throw std::invalid_argument("predict_files: batch_size must be at least 1, got " + std::to_string(options.batch_size));
  PredictReport report;
  std::vector<std::pair<std::string, std::string>> rows;  // the submission
  double car_fraction = 0;
  std::string bad_photo;      // the unreadable photo that stopped the run
  bool writing_rle = false;   // the error came from the submission itself: no point writing it again
  try {
    const auto batch = static_cast<size_t>(options.batch_size);
    for (size_t b = 0; b < photos.size(); b += batch) {
      std::vector<Image> images;
      std::vector<std::string> names;  // the photo of each image
      std::exception_ptr stop;         // the first unreadable photo without skip_bad: stops after this batch
      for (size_t i = b; i < photos.size() && i < b + batch && !stop; ++i) {
        try {
          images.push_back(data::read_image(photos[i]));
          names.push_back(photos[i]);
        } catch (const std::exception& e) {
          if (!options.skip_bad) {
            stop = std::current_exception();
            bad_photo = photos[i];
            break;
          }
          report.skipped.emplace_back(photos[i], e.what());
          if (on_skip) on_skip(photos[i], e.what());
        }
      }
      std::vector<Image> masks = images.empty() ? std::vector<Image>{} : predictor.predict_mask(images, options.threshold);
      for (size_t k = 0; k < masks.size(); ++k) {
        if (options.largest_region) keep_largest_region(masks[k]);
        if (options.fill_holes) fill_holes(masks[k]);
        const std::string stem = (fs::path(options.output) / fs::path(names[k]).stem()).string();
        Image out = masks[k];
        int64_t car = 0;
        for (uint8_t& v : out.pixels) car += v, v = v ? 255 : 0;
        data::write_png(stem + "_mask.png", out);
        if (options.overlay) data::write_png(stem + "_overlay.png", overlay(images[k], masks[k]));
        if (!options.rle.empty()) rows.emplace_back(fs::path(names[k]).filename().string(), data::rle_encode(masks[k]));
        car_fraction += static_cast<double>(car) / static_cast<double>(out.numel());
        ++report.done;
      }
      if (stop) std::rethrow_exception(stop);
    }
    writing_rle = true;
    if (!options.rle.empty() && report.done > 0) write_submission_csv(options.rle, rows);
  } catch (const std::exception& e) {
    // What is done stays: the masks are on disk, the submission gets their rows.
    std::string kept = std::to_string(report.done) + " of " + std::to_string(photos.size()) +
                       " photos were written to " + options.output + "/";
    if (!options.rle.empty() && !rows.empty() && !writing_rle) {
      try {
        write_submission_csv(options.rle, rows);
        kept += ", their " + std::to_string(rows.size()) + " rows to " + options.rle;
      } catch (const std::exception& w) {
        kept += "; their rows could not be written: " + std::string(w.what());
      }
    }
    const std::string next = bad_photo.empty() ? "fix the cause and run again"
                                               : "fix or remove " + bad_photo +
                                                     " and run again, or add --skip-bad to skip unreadable photos";
    throw std::runtime_error(std::string(e.what()) + " (" + kept + "; " + next + ")");
  }
  if (report.done == 0 && !report.skipped.empty())
    throw std::runtime_error("all " + std::to_string(photos.size()) + " photos were unreadable; nothing was written");
  if (report.done > 0) report.mean_car_fraction = car_fraction / static_cast<double>(report.done);
  return report;
}

}  // namespace tl::train
