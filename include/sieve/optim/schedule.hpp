#pragma once
/// Learning-rate schedules as pure functions of the optimizer step (so resume is exact).

#include <cmath>
#include <cstdint>
#include <numbers>
#include <string>
#include <variant>

#include "sieve/core/check.hpp"

namespace sieve::optim {

/// The same LR at every step.
struct ConstantLR {
  double base = 0.1;
  /// Ensures: the LR used by optimizer step `step` (0-based).
  double lr(std::int64_t /*step*/) const { return base; }
  std::string describe() const { return str("constant(base=", base, ")"); }
};

/// StepLR: base * gamma^floor(step / step_size).
struct StepDecayLR {
  double base = 0.1;
  std::int64_t step_size = 1;
  double gamma = 0.1;
  /// Requires: step_size > 0, step >= 0.
  double lr(std::int64_t step) const {
    SIEVE_CHECK(step_size > 0 && step >= 0, "StepDecayLR: step_size=", step_size, " step=", step);
    return base * std::pow(gamma, static_cast<double>(step / step_size));
  }
  std::string describe() const { return str("step(base=", base, ",step_size=", step_size, ",gamma=", gamma, ")"); }
};

/// Linear warmup then cosine annealing, equal to PyTorch's
///   SequentialLR([LinearLR(start_factor, 1.0, warmup), CosineAnnealingLR(T_max=total-warmup, eta_min)],
///                milestones=[warmup])
/// stepped once per optimizer step: for s < warmup, base * (start + (1 - start) s / warmup);
/// then eta_min + (base - eta_min) (1 + cos(pi (s - warmup) / (total - warmup))) / 2.
/// PyTorch evaluates the same curve recursively; the closed form agrees to ~1e-16 relative.
/// Past `total` the LR stays at eta_min (PyTorch's cosine would rise again; nobody wants that).
struct WarmupCosineLR {
  double base = 0.1;
  std::int64_t warmup = 0;
  std::int64_t total = 1;
  double start_factor = 1.0 / 3.0;  ///< LinearLR's default
  double eta_min = 0.0;

  /// Requires: 0 <= warmup < total; 0 < start_factor <= 1; step >= 0.
  double lr(std::int64_t step) const {
    SIEVE_CHECK(warmup >= 0 && warmup < total && step >= 0, "WarmupCosineLR: warmup=", warmup, " total=", total,
                " step=", step, " (need 0 <= warmup < total, step >= 0)");
    SIEVE_CHECK(start_factor > 0.0 && start_factor <= 1.0, "WarmupCosineLR: start_factor=", start_factor,
                " outside (0, 1]");
    if (step < warmup)
      return base * (start_factor + (1.0 - start_factor) * static_cast<double>(step) / static_cast<double>(warmup));
    if (step >= total) return eta_min;
    const double t = static_cast<double>(step - warmup) / static_cast<double>(total - warmup);
    return eta_min + (base - eta_min) * (1.0 + std::cos(std::numbers::pi * t)) / 2.0;
  }
  std::string describe() const {
    return str("warmup_cosine(base=", base, ",warmup=", warmup, ",total=", total, ",start_factor=", start_factor,
               ",eta_min=", eta_min, ")");
  }
};

/// Anything with `double lr(int64_t step) const`.
template <class S>
concept Schedule = requires(const S& s, std::int64_t step) {
  { s.lr(step) } -> std::convertible_to<double>;
};

}  // namespace sieve::optim
