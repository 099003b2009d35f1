#pragma once
/// The one seeded shuffle. Every order sieve draws (a loader's epoch order, the validation
/// split, FMNIST-D's test ids, the images sampled for statistics or a report) comes from these
/// two functions, so equal (seed, stream) give equal orders wherever they are drawn: the data-
/// parallel shards and the one-process loader agree because they call the same code, not two
/// copies that happen to match.
///
///   shuffle         Fisher-Yates from the back: for i = n-1 .. 1, swap v[i] with v[below(i+1)]
///   sample_prefix   Fisher-Yates from the front, stopped after k swaps: v[0..k) is a uniform
///                   sample without replacement (v[i] swapped with v[i + below(n-i)])
///
/// Both draw exactly one Rng::below per swap, so an order is a pure function of the Rng's
/// (seed, stream, position) and of n.

#include <algorithm>
#include <cstddef>
#include <numeric>
#include <span>
#include <utility>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/rng.hpp"

namespace sieve {

/// A uniform random permutation of `v` in place.
/// Requires: v.size() <= 2^32.
template <class T>
void shuffle(std::span<T> v, Rng& rng) {
  for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.below(i)]);
}

/// Move a uniform sample of k of v's elements (without replacement) to v[0..k), in draw order;
/// the rest keep no particular order. k >= v.size() shuffles all of v.
template <class T>
void sample_prefix(std::span<T> v, std::size_t k, Rng& rng) {
  const std::size_t n = v.size();
  for (std::size_t i = 0; i < k && i + 1 < n; ++i) std::swap(v[i], v[i + rng.below(n - i)]);
}

/// 0 .. n-1 in a random order.
inline std::vector<std::size_t> permutation(std::size_t n, Rng& rng) {
  std::vector<std::size_t> p(n);
  std::iota(p.begin(), p.end(), std::size_t{0});
  shuffle(std::span<std::size_t>(p), rng);
  return p;
}

/// k distinct indices of [0, n), sorted; all of them (drawing nothing) when k >= n.
inline std::vector<std::size_t> sample_indices(std::size_t n, std::size_t k, Rng& rng) {
  std::vector<std::size_t> idx(n);
  std::iota(idx.begin(), idx.end(), std::size_t{0});
  if (k >= n) return idx;
  sample_prefix(std::span<std::size_t>(idx), k, rng);
  idx.resize(k);
  std::sort(idx.begin(), idx.end());
  return idx;
}

}  // namespace sieve
