#pragma once
/// Colour operations with torchvision 0.14's uint8-tensor semantics: float32 arithmetic,
/// clamp to [0, 255], then truncation to uint8 (Tensor.to(uint8)); grayscale is
/// 0.2989 R + 0.587 G + 0.114 B, truncated.

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>

#include "sieve/core/check.hpp"
#include "sieve/core/rng.hpp"
#include "sieve/core/shuffle.hpp"
#include "sieve/core/pipeline.hpp"
#include "sieve/io/image.hpp"

namespace sieve::augment {

// Stages live in sieve::augment; this lets `a | b` find sieve's pipeline operator by ADL.
using ::sieve::operator|;

inline std::uint8_t gray_u8(std::uint8_t r, std::uint8_t g, std::uint8_t b) {
  const float l = 0.2989f * static_cast<float>(r) + 0.587f * static_cast<float>(g) + 0.114f * static_cast<float>(b);
  return static_cast<std::uint8_t>(l);  // l in [0, 255]: truncation, as Tensor.to(uint8)
}

namespace detail {
inline std::uint8_t blend_u8(float ratio, float one_minus_ratio, std::uint8_t a, float b) {
  float v = ratio * static_cast<float>(a) + one_minus_ratio * b;
  v = v < 0.f ? 0.f : (v > 255.f ? 255.f : v);
  return static_cast<std::uint8_t>(v);
}
}  // namespace detail

/// img * factor, clamped (torchvision adjust_brightness).
inline void adjust_brightness(Image& img, double factor) {
  const auto r = static_cast<float>(factor), q = static_cast<float>(1.0 - factor);
  for (auto& v : img.pixels) v = detail::blend_u8(r, q, v, 0.f);
}

/// Blend with the mean of the (truncated uint8) grayscale image (torchvision adjust_contrast).
inline void adjust_contrast(Image& img, double factor) {
  const std::size_t n = img.height * img.width;
  double sum = 0.0;  // torch.mean over float32: exact for these integer sums up to 2^53
  for (std::size_t i = 0; i < n; ++i)
    sum += gray_u8(img.pixels[i * 3], img.pixels[i * 3 + 1], img.pixels[i * 3 + 2]);
  const auto mean = static_cast<float>(sum / static_cast<double>(n));
  const auto r = static_cast<float>(factor), q = static_cast<float>(1.0 - factor);
  for (auto& v : img.pixels) v = detail::blend_u8(r, q, v, mean);
}

/// Blend with the per-pixel grayscale (torchvision adjust_saturation).
inline void adjust_saturation(Image& img, double factor) {
  const auto r = static_cast<float>(factor), q = static_cast<float>(1.0 - factor);
  const std::size_t n = img.height * img.width;
  for (std::size_t i = 0; i < n; ++i) {
    std::uint8_t* p = img.pixels.data() + i * 3;
    const float g = gray_u8(p[0], p[1], p[2]);
    for (std::size_t c = 0; c < 3; ++c) p[c] = detail::blend_u8(r, q, p[c], g);
  }
}

/// Stage: ColorJitter(brightness, contrast, saturation). Each factor is uniform in
/// [max(0, 1-v), 1+v]; the three ops run in a random order (Fisher-Yates over 3), as
/// torchvision permutes its ops. Draws: 2 below() for the order, then one double per
/// enabled op.
class ColorJitter {
 public:
  using input_type = Image;
  using output_type = Image;
  ColorJitter(double brightness, double contrast, double saturation) : v_{brightness, contrast, saturation} {
    for (double v : v_) SIEVE_CHECK(v >= 0.0, "ColorJitter: strengths must be >= 0, got ", v);
  }
  const Image& forward(const Image& x, Rng& rng) {
    out_ = x;
    std::array<int, 3> order{0, 1, 2};
    shuffle(std::span<int>(order), rng);
    for (int op : order) {
      const double v = v_[static_cast<std::size_t>(op)];
      if (v == 0.0) continue;
      const double lo = v < 1.0 ? 1.0 - v : 0.0;
      const double f = rng.uniform(lo, 1.0 + v);
      if (op == 0) adjust_brightness(out_, f);
      if (op == 1) adjust_contrast(out_, f);
      if (op == 2) adjust_saturation(out_, f);
    }
    return out_;
  }

 private:
  std::array<double, 3> v_;
  Image out_;
};

/// Stage: grayscale replicated to 3 channels (torchvision Grayscale(num_output_channels=3)).
class Grayscale3 {
 public:
  using input_type = Image;
  using output_type = Image;
  const Image& forward(const Image& x) {
    out_.reshape(x.height, x.width);
    const std::size_t n = x.height * x.width;
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint8_t g = gray_u8(x.pixels[i * 3], x.pixels[i * 3 + 1], x.pixels[i * 3 + 2]);
      out_.pixels[i * 3] = out_.pixels[i * 3 + 1] = out_.pixels[i * 3 + 2] = g;
    }
    return out_;
  }

 private:
  Image out_;
};

}  // namespace sieve::augment
