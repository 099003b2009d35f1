#pragma once
/// Adam with decoupled weight decay (torch.optim.AdamW, PyTorch 1.13, amsgrad off).

#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/parallel.hpp"
#include "sieve/core/param.hpp"
#include "sieve/core/simd.hpp"
#include "sieve/optim/param_groups.hpp"

namespace sieve::optim {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;  ///< decoupled: p *= 1 - lr wd, only where ParamRef::decay
};

/// torch 1.13 _single_tensor_adamw, step by step, in T arithmetic with scalars computed in
/// double and rounded to T exactly where ATen rounds its Scalar arguments:
///   t += 1;  p *= (1 - lr wd);  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g g
///   denom = sqrt(v) / sqrt(1 - b2^t) + eps;  p += -(lr / (1 - b1^t)) m / denom
/// eps is added after the bias correction of sqrt(v) (PyTorch's placement, not Adam paper's).
/// Every `a + s * b` that ATen computes in one add/addcmul kernel is a fused multiply-add here
/// (std::fma): x86-64 builds of ATen contract it, and with that the trajectory is bit-identical
/// to torch 1.13's (tests/train: 0 ulp after 6 steps). sieve itself builds without contraction
/// (-std=c++20), so nothing else is fused behind our back.
namespace detail {
template <class T>
struct AdamWScalars {
  T decay, b1, b2, one_minus_b1, one_minus_b2, bc2_sqrt, eps, neg_step;
};

/// One AdamW update of elements [lo, hi): the documented formula, one IEEE operation at a time.
/// The float build with AVX2 and FMA runs it 8 lanes at a time with the same operations in the
/// same order (so the same bits): the scalar loop stays scalar because std::sqrt may set errno.
template <class T>
void adamw_update(const AdamWScalars<T>& k, const T* gr, T* w, T* m, T* v, std::size_t lo, std::size_t hi) {
  std::size_t j = lo;
#if SIEVE_AVX2_FMA
  if constexpr (std::is_same_v<T, float>) {
    const __m256 decay = _mm256_set1_ps(k.decay), b1 = _mm256_set1_ps(k.b1), b2 = _mm256_set1_ps(k.b2);
    const __m256 omb1 = _mm256_set1_ps(k.one_minus_b1), omb2 = _mm256_set1_ps(k.one_minus_b2);
    const __m256 bc2 = _mm256_set1_ps(k.bc2_sqrt), eps = _mm256_set1_ps(k.eps), step = _mm256_set1_ps(k.neg_step);
    for (; j + 8 <= hi; j += 8) {
      const __m256 g = _mm256_loadu_ps(gr + j);
      const __m256 wd = _mm256_mul_ps(_mm256_loadu_ps(w + j), decay);
      const __m256 mj = _mm256_fmadd_ps(omb1, g, _mm256_mul_ps(_mm256_loadu_ps(m + j), b1));
      const __m256 vj = _mm256_fmadd_ps(_mm256_mul_ps(omb2, g), g, _mm256_mul_ps(_mm256_loadu_ps(v + j), b2));
      const __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vj), bc2), eps);
      _mm256_storeu_ps(m + j, mj);
      _mm256_storeu_ps(v + j, vj);
      _mm256_storeu_ps(w + j, _mm256_add_ps(wd, _mm256_div_ps(_mm256_mul_ps(step, mj), denom)));
    }
  }
#endif
  for (; j < hi; ++j) {
    const T g = gr[j];
    w[j] = w[j] * k.decay;
    m[j] = std::fma(k.one_minus_b1, g, m[j] * k.b1);
    v[j] = std::fma(k.one_minus_b2 * g, g, v[j] * k.b2);
    const T denom = std::sqrt(v[j]) / k.bc2_sqrt + k.eps;
    w[j] = w[j] + k.neg_step * m[j] / denom;  // ATen addcdiv: self + (value * t1) / t2
  }
}
}  // namespace detail

