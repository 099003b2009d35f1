#pragma once
/// Training for a wall-clock budget: the trainer runs a few timed probe steps, turns the time
/// left into a number of optimizer steps (plan_steps, below), and a PlannedWarmupCosineLR
/// anneals over exactly those steps, so a run told "10 minutes" ends on a fully annealed model.
///
/// Usage (a 10-minute fit() that leaves `est` seconds for calibration afterwards):
///
///   optim::PlannedWarmupCosineLR sched{.base = 1e-3};   // warmup 10%, cosine to 0
///   train::TrainerOptions o;
///   o.run_dir = run_dir;
///   o.budget = train::TimeBudget{.seconds = 600, .reserve = [&] { return est; }};
///   train::Trainer tr(model, loss, opt, sched, o);
///   tr.set_validation(validate);            // optional; its measured cost is planned for
///   tr.resume();                            // a resumed run continues the saved plan
///   const auto r = tr.fit(loader);          // r.stopped_by_plan, r.plan->total_steps
///
/// `reserve` (and `validation`) take a number (`.reserve = 30.0`) or a callback evaluated once,
/// right after the probe (time an eval batch there). `epochs` is ignored under a budget; early
/// stopping and restore_best_at_end do not apply (the annealed model is the one to keep).
///
/// The plan is made after the probe from everything the trainer will spend, measured or
/// estimated: per-step time (median of the probe steps but the first), one validation
/// (measured at an epoch end during the probe, else TimeBudget::validation, else one timing
/// call of the hook after the probe, metrics discarded), paid at the epoch ends that validate
/// (every TrainerOptions::validate_every_epochs-th), and one checkpoint save (measured, or one
/// save of last/ after the probe), paid at every epoch end. It is refined once, when the warmup
/// ends (refine_after_warmup): the total is planned again from the mean of the warmup's step
/// times (mean_seconds_per_step) and the validation measured at an epoch end, which the 20
/// probe steps estimate poorly (measured 2026-12-07: a probe at 0.245 s/step against 0.22
/// steady ended a 30-minute run 3 minutes early; another at 0.215 against 0.239 overran its
/// plan by 23 s). Only the total changes: the probe and warmup LRs are already spent and the
/// cosine starts after them, so the LR curve stays continuous. It is planned once more
/// halfway through the annealing (replan_midway), from the mean time of the later half of the
/// steps since the warmup (the recent speed): a machine whose speed changes mid-run (measured
/// 2026-12-07: 0.228 s/step over the warmup, 0.19 after it; that run ended 93 s before its
/// plan) still ends near its budget. The schedule keeps the LR it has at that step and bends
/// towards the new end (PlannedWarmupCosineLR::replanned). If a later validation would overrun the budget
/// anyway, the trainer skips it (logged; see skip_late_validation); the schedule and the
/// weights are unaffected. Plans are per fit() call; a resumed run takes the plan from
/// state.json and follows it as it is, refined or not (a run interrupted during the probe
/// plans anew, and refines that plan after its warmup).

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <functional>
#include <span>
#include <type_traits>
#include <vector>

#include "sieve/core/check.hpp"

namespace sieve::train {

/// Seconds given as a number, or by a callback asked once when the value is needed.
class SecondsEstimate {
 public:
  SecondsEstimate() = default;
  SecondsEstimate(double seconds) : fn_([seconds] { return seconds; }) {}  // NOLINT: implicit by design
  template <class F>
    requires(std::invocable<F&> && std::convertible_to<std::invoke_result_t<F&>, double> &&
             !std::convertible_to<F, double>)
  SecondsEstimate(F f) : fn_([g = std::move(f)]() mutable { return static_cast<double>(g()); }) {}  // NOLINT

  /// True when a number or a callback was given.
  bool known() const { return static_cast<bool>(fn_); }
  /// Ensures: the value (0 when none was given); throws naming `what` when it is negative or NaN.
  double get(const char* what) const {
    if (!fn_) return 0.0;
    const double v = fn_();
    SIEVE_CHECK(v >= 0.0, "TimeBudget: ", what, " is ", v, " seconds (need a finite value >= 0)");
    return v;
  }

