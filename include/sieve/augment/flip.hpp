#pragma once
/// Horizontal flips.

#include <cstddef>
#include <cstdint>

#include "sieve/core/check.hpp"
#include "sieve/core/rng.hpp"
#include "sieve/core/pipeline.hpp"
#include "sieve/io/image.hpp"

namespace sieve::augment {

// Stages live in sieve::augment; this lets `a | b` find sieve's pipeline operator by ADL.
using ::sieve::operator|;

/// Mirror left-right into `dst`.
inline void hflip_image(const Image& src, Image& dst) {
  dst.reshape(src.height, src.width);
  const std::size_t W = src.width;
  for (std::size_t y = 0; y < src.height; ++y) {
    const std::uint8_t* in = src.data() + y * W * 3;
    std::uint8_t* out = dst.data() + y * W * 3;
    for (std::size_t x = 0; x < W; ++x)
      for (std::size_t c = 0; c < 3; ++c) out[x * 3 + c] = in[(W - 1 - x) * 3 + c];
  }
}

/// Stage: flip with probability p (one uniform draw per call, whether or not it flips).
class RandomHorizontalFlip {
 public:
  using input_type = Image;
  using output_type = Image;
  explicit RandomHorizontalFlip(double p = 0.5) : p_(p) {
    SIEVE_CHECK(p >= 0.0 && p <= 1.0, "RandomHorizontalFlip: p=", p, " not in [0, 1]");
  }
  const Image& forward(const Image& x, Rng& rng) {
    flipped_ = rng.uniform_double() < p_;
    if (flipped_)
      hflip_image(x, out_);
    else
      out_ = x;
    return out_;
  }
  bool last_flipped() const { return flipped_; }

 private:
  double p_;
  bool flipped_ = false;
  Image out_;
};

}  // namespace sieve::augment