template <class T>
class AdamW {
 public:
  /// Requires: 0 <= beta1, beta2 < 1; eps > 0; weight_decay >= 0.
  AdamW(std::vector<ParamRef<T>> params, AdamWOptions options, std::vector<GroupRule> groups = {})
      : params_(std::move(params)), opt_(options), rules_(std::move(groups)) {
    SIEVE_CHECK(opt_.beta1 >= 0.0 && opt_.beta1 < 1.0 && opt_.beta2 >= 0.0 && opt_.beta2 < 1.0,
                "AdamW: betas (", opt_.beta1, ", ", opt_.beta2, ") must be in [0, 1)");
    SIEVE_CHECK(opt_.eps > 0.0 && opt_.weight_decay >= 0.0, "AdamW: eps=", opt_.eps,
                " must be > 0 and weight_decay=", opt_.weight_decay, " >= 0");
    for (const auto& p : params_) {
      SIEVE_CHECK(p.value.size() == p.grad.size(), "AdamW: parameter ", p.name, " has ", p.value.size(),
                  " values but ", p.grad.size(), " gradients");
      mult_.push_back(lr_multiplier(p.name, rules_));
      m_.emplace_back(p.value.size(), T(0));
      v_.emplace_back(p.value.size(), T(0));
      steps_.push_back(0);
    }
  }

  /// One update with scheduled learning rate `lr` (times each parameter's group multiplier).
  void step(double lr_scheduled) {
    const T b1 = static_cast<T>(opt_.beta1), b2 = static_cast<T>(opt_.beta2);
    const T one_minus_b1 = static_cast<T>(1.0 - opt_.beta1), one_minus_b2 = static_cast<T>(1.0 - opt_.beta2);
    const T eps = static_cast<T>(opt_.eps);
    for (std::size_t i = 0; i < params_.size(); ++i) {
      auto& p = params_[i];
      if (p.is_frozen()) continue;
      const double lr = lr_scheduled * mult_[i];
      const double wd = p.decay ? opt_.weight_decay : 0.0;
      const auto t = static_cast<double>(++steps_[i]);
      const T decay = static_cast<T>(1.0 - lr * wd);
      const double bc1 = 1.0 - std::pow(opt_.beta1, t);
      const double bc2 = 1.0 - std::pow(opt_.beta2, t);
      const T neg_step = static_cast<T>(-(lr / bc1));
      const T bc2_sqrt = static_cast<T>(std::sqrt(bc2));
      T* m = m_[i].data();
      T* v = v_[i].data();
      T* w = p.value.data();
      const T* gr = p.grad.data();
      // Element-wise, so any split across threads gives the same bits.
      const detail::AdamWScalars<T> k{decay, b1, b2, one_minus_b1, one_minus_b2, bc2_sqrt, eps, neg_step};
      parallel_for(p.value.size(), parallel_grain_elements,
                   [&](std::size_t lo, std::size_t hi) { detail::adamw_update(k, gr, w, m, v, lo, hi); });
    }
  }

  /// State for checkpoints: `exp_avg.<p>`, `exp_avg_sq.<p>`, `step.<p>` (count), as torch names them.
  std::vector<BufferRef<T>> state() {
    std::vector<BufferRef<T>> out;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      out.push_back({"exp_avg." + params_[i].name, params_[i].shape, std::span<T>(m_[i]), nullptr});
      out.push_back({"exp_avg_sq." + params_[i].name, params_[i].shape, std::span<T>(v_[i]), nullptr});
      out.push_back({"step." + params_[i].name, {}, {}, &steps_[i]});
    }
    return out;
  }

  const std::vector<ParamRef<T>>& params() const { return params_; }
  double lr_multiplier_of(std::size_t i) const { return mult_.at(i); }

 private:
  std::vector<ParamRef<T>> params_;
  AdamWOptions opt_;
  std::vector<GroupRule> rules_;
  std::vector<double> mult_;
  std::vector<std::vector<T>> m_, v_;
  std::vector<std::int64_t> steps_;
};

}  // namespace sieve::optim
