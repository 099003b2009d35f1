#pragma once
/// Inverted dropout with a counter-based mask: element i of step s is kept iff word i of the
/// Philox stream (seed, s) gives uniform() >= p. The mask is a pure function of
/// (seed, step, i), so it never depends on threads or call order, and backward regenerates it
/// instead of storing it.

#include <cstddef>
#include <cstdint>

#include "sieve/core/check.hpp"
#include "sieve/core/rng.hpp"

namespace sieve::kernels {

/// The keep decision of element i of step `step` (the stream's words are drawn in order).
inline bool dropout_keep(std::uint32_t word, double p) {
  return static_cast<double>(word >> 8) * 0x1.0p-24 >= p;
}

/// y[i] = keep(i) ? x[i] / (1 - p) : 0. x, y: [n]; y may alias x.
/// Requires: 0 <= p < 1. `seed` is normally derive_seed(run_seed, RngPurpose::dropout).
template <class T>
void dropout_forward(const T* x, T* y, std::size_t n, double p, std::uint64_t seed, std::uint64_t step) {
  SIEVE_CHECK(p >= 0.0 && p < 1.0, "dropout: p=", p, " must be in [0, 1)");
  const T scale = static_cast<T>(1.0 / (1.0 - p));
  Rng rng(seed, step);
  for (std::size_t i = 0; i < n; ++i) y[i] = dropout_keep(rng.next_u32(), p) ? x[i] * scale : T(0);
}

/// dx[i] = keep(i) ? dy[i] / (1 - p) : 0 with the same mask as dropout_forward(seed, step).
template <class T>
void dropout_backward(const T* dy, T* dx, std::size_t n, double p, std::uint64_t seed, std::uint64_t step) {
  dropout_forward(dy, dx, n, p, seed, step);
}

}  // namespace sieve::kernels
