#pragma once
/// Ranking methods: per-class score matrices [N,K] from a model's head logits or embeddings.
/// head = sigmoid probabilities; knn = max cosine similarity to a class's database embeddings;
/// centroid = cosine to the normalised mean of a class's normalised embeddings; fusion = a
/// blend of two score matrices with its weight tuned on validation.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/xt.hpp"
#include "sieve/kernels/gemm.hpp"
#include "sieve/retrieval/threshold.hpp"

namespace sieve::retrieval {

/// Score given to a class that has no database sample (the lowest possible cosine), so the
/// matrix stays finite and blends stay defined.
inline constexpr float kEmptyClassScore = -1.0f;

/// Sigmoid probabilities of head logits: logits [N,K] -> [N,K].
/// Ensures: values in [0,1]; no overflow for large |logit|.
template <class T>
Tensor2<T> head_scores(const Tensor2<T>& logits) {
  Tensor2<T> out(logits.shape());
  const T* x = logits.data();
  T* y = out.data();
  for (std::size_t i = 0; i < logits.size(); ++i) {
    // exp of a non-positive argument only, so neither branch overflows.
    if (x[i] >= 0) y[i] = T(1) / (T(1) + std::exp(-x[i]));
    else {
      const T e = std::exp(x[i]);
      y[i] = e / (T(1) + e);
    }
  }
  return out;
}

/// Scores of a softmax head with one extra "other" class (trained on distractor-like images):
/// logits [N,K+1], the last column "other" -> [N,K] with score_c = log(p_c / p_other) =
/// logit_c - logit_other (the softmax normaliser cancels). Inserting -1 at threshold t ranks it
/// where p_other * e^t would stand among the class probabilities: a per-image distractor score
/// instead of one global probability cut.
/// Requires: logits with at least 2 columns.
template <class T>
Tensor2<T> other_class_scores(const Tensor2<T>& logits) {
  const std::size_t N = logits.shape()[0], K1 = logits.shape()[1];
  SIEVE_CHECK(K1 >= 2, "other_class_scores: logits [", N, ",", K1, "] need K >= 1 classes plus the other column");
  const std::size_t K = K1 - 1;
  Tensor2<T> out = Tensor2<T>::from_shape({N, K});
  for (std::size_t i = 0; i < N; ++i) {
    const T* x = logits.data() + i * K1;
    for (std::size_t c = 0; c < K; ++c) out(i, c) = x[c] - x[K];
  }
  return out;
}

/// Softmax probabilities of the K known classes of a head with an "other" column: logits
/// [N,K+1] -> [N,K] (rows sum to 1 - p_other). Stable for any finite logits.
template <class T>
Tensor2<T> known_class_probabilities(const Tensor2<T>& logits) {
  const std::size_t N = logits.shape()[0], K1 = logits.shape()[1];
  SIEVE_CHECK(K1 >= 2, "known_class_probabilities: logits [", N, ",", K1, "] need K >= 1 classes plus the other column");
  Tensor2<T> out = Tensor2<T>::from_shape({N, K1 - 1});
  for (std::size_t i = 0; i < N; ++i) {
    const T* x = logits.data() + i * K1;
    const double mx = static_cast<double>(*std::max_element(x, x + K1));
    double z = 0.0;
    for (std::size_t c = 0; c < K1; ++c) z += std::exp(static_cast<double>(x[c]) - mx);
    for (std::size_t c = 0; c + 1 < K1; ++c) out(i, c) = static_cast<T>(std::exp(static_cast<double>(x[c]) - mx) / z);
  }
  return out;
}

/// Scale each row of x [N,D] to unit L2 norm in place (all-zero rows stay zero).
template <class T>
void l2_normalize_rows(Tensor2<T>& x) {
  const std::size_t N = x.shape()[0], D = x.shape()[1];
  for (std::size_t i = 0; i < N; ++i) {
    T* r = x.data() + i * D;
    double ss = 0;
    for (std::size_t d = 0; d < D; ++d) ss += static_cast<double>(r[d]) * r[d];
    if (ss > 0) {
      const auto inv = static_cast<T>(1.0 / std::sqrt(ss));
      for (std::size_t d = 0; d < D; ++d) r[d] *= inv;
    }
  }
}

namespace detail {
template <class T>
std::vector<T> inverse_row_norms(const Tensor2<T>& x) {
  const std::size_t N = x.shape()[0], D = x.shape()[1];
  std::vector<T> inv(N);
  for (std::size_t i = 0; i < N; ++i) {
    const T* r = x.data() + i * D;
    double ss = 0;
    for (std::size_t d = 0; d < D; ++d) ss += static_cast<double>(r[d]) * r[d];
    inv[i] = ss > 0 ? static_cast<T>(1.0 / std::sqrt(ss)) : T(0);  // zero vector: cosine 0 to all
  }
  return inv;
}
}  // namespace detail

/// Block sizes for knn_scores: the similarity buffer holds query_block * db_block values.
struct KnnBlocks {
  std::size_t query_block = 256;
  std::size_t db_block = 2048;
};

/// kNN class scores: for each query, the max cosine similarity to the database embeddings of
/// each class. queries [N,D], db [M,D], db_labels [M] in [-1,K) (-1 rows, e.g. training
/// negatives, are skipped) -> [N,K]. Inputs need not be normalised: dot products are divided by
/// the norms. Works block by block through sieve::kernels::gemm, so memory is
/// O(query_block * db_block) whatever N and M are. Classes without samples score -1.
/// Requires: D equal, db_labels.size() == M, K >= 1, block sizes >= 1.
template <class T>
Tensor2<T> knn_scores(const Tensor2<T>& queries, const Tensor2<T>& db, std::span<const std::int64_t> db_labels,
                      std::size_t K, KnnBlocks blocks = {}) {
  const std::size_t N = queries.shape()[0], D = queries.shape()[1], M = db.shape()[0];
  SIEVE_CHECK(db.shape()[1] == D, "knn_scores: queries have D=", D, " but db has D=", db.shape()[1]);
  SIEVE_CHECK(db_labels.size() == M, "knn_scores: db has M=", M, " rows but ", db_labels.size(), " labels");
  SIEVE_CHECK(K >= 1, "knn_scores: K=0 classes");
  SIEVE_CHECK(blocks.query_block >= 1 && blocks.db_block >= 1, "knn_scores: block sizes must be >= 1, got ",
              blocks.query_block, "x", blocks.db_block);
  for (std::size_t j = 0; j < M; ++j)
    SIEVE_CHECK(db_labels[j] >= -1 && db_labels[j] < static_cast<std::int64_t>(K), "knn_scores: db_labels[", j,
                "]=", db_labels[j], " outside [-1, ", K, ")");
  Tensor2<T> out(Shape<2>{N, K});
  std::fill(out.begin(), out.end(), static_cast<T>(kEmptyClassScore));
  const auto qinv = detail::inverse_row_norms(queries);
  const auto dinv = detail::inverse_row_norms(db);
  const std::size_t QB = std::min(blocks.query_block, std::max<std::size_t>(N, 1));
  const std::size_t DB = std::min(blocks.db_block, std::max<std::size_t>(M, 1));
  std::vector<T> sim(QB * DB);
  for (std::size_t q0 = 0; q0 < N; q0 += QB) {
    const std::size_t nq = std::min(QB, N - q0);
    for (std::size_t d0 = 0; d0 < M; d0 += DB) {
      const std::size_t nd = std::min(DB, M - d0);
      // sim[nq,nd] = Q[q0:q0+nq] * DB[d0:d0+nd]^T
      kernels::gemm(kernels::Trans::no, kernels::Trans::yes, nq, nd, D, T(1), queries.data() + q0 * D,
                    db.data() + d0 * D, T(0), sim.data());
      for (std::size_t a = 0; a < nq; ++a) {
        T* o = out.data() + (q0 + a) * K;
        const T* s = sim.data() + a * nd;
        const T qa = qinv[q0 + a];
        for (std::size_t b = 0; b < nd; ++b) {
          const std::int64_t c = db_labels[d0 + b];
          if (c < 0) continue;
          const T v = s[b] * qa * dinv[d0 + b];
          if (v > o[c]) o[c] = v;
        }
      }
    }
  }
  return out;
}

/// Per-class centroids: the mean of each class's L2-normalised embeddings, normalised again.
/// db [M,D], labels [M] in [-1,K) (-1 skipped) -> [K,D]; a class with no sample is all zeros.
template <class T>
Tensor2<T> class_centroids(const Tensor2<T>& db, std::span<const std::int64_t> labels, std::size_t K) {
  const std::size_t M = db.shape()[0], D = db.shape()[1];
  SIEVE_CHECK(labels.size() == M, "class_centroids: db has M=", M, " rows but ", labels.size(), " labels");
  SIEVE_CHECK(K >= 1, "class_centroids: K=0 classes");
  std::vector<double> acc(K * D, 0.0);
  const auto inv = detail::inverse_row_norms(db);
  for (std::size_t j = 0; j < M; ++j) {
    const std::int64_t c = labels[j];
    SIEVE_CHECK(c >= -1 && c < static_cast<std::int64_t>(K), "class_centroids: labels[", j, "]=", c,
                " outside [-1, ", K, ")");
    if (c < 0) continue;
    const T* r = db.data() + j * D;
    for (std::size_t d = 0; d < D; ++d) acc[static_cast<std::size_t>(c) * D + d] += static_cast<double>(r[d]) * inv[j];
  }
  Tensor2<T> out(Shape<2>{K, D});
  for (std::size_t i = 0; i < K * D; ++i) out.data()[i] = static_cast<T>(acc[i]);
  l2_normalize_rows(out);
  return out;
}

/// Centroid class scores: cosine of each query to each centroid; queries [N,D], centroids [K,D]
/// -> [N,K]. A zero centroid (class without samples) scores -1.
template <class T>
Tensor2<T> centroid_scores(const Tensor2<T>& queries, const Tensor2<T>& centroids) {
  const std::size_t N = queries.shape()[0], D = queries.shape()[1], K = centroids.shape()[0];
  SIEVE_CHECK(centroids.shape()[1] == D, "centroid_scores: queries have D=", D, " but centroids have D=",
              centroids.shape()[1]);
  Tensor2<T> out(Shape<2>{N, K});
  kernels::gemm(kernels::Trans::no, kernels::Trans::yes, N, K, D, T(1), queries.data(), centroids.data(), T(0),
                out.data());
  const auto qinv = detail::inverse_row_norms(queries);
  const auto cinv = detail::inverse_row_norms(centroids);
  for (std::size_t i = 0; i < N; ++i)
    for (std::size_t c = 0; c < K; ++c)
      out(i, c) = cinv[c] == T(0) ? static_cast<T>(kEmptyClassScore) : out(i, c) * qinv[i] * cinv[c];
  return out;
}

/// w * a + (1 - w) * b, elementwise. Requires: equal shapes.
template <class T>
Tensor2<T> fuse_scores(const Tensor2<T>& a, const Tensor2<T>& b, double w) {
  SIEVE_CHECK(a.shape() == b.shape(), "fuse_scores: shapes [", a.shape()[0], ",", a.shape()[1], "] and [",
              b.shape()[0], ",", b.shape()[1], "] differ");
  Tensor2<T> out(a.shape());
  const auto wa = static_cast<T>(w), wb = static_cast<T>(1.0 - w);
  for (std::size_t i = 0; i < a.size(); ++i) out.data()[i] = wa * a.data()[i] + wb * b.data()[i];
  return out;
}

/// The result of tuning a fusion weight: the chosen weight, its threshold sweep, and the best
/// validation MAP@5 for every weight tried.
struct FusionTuning {
  std::vector<double> weights;
  std::vector<double> best_map5;   ///< best MAP@5 over the threshold grid, per weight
  std::size_t best_index = 0;      ///< first weight reaching the maximum
  double weight = 0.0;
  ThresholdSweep sweep;            ///< the sweep at the chosen weight
};

/// Tune w in `weights` (e.g. linspace(0,1,11)) and the -1 threshold in `grid` (e.g.
/// linspace(-1,1,201)) for fuse_scores(a, b, w) on validation truth, as the reference does;
/// `distractor_share` as in sweep_threshold.
template <class T>
FusionTuning tune_fusion(const Tensor2<T>& a, const Tensor2<T>& b, std::span<const std::int64_t> truth,
                         std::span<const double> weights, std::span<const double> grid, std::size_t k = 5,
                         std::optional<double> distractor_share = std::nullopt) {
  SIEVE_CHECK(!weights.empty(), "tune_fusion: empty weight grid");
  FusionTuning out;
  out.weights.assign(weights.begin(), weights.end());
  for (std::size_t i = 0; i < weights.size(); ++i) {
    ThresholdSweep s = sweep_threshold(fuse_scores(a, b, weights[i]), truth, grid, k, distractor_share);
    out.best_map5.push_back(s.best_map5);
    if (i == 0 || s.best_map5 > out.sweep.best_map5) {
      out.best_index = i;
      out.weight = weights[i];
      out.sweep = std::move(s);
    }
  }
  return out;
}

/// Turn ranked ids into label strings: id c -> class_names[c], -1 -> "-1".
/// Requires: every id in [-1, class_names.size()).
inline std::vector<std::vector<std::string>> ranked_label_strings(const Tensor2<std::int64_t>& ranked,
                                                                  std::span<const std::string> class_names) {
  const std::size_t N = ranked.shape()[0], W = ranked.shape()[1];
  std::vector<std::vector<std::string>> out(N);
  for (std::size_t i = 0; i < N; ++i) {
    out[i].reserve(W);
    for (std::size_t j = 0; j < W; ++j) {
      const std::int64_t c = ranked(i, j);
      SIEVE_CHECK(c >= -1 && c < static_cast<std::int64_t>(class_names.size()), "ranked_label_strings: ranked[",
                  i, ",", j, "]=", c, " outside [-1, ", class_names.size(), ")");
      out[i].push_back(c < 0 ? std::string("-1") : class_names[static_cast<std::size_t>(c)]);
    }
  }
  return out;
}

}  // namespace sieve::retrieval
