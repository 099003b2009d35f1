#pragma once
/// From images to network input: ToTensor (HWC uint8 -> CHW float in [0, 1]) and
/// Normalize(mean, std).

#include <array>
#include <cstddef>
#include <cstdint>

#include "sieve/core/check.hpp"
#include "sieve/core/xt.hpp"
#include "sieve/core/pipeline.hpp"
#include "sieve/io/image.hpp"

namespace sieve::augment {

// Stages live in sieve::augment; this lets `a | b` find sieve's pipeline operator by ADL.
using ::sieve::operator|;

/// HWC uint8 -> CHW float x/255 (division, as torchvision's to_tensor, so values match bit
/// for bit). dst must hold 3*H*W floats.
inline void image_to_chw(const Image& x, float* dst) {
  const std::size_t n = x.height * x.width;
  for (std::size_t c = 0; c < 3; ++c)
    for (std::size_t i = 0; i < n; ++i) dst[c * n + i] = static_cast<float>(x.pixels[i * 3 + c]) / 255.0f;
}

/// HWC uint8 -> one plane of gray x/255: a gray pixel (R = G = B, every pixel of a decoded
/// grayscale file) is its value, as to_tensor of PIL's "L" image; a colour pixel is ITU-R 601
/// luma 0.299 R + 0.587 G + 0.114 B. dst must hold H*W floats.
inline void image_to_gray(const Image& x, float* dst) {
  const std::size_t n = x.height * x.width;
  const std::uint8_t* p = x.pixels.data();
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint8_t r = p[3 * i], g = p[3 * i + 1], b = p[3 * i + 2];
    dst[i] = (r == g && g == b) ? static_cast<float>(r) / 255.0f
                                : (0.299f * static_cast<float>(r) + 0.587f * static_cast<float>(g) +
                                   0.114f * static_cast<float>(b)) / 255.0f;
  }
}

/// Stage: torchvision ToTensor, into 3 channels (RGB) or 1 (gray, see image_to_gray).
class ToTensor {
 public:
  using input_type = Image;
  using output_type = Tensor3f;
  /// Requires: channels is 1 or 3.
  explicit ToTensor(std::size_t channels = 3) : channels_(channels) {
    SIEVE_CHECK(channels == 1 || channels == 3, "ToTensor: channels=", channels, " (1 or 3 supported)");
  }
  const Tensor3f& forward(const Image& x) {
    ensure_shape(out_, {channels_, x.height, x.width});
    if (channels_ == 3) image_to_chw(x, out_.data());
    else image_to_gray(x, out_.data());
    return out_;
  }
  std::size_t channels() const { return channels_; }

 private:
  std::size_t channels_;
  Tensor3f out_;
};

/// Stage: (x - mean[c]) / std[c] per channel, float32 (torchvision Normalize). A 1-channel
/// input uses mean[0] and std[0].
class Normalize {
 public:
  using input_type = Tensor3f;
  using output_type = Tensor3f;
  /// ImageNet statistics by default.
  explicit Normalize(std::array<float, 3> mean = {0.485f, 0.456f, 0.406f},
                     std::array<float, 3> std = {0.229f, 0.224f, 0.225f})
      : mean_(mean), std_(std) {
    for (float s : std) SIEVE_CHECK(s > 0.0f, "Normalize: std must be positive, got ", s);
  }
  const Tensor3f& forward(const Tensor3f& x) {
    const std::size_t C = x.shape()[0];
    SIEVE_CHECK(C == 1 || C == 3, "Normalize: input has ", C, " channels, expected 1 or 3");
    ensure_shape(out_, {C, x.shape()[1], x.shape()[2]});
    const std::size_t n = x.shape()[1] * x.shape()[2];
    for (std::size_t c = 0; c < C; ++c)
      for (std::size_t i = 0; i < n; ++i) out_.data()[c * n + i] = (x.data()[c * n + i] - mean_[c]) / std_[c];
    return out_;
  }

 private:
  std::array<float, 3> mean_, std_;
  Tensor3f out_;
};

}  // namespace sieve::augment
