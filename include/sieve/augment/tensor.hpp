#pragma once
/// From images to network input: ToTensor (HWC uint8 -> CHW float in [0, 1]) and
/// Normalize(mean, std).

#include <array>
#include <cstddef>

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

/// Stage: torchvision ToTensor.
class ToTensor {
 public:
  using input_type = Image;
  using output_type = Tensor3f;
  const Tensor3f& forward(const Image& x) {
    ensure_shape(out_, {3, x.height, x.width});
    image_to_chw(x, out_.data());
    return out_;
  }

 private:
  Tensor3f out_;
};

/// Stage: (x - mean[c]) / std[c] per channel, float32 (torchvision Normalize).
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
    SIEVE_CHECK(x.shape()[0] == 3, "Normalize: input has ", x.shape()[0], " channels, expected 3");
    ensure_shape(out_, {3, x.shape()[1], x.shape()[2]});
    const std::size_t n = x.shape()[1] * x.shape()[2];
    for (std::size_t c = 0; c < 3; ++c)
      for (std::size_t i = 0; i < n; ++i) out_.data()[c * n + i] = (x.data()[c * n + i] - mean_[c]) / std_[c];
    return out_;
  }

 private:
  std::array<float, 3> mean_, std_;
  Tensor3f out_;
};

}  // namespace sieve::augment
