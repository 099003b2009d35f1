#pragma once
/// Crops with torchvision 0.14 semantics: CenterCrop (its rounding and zero padding),
/// RandomResizedCrop (scale/ratio sampling, 10 attempts, central fallback), RandomCrop with
/// padding (and its fixed-window form for test-time translations). Random stages draw only
/// from the Rng they are given.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#include "sieve/augment/resize.hpp"
#include "sieve/core/check.hpp"
#include "sieve/core/rng.hpp"
#include "sieve/core/pipeline.hpp"
#include "sieve/io/image.hpp"

namespace sieve::augment {

// Stages live in sieve::augment; this lets `a | b` find sieve's pipeline operator by ADL.
using ::sieve::operator|;

/// Copy the window rows [top, top+h), cols [left, left+w) of `src` into `dst`; pixels outside
/// `src` (negative or past the edge) become `fill`. dst is reshaped to h x w.
inline void crop_image(const Image& src, std::ptrdiff_t top, std::ptrdiff_t left, std::size_t h, std::size_t w,
                       Image& dst, std::uint8_t fill = 0) {
  dst.reshape(h, w);
  const auto H = static_cast<std::ptrdiff_t>(src.height), W = static_cast<std::ptrdiff_t>(src.width);
  for (std::size_t y = 0; y < h; ++y) {
    std::uint8_t* out = dst.data() + y * w * 3;
    const std::ptrdiff_t sy = top + static_cast<std::ptrdiff_t>(y);
    if (sy < 0 || sy >= H) {
      std::memset(out, fill, w * 3);
      continue;
    }
    const std::ptrdiff_t x0 = std::clamp<std::ptrdiff_t>(left, 0, W);
    const std::ptrdiff_t x1 = std::clamp<std::ptrdiff_t>(left + static_cast<std::ptrdiff_t>(w), 0, W);
    const std::size_t pre = static_cast<std::size_t>(x0 - left);
    const std::size_t mid = static_cast<std::size_t>(std::max<std::ptrdiff_t>(x1 - x0, 0));
    if (pre > 0) std::memset(out, fill, std::min(pre, w) * 3);
    if (mid > 0) std::memcpy(out + pre * 3, src.data() + (static_cast<std::size_t>(sy) * src.width + static_cast<std::size_t>(x0)) * 3, mid * 3);
    if (pre + mid < w) std::memset(out + (pre + mid) * 3, fill, (w - pre - mid) * 3);
  }
}

/// torchvision's center-crop origin: int(round((in - out) / 2.0)) with Python's round
/// (half to even); when out > in the image is first zero-padded by (out-in)//2 before.
inline std::ptrdiff_t center_crop_origin(std::size_t in, std::size_t out) {
  if (out > in) {
    const auto pad = static_cast<std::ptrdiff_t>((out - in) / 2);
    return -pad;  // after padding the crop starts at 0 (round((out-out)/2) = 0)
  }
  return static_cast<std::ptrdiff_t>(std::nearbyint(static_cast<double>(in - out) / 2.0));
}

/// Stage: crop the central h x w window (zero-padded when the image is smaller).
class CenterCrop {
 public:
  using input_type = Image;
  using output_type = Image;
  explicit CenterCrop(std::size_t size) : CenterCrop(std::array<std::size_t, 2>{size, size}) {}
  explicit CenterCrop(std::array<std::size_t, 2> hw) : hw_(hw) {
    SIEVE_CHECK(hw[0] > 0 && hw[1] > 0, "CenterCrop: size ", hw[0], "x", hw[1], " must be positive");
  }
  const Image& forward(const Image& x) {
    crop_image(x, center_crop_origin(x.height, hw_[0]), center_crop_origin(x.width, hw_[1]), hw_[0], hw_[1], out_);
    return out_;
  }

 private:
  std::array<std::size_t, 2> hw_;
  Image out_;
};

/// A crop window: rows [top, top+height), cols [left, left+width).
struct CropBox {
  std::size_t top = 0, left = 0, height = 0, width = 0;
  bool operator==(const CropBox&) const = default;
};

/// torchvision RandomResizedCrop.get_params: up to 10 draws of (area fraction in `scale`,
/// log-uniform aspect in `ratio`); the first window that fits wins; otherwise the central
/// crop clamped to the ratio range. Each attempt draws 2 doubles, plus 2 below() on success.
inline CropBox random_resized_crop_box(std::size_t H, std::size_t W, std::array<double, 2> scale,
                                       std::array<double, 2> ratio, Rng& rng) {
  const double area = static_cast<double>(H) * static_cast<double>(W);
  const double log_r0 = std::log(ratio[0]), log_r1 = std::log(ratio[1]);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * rng.uniform(scale[0], scale[1]);
    const double aspect = std::exp(rng.uniform(log_r0, log_r1));
    const auto w = static_cast<std::int64_t>(std::nearbyint(std::sqrt(target * aspect)));
    const auto h = static_cast<std::int64_t>(std::nearbyint(std::sqrt(target / aspect)));
    if (w > 0 && h > 0 && w <= static_cast<std::int64_t>(W) && h <= static_cast<std::int64_t>(H)) {
      const auto i = rng.below(H - static_cast<std::size_t>(h) + 1);
      const auto j = rng.below(W - static_cast<std::size_t>(w) + 1);
      return {i, j, static_cast<std::size_t>(h), static_cast<std::size_t>(w)};
    }
  }
  const double in_ratio = static_cast<double>(W) / static_cast<double>(H);
  std::size_t w = W, h = H;
  if (in_ratio < std::min(ratio[0], ratio[1])) {
    h = static_cast<std::size_t>(std::nearbyint(static_cast<double>(w) / std::min(ratio[0], ratio[1])));
  } else if (in_ratio > std::max(ratio[0], ratio[1])) {
    w = static_cast<std::size_t>(std::nearbyint(static_cast<double>(h) * std::max(ratio[0], ratio[1])));
  }
  return {(H - h) / 2, (W - w) / 2, h, w};
}

