#pragma once
/// Parameter initialisation as torchvision's ResNet does it, from an explicit seeded Rng.

#include <cmath>
#include <cstddef>
#include <span>

#include "sieve/core/rng.hpp"

namespace sieve::nn {

/// kaiming_normal_(mode="fan_out", nonlinearity="relu"): N(0, 2 / fan_out), fan_out = K*KH*KW.
/// Requires: fan_out > 0.
template <class T>
void kaiming_normal_fan_out(std::span<T> w, std::size_t fan_out, Rng& rng) {
  const double stddev = std::sqrt(2.0 / static_cast<double>(fan_out));
  for (auto& v : w) v = static_cast<T>(rng.normal() * stddev);
}

/// U(-bound, bound), nn.Linear's default for weight (kaiming_uniform_ with a = sqrt(5)) and
/// bias, both with bound = 1 / sqrt(fan_in).
template <class T>
void uniform_fill(std::span<T> w, double bound, Rng& rng) {
  for (auto& v : w) v = static_cast<T>(rng.uniform(-bound, bound));
}

}  // namespace sieve::nn
