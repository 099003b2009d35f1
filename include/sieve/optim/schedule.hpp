#pragma once
/// Learning-rate schedules as pure functions of the optimizer step (so resume is exact).

#include <algorithm>
#include <cmath>
#include <concepts>
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

enum class Anneal { cosine, linear };

/// Warmup then annealing over a step count decided at run time by a time plan
/// (train::TimeBudget): the trainer runs `probe` timed steps, plans `total`, then calls
/// with_plan(probe, warmup_for(probe, total), total) and uses the copy. With a = probe + warmup:
///   step < probe:             base * start_factor                  (the probe; also every step
///                                                                   of an unplanned schedule)
///   probe <= step < a:        base * (start + (1 - start) (step - probe) / warmup)
///   a <= step < total - 1:    eta_min + (base - eta_min) (1 + cos(pi t)) / 2   (cosine) or
///                             base - (base - eta_min) t                         (linear),
///                             t = (step - a) / (total - 1 - a)
///   step >= total - 1:        eta_min exactly
/// so the curve is continuous at the probe's end, reaches `base` after the warmup, and is
/// eta_min exactly at the last planned step (total - 1, the last one the trainer takes) and
/// never before it. one_cycle() gives the one-cycle shape (long warmup from base/25).
///
/// replanned(k, total') moves the end once more, mid-annealing, without a jump: the annealing
/// progress t keeps its value t_k at step k and goes linearly from there to 1 at total' - 1:
///   a <= step < k:            t = (step - a) / (T0 - 1 - a)        (T0: the total before)
///   k <= step < total' - 1:   t = t_k + (1 - t_k) (step - k) / (total' - 1 - k)
/// (the trainer re-times a budgeted run halfway through its annealing: train/budget.hpp).
struct PlannedWarmupCosineLR {
  double base = 0.1;
  double warmup_fraction = 0.1;  ///< warmup steps = this fraction of the steps after the probe
  double start_factor = 0.1;     ///< LR of the probe and the start of the warmup, relative to base
  double eta_min = 0.0;
  Anneal anneal = Anneal::cosine;
  std::int64_t probe = 0;   ///< set by with_plan
  std::int64_t warmup = 0;  ///< set by with_plan
  std::int64_t total = 0;   ///< set by with_plan; 0 = not planned yet (every step at the probe LR)
  std::int64_t replan_step = 0;   ///< set by replanned: k (0 = the plan was never moved)
  std::int64_t replan_from = 0;   ///< set by replanned: T0, the total before

  /// One-cycle (Smith; PyTorch's OneCycleLR defaults): from max_lr / 25 up to max_lr over 30%
  /// of the planned steps, then cosine down to max_lr / 25 / 1e4.
  static PlannedWarmupCosineLR one_cycle(double max_lr) {
    return {.base = max_lr, .warmup_fraction = 0.3, .start_factor = 1.0 / 25.0, .eta_min = max_lr / 25.0 / 1e4};
  }

  bool planned() const { return total > 0; }

  /// Warmup steps for a plan of `total` steps of which `probe` are already taken: round(fraction
  /// * (total - probe)), capped so at least 2 annealing steps remain.
  /// Requires: 0 <= warmup_fraction < 1; 0 <= probe; total - probe >= 2.
  std::int64_t warmup_for(std::int64_t probe_steps, std::int64_t total_steps) const {
    SIEVE_CHECK(warmup_fraction >= 0.0 && warmup_fraction < 1.0, "PlannedWarmupCosineLR: warmup_fraction=",
                warmup_fraction, " outside [0, 1)");
    SIEVE_CHECK(probe_steps >= 0 && total_steps - probe_steps >= 2, "PlannedWarmupCosineLR: probe=", probe_steps,
                " total=", total_steps, " (need at least 2 steps after the probe)");
    const std::int64_t rest = total_steps - probe_steps;
    return std::min<std::int64_t>(std::llround(warmup_fraction * static_cast<double>(rest)), rest - 2);
  }