/// Stage: torchvision RandomResizedCrop(size, scale, ratio), bilinear (antialiased by default,
/// as with PIL images).
class RandomResizedCrop {
 public:
  using input_type = Image;
  using output_type = Image;
  explicit RandomResizedCrop(std::size_t size, std::array<double, 2> scale = {0.08, 1.0},
                             std::array<double, 2> ratio = {3.0 / 4.0, 4.0 / 3.0}, bool antialias = true)
      : size_(size), scale_(scale), ratio_(ratio), antialias_(antialias) {
    SIEVE_CHECK(size > 0, "RandomResizedCrop: size must be positive");
    SIEVE_CHECK(scale[0] > 0 && scale[0] <= scale[1], "RandomResizedCrop: scale (", scale[0], ", ", scale[1],
                ") must satisfy 0 < lo <= hi");
    SIEVE_CHECK(ratio[0] > 0 && ratio[0] <= ratio[1], "RandomResizedCrop: ratio (", ratio[0], ", ", ratio[1],
                ") must satisfy 0 < lo <= hi");
  }
  const Image& forward(const Image& x, Rng& rng) {
    SIEVE_CHECK(x.height > 0 && x.width > 0, "RandomResizedCrop: empty input image");
    box_ = random_resized_crop_box(x.height, x.width, scale_, ratio_, rng);
    crop_image(x, static_cast<std::ptrdiff_t>(box_.top), static_cast<std::ptrdiff_t>(box_.left), box_.height,
               box_.width, crop_);
    resize_image(crop_, size_, size_, antialias_, out_, tmp_);
    return out_;
  }
  /// The window chosen by the last forward (for tests and debugging).
  const CropBox& last_box() const { return box_; }

 private:
  std::size_t size_;
  std::array<double, 2> scale_, ratio_;
  bool antialias_;
  CropBox box_;
  Image crop_, out_;
  std::vector<float> tmp_;
};

/// Stage: torchvision RandomCrop(size, padding, pad_if_needed, fill=0): zero-pad by `padding`
/// on every side (and up to the crop size if pad_if_needed), then a uniform window.
class RandomCrop {
 public:
  using input_type = Image;
  using output_type = Image;
  explicit RandomCrop(std::size_t size, std::size_t padding = 0, bool pad_if_needed = false)
      : size_(size), padding_(padding), pad_if_needed_(pad_if_needed) {
    SIEVE_CHECK(size > 0, "RandomCrop: size must be positive");
  }
  /// The same window every call, drawing nothing: rows [top, top+size) and columns
  /// [left, left+size) of the image zero-padded by `padding` (no pad_if_needed). A deterministic
  /// view, e.g. a test-time translation: top = padding - dy, left = padding - dx moves the
  /// content down by dy and right by dx pixels. Requires: size > 0, top and left <= 2 padding.
  static RandomCrop fixed(std::size_t size, std::size_t padding, std::size_t top, std::size_t left) {
    SIEVE_CHECK(top <= 2 * padding && left <= 2 * padding, "RandomCrop::fixed: window origin (", top, ", ", left,
                ") outside [0, ", 2 * padding, "] (padding ", padding, ")");
    RandomCrop c(size, padding);
    c.window_ = {top, left};
    return c;
  }
  const Image& forward(const Image& x, Rng& rng) {
    std::size_t H = x.height + 2 * padding_, W = x.width + 2 * padding_;
    std::ptrdiff_t off_y = static_cast<std::ptrdiff_t>(padding_), off_x = off_y;
    if (pad_if_needed_ && H < size_) {
      off_y += static_cast<std::ptrdiff_t>(size_ - H);
      H += 2 * (size_ - H);
    }
    if (pad_if_needed_ && W < size_) {
      off_x += static_cast<std::ptrdiff_t>(size_ - W);
      W += 2 * (size_ - W);
    }
    SIEVE_CHECK(H >= size_ && W >= size_, "RandomCrop: crop ", size_, "x", size_, " larger than padded image ", W, "x",
                H);
    std::size_t i = 0, j = 0;
    if (window_) {
      i = (*window_)[0];
      j = (*window_)[1];
      SIEVE_CHECK(i + size_ <= H && j + size_ <= W, "RandomCrop: window ", size_, "x", size_, " at (", i, ", ", j,
                  ") outside the padded ", W, "x", H, " image");
    } else if (!(H == size_ && W == size_)) {
      i = rng.below(H - size_ + 1);
      j = rng.below(W - size_ + 1);
    }
    crop_image(x, static_cast<std::ptrdiff_t>(i) - off_y, static_cast<std::ptrdiff_t>(j) - off_x, size_, size_, out_);
    return out_;
  }

 private:
  std::size_t size_, padding_;
  bool pad_if_needed_;
  std::optional<std::array<std::size_t, 2>> window_;  // fixed(): (top, left) of every crop
  Image out_;
};

}  // namespace sieve::augment