 private:
  std::function<double()> fn_;
};

/// A wall-clock budget for one Trainer::fit() call (TrainerOptions::budget).
struct TimeBudget {
  double seconds = 0.0;            ///< the whole fit() call, from its start to its return
  std::int64_t probe_steps = 20;   ///< timed steps at the probe LR before planning (>= 2)
  SecondsEstimate reserve{};       ///< time the caller needs after fit(), kept free
  double margin_seconds = 0.0;     ///< safety margin = margin_seconds + margin_fraction * seconds
  double margin_fraction = 0.02;
  std::int64_t min_steps = 10;     ///< steps after the probe even when the budget has no room (>= 2)
  /// One call of the validation hook; empty = measured (see the top of budget.hpp).
  SecondsEstimate validation{};
  /// Data parallel: every rank must take the same number of steps. Called on every rank with
  /// its planned total, returns the total all use (e.g. the minimum over ranks); empty = as planned.
  std::function<std::int64_t(std::int64_t)> agree_total{};
  /// Skip an epoch-end validation when elapsed + its last measured time + the planned steps
  /// left (+ final save) would pass seconds - reserve - margin. Data parallel with a collective
  /// validation: set false (ranks' clocks could disagree on the skip).
  bool skip_late_validation = true;
  /// Plan the total again once the warmup is over (see the top of this file).
  bool refine_after_warmup = true;
  /// Plan it once more halfway through the annealing, from the steps since the warmup (see the
  /// top of this file); the schedule bends there without a jump (replanned()).
  bool replan_midway = true;
};

/// What plan_steps needs; all times in seconds.
struct PlanInputs {
  double budget = 0.0;                ///< B
  double elapsed = 0.0;               ///< E: spent in this fit() call so far (probe, timing calls)
  double reserve = 0.0;               ///< R
  double margin = 0.0;                ///< M
  double seconds_per_step = 0.0;      ///< s
  std::int64_t steps_done = 0;        ///< P: steps taken before the plan (the probe)
  std::int64_t min_steps = 10;        ///< m
  std::int64_t steps_per_epoch = 0;   ///< S (0: no epoch ends)
  std::int64_t steps_into_epoch = 0;  ///< q: steps of the current epoch already taken, 0 <= q < S
  double epoch_end_seconds = 0.0;     ///< V: paid at every epoch end (the checkpoint save)
  double validation_seconds = 0.0;    ///< W: one validation, at the end of every k-th epoch
  std::int64_t validate_every = 1;    ///< k: epoch e (0-based) ends with a validation when (e + 1) % k == 0
  std::int64_t epoch = 0;             ///< e0: the current epoch (0-based)
  std::int64_t save_every_steps = 0;  ///< K: periodic checkpoints (0: none)
  double save_seconds = 0.0;          ///< C: one checkpoint save (also the final one)
};

/// The plan a budgeted fit() follows; saved in state.json (plan.*) so resume continues it.
struct TimePlan {
  std::int64_t total_steps = 0;   ///< the run ends after exactly this many optimizer steps
  std::int64_t probe_steps = 0;   ///< steps taken before the plan (at the probe LR)
  std::int64_t warmup_steps = 0;  ///< from the schedule (warmup_for); 0 from plan_steps
  double seconds_per_step = 0.0;
  double epoch_end_seconds = 0.0;  ///< paid at every epoch end (the checkpoint save)
  double validation_seconds = 0.0;
  std::int64_t validate_every = 1;
  double save_seconds = 0.0;
  double reserve_seconds = 0.0;
  double margin_seconds = 0.0;
  double budget_seconds = 0.0;
  double elapsed_at_plan = 0.0;    ///< E
  double predicted_seconds = 0.0;  ///< predicted fit() duration: E + cost(r) + C
  bool over_budget = false;        ///< the budget had no room for min_steps more steps
  bool refined = false;  ///< planned again after the warmup, or continued by a resume
  bool replanned = false;  ///< no further change: planned again midway, or continued by a resume
  std::int64_t replan_step = 0;  ///< the step of the midway plan (0: none moved the end)
  std::int64_t replan_from = 0;  ///< the total before it
};

/// Mean seconds per step of a run's steady state (the warmup, when the plan is refined),
/// leaving out the first step: the total time is what the plan must fit, and the occasional
/// slow step (a batch the loader was late with) counts in it. Measured 2026-12-07: the median
/// of 227 warmup steps said 0.204 s/step, the 2,292 steps after it took 0.215 on average.
/// Requires: at least 2 durations, all finite and >= 0.
inline double mean_seconds_per_step(std::span<const double> step_seconds) {
  SIEVE_CHECK(step_seconds.size() >= 2, "mean_seconds_per_step: ", step_seconds.size(),
              " step durations (need >= 2: the first is left out)");
  double sum = 0.0;
  for (std::size_t i = 1; i < step_seconds.size(); ++i) {
    SIEVE_CHECK(step_seconds[i] >= 0.0 && std::isfinite(step_seconds[i]), "mean_seconds_per_step: a step took ",
                step_seconds[i], " seconds");
    sum += step_seconds[i];
  }
  return sum / static_cast<double>(step_seconds.size() - 1);
}

/// Median seconds per step of the probe, leaving out the first step (it warms caches and
/// allocates the buffers). Requires: at least 2 durations, all finite and >= 0.
inline double probe_seconds_per_step(std::span<const double> step_seconds) {
  SIEVE_CHECK(step_seconds.size() >= 2, "probe_seconds_per_step: ", step_seconds.size(),
              " step durations (need >= 2: the first is left out)");
  std::vector<double> v(step_seconds.begin() + 1, step_seconds.end());
  for (const double d : v) SIEVE_CHECK(d >= 0.0, "probe_seconds_per_step: a step took ", d, " seconds");
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

/// The time r more steps cost: r s + V * (epoch ends among them, the last step excluded: the
/// run stops right after it) + W * (those ends that validate: epochs e0 .. e0 + ends - 1 with
/// (e + 1) % k == 0) + C * (periodic saves among them, the last excluded).
inline double plan_cost(const PlanInputs& in, std::int64_t r) {
  if (r <= 0) return 0.0;
  double c = static_cast<double>(r) * in.seconds_per_step;
  if (in.steps_per_epoch > 0) {
    const std::int64_t ends = (in.steps_into_epoch + r - 1) / in.steps_per_epoch;
    c += static_cast<double>(ends) * in.epoch_end_seconds;
    c += static_cast<double>((in.epoch + ends) / in.validate_every - in.epoch / in.validate_every) *
         in.validation_seconds;
  }
  if (in.save_every_steps > 0)
    c += static_cast<double>((in.steps_done + r - 1) / in.save_every_steps - in.steps_done / in.save_every_steps) *
         in.save_seconds;
  return c;
}

/// Turn the time left into a step count. With A = B - E - R - M (the time training may still
/// use) and cost(r) as in plan_cost, r* = the largest r >= 0 with cost(r) + C <= A (C: the
/// final save of last/), and total = P + max(r*, m). Ensures: when !over_budget,
/// predicted_seconds + R + M = E + cost(total - P) + C + R + M <= B.
/// Requires: budget > 0; seconds_per_step > 0; reserve, margin, elapsed, epoch_end_seconds,
/// validation_seconds, save_seconds >= 0; validate_every >= 1; epoch >= 0; min_steps >= 2;
/// steps_done >= 0; 0 <= steps_into_epoch < steps_per_epoch when steps_per_epoch > 0.
inline TimePlan plan_steps(const PlanInputs& in) {
  SIEVE_CHECK(in.budget > 0.0 && in.seconds_per_step > 0.0, "plan_steps: budget=", in.budget,
              " s and seconds_per_step=", in.seconds_per_step, " (both must be > 0)");
  SIEVE_CHECK(in.reserve >= 0.0 && in.margin >= 0.0 && in.elapsed >= 0.0 && in.epoch_end_seconds >= 0.0 &&
                  in.validation_seconds >= 0.0 && in.save_seconds >= 0.0,
              "plan_steps: reserve=", in.reserve, " margin=", in.margin, " elapsed=", in.elapsed,
              " epoch_end_seconds=", in.epoch_end_seconds, " validation_seconds=", in.validation_seconds,
              " save_seconds=", in.save_seconds, " (need >= 0)");
  SIEVE_CHECK(in.validate_every >= 1 && in.epoch >= 0, "plan_steps: validate_every=", in.validate_every,
              " epoch=", in.epoch, " (need >= 1 and >= 0)");
  SIEVE_CHECK(in.min_steps >= 2 && in.steps_done >= 0 && in.steps_per_epoch >= 0 && in.save_every_steps >= 0,
              "plan_steps: min_steps=", in.min_steps, " steps_done=", in.steps_done, " steps_per_epoch=",
              in.steps_per_epoch, " save_every_steps=", in.save_every_steps);
  SIEVE_CHECK(in.steps_per_epoch == 0 || (in.steps_into_epoch >= 0 && in.steps_into_epoch < in.steps_per_epoch),
              "plan_steps: steps_into_epoch=", in.steps_into_epoch, " outside [0, ", in.steps_per_epoch, ")");
  const double available = in.budget - in.elapsed - in.reserve - in.margin - in.save_seconds;
  std::int64_t r = 0;
  if (available > 0.0) {
    // cost is nondecreasing in r and cost(r) >= r s: bisect on [0, hi] for the largest fit.
    std::int64_t lo = 0, hi = static_cast<std::int64_t>(std::min(available / in.seconds_per_step, 1e15)) + 1;
    while (lo < hi) {
      const std::int64_t mid = lo + (hi - lo + 1) / 2;
      if (plan_cost(in, mid) <= available) lo = mid;
      else hi = mid - 1;
    }
    r = lo;
  }
  TimePlan p;
  p.over_budget = r < in.min_steps;
  const std::int64_t steps = std::max(r, in.min_steps);
  p.total_steps = in.steps_done + steps;
  p.probe_steps = in.steps_done;
  p.seconds_per_step = in.seconds_per_step;
  p.epoch_end_seconds = in.epoch_end_seconds;
  p.validation_seconds = in.validation_seconds;
  p.validate_every = in.validate_every;
  p.save_seconds = in.save_seconds;
  p.reserve_seconds = in.reserve;
  p.margin_seconds = in.margin;
  p.budget_seconds = in.budget;
  p.elapsed_at_plan = in.elapsed;
  p.predicted_seconds = in.elapsed + plan_cost(in, steps) + in.save_seconds;
  return p;
}

}  // namespace sieve::train
