#pragma once
/// Open-set ranking: insert the distractor label -1 into each item's ranked class list, choose
/// the threshold on validation (a MAP@5 sweep, optionally reweighted to the test's expected
/// distractor share) or by a target unknown rate.
///
/// Ordering rule, stated once (it is the PyTorch reference's `rank_with_threshold`): append a
/// virtual column K scoring t to scores [N,K] and take a stable descending sort. So classes are
/// ordered by score, ties by smaller class index, and -1 comes after every class scoring >= t
/// (ties with t go to the class) and before every class scoring < t. Comparisons are in double,
/// as numpy promotes float32 scores against a float64 threshold.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <optional>
#include <span>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/xt.hpp"
#include "sieve/metrics/map_at_k.hpp"

namespace sieve::retrieval {

using metrics::kDistractor;

/// `n` evenly spaced values from lo to hi inclusive (numpy.linspace), e.g. (0, 1, 101).
/// Requires: n >= 1 (n == 1 gives {lo}).
inline std::vector<double> linspace(double lo, double hi, std::size_t n) {
  SIEVE_CHECK(n >= 1, "linspace: n=", n, " must be at least 1");
  std::vector<double> v(n);
  if (n == 1) {
    v[0] = lo;
    return v;
  }
  const double step = (hi - lo) / static_cast<double>(n - 1);
  for (std::size_t i = 0; i < n; ++i) v[i] = lo + static_cast<double>(i) * step;
  v[n - 1] = hi;
  return v;
}

namespace detail {
template <class T>
void check_scores(const Tensor2<T>& scores, const char* op) {
  const std::size_t N = scores.shape()[0], K = scores.shape()[1];
  SIEVE_CHECK(K >= 1, op, ": scores have K=0 classes (shape [", N, ",0])");
  const T* s = scores.data();
  for (std::size_t i = 0; i < N * K; ++i)
    if (std::isnan(s[i])) fail(op, ": scores[", i / K, ",", i % K, "] is NaN (shape [", N, ",", K, "])");
}

/// The first min(k, K) class indices of one row by (score desc, index asc): a stable top-k.
template <class T>
void top_classes(const T* row, std::size_t K, std::size_t k, std::vector<std::uint32_t>& idx) {
  idx.resize(K);
  std::iota(idx.begin(), idx.end(), 0u);
  const std::size_t m = std::min(k, K);
  std::partial_sort(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(m), idx.end(),
                    [row](std::uint32_t a, std::uint32_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
  idx.resize(m);
}
}  // namespace detail

/// Top-k class ids per row, no distractor: scores [N,K] -> [N, min(k,K)], best first.
/// Requires: no NaN in scores, K >= 1.
template <class T>
Tensor2<std::int64_t> rank_top_k(const Tensor2<T>& scores, std::size_t k = 5) {
  detail::check_scores(scores, "rank_top_k");
  const std::size_t N = scores.shape()[0], K = scores.shape()[1], W = std::min(k, K);
  Tensor2<std::int64_t> out(Shape<2>{N, W});
  std::vector<std::uint32_t> idx;
  for (std::size_t i = 0; i < N; ++i) {
    detail::top_classes(scores.data() + i * K, K, k, idx);
    for (std::size_t j = 0; j < W; ++j) out(i, j) = idx[j];
  }
  return out;
}

/// Ranked labels with -1 inserted as if it scored t: scores [N,K] -> [N, min(k, K+1)].
/// Requires: no NaN in scores, K >= 1. Ensures: each row holds distinct labels in [-1, K).
template <class T>
Tensor2<std::int64_t> rank_with_threshold(const Tensor2<T>& scores, double t, std::size_t k = 5) {
  detail::check_scores(scores, "rank_with_threshold");
  const std::size_t N = scores.shape()[0], K = scores.shape()[1], W = std::min(k, K + 1);
  Tensor2<std::int64_t> out(Shape<2>{N, W});
  std::vector<std::uint32_t> idx;
  for (std::size_t i = 0; i < N; ++i) {
    const T* row = scores.data() + i * K;
    detail::top_classes(row, K, k, idx);
    std::size_t j = 0, c = 0;
    bool placed = false;
    while (j < W) {
      if (!placed && (c == idx.size() || static_cast<double>(row[idx[c]]) < t)) {
        out(i, j++) = kDistractor;
        placed = true;
      } else {
        out(i, j++) = idx[c++];
      }
    }
  }
  return out;
}

/// MAP@5 against the threshold: the whole curve and its first maximum (the reference's rule).
struct ThresholdSweep {
  std::vector<double> thresholds;
  std::vector<double> map5;             ///< MAP@k at each threshold (share-weighted when a share is given)
  std::vector<double> map5_known;       ///< mean over the items of a known class (0 when there are none)
  std::vector<double> map5_distractor;  ///< mean over the distractor items (0 when there are none)
  std::vector<double> first_known;      ///< fraction of known items given -1 first (best score < t)
  std::vector<double> first_distractor; ///< fraction of distractor items given -1 first
  std::size_t best_index = 0;           ///< first index of the maximum
  double best_threshold = 0.0;
  double best_map5 = 0.0;
};

/// Sweep thresholds for inserting -1; truth holds class ids in [0,K) or -1.
///
/// `distractor_share` corrects for a validation set whose share of distractors differs from
/// the test's: the best threshold trades known items against distractors, so it depends on how
/// many of each the test holds (FMNIST-D validates on 30% outside images, its test holds 20%).
/// Given a share p, the curve is (1 - p) * map5_known + p * map5_distractor: the MAP@k of a set
/// with the validation's items reweighted to that share. Without one (or when either group is
/// empty) it is the plain mean over all items.
/// Cost O(N K log k + N |grid| k): each row's class rank of its truth and its top-k scores are
/// computed once, then each threshold only decides where -1 lands.
/// Requires: scores [N,K] with N == truth.size() >= 1, grid non-empty, truth in [-1, K),
/// distractor_share in [0, 1] when given.
/// Ensures: without a share, map5[g] == map_at_k(rank_with_threshold(scores, grid[g], k), truth,
/// k) up to rounding.
template <class T>
ThresholdSweep sweep_threshold(const Tensor2<T>& scores, std::span<const std::int64_t> truth,
                               std::span<const double> grid, std::size_t k = 5,
                               std::optional<double> distractor_share = std::nullopt) {
  detail::check_scores(scores, "sweep_threshold");
  const std::size_t N = scores.shape()[0], K = scores.shape()[1];
  SIEVE_CHECK(N == truth.size(), "sweep_threshold: scores have N=", N, " rows but truth has ", truth.size());
  SIEVE_CHECK(N > 0, "sweep_threshold: no validation items (N=0)");
  SIEVE_CHECK(!grid.empty(), "sweep_threshold: empty threshold grid");
  SIEVE_CHECK(k >= 1, "sweep_threshold: k=", k, " must be at least 1");
  if (distractor_share)
    SIEVE_CHECK(*distractor_share >= 0.0 && *distractor_share <= 1.0, "sweep_threshold: distractor_share=",
                *distractor_share, " outside [0, 1]");
  const std::size_t m = std::min(k, K);
  std::vector<double> top(N * m);     // top-m scores per row, descending
  std::vector<std::size_t> rank(N);   // class rank of the truth (k = absent or distractor)
  std::vector<std::uint32_t> idx;
  for (std::size_t i = 0; i < N; ++i) {
    SIEVE_CHECK(truth[i] >= -1 && truth[i] < static_cast<std::int64_t>(K), "sweep_threshold: truth[", i,
                "]=", truth[i], " outside [-1, ", K, ")");
    const T* row = scores.data() + i * K;
    detail::top_classes(row, K, k, idx);
    rank[i] = k;
    for (std::size_t j = 0; j < m; ++j) {
      top[i * m + j] = static_cast<double>(row[idx[j]]);
      if (static_cast<std::int64_t>(idx[j]) == truth[i]) rank[i] = j;
    }
  }
  const auto n_distractor = static_cast<std::size_t>(std::count(truth.begin(), truth.end(), kDistractor));
  const std::size_t n_known = N - n_distractor;
  ThresholdSweep out;
  out.thresholds.assign(grid.begin(), grid.end());
  out.map5.resize(grid.size());
  out.map5_known.resize(grid.size());
  out.map5_distractor.resize(grid.size());
  out.first_known.resize(grid.size());
  out.first_distractor.resize(grid.size());
  for (std::size_t g = 0; g < grid.size(); ++g) {
    const double t = grid[g];
    double sum_known = 0.0, sum_distractor = 0.0;
    std::size_t first_k = 0, first_d = 0;
    for (std::size_t i = 0; i < N; ++i) {
      std::size_t p = 0;  // where -1 lands: after every top class scoring >= t
      while (p < m && top[i * m + p] >= t) ++p;
      if (p == 0) ++(truth[i] == kDistractor ? first_d : first_k);
      std::size_t r;  // 0-based position of the truth in the final list, or >= k if absent
      if (truth[i] == kDistractor) r = p;  // when p == m == k, -1 is not in the list
      else r = rank[i] >= p ? rank[i] + 1 : rank[i];
      if (truth[i] != kDistractor && rank[i] >= k) r = k;
      if (r < k) (truth[i] == kDistractor ? sum_distractor : sum_known) += 1.0 / static_cast<double>(r + 1);
    }
    out.map5_known[g] = n_known ? sum_known / static_cast<double>(n_known) : 0.0;
    out.map5_distractor[g] = n_distractor ? sum_distractor / static_cast<double>(n_distractor) : 0.0;
    out.first_known[g] = n_known ? static_cast<double>(first_k) / static_cast<double>(n_known) : 0.0;
    out.first_distractor[g] = n_distractor ? static_cast<double>(first_d) / static_cast<double>(n_distractor) : 0.0;
    out.map5[g] = distractor_share && n_known > 0 && n_distractor > 0
                      ? (1.0 - *distractor_share) * out.map5_known[g] + *distractor_share * out.map5_distractor[g]
                      : (sum_known + sum_distractor) / static_cast<double>(N);
    if (g == 0 || out.map5[g] > out.best_map5) {
      out.best_map5 = out.map5[g];
      out.best_index = g;
      out.best_threshold = t;
    }
  }
  return out;
}

/// The first index maximising (1 - share) * known[g] + share * distractor[g]: the best
/// threshold of a sweep for a test holding `share` distractors (ThresholdSweep::map5_known,
/// ::map5_distractor, computed once on validation).
/// Requires: known and distractor of equal non-zero length, share in [0, 1].
inline std::size_t best_index_for_share(std::span<const double> known, std::span<const double> distractor,
                                        double share) {
  SIEVE_CHECK(!known.empty() && known.size() == distractor.size(), "best_index_for_share: curves of ", known.size(),
              " and ", distractor.size(), " points");
  SIEVE_CHECK(share >= 0.0 && share <= 1.0, "best_index_for_share: share=", share, " outside [0, 1]");
  std::size_t best = 0;
  double best_v = 0.0;
  for (std::size_t g = 0; g < known.size(); ++g) {
    const double v = (1.0 - share) * known[g] + share * distractor[g];
    if (g == 0 || v > best_v) best = g, best_v = v;
  }
  return best;
}

/// The distractor share of a test set estimated from how often its items get -1 first, by
/// black-box shift estimation (Lipton, Wang and Smola, 2018) with one binary outcome: if a
/// fraction q_k of validation's known items and q_d of its distractors get -1 first at some
/// threshold, and a fraction r of the test items does, then r = (1 - p) q_k + p q_d, so
/// p = (r - q_k) / (q_d - q_k), clipped to [0, 1]. Consistent when the test's distractors look
/// like validation's (label shift); distractors of unseen kinds get -1 first less often than
/// validation's did, and the estimate is then too low.
/// Requires: rates in [0, 1] and q_d > q_k (else the threshold separates nothing).
inline double estimate_distractor_share(double first_known, double first_distractor, double test_first) {
  SIEVE_CHECK(first_known >= 0.0 && first_known <= 1.0 && first_distractor >= 0.0 && first_distractor <= 1.0 &&
                  test_first >= 0.0 && test_first <= 1.0,
              "estimate_distractor_share: rates ", first_known, ", ", first_distractor, ", ", test_first,
              " must lie in [0, 1]");
  SIEVE_CHECK(first_distractor > first_known, "estimate_distractor_share: at this threshold validation's distractors "
              "get -1 first no more often than its known items (", first_distractor, " vs ", first_known,
              "): the share cannot be estimated");
  return std::clamp((test_first - first_known) / (first_distractor - first_known), 0.0, 1.0);
}

/// A threshold chosen so that a target fraction of items gets -1 first.
struct UnknownRateThreshold {
  double threshold = 0.0;
  double achieved_rate = 0.0;  ///< fraction of rows whose every class scores below threshold
};

/// The threshold that labels a fraction `rate` of rows -1 first (a row gets -1 first exactly
/// when its best class scores < t). With ties among row maxima an exact fraction may not
/// exist; the achievable fraction closest to `rate` is taken (the smaller one on a tie).
/// Requires: rate in [0,1], N >= 1, no NaN.
template <class T>
UnknownRateThreshold threshold_for_unknown_rate(const Tensor2<T>& scores, double rate) {
  detail::check_scores(scores, "threshold_for_unknown_rate");
  const std::size_t N = scores.shape()[0], K = scores.shape()[1];
  SIEVE_CHECK(N > 0, "threshold_for_unknown_rate: no items (N=0)");
  SIEVE_CHECK(rate >= 0.0 && rate <= 1.0, "threshold_for_unknown_rate: rate=", rate, " outside [0, 1]");
  std::vector<double> mx(N);
  for (std::size_t i = 0; i < N; ++i) {
    const T* row = scores.data() + i * K;
    mx[i] = static_cast<double>(*std::max_element(row, row + K));
  }
  std::sort(mx.begin(), mx.end());
  const auto target = static_cast<std::size_t>(std::llround(rate * static_cast<double>(N)));
  const double inf = std::numeric_limits<double>::infinity();
  UnknownRateThreshold out;
  if (target == 0) {
    out.threshold = mx[0];
  } else if (target == N) {
    out.threshold = std::nextafter(mx[N - 1], inf);
  } else {
    // Thresholds in (mx[target-1], mx[target]] label exactly `target` rows when those differ;
    // otherwise pick the nearer of the two achievable counts around the tied value v.
    const double v = mx[target];
    const auto below = static_cast<std::size_t>(std::lower_bound(mx.begin(), mx.end(), v) - mx.begin());
    const auto upto = static_cast<std::size_t>(std::upper_bound(mx.begin(), mx.end(), v) - mx.begin());
    if (target - below <= upto - target) out.threshold = v;  // labels `below` rows
    else out.threshold = std::nextafter(v, inf);             // labels `upto` rows
  }
  std::size_t count = 0;
  for (double v : mx) count += v < out.threshold;
  out.achieved_rate = static_cast<double>(count) / static_cast<double>(N);
  return out;
}

}  // namespace sieve::retrieval
