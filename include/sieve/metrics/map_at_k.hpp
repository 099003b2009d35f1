#pragma once
/// Mean average precision at k (MAP@5 for the competition) with one true label per item.
///
/// Definition, stated once: for an item with true label y and ranked predictions p[0..],
/// only the first k predictions count; if y first appears at position i (0-based, positions
/// counted in the list as given) the item scores 1/(i+1), else 0. A label repeated after its
/// first appearance earns nothing, so duplicates are never counted twice. This equals
/// Kaggle's ml_metrics apk(actual=[y], predicted, k). Labels are int64 (the fast path: class
/// ids, -1 for a distractor) or std::string (submissions); -1 / "-1" is an ordinary label here.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/xt.hpp"

namespace sieve::metrics {

/// The distractor label in the fast path.
inline constexpr std::int64_t kDistractor = -1;

/// Precision at the rank of `truth` among the first k of `ranked` (0 if absent).
/// Requires: k >= 1. Ensures: result in {0, 1, 1/2, ..., 1/k}.
template <class L>
double average_precision_at_k(std::span<const L> ranked, const L& truth, std::size_t k = 5) {
  SIEVE_CHECK(k >= 1, "average_precision_at_k: k=", k, " must be at least 1");
  const std::size_t n = ranked.size() < k ? ranked.size() : k;
  for (std::size_t i = 0; i < n; ++i)
    if (ranked[i] == truth) return 1.0 / static_cast<double>(i + 1);
  return 0.0;
}

/// MAP@k of an int label matrix: ranked [N, W] (row i = predictions for item i, best first;
/// columns beyond k are ignored), truth [N].
/// Requires: ranked.shape(0) == truth.size(), N >= 1. Ensures: result in [0, 1].
inline double map_at_k(const Tensor2<std::int64_t>& ranked, std::span<const std::int64_t> truth,
                       std::size_t k = 5) {
  const std::size_t N = ranked.shape()[0], W = ranked.shape()[1];
  SIEVE_CHECK(N == truth.size(), "map_at_k: ranked has N=", N, " rows but truth has ", truth.size(), " labels");
  SIEVE_CHECK(N > 0, "map_at_k: no items (N=0): MAP is undefined");
  double sum = 0.0;
  for (std::size_t i = 0; i < N; ++i)
    sum += average_precision_at_k<std::int64_t>({ranked.data() + i * W, W}, truth[i], k);
  return sum / static_cast<double>(N);
}

/// MAP@k of string label rows (a submission): rows[i] are item i's predictions, best first.
/// Requires: rows.size() == truth.size() >= 1. Ensures: result in [0, 1].
inline double map_at_k(const std::vector<std::vector<std::string>>& rows, std::span<const std::string> truth,
                       std::size_t k = 5) {
  SIEVE_CHECK(rows.size() == truth.size(), "map_at_k: ", rows.size(), " prediction rows but ", truth.size(),
              " true labels");
  SIEVE_CHECK(!rows.empty(), "map_at_k: no items (N=0): MAP is undefined");
  double sum = 0.0;
  for (std::size_t i = 0; i < rows.size(); ++i)
    sum += average_precision_at_k<std::string>(rows[i], truth[i], k);
  return sum / static_cast<double>(rows.size());
}

/// MAP@5 (the competition metric) for the int fast path.
inline double map_at_5(const Tensor2<std::int64_t>& ranked, std::span<const std::int64_t> truth) {
  return map_at_k(ranked, truth, 5);
}

/// MAP@5 for string label rows.
inline double map_at_5(const std::vector<std::vector<std::string>>& rows, std::span<const std::string> truth) {
  return map_at_k(rows, truth, 5);
}

}  // namespace sieve::metrics
