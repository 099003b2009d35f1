#pragma once
/// Stochastic gradient descent with momentum, Nesterov and L2 weight decay (torch.optim.SGD).

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/param.hpp"
#include "sieve/optim/param_groups.hpp"

namespace sieve::optim {

struct SgdOptions {
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;  ///< coupled (added to the gradient), only where ParamRef::decay
  bool nesterov = false;
};

/// torch.optim.SGD's update, in its order and in T arithmetic (hyperparameters rounded to T
/// first, as ATen does with its Scalar arguments):
///   d = g + wd p;  b = d (first step) or b = mu b + (1 - damp) d;  d = d + mu b (Nesterov) or b;
///   p = p - lr d
/// Frozen parameters are skipped entirely (no state, no update).
/// Every `a + s * b` that ATen computes in one add/addcmul kernel is a fused multiply-add here
/// (std::fma): x86-64 builds of ATen contract it, and with that the trajectory is bit-identical
/// to torch 1.13's (tests/train: 0 ulp after 6 steps). sieve itself builds without contraction
/// (-std=c++20), so nothing else is fused behind our back.
template <class T>
class Sgd {
 public:
  /// Requires: momentum >= 0; nesterov needs momentum > 0 and dampening 0 (as PyTorch).
  Sgd(std::vector<ParamRef<T>> params, SgdOptions options, std::vector<GroupRule> groups = {})
      : params_(std::move(params)), opt_(options), rules_(std::move(groups)) {
    SIEVE_CHECK(opt_.momentum >= 0.0 && opt_.weight_decay >= 0.0, "Sgd: momentum=", opt_.momentum,
                " weight_decay=", opt_.weight_decay, " must be >= 0");
    SIEVE_CHECK(!opt_.nesterov || (opt_.momentum > 0.0 && opt_.dampening == 0.0),
                "Sgd: Nesterov needs momentum > 0 and dampening 0, got momentum=", opt_.momentum,
                " dampening=", opt_.dampening);
    for (const auto& p : params_) {
      SIEVE_CHECK(p.value.size() == p.grad.size(), "Sgd: parameter ", p.name, " has ", p.value.size(),
                  " values but ", p.grad.size(), " gradients");
      mult_.push_back(lr_multiplier(p.name, rules_));
      buf_.emplace_back(opt_.momentum != 0.0 ? p.value.size() : 0, T(0));
      steps_.push_back(0);
    }
  }

  /// One update with scheduled learning rate `lr` (times each parameter's group multiplier).
  void step(double lr) {
    const T mu = static_cast<T>(opt_.momentum);
    const T one_minus_damp = static_cast<T>(1.0 - opt_.dampening);
    for (std::size_t i = 0; i < params_.size(); ++i) {
      auto& p = params_[i];
      if (p.is_frozen()) continue;
      const T neg_lr = static_cast<T>(-(lr * mult_[i]));
      const T wd = static_cast<T>(p.decay ? opt_.weight_decay : 0.0);
      const bool first = steps_[i] == 0;
      T* b = buf_[i].data();
      for (std::size_t j = 0; j < p.value.size(); ++j) {
        T d = p.grad[j];
        if (wd != T(0)) d = std::fma(wd, p.value[j], d);
        if (mu != T(0)) {
          b[j] = first ? d : std::fma(one_minus_damp, d, mu * b[j]);
          d = opt_.nesterov ? std::fma(mu, b[j], d) : b[j];
        }
        p.value[j] = std::fma(neg_lr, d, p.value[j]);
      }
      ++steps_[i];
    }
  }

  /// The optimizer state as named buffers, for checkpoints: `momentum_buffer.<param>` (when
  /// momentum is on) and `step.<param>` (a count). Loading writes through these same refs.
  std::vector<BufferRef<T>> state() {
    std::vector<BufferRef<T>> out;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      if (!buf_[i].empty())
        out.push_back({"momentum_buffer." + params_[i].name, params_[i].shape, std::span<T>(buf_[i]), nullptr});
      out.push_back({"step." + params_[i].name, {}, {}, &steps_[i]});
    }
    return out;
  }

  const std::vector<ParamRef<T>>& params() const { return params_; }
  double lr_multiplier_of(std::size_t i) const { return mult_.at(i); }

 private:
  std::vector<ParamRef<T>> params_;
  SgdOptions opt_;
  std::vector<GroupRule> rules_;
  std::vector<double> mult_;
  std::vector<std::vector<T>> buf_;
  std::vector<std::int64_t> steps_;
};

}  // namespace sieve::optim
