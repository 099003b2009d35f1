#pragma once
/// Binary cross-entropy on logits for multi-hot targets (PyTorch's BCEWithLogitsLoss).

#include <cmath>
#include <cstddef>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/xt.hpp"
#include "sieve/loss/reduction.hpp"

namespace sieve::loss {

/// Per-element loss, PyTorch's formula with pos_weight p (p = 1 without it):
///   l = (1 - y) x + (1 + (p - 1) y) softplus(-x),  softplus(-x) = max(-x,0) + log1p(exp(-|x|))
/// which for p = 1 is the stable form max(x,0) - x y + log1p(exp(-|x|)): no exp overflows for
/// any finite x. Targets may be any value in [0,1]; an all-zero row (a distractor used as a
/// pure negative) is allowed.
template <class T>
inline T bce_with_logits_element(T x, T y, T p) {
  const T softplus_neg = std::max(-x, T(0)) + std::log1p(std::exp(-std::abs(x)));
  return (T(1) - y) * x + (T(1) + (p - T(1)) * y) * softplus_neg;
}

/// d l / d x = (1 - y) - (1 + (p - 1) y) sigmoid(-x), rearranged as
///   (1 - y) sigmoid(x) - p y sigmoid(-x)
/// which has no cancellation for hard targets (= sigmoid(x) - y when p = 1). Both sigmoids
/// come from exp(-|x|), so nothing overflows and tiny tails are kept.
template <class T>
inline T bce_with_logits_element_grad(T x, T y, T p) {
  const T e = std::exp(-std::abs(x));
  const T big = T(1) / (T(1) + e), small = e / (T(1) + e);  // sigmoid(|x|), sigmoid(-|x|)
  const T sig_pos = x >= T(0) ? big : small, sig_neg = x >= T(0) ? small : big;
  return (T(1) - y) * sig_pos - p * y * sig_neg;
}

/// Loss of logits x [N,K] against targets y [N,K], optional pos_weight [K] (nullptr = none).
/// x: [N,K] y: [N,K] pos_weight: [K] or null -> scalar; grad (optional, may be null): [N,K],
/// assigned with d loss / d x scaled by `scale` (for gradient accumulation).
/// Requires: buffers hold N*K (pos_weight K) elements; N*K > 0.
template <class T>
double bce_with_logits(const T* x, const T* y, const T* pos_weight, std::size_t N, std::size_t K,
                       Reduction reduction, T* grad = nullptr, double scale = 1.0) {
  SIEVE_CHECK(N * K > 0, "bce_with_logits: empty input N=", N, " K=", K);
  const double norm = reduction == Reduction::mean ? 1.0 / static_cast<double>(N * K) : 1.0;
  const double gscale = norm * scale;
  double total = 0.0;
  for (std::size_t n = 0; n < N; ++n) {
    for (std::size_t k = 0; k < K; ++k) {
      const std::size_t i = n * K + k;
      // Element math in double: float logits lose nothing and the result is rounded once.
      const double xi = x[i], yi = y[i], p = pos_weight ? static_cast<double>(pos_weight[k]) : 1.0;
      total += bce_with_logits_element(xi, yi, p);
      if (grad) grad[i] = static_cast<T>(bce_with_logits_element_grad(xi, yi, p) * gscale);
    }
  }
  return total * norm;
}

/// Stage-like wrapper owning the gradient buffer: forward(logits, targets) -> loss value,
/// backward() -> const& d loss / d logits (assigned, never accumulated).
template <class T>
class BCEWithLogitsLoss {
 public:
  using value_type = T;
  using output_type = Tensor2<T>;  // what it consumes: the model's logits
  using target_type = Tensor2<T>;

  /// Requires: pos_weight empty or one positive weight per class.
  explicit BCEWithLogitsLoss(Reduction reduction = Reduction::mean, std::vector<T> pos_weight = {})
      : reduction_(reduction), pos_weight_(std::move(pos_weight)) {}

  /// x: [N,K] logits, y: [N,K] multi-hot -> loss. Also prepares backward()'s gradient.
  /// Requires: equal shapes; pos_weight (if set) has K entries.
  double forward(const Tensor2<T>& x, const Tensor2<T>& y, double grad_scale = 1.0) {
    const std::size_t N = x.shape()[0], K = x.shape()[1];
    SIEVE_CHECK(y.shape()[0] == N && y.shape()[1] == K, "BCEWithLogitsLoss: logits [", N, ",", K,
                "] but targets [", y.shape()[0], ",", y.shape()[1], "]");
    SIEVE_CHECK(pos_weight_.empty() || pos_weight_.size() == K, "BCEWithLogitsLoss: pos_weight has ",
                pos_weight_.size(), " entries but logits have K=", K);
    ensure_shape(grad_, {N, K});
    return bce_with_logits(x.data(), y.data(), pos_weight_.empty() ? nullptr : pos_weight_.data(), N, K,
                           reduction_, grad_.data(), grad_scale);
  }
  const Tensor2<T>& backward() const { return grad_; }

 private:
  Reduction reduction_;
  std::vector<T> pos_weight_;
  Tensor2<T> grad_;
};

}  // namespace sieve::loss
