#pragma once
/// Softmax cross-entropy over class indices with label smoothing (PyTorch's CrossEntropyLoss).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/xt.hpp"
#include "sieve/loss/reduction.hpp"

namespace sieve::loss {

/// PyTorch's definition with smoothing e over C classes, per sample with target t:
///   l = (1 - e) (-log p_t) + (e / C) sum_c (-log p_c),   p = softmax(x)
/// so the gradient is p - q with q = (1 - e) onehot(t) + e / C. log-softmax is computed as
/// x - max - log(sum exp(x - max)), stable for any finite logits. Reduction mean divides by N.
/// x: [N,C] target: [N] (int64 class ids) -> scalar; grad (optional): [N,C] assigned, times scale.
/// Requires: N, C > 0; 0 <= target[n] < C; 0 <= smoothing <= 1.
template <class T>
double cross_entropy(const T* x, const std::int64_t* target, std::size_t N, std::size_t C, double smoothing,
                     Reduction reduction, T* grad = nullptr, double scale = 1.0) {
  SIEVE_CHECK(N > 0 && C > 0, "cross_entropy: empty input N=", N, " C=", C);
  SIEVE_CHECK(smoothing >= 0.0 && smoothing <= 1.0, "cross_entropy: label smoothing ", smoothing,
              " outside [0,1]");
  const double norm = reduction == Reduction::mean ? 1.0 / static_cast<double>(N) : 1.0;
  double total = 0.0;
  for (std::size_t n = 0; n < N; ++n) {
    const T* row = x + n * C;
    const std::int64_t t = target[n];
    SIEVE_CHECK(t >= 0 && static_cast<std::size_t>(t) < C, "cross_entropy: target[", n, "]=", t,
                " outside [0, C=", C, ")");
    double mx = row[0];
    for (std::size_t c = 1; c < C; ++c) mx = std::max(mx, static_cast<double>(row[c]));
    double sum_exp = 0.0;
    for (std::size_t c = 0; c < C; ++c) sum_exp += std::exp(static_cast<double>(row[c]) - mx);
    const double log_z = mx + std::log(sum_exp);
    double sum_nll = 0.0;  // sum_c -log p_c
    for (std::size_t c = 0; c < C; ++c) sum_nll += log_z - static_cast<double>(row[c]);
    const double nll_t = log_z - static_cast<double>(row[t]);
    total += (1.0 - smoothing) * nll_t + smoothing / static_cast<double>(C) * sum_nll;
    if (grad) {
      for (std::size_t c = 0; c < C; ++c) {
        const double p = std::exp(static_cast<double>(row[c]) - log_z);
        const double q = (static_cast<std::int64_t>(c) == t ? 1.0 - smoothing : 0.0) + smoothing / static_cast<double>(C);
        grad[n * C + c] = static_cast<T>((p - q) * norm * scale);
      }
    }
  }
  return total * norm;
}

/// Stage-like wrapper: forward(logits [N,C], targets [N]) -> loss; backward() -> const& grad.
template <class T>
class CrossEntropyLoss {
 public:
  using value_type = T;
  using output_type = Tensor2<T>;
  using target_type = Tensor1<std::int64_t>;

  explicit CrossEntropyLoss(double label_smoothing = 0.0, Reduction reduction = Reduction::mean)
      : smoothing_(label_smoothing), reduction_(reduction) {}

  /// Requires: targets has N entries, each in [0, C).
  double forward(const Tensor2<T>& x, const Tensor1<std::int64_t>& target, double grad_scale = 1.0) {
    const std::size_t N = x.shape()[0], C = x.shape()[1];
    SIEVE_CHECK(target.shape()[0] == N, "CrossEntropyLoss: logits have N=", N, " rows but targets have ",
                target.shape()[0]);
    ensure_shape(grad_, {N, C});
    return cross_entropy(x.data(), target.data(), N, C, smoothing_, reduction_, grad_.data(), grad_scale);
  }
  const Tensor2<T>& backward() const { return grad_; }

 private:
  double smoothing_;
  Reduction reduction_;
  Tensor2<T> grad_;
};

/// Softmax cross-entropy over K classes plus one "other" class, taking the targets a BCE head
/// takes: [N,K] one-hot rows, or all-zero rows for images of no class (outside images, which
/// then train "other", column K of the logits). So one loader serves both heads.
/// logits: [N,K+1] targets: [N,K] -> scalar (mean over N); backward() -> [N,K+1].
template <class T>
class OtherClassCrossEntropyLoss {
 public:
  using value_type = T;
  using output_type = Tensor2<T>;
  using target_type = Tensor2<T>;

  explicit OtherClassCrossEntropyLoss(double label_smoothing = 0.0) : smoothing_(label_smoothing) {}

  /// Requires: logits [N,K+1], targets [N,K], each target row all zeros or a single 1.
  double forward(const Tensor2<T>& x, const Tensor2<T>& target, double grad_scale = 1.0) {
    const std::size_t N = x.shape()[0], C = x.shape()[1];
    SIEVE_CHECK(target.shape()[0] == N && target.shape()[1] + 1 == C, "OtherClassCrossEntropyLoss: logits [", N,
                ",", C, "] need targets [", N, ",", C - 1, "], got [", target.shape()[0], ",", target.shape()[1], "]");
    const std::size_t K = C - 1;
    cls_.resize(N);
    for (std::size_t n = 0; n < N; ++n) {
      const T* t = target.data() + n * K;
      std::int64_t c = static_cast<std::int64_t>(K), ones = 0;
      for (std::size_t k = 0; k < K; ++k) {
        if (t[k] == T(1)) c = static_cast<std::int64_t>(k), ++ones;
        else SIEVE_CHECK(t[k] == T(0), "OtherClassCrossEntropyLoss: target[", n, ",", k, "]=", t[k],
                         " (one-hot or all-zero rows only)");
      }
      SIEVE_CHECK(ones <= 1, "OtherClassCrossEntropyLoss: target row ", n, " has ", ones,
                  " classes; a softmax head takes one label per image");
      cls_[n] = c;
    }
    ensure_shape(grad_, {N, C});
    return cross_entropy(x.data(), cls_.data(), N, C, smoothing_, Reduction::mean, grad_.data(), grad_scale);
  }
  const Tensor2<T>& backward() const { return grad_; }

 private:
  double smoothing_;
  std::vector<std::int64_t> cls_;
  Tensor2<T> grad_;
};

}  // namespace sieve::loss
