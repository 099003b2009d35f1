#pragma once
/// Parameter groups by name prefix, and whole-model gradient utilities (norm, clipping).

#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "sieve/core/param.hpp"

namespace sieve::optim {

/// Parameters whose name starts with `prefix` train with `lr_mult` times the scheduled LR
/// (e.g. {"fc.", 10.0} for a fresh head on a pretrained backbone). The longest matching
/// prefix wins; parameters matching no rule use 1.0. Weight decay is never per group: it
/// applies exactly where ParamRef::decay is true (false for BN parameters and biases).
struct GroupRule {
  std::string prefix;
  double lr_mult = 1.0;
};

/// The LR multiplier of parameter `name` under `rules` (longest matching prefix, else 1).
inline double lr_multiplier(const std::string& name, const std::vector<GroupRule>& rules) {
  double mult = 1.0;
  std::size_t best = 0;
  bool found = false;
  for (const auto& r : rules) {
    if (name.compare(0, r.prefix.size(), r.prefix) == 0 && (!found || r.prefix.size() > best)) {
      mult = r.lr_mult;
      best = r.prefix.size();
      found = true;
    }
  }
  return mult;
}

/// Global L2 norm of the gradients of all non-frozen parameters, accumulated in double in
/// parameter order (deterministic). Non-finite if any gradient element is.
template <class T>
double global_grad_norm(const std::vector<ParamRef<T>>& params) {
  double sq = 0.0;
  for (const auto& p : params) {
    if (p.is_frozen()) continue;
    for (const T g : p.grad) sq += static_cast<double>(g) * static_cast<double>(g);
  }
  return std::sqrt(sq);
}

/// Scale gradients so their global norm is at most max_norm, as torch.nn.utils.clip_grad_norm_
/// (coefficient max_norm / (norm + 1e-6), applied only when below 1). Returns the norm before.
/// Requires: max_norm > 0.
template <class T>
double clip_grad_norm(const std::vector<ParamRef<T>>& params, double max_norm) {
  const double norm = global_grad_norm(params);
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) {
    const T c = static_cast<T>(coef);
    for (const auto& p : params) {
      if (p.is_frozen()) continue;
      for (T& g : p.grad) g *= c;
    }
  }
  return norm;
}

}  // namespace sieve::optim
