#pragma once
/// Ranking methods and their calibration: how a query's class scores are made (the head, its
/// nearest labelled neighbours, the class centroids, or a fusion of head and neighbours) and
/// where the distractor label -1 goes among them, chosen on a validation set.
///
///   head      the head's scores: sigmoid probabilities (BCE head), or log(p_class / p_other)
///             for a softmax head with an "other" column (so -1 at threshold t sits where
///             p_other * e^t would)
///   knn       the best cosine similarity to a labelled embedding of each class
///   centroid  the cosine similarity to each class's mean embedding
///   fusion    w * head probabilities + (1 - w) * knn, w chosen on validation
///
/// calibrate() sweeps the -1 threshold on a fixed grid (and w for fusion) and keeps the first
/// maximum of validation MAP@5 (retrieval::sweep_threshold, optionally reweighted to an
/// expected distractor share).

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/xt.hpp"
#include "sieve/retrieval/embed.hpp"
#include "sieve/retrieval/scores.hpp"
#include "sieve/retrieval/threshold.hpp"

namespace sieve::retrieval {

enum class Method { head, knn, centroid, fusion };

/// The methods' names, in enum order ("head", "knn", "centroid", "fusion").
inline const std::vector<std::string>& method_names() {
  static const std::vector<std::string> names{"head", "knn", "centroid", "fusion"};
  return names;
}
/// Throws naming `s` and the valid names.
inline Method parse_method(const std::string& s) {
  const auto& names = method_names();
  for (std::size_t i = 0; i < names.size(); ++i)
    if (names[i] == s) return static_cast<Method>(i);
  fail("unknown ranking method '", s, "' (head, knn, centroid or fusion)");
}
inline const std::string& method_name(Method m) { return method_names()[static_cast<std::size_t>(m)]; }

/// What the head's logits mean.
enum class HeadKind {
  sigmoid,        ///< one logit per class, independent (BCE): scores are sigmoid probabilities
  softmax_other,  ///< K classes + an "other" column, one softmax: scores are log(p_c / p_other)
};

/// The labelled reference set knn and centroid compare queries with: embeddings [M,D] (cosine
/// similarity, so they need not be normalised) and their labels (-1 rows are skipped).
struct GalleryRef {
  const Tensor2f& embedding;
  std::span<const std::int64_t> label;
};

/// The -1 threshold grid: probabilities linspace(0, 1, 101) for a sigmoid head, cosines
/// linspace(-1, 1, 201) for the embedding methods and fusion (as the PyTorch reference), and
/// log-ratios from -12 to 12 in steps of 0.1 for a softmax-other head.
inline std::vector<double> threshold_grid(Method m, HeadKind head) {
  if (m == Method::head && head == HeadKind::softmax_other) return linspace(-12.0, 12.0, 241);
  return m == Method::head ? linspace(0.0, 1.0, 101) : linspace(-1.0, 1.0, 201);
}

/// The head's class scores [N,K] from logits ([N,K], or [N,K+1] for softmax_other).
inline Tensor2f head_class_scores(const Tensor2f& logits, HeadKind head) {
  return head == HeadKind::softmax_other ? other_class_scores(logits) : head_scores(logits);
}

/// The head as probabilities of the K classes (fusion's head term).
inline Tensor2f head_probabilities(const Tensor2f& logits, HeadKind head) {
  return head == HeadKind::softmax_other ? known_class_probabilities(logits) : head_scores(logits);
}

/// Class scores [N,K] of the queries `q` by method m. `gallery` is used by knn, centroid and
/// fusion (may be empty for head); q.embeddings need not be normalised.
/// Requires: K >= 1; the gallery's labels in [-1, K) and its D equal to the queries'.
inline Tensor2f method_scores(Method m, const Embedded& q, const GalleryRef& gallery, std::size_t K, HeadKind head,
                              double fusion_weight = 0.5) {
  switch (m) {
    case Method::head: return head_class_scores(q.logits, head);
    case Method::knn: return knn_scores(q.embeddings, gallery.embedding, gallery.label, K);
    case Method::centroid: return centroid_scores(q.embeddings, class_centroids(gallery.embedding, gallery.label, K));
    case Method::fusion:
      return fuse_scores(head_probabilities(q.logits, head),
                         knn_scores(q.embeddings, gallery.embedding, gallery.label, K), fusion_weight);
  }
  fail("method_scores: bad method ", static_cast<int>(m));
}

/// One method's calibration on a validation set.
struct MethodCalibration {
  double threshold = 0.0;                           ///< -1 inserted as if it scored this
  double val_map5 = 0.0;                            ///< validation MAP@5 at that threshold
  std::vector<std::array<double, 2>> sweep;         ///< [[t, map5], ...] over the grid
  /// Per grid point, for choosing again for another distractor share (threshold_for_share):
  /// MAP@5 of the known and of the distractor items, and the fractions of each given -1 first.
  /// Empty in calibrations written before they existed.
  std::vector<double> map5_known, map5_distractor, first_known, first_distractor;
  std::optional<double> weight;                     ///< fusion: the head's weight w
  std::vector<std::array<double, 2>> weight_sweep;  ///< fusion: [[w, best map5 at w], ...]
};

/// Calibrate method m on validation queries `val` (val.labels: class ids in [0, K) or -1 for
/// a distractor): sweep threshold_grid(m, head), and for fusion w in 0, 0.1 .. 1; the first
/// maximum of MAP@5 wins (ties go to the smaller threshold and weight). MAP@5 is reweighted to
/// `distractor_share` when given (sweep_threshold).
/// Requires: val non-empty, labels in [-1, K); a gallery for knn, centroid and fusion.
inline MethodCalibration calibrate(Method m, const Embedded& val, const GalleryRef& gallery, std::size_t K,
                                   HeadKind head, std::optional<double> distractor_share = std::nullopt) {
  MethodCalibration out;
  const auto grid = threshold_grid(m, head);
  ThresholdSweep sweep;
  if (m == Method::fusion) {
    const auto weights = linspace(0.0, 1.0, 11);
    FusionTuning t = tune_fusion(head_probabilities(val.logits, head),
                                 knn_scores(val.embeddings, gallery.embedding, gallery.label, K), val.labels, weights,
                                 grid, 5, distractor_share);
    out.weight = t.weight;
    for (std::size_t i = 0; i < t.weights.size(); ++i) out.weight_sweep.push_back({t.weights[i], t.best_map5[i]});
    sweep = std::move(t.sweep);
  } else {
    sweep = sweep_threshold(method_scores(m, val, gallery, K, head), val.labels, grid, 5, distractor_share);
  }
  out.threshold = sweep.best_threshold;
  out.val_map5 = sweep.best_map5;
  for (std::size_t g = 0; g < sweep.thresholds.size(); ++g) out.sweep.push_back({sweep.thresholds[g], sweep.map5[g]});
  out.map5_known = std::move(sweep.map5_known);
  out.map5_distractor = std::move(sweep.map5_distractor);
  out.first_known = std::move(sweep.first_known);
  out.first_distractor = std::move(sweep.first_distractor);
  return out;
}

/// A calibration's threshold chosen again for a test set's distractor share.
struct ShareThreshold {
  double share = 0.0;
  double threshold = 0.0;
  double val_map5 = 0.0;      ///< validation MAP@5 reweighted to `share`, at `threshold`
  double estimated_at = 0.0;  ///< estimate only: the threshold the share was estimated at
  double test_first = 0.0;    ///< estimate only: the test's fraction given -1 first there
};

namespace detail {
inline void check_share_curves(const MethodCalibration& c) {
  const std::size_t G = c.sweep.size();
  SIEVE_CHECK(G > 0 && c.map5_known.size() == G && c.map5_distractor.size() == G && c.first_known.size() == G &&
                  c.first_distractor.size() == G,
              "this calibration has no per-group validation curves (written by an older sieve): recalibrate to "
              "choose a threshold for another distractor share");
}
}  // namespace detail

/// The threshold that maximises validation MAP@5 reweighted to `share` distractors (the known
/// and distractor items' MAP@5 mixed (1 - share) : share; the first maximum on ties).
/// Requires: the curves present (calibrate() writes them); share in [0, 1]. Without distractors
/// in validation their curve is 0 everywhere and only the known items decide.
inline ShareThreshold threshold_for_share(const MethodCalibration& c, double share) {
  detail::check_share_curves(c);
  const std::size_t g = best_index_for_share(c.map5_known, c.map5_distractor, share);
  return {share, c.sweep[g][0], (1.0 - share) * c.map5_known[g] + share * c.map5_distractor[g], 0.0, 0.0};
}

/// The grid index where validation tells distractors from known items best: the largest
/// first_distractor - first_known (the first on ties); nullopt when no threshold gives
/// distractors -1 first more often than known items (no outside images in validation, or a
/// model that cannot tell them apart), so no share can be estimated.
/// Requires: the curves present.
inline std::optional<std::size_t> share_estimate_index(const MethodCalibration& c) {
  detail::check_share_curves(c);
  std::size_t g = 0;
  for (std::size_t i = 1; i < c.sweep.size(); ++i)
    if (c.first_distractor[i] - c.first_known[i] > c.first_distractor[g] - c.first_known[g]) g = i;
  if (!(c.first_distractor[g] > c.first_known[g])) return std::nullopt;
  return g;
}

/// The distractor share of the test set estimated from its own scores, and the threshold for
/// it. The estimate (estimate_distractor_share) is made at the grid threshold where validation
/// tells distractors from known items best (the largest gap between the fractions given -1
/// first; the estimate's variance shrinks with the square of that gap), then the threshold is
/// threshold_for_share(estimate). Trustworthy only when the test's distractors resemble
/// validation's outside images (see estimate_distractor_share).
/// Requires: as threshold_for_share; test_scores [N,K] of the calibrated method, N >= 1; some
/// grid threshold gives validation's distractors -1 first more often than its known items.
inline ShareThreshold threshold_for_estimated_share(const MethodCalibration& c, const Tensor2f& test_scores) {
  detail::check_share_curves(c);
  const std::size_t N = test_scores.shape()[0], K = test_scores.shape()[1];
  SIEVE_CHECK(N > 0 && K > 0, "threshold_for_estimated_share: no test scores ([", N, ",", K, "])");
  const auto best = share_estimate_index(c);
  SIEVE_CHECK(best.has_value(), "threshold_for_estimated_share: at no threshold did validation's distractors get -1 "
              "first more often than its known items, so the test's share cannot be estimated");
  const std::size_t g = *best;
  const double t = c.sweep[g][0];
  std::size_t first = 0;  // -1 is first exactly when the row's best score < t
  for (std::size_t i = 0; i < N; ++i) {
    const float* row = test_scores.data() + i * K;
    first += static_cast<double>(*std::max_element(row, row + K)) < t;
  }
  const double test_first = static_cast<double>(first) / static_cast<double>(N);
  const double share = estimate_distractor_share(c.first_known[g], c.first_distractor[g], test_first);
  ShareThreshold out = threshold_for_share(c, share);
  out.estimated_at = t;
  out.test_first = test_first;
  return out;
}

}  // namespace sieve::retrieval