  /// This schedule with its plan filled in.
  /// Requires: 0 <= probe; 0 <= warmup; probe + warmup + 2 <= total (an annealing phase of at
  /// least 2 steps, from base to eta_min). Ensures: lr(total - 1) == eta_min.
  PlannedWarmupCosineLR with_plan(std::int64_t probe_steps, std::int64_t warmup_steps, std::int64_t total_steps) const {
    SIEVE_CHECK(probe_steps >= 0 && warmup_steps >= 0 && probe_steps + warmup_steps + 2 <= total_steps,
                "PlannedWarmupCosineLR: probe=", probe_steps, " warmup=", warmup_steps, " total=", total_steps,
                " (need probe + warmup + 2 <= total)");
    PlannedWarmupCosineLR s = *this;
    s.probe = probe_steps;
    s.warmup = warmup_steps;
    s.total = total_steps;
    s.replan_step = s.replan_from = 0;
    return s;
  }

  /// This planned schedule with its end moved to `total_steps` from step `step` on (see the
  /// top): lr(n) is unchanged for n <= step, and lr(total_steps - 1) == eta_min.
  /// Requires: planned(), not replanned before; probe + warmup <= step < total - 1 (annealing,
  /// not yet at its end); step + 2 <= total_steps.
  PlannedWarmupCosineLR replanned(std::int64_t step, std::int64_t total_steps) const {
    SIEVE_CHECK(planned() && replan_step == 0, "PlannedWarmupCosineLR::replanned: ",
                planned() ? "already replanned once" : "not planned yet");
    SIEVE_CHECK(step >= probe + warmup && step < total - 1 && step + 2 <= total_steps,
                "PlannedWarmupCosineLR::replanned: step=", step, " new total=", total_steps, " (need ", probe + warmup,
                " <= step < ", total - 1, " and step + 2 <= new total)");
    PlannedWarmupCosineLR s = *this;
    s.replan_step = step;
    s.replan_from = total;
    s.total = total_steps;
    return s;
  }

  /// Requires: step >= 0; 0 < start_factor <= 1.
  double lr(std::int64_t step) const {
    SIEVE_CHECK(step >= 0 && start_factor > 0.0 && start_factor <= 1.0, "PlannedWarmupCosineLR: step=", step,
                " start_factor=", start_factor, " (need step >= 0, start_factor in (0, 1])");
    if (!planned() || step < probe) return base * start_factor;
    const std::int64_t a = probe + warmup;
    if (step < a)
      return base * (start_factor + (1.0 - start_factor) * static_cast<double>(step - probe) / static_cast<double>(warmup));
    if (step >= total - 1) return eta_min;
    const std::int64_t t0_end = replan_step > 0 ? replan_from : total;  // the first plan's end
    double t = static_cast<double>(std::min(step, replan_step > 0 ? replan_step : step) - a) /
               static_cast<double>(t0_end - 1 - a);
    if (replan_step > 0 && step > replan_step)
      t += (1.0 - t) * static_cast<double>(step - replan_step) / static_cast<double>(total - 1 - replan_step);
    if (anneal == Anneal::linear) return base - (base - eta_min) * t;
    return eta_min + (base - eta_min) * (1.0 + std::cos(std::numbers::pi * t)) / 2.0;
  }
  std::string describe() const {
    return str("planned_warmup_", anneal == Anneal::cosine ? "cosine" : "linear", "(base=", base,
               ",warmup_fraction=", warmup_fraction, ",start_factor=", start_factor, ",eta_min=", eta_min,
               ",probe=", probe, ",warmup=", warmup, ",total=", total,
               replan_step > 0 ? str(",replanned_at=", replan_step, ",from_total=", replan_from) : std::string(), ")");
  }
};

/// Anything with `double lr(int64_t step) const`.
template <class S>
concept Schedule = requires(const S& s, std::int64_t step) {
  { s.lr(step) } -> std::convertible_to<double>;
};

/// A schedule whose length a time plan decides: `warmup_for(probe, total)` and
/// `with_plan(probe, warmup, total)` returning the planned copy (see PlannedWarmupCosineLR).
template <class S>
concept PlannableSchedule = Schedule<S> && requires(const S& s, std::int64_t n) {
  { s.warmup_for(n, n) } -> std::convertible_to<std::int64_t>;
  { s.with_plan(n, n, n) } -> std::same_as<S>;
};

}  // namespace sieve::optim
