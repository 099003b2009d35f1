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
      return fuse_scores(head_probabilities(q.logits, head), knn_scores(q.embeddings, gallery.embedding, gallery.label, K),
                         fusion_weight);
  }
  fail("method_scores: bad method ", static_cast<int>(m));
}

/// One method's calibration on a validation set.
struct MethodCalibration {
  double threshold = 0.0;                           ///< -1 inserted as if it scored this
  double val_map5 = 0.0;                            ///< validation MAP@5 at that threshold
  std::vector<std::array<double, 2>> sweep;         ///< [[t, map5], ...] over the grid
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
  return out;
}

}  // namespace sieve::retrieval
