#pragma once
/// Counter-based random numbers: Philox4x32-10 (Salmon et al., SC'11, "Parallel random
/// numbers: as easy as 1, 2, 3"). A value is a pure function of its key (seed, stream,
/// position), so results never depend on thread count, call order or the standard library.

#include <array>
#include <cmath>
#include <cstdint>
#include <numbers>

#include "sieve/core/check.hpp"

namespace sieve {

using Philox4x32 = std::array<std::uint32_t, 4>;

/// One Philox4x32-10 block: 10 rounds of multiply-xor over a 128-bit counter and 64-bit key.
constexpr Philox4x32 philox4x32(Philox4x32 ctr, std::array<std::uint32_t, 2> key) {
  constexpr std::uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr std::uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;  // golden ratio, sqrt(3)-1
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key[0] += W0;
      key[1] += W1;
    }
    const std::uint64_t p0 = std::uint64_t{M0} * ctr[0];
    const std::uint64_t p1 = std::uint64_t{M1} * ctr[2];
    ctr = {static_cast<std::uint32_t>(p1 >> 32) ^ ctr[1] ^ key[0], static_cast<std::uint32_t>(p1),
           static_cast<std::uint32_t>(p0 >> 32) ^ ctr[3] ^ key[1], static_cast<std::uint32_t>(p0)};
  }
  return ctr;
}

/// SplitMix64 finaliser: derives independent 64-bit seeds from (seed, tag) pairs.
constexpr std::uint64_t mix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/// A seed for one purpose (augmentation, dropout, init, shuffling ...) derived from the run's
/// seed, so different purposes never share random numbers.
constexpr std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t purpose) {
  return mix64(mix64(seed) ^ mix64(purpose + 0x632BE59BD9B4E019ull));
}

/// Purpose tags for derive_seed; downstream code may add its own values above 1000.
enum class RngPurpose : std::uint64_t { init = 1, shuffle = 2, augment = 3, dropout = 4, split = 5 };

constexpr std::uint64_t derive_seed(std::uint64_t seed, RngPurpose purpose) {
  return derive_seed(seed, static_cast<std::uint64_t>(purpose));
}

/// A stream of random numbers keyed by (seed, stream); `position` counts the 32-bit words
/// drawn so far. Copying an Rng copies its position; two Rngs with equal keys and positions
/// produce the same numbers.
class Rng {
 public:
  /// Requires: nothing. Ensures: the next word is word `position` of stream (seed, stream).
  explicit Rng(std::uint64_t seed, std::uint64_t stream = 0, std::uint64_t position = 0)
      : seed_(seed), stream_(stream) {
    seek(position);
  }

  /// The stream for one sample of one epoch: augmentation and loaders key by this, so a
  /// sample's random numbers never depend on batch composition or worker count.
  /// Requires: epoch < 2^32 and index < 2^32 (the stream id is epoch:index, injective).
  static Rng for_sample(std::uint64_t seed, std::uint64_t epoch, std::uint64_t index) {
    SIEVE_CHECK(epoch < (1ull << 32) && index < (1ull << 32), "Rng::for_sample: epoch=", epoch,
                " and index=", index, " must each be below 2^32");
    return Rng(seed, (epoch << 32) | index);
  }

  std::uint64_t seed() const { return seed_; }
  std::uint64_t stream() const { return stream_; }
  /// Number of 32-bit words drawn so far (checkpoint this to resume exactly).
  std::uint64_t position() const { return block_ * 4 + lane_; }

  /// Jump to word `position` of this stream.
  void seek(std::uint64_t position) {
    block_ = position / 4;
    lane_ = static_cast<unsigned>(position % 4);
    refill();
  }

  /// The word at `position` of stream (seed, stream), without any state.
  static std::uint32_t word_at(std::uint64_t seed, std::uint64_t stream, std::uint64_t position) {
    const auto out = block(seed, stream, position / 4);
    return out[position % 4];
  }

  std::uint32_t next_u32() {
    if (lane_ == 4) {
      ++block_;
      lane_ = 0;
      refill();
    }
    return buf_[lane_++];
  }

  std::uint64_t next_u64() {
    const std::uint64_t hi = next_u32();
    return (hi << 32) | next_u32();
  }

  /// Uniform float in [0, 1) with 24 random bits (every value a multiple of 2^-24).
  float uniform() { return static_cast<float>(next_u32() >> 8) * 0x1.0p-24f; }

  /// Uniform double in [0, 1) with 53 random bits.
  double uniform_double() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

  /// Uniform double in [lo, hi).
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform_double(); }

  /// Uniform integer in [0, n), unbiased (Lemire's multiply-and-reject).
  /// Requires: 0 < n <= 2^32.
  std::uint64_t below(std::uint64_t n) {
    SIEVE_CHECK(n > 0 && n <= (1ull << 32), "Rng::below: n=", n, " must be in [1, 2^32]");
    std::uint64_t m = std::uint64_t{next_u32()} * n;
    auto low = static_cast<std::uint32_t>(m);
    if (low < n) {
      const auto threshold = static_cast<std::uint32_t>((0x100000000ull - n) % n);
      while (low < threshold) {
        m = std::uint64_t{next_u32()} * n;
        low = static_cast<std::uint32_t>(m);
      }
    }
    return m >> 32;
  }

  /// Standard normal by Box-Muller on two 32-bit words (the sine half is discarded, so each
  /// value costs exactly two words and positions stay easy to reason about).
  double normal() {
    const double u1 = (static_cast<double>(next_u32()) + 1.0) * 0x1.0p-32;  // (0, 1]
    const double u2 = static_cast<double>(next_u32()) * 0x1.0p-32;          // [0, 1)
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  }

  double normal(double mean, double stddev) { return mean + stddev * normal(); }

  /// True with probability p.
  bool bernoulli(double p) { return uniform_double() < p; }

 private:
  static Philox4x32 block(std::uint64_t seed, std::uint64_t stream, std::uint64_t block_index) {
    return philox4x32({static_cast<std::uint32_t>(block_index), static_cast<std::uint32_t>(block_index >> 32),
                       static_cast<std::uint32_t>(stream), static_cast<std::uint32_t>(stream >> 32)},
                      {static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)});
  }
  void refill() { buf_ = block(seed_, stream_, block_); }

  std::uint64_t seed_;
  std::uint64_t stream_;
  std::uint64_t block_ = 0;
  unsigned lane_ = 0;
  Philox4x32 buf_{};
};

}  // namespace sieve
