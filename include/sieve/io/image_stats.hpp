#pragma once
/// What a set of images looks like: sizes, whether they are gray, and the per-channel mean and
/// standard deviation of their pixels (in [0, 1], as ToTensor makes them). Training takes its
/// input defaults from these instead of ImageNet's: a 28x28 gray image stays 28x28 and one
/// channel, normalised by its own statistics.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/rng.hpp"
#include "sieve/core/shuffle.hpp"
#include "sieve/io/dataset.hpp"
#include "sieve/io/image.hpp"

namespace sieve::io {

struct ImageStats {
  std::size_t count = 0;  ///< images looked at
  std::size_t min_height = 0, max_height = 0, min_width = 0, max_width = 0;
  bool gray = true;  ///< every pixel of every image looked at has R = G = B
  /// Per channel (R, G, B) over all pixels of the images looked at, values in [0, 1].
  std::array<double, 3> mean{}, std{};
  /// Mean and std of the gray value (what ToTensor(1) makes of the pixels).
  double gray_mean = 0.0, gray_std = 0.0;
};

/// Statistics of at most `max_images` samples of `ds`: all of them when there are that few,
/// else a seeded choice without repetition (the same for the same seed and dataset size).
/// Sums are in double per image, then over images, so the order of pixels does not matter.
/// Requires: ds.size() >= 1, max_images >= 1, every chosen sample decodable (errors name it).
inline ImageStats image_stats(const Dataset& ds, std::size_t max_images = 4096, std::uint64_t seed = 0) {
  const std::size_t n = ds.size();
  SIEVE_CHECK(n > 0, "image_stats: the dataset is empty");
  SIEVE_CHECK(max_images > 0, "image_stats: max_images must be positive");
  Rng rng(derive_seed(seed, RngPurpose::split), 0xDA7A);
  const std::vector<std::size_t> pick = sample_indices(n, max_images, rng);  // in file order
  ImageStats s;
  s.min_height = s.min_width = static_cast<std::size_t>(-1);
  std::array<double, 3> sum{}, sq{};
  double gsum = 0.0, gsq = 0.0;
  std::uint64_t pixels = 0;
  Image img;
  for (std::size_t i : pick) {
    ds.load(i, img);
    s.min_height = std::min(s.min_height, img.height), s.max_height = std::max(s.max_height, img.height);
    s.min_width = std::min(s.min_width, img.width), s.max_width = std::max(s.max_width, img.width);
    const std::size_t hw = img.height * img.width;
    std::array<std::uint64_t, 3> a{}, b{};  // exact integer sums of one image
    double g = 0.0, g2 = 0.0;
    for (std::size_t p = 0; p < hw; ++p) {
      const std::uint8_t* px = img.pixels.data() + 3 * p;
      for (std::size_t c = 0; c < 3; ++c) a[c] += px[c], b[c] += std::uint64_t{px[c]} * px[c];
      if (px[0] != px[1] || px[1] != px[2]) s.gray = false;
      const double y = (px[0] == px[1] && px[1] == px[2]) ? px[0] : 0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2];
      g += y, g2 += y * y;
    }
    for (std::size_t c = 0; c < 3; ++c) sum[c] += static_cast<double>(a[c]), sq[c] += static_cast<double>(b[c]);
    gsum += g, gsq += g2;
    pixels += hw;
    ++s.count;
  }
  const double P = static_cast<double>(pixels);
  SIEVE_CHECK(P > 0, "image_stats: the images have no pixels");
  auto finish = [P](double s1, double s2, double& mean, double& sd) {
    mean = s1 / P / 255.0;
    const double var = s2 / P / (255.0 * 255.0) - mean * mean;
    sd = std::sqrt(std::max(var, 0.0));
  };
  for (std::size_t c = 0; c < 3; ++c) finish(sum[c], sq[c], s.mean[c], s.std[c]);
  finish(gsum, gsq, s.gray_mean, s.gray_std);
  return s;
}

}  // namespace sieve::io
