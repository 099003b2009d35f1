#pragma once
/// The numbers `sieve score` prints: MAP@5, known-class top-1, distractor recall and
/// per-class counts, for int class ids (fast path) or string labels (submissions).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/xt.hpp"
#include "sieve/metrics/map_at_k.hpp"

namespace sieve::metrics {

/// Counts for one label (a class or the distractor label).
template <class L>
struct ClassCounts {
  L label{};
  std::size_t n_true = 0;       ///< items whose true label is this one
  std::size_t n_first = 0;      ///< items whose first prediction is this one
  std::size_t n_correct = 0;    ///< items with this true label and this first prediction
  double ap_sum = 0.0;          ///< sum of AP@k over items with this true label
  /// MAP@k restricted to this label's items (0 when it has none).
  double map() const { return n_true ? ap_sum / static_cast<double>(n_true) : 0.0; }
};

/// Everything `sieve score` reports.
template <class L>
struct ScoreSummary {
  std::size_t n = 0, n_known = 0, n_distractor = 0, k = 5;
  double map = 0.0;                ///< MAP@k over all items
  double known_top1 = 0.0;         ///< fraction of known items (truth != distractor) whose first prediction is the truth; 0 if none
  double distractor_recall = 0.0;  ///< fraction of distractor items whose first prediction is the distractor label; 0 if none
  std::vector<ClassCounts<L>> per_class;  ///< sorted by label, covering every true or first-predicted label
};

namespace detail {
template <class L, class RowFn>
ScoreSummary<L> summarize(std::size_t N, RowFn&& row, std::span<const L> truth, const L& distractor,
                          std::size_t k) {
  SIEVE_CHECK(N > 0, "score_summary: no items (N=0)");
  SIEVE_CHECK(k >= 1, "score_summary: k=", k, " must be at least 1");
  ScoreSummary<L> s;
  s.n = N;
  s.k = k;
  std::map<L, ClassCounts<L>> per;
  double ap_total = 0.0;
  std::size_t known_hit = 0, distractor_hit = 0;
  for (std::size_t i = 0; i < N; ++i) {
    const std::span<const L> r = row(i);
    const L& y = truth[i];
    const double ap = average_precision_at_k<L>(r, y, k);
    ap_total += ap;
    auto& cy = per[y];
    cy.label = y;
    ++cy.n_true;
    cy.ap_sum += ap;
    const bool has_first = !r.empty();
    if (has_first) {
      auto& cf = per[r[0]];
      cf.label = r[0];
      ++cf.n_first;
    }
    const bool first_right = has_first && r[0] == y;
    if (first_right) ++cy.n_correct;
    if (y == distractor) {
      ++s.n_distractor;
      distractor_hit += first_right;
    } else {
      ++s.n_known;
      known_hit += first_right;
    }
  }
  s.map = ap_total / static_cast<double>(N);
  s.known_top1 = s.n_known ? static_cast<double>(known_hit) / static_cast<double>(s.n_known) : 0.0;
  s.distractor_recall =
      s.n_distractor ? static_cast<double>(distractor_hit) / static_cast<double>(s.n_distractor) : 0.0;
  for (auto& [label, c] : per) s.per_class.push_back(c);
  return s;
}
}  // namespace detail

/// Summary for the int fast path: ranked [N, W] label ids best first, truth [N].
/// Requires: ranked.shape(0) == truth.size() >= 1.
inline ScoreSummary<std::int64_t> score_summary(const Tensor2<std::int64_t>& ranked,
                                                std::span<const std::int64_t> truth,
                                                std::int64_t distractor = kDistractor, std::size_t k = 5) {
  const std::size_t N = ranked.shape()[0], W = ranked.shape()[1];
  SIEVE_CHECK(N == truth.size(), "score_summary: ranked has N=", N, " rows but truth has ", truth.size(),
              " labels");
  return detail::summarize<std::int64_t>(
      N, [&](std::size_t i) { return std::span<const std::int64_t>(ranked.data() + i * W, W); }, truth,
      distractor, k);
}

/// Summary for string labels (a parsed submission against a solution).
/// Requires: rows.size() == truth.size() >= 1.
inline ScoreSummary<std::string> score_summary(const std::vector<std::vector<std::string>>& rows,
                                               std::span<const std::string> truth,
                                               const std::string& distractor = "-1", std::size_t k = 5) {
  SIEVE_CHECK(rows.size() == truth.size(), "score_summary: ", rows.size(), " prediction rows but ",
              truth.size(), " true labels");
  return detail::summarize<std::string>(
      rows.size(), [&](std::size_t i) { return std::span<const std::string>(rows[i]); }, truth, distractor, k);
}

/// Closed-set top-1 over known items, from a score matrix: the fraction of items with truth
/// != distractor whose highest-scoring class (first on ties, like numpy's argmax) is the
/// truth. This is the reference's "known-class top-1" (argmax of the head, no -1 inserted);
/// score_summary's known_top1 instead reads the first prediction of a submission, -1 included.
/// Requires: scores [N,K] with N == truth.size(), K >= 1. Ensures: 0 when there is no known item.
template <class T>
double known_top1_from_scores(const Tensor2<T>& scores, std::span<const std::int64_t> truth,
                              std::int64_t distractor = kDistractor) {
  const std::size_t N = scores.shape()[0], K = scores.shape()[1];
  SIEVE_CHECK(N == truth.size(), "known_top1_from_scores: scores have N=", N, " rows but truth has ", truth.size());
  SIEVE_CHECK(K >= 1, "known_top1_from_scores: scores have K=0 classes");
  std::size_t known = 0, hit = 0;
  for (std::size_t i = 0; i < N; ++i) {
    if (truth[i] == distractor) continue;
    ++known;
    const T* row = scores.data() + i * K;
    std::size_t best = 0;
    for (std::size_t c = 1; c < K; ++c)
      if (row[c] > row[best]) best = c;
    hit += static_cast<std::int64_t>(best) == truth[i];
  }
  return known ? static_cast<double>(hit) / static_cast<double>(known) : 0.0;
}

/// The `n` labels predicted first most often (ties: smaller label first), for the bar chart.
template <class L>
std::vector<ClassCounts<L>> most_predicted(const ScoreSummary<L>& s, std::size_t n) {
  std::vector<ClassCounts<L>> v = s.per_class;
  std::stable_sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.n_first > b.n_first; });
  if (v.size() > n) v.resize(n);
  return v;
}

}  // namespace sieve::metrics
