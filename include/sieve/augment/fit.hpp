#pragma once
/// FitImage: bring an image of any size to the network's square input, by padding (small
/// images keep their pixels: FMNIST-D's 28x28 reaches 32x32 with 2 black pixels each side, as its
/// reference does) or by torchvision's Resize + CenterCrop (photos).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "sieve/augment/crop.hpp"
#include "sieve/augment/resize.hpp"
#include "sieve/core/check.hpp"
#include "sieve/io/image.hpp"

namespace sieve::augment {

/// How FitImage reaches size x size.
enum class FitMode {
  resize,  ///< scale the shorter edge to S (bilinear, antialiased), then centre-crop S x S
  pad,     ///< scale down only images larger than S (longer edge to S, aspect kept), then
           ///< zero-pad (black) centred to S x S
};

/// "resize" or "pad" -> FitMode; throws naming the text otherwise.
inline FitMode parse_fit_mode(const std::string& s) {
  if (s == "resize") return FitMode::resize;
  if (s == "pad") return FitMode::pad;
  fail("fit mode '", s, "' must be 'resize' or 'pad'");
}
inline const char* fit_mode_name(FitMode m) { return m == FitMode::pad ? "pad" : "resize"; }

/// Stage: any image -> size x size, same channels (see FitMode). Deterministic, draws nothing.
class FitImage {
 public:
  using input_type = Image;
  using output_type = Image;
  /// Requires: size > 0.
  FitImage(std::size_t size, FitMode mode) : size_(size), mode_(mode) {
    SIEVE_CHECK(size > 0, "FitImage: size must be positive");
  }
  /// Requires: a non-empty image.
  const Image& forward(const Image& x) {
    SIEVE_CHECK(x.height > 0 && x.width > 0, "FitImage: empty image (", x.height, "x", x.width, ")");
    const Image* src = &x;
    const std::size_t H = x.height, W = x.width;
    if (mode_ == FitMode::pad) {
      if (H > size_ || W > size_) {
        const double s = static_cast<double>(size_) / static_cast<double>(std::max(H, W));
        const std::size_t OH = std::max<std::size_t>(1, static_cast<std::size_t>(std::lround(H * s)));
        const std::size_t OW = std::max<std::size_t>(1, static_cast<std::size_t>(std::lround(W * s)));
        resize_image(x, std::min(OH, size_), std::min(OW, size_), true, tmp_, buf_);
        src = &tmp_;
      }
    } else if (std::min(H, W) != size_) {
      const auto hw = resized_size(H, W, size_);
      resize_image(x, hw[0], hw[1], true, tmp_, buf_);
      src = &tmp_;
    }
    if (src->height == size_ && src->width == size_) {
      out_ = *src;
      return out_;
    }
    // A window larger than the image is zero-filled: centred padding in pad mode.
    crop_image(*src, center_crop_origin(src->height, size_), center_crop_origin(src->width, size_), size_, size_,
               out_);
    return out_;
  }
  std::size_t size() const { return size_; }
  FitMode mode() const { return mode_; }

 private:
  std::size_t size_;
  FitMode mode_;
  Image tmp_, out_;
  std::vector<float> buf_;
};

}  // namespace sieve::augment
