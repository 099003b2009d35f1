// Training for a wall-clock budget: the planner's formula on hand-computed cases, the planned
// schedule, and the trainer under a fake clock (the plan fits the budget, the LR ends at 0 on
// the last planned step, resume continues the same plan bit-exactly), plus the injectable clock.
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "sieve/loss/bce_with_logits.hpp"
#include "sieve/optim/adamw.hpp"
#include "sieve/optim/schedule.hpp"
#include "sieve/train/budget.hpp"
#include "sieve/train/memory_loader.hpp"
#include "sieve/train/trainer.hpp"
#include "tiny_model.hpp"
#include "support/temp_dir.hpp"

namespace fs = std::filesystem;
using sieve_test::TempDir;
using namespace sieve;
using sieve_test::TinyMlp;

TEST_CASE("budget: probe_seconds_per_step is the median without the first step") {
  const std::vector<double> even{10.0, 1.0, 3.0, 2.0}, odd{10.0, 4.0, 1.0};
  CHECK(train::probe_seconds_per_step(even) == 2.0);
  CHECK(train::probe_seconds_per_step(odd) == 2.5);
  const std::vector<double> one{1.0};
  CHECK_THROWS_WITH_AS(train::probe_seconds_per_step(one), doctest::Contains("1 step durations (need >= 2"), Error);
}

TEST_CASE("budget: mean_seconds_per_step is the mean without the first step, slow steps counted") {
  const std::vector<double> steps{10.0, 0.2, 0.2, 0.2, 1.0};  // median 0.2, but 1.6 s for 4 steps
  CHECK(train::mean_seconds_per_step(steps) == doctest::Approx(0.4).epsilon(1e-15));
  const std::vector<double> one{1.0}, bad{1.0, -1.0};
  CHECK_THROWS_WITH_AS(train::mean_seconds_per_step(one), doctest::Contains("1 step durations (need >= 2"), Error);
  CHECK_THROWS_WITH_AS(train::mean_seconds_per_step(bad), doctest::Contains("a step took -1 seconds"), Error);
}

TEST_CASE("budget: plan_steps on hand-computed cases") {
  // B=100, E=5, R=10, M=5, s=0.5, P=20: A = 80 -> r = 160, total 180, ends at exactly B - R - M.
  train::PlanInputs in{.budget = 100, .elapsed = 5, .reserve = 10, .margin = 5, .seconds_per_step = 0.5, .steps_done = 20};
  auto p = train::plan_steps(in);
  CHECK(p.total_steps == 180);
  CHECK(p.probe_steps == 20);
  CHECK_FALSE(p.over_budget);
  CHECK(p.predicted_seconds == 85.0);
  CHECK(p.predicted_seconds + p.reserve_seconds + p.margin_seconds <= p.budget_seconds);

  SUBCASE("epoch ends cost V each, the one at the last step excluded") {
    // S=50, q=20, V=4: cost(r) = 0.5 r + 4 floor((19 + r) / 50). cost(136) = 68 + 12 = 80 fits,
    // cost(137) = 68.5 + 12 = 80.5 does not.
    in.steps_per_epoch = 50;
    in.steps_into_epoch = 20;
    in.epoch_end_seconds = 4;
    CHECK(train::plan_cost(in, 136) == 80.0);
    CHECK(train::plan_cost(in, 137) == 80.5);
    p = train::plan_steps(in);
    CHECK(p.total_steps == 20 + 136);
    CHECK(p.predicted_seconds == 85.0);
  }
  SUBCASE("validation every k-th epoch costs W at those ends only") {
    // S=50, q=20, V=0, W=4, k=3, e0=2: the ends of epochs 2, 5, 8, ... validate. cost(r) =
    // 0.5 r + 4 (floor((2 + ends) / 3) - 0), ends = floor((19 + r) / 50). cost(152) = 76 + 4
    // (ends 3: epochs 2, 3, 4, one validation) fits A = 80; cost(153) = 80.5 does not. With
    // k=1 the same ends cost 12, so r = 136 (above).
    in.steps_per_epoch = 50;
    in.steps_into_epoch = 20;
    in.validation_seconds = 4;
    in.validate_every = 3;
    in.epoch = 2;
    CHECK(train::plan_cost(in, 30) == 15.0);   // no epoch end
    CHECK(train::plan_cost(in, 31) == 19.5);   // epoch 2 ends, (2 + 1) % 3 == 0: validates
    CHECK(train::plan_cost(in, 81) == 44.5);   // epoch 3 ends too, without validation
    CHECK(train::plan_cost(in, 152) == 80.0);
    p = train::plan_steps(in);
    CHECK(p.total_steps == 20 + 152);
    CHECK(p.validate_every == 3);
    in.epoch = 3;  // now epochs 3, 4 and 5 end: the one at 5 validates
    CHECK(train::plan_cost(in, 152) == 80.0);
    CHECK(train::plan_cost(in, 130) == 65.0);  // epochs 3 and 4 only
    CHECK(train::plan_cost(in, 131) == 69.5);  // and 5
    in.validate_every = 0;
    CHECK_THROWS_AS(train::plan_steps(in), Error);
  }
  SUBCASE("periodic saves (K=25, C=1) and the final save") {
    // A = 80 - 1 (final save) = 79; saves at steps 25..150 in [21, P+r-1]: cost(146) = 73 + 6 = 79.
    in.save_every_steps = 25;
    in.save_seconds = 1;
    CHECK(train::plan_cost(in, 146) == 79.0);
    CHECK(train::plan_cost(in, 147) == 79.5);
    p = train::plan_steps(in);
    CHECK(p.total_steps == 20 + 146);
    CHECK(p.predicted_seconds == 5 + 79 + 1);
  }
  SUBCASE("no room: min_steps after the probe, flagged over budget") {
    in.elapsed = 99;
    in.min_steps = 12;
    p = train::plan_steps(in);
    CHECK(p.over_budget);
    CHECK(p.total_steps == 32);
  }
  SUBCASE("errors name the values") {
    in.seconds_per_step = 0;
    CHECK_THROWS_WITH_AS(train::plan_steps(in), doctest::Contains("seconds_per_step=0"), Error);
    in.seconds_per_step = 1;
    in.steps_per_epoch = 7;
    in.steps_into_epoch = 7;
    CHECK_THROWS_WITH_AS(train::plan_steps(in), doctest::Contains("steps_into_epoch=7 outside [0, 7)"), Error);
  }
}

TEST_CASE("PlannedWarmupCosineLR: probe LR, warmup, annealing to exactly eta_min at the last planned step") {
  static_assert(optim::PlannableSchedule<optim::PlannedWarmupCosineLR>);
  static_assert(!optim::PlannableSchedule<optim::WarmupCosineLR> && !optim::PlannableSchedule<optim::ConstantLR>);
  const optim::PlannedWarmupCosineLR raw{.base = 1.0, .warmup_fraction = 0.1, .start_factor = 0.1};
  CHECK(raw.lr(0) == 0.1);
  CHECK(raw.lr(1000) == 0.1);  // unplanned: the probe LR
  CHECK(raw.warmup_for(20, 120) == 10);
  const auto s = raw.with_plan(20, 10, 120);
  CHECK(s.lr(19) == 0.1);
  CHECK(s.lr(20) == 0.1);  // continuous at the end of the probe
  CHECK(s.lr(25) == doctest::Approx(0.55).epsilon(1e-15));
  CHECK(s.lr(30) == 1.0);
  CHECK(s.lr(75) == doctest::Approx((1 + std::cos(std::numbers::pi * 45.0 / 89.0)) / 2).epsilon(1e-15));
  CHECK(s.lr(119) == 0.0);
  CHECK(s.lr(500) == 0.0);
  CHECK(s.lr(118) > 0.0);
  for (std::int64_t k = 30; k < 119; ++k) CHECK(s.lr(k + 1) < s.lr(k));
  auto lin = raw;
  lin.anneal = optim::Anneal::linear;
  lin.eta_min = 0.01;
  const auto l = lin.with_plan(20, 10, 120);
  CHECK(l.lr(119) == 0.01);
  CHECK(l.lr(30 + 89 / 2) == doctest::Approx(1.0 - 0.99 * 44.0 / 89.0).epsilon(1e-15));
  const auto oc = optim::PlannedWarmupCosineLR::one_cycle(0.5);
  CHECK(oc.lr(0) == 0.02);
  CHECK(oc.warmup_for(0, 100) == 30);
  CHECK(oc.with_plan(0, 30, 100).lr(99) == 0.5 / 25 / 1e4);
  CHECK(raw.warmup_for(0, 3) == 0);  // capped: two annealing steps remain
  CHECK_THROWS_WITH_AS(raw.with_plan(20, 10, 31), doctest::Contains("probe=20 warmup=10 total=31"), Error);
  CHECK_THROWS_WITH_AS(raw.warmup_for(20, 21), doctest::Contains("probe=20 total=21"), Error);
}

TEST_CASE("PlannedWarmupCosineLR::replanned keeps the LR up to its step and ends at eta_min on the new total") {
  const optim::PlannedWarmupCosineLR raw{.base = 1.0, .warmup_fraction = 0.1, .start_factor = 0.1, .eta_min = 0.001};
  const auto s = raw.with_plan(20, 10, 120);
  for (const std::int64_t new_total : {150, 90, 77}) {
    CAPTURE(new_total);
    const auto r = s.replanned(75, new_total);
    CHECK(r.total == new_total);
    for (std::int64_t k = 0; k <= 75; ++k) REQUIRE(r.lr(k) == s.lr(k));  // the same bits up to the step
    CHECK(r.lr(new_total - 1) == 0.001);
    CHECK(r.lr(new_total - 2) > 0.001);
    for (std::int64_t k = 75; k + 1 < new_total; ++k) REQUIRE(r.lr(k + 1) < r.lr(k));
    // From step 75 the annealing progress goes linearly from its value there, t = 45/89, to 1.
    const double t75 = 45.0 / 89.0, t = t75 + (1.0 - t75) * 1.0 / static_cast<double>(new_total - 1 - 75);
    CHECK(r.lr(76) == doctest::Approx(0.001 + 0.999 * (1 + std::cos(std::numbers::pi * t)) / 2).epsilon(1e-14));
    CHECK(r.describe().find(",replanned_at=75,from_total=120)") != std::string::npos);
    CHECK_THROWS_WITH_AS((void)r.replanned(80, 200), doctest::Contains("already replanned once"), Error);
  }
  CHECK(s.describe().find("replanned") == std::string::npos);
  CHECK_THROWS_AS((void)s.replanned(29, 150), Error);   // still in the warmup
  CHECK_THROWS_AS((void)s.replanned(119, 150), Error);  // at the end already
  CHECK_THROWS_AS((void)s.replanned(75, 76), Error);    // fewer than 2 steps left
  CHECK_THROWS_AS((void)raw.replanned(75, 150), Error); // not planned
  // with_plan starts over: a fresh plan has no bend.
  CHECK(s.replanned(75, 150).with_plan(20, 10, 120).lr(100) == s.lr(100));
}

namespace {
constexpr std::size_t kIn = 12, kHidden = 16, kClasses = 3, kSamples = 40;

std::pair<Tensor4<float>, Tensor2<float>> make_data() {
  Rng rng(7, 1);
  Tensor4<float> x = xt::zeros<float>(Shape<4>{kSamples, 2, 3, 2});
  for (auto& v : x) v = static_cast<float>(rng.normal());
  Tensor2<float> y = xt::zeros<float>(Shape<2>{kSamples, kClasses});
  for (std::size_t n = 0; n < kSamples; ++n)
    for (std::size_t k = 0; k < kClasses; ++k) y(n, k) = x.data()[n * kIn + k] + x.data()[n * kIn + k + 3] > 0 ? 1.0f : 0.0f;
  return {x, y};
}

using Loader = train::InMemoryLoader<float, 4, float, 2>;

// Every batch drawn advances the fake clock: the time per step is exact, whatever the host does.
struct ClockedLoader {
  Loader inner;
  double* now;
  double per_batch;
  std::int64_t num_batches(std::int64_t e) const { return inner.num_batches(e); }
  void start_epoch(std::int64_t e, std::int64_t first) { inner.start_epoch(e, first); }
  double per_batch_later = -1.0;  // >= 0: the time per batch after `switch_after` batches
  std::int64_t switch_after = 0, drawn = 0;
  std::int64_t slow_at = -1;  // this batch takes slow_extra seconds more
  double slow_extra = 0.0;
  const Loader::Batch& next_batch() {
    *now += per_batch_later >= 0.0 && drawn >= switch_after ? per_batch_later : per_batch;
    if (drawn == slow_at) *now += slow_extra;
    ++drawn;
    return inner.next_batch();
  }
};

using Sched = optim::PlannedWarmupCosineLR;
using TinyTrainer = train::Trainer<TinyMlp<float>, loss::BCEWithLogitsLoss<float>, optim::AdamW<float>, Sched>;

// A budgeted tiny MLP: 40 samples in batches of 6 -> 7 batches (steps) per epoch.
struct Run {
  double now = 0.0;
  int reserve_calls = 0;
  TinyMlp<float> model{kIn, kHidden, kClasses, 42, 0.25};
  loss::BCEWithLogitsLoss<float> loss;
  optim::AdamW<float> opt{model.params(), {0.9, 0.999, 1e-8, 0.01}};
  Sched sched{.base = 0.02, .warmup_fraction = 0.1, .start_factor = 0.1};
  ClockedLoader loader;
  TinyTrainer trainer;

  Run(train::TrainerOptions o, double per_batch = 0.5, std::size_t batch_size = 6)
      : loader{Loader(make_data().first, make_data().second, batch_size, o.seed), &now, per_batch},
        trainer(model, loss, opt, sched, with_clock(std::move(o))) {}

  train::TrainerOptions with_clock(train::TrainerOptions o) {
    if (o.progress == train::Progress::automatic) o.progress = train::Progress::off;
    o.now_seconds = [this] { return now; };
    return o;
  }
};

nlohmann::json state_of(const fs::path& dir) {
  std::ifstream f(dir / "state.json");
  return nlohmann::json::parse(f);
}
}  // namespace

TEST_CASE("trainer budget: the plan fills the budget, the LR ends at 0 on the last planned step, and fit() stops there") {
  TempDir dir("fill");
  Run* self = nullptr;
  train::TrainerOptions o{.run_dir = dir.path, .epochs = 1, .seed = 5};
  o.budget = train::TimeBudget{.seconds = 100, .reserve = [&] { return ++self->reserve_calls, 10.0; }};
  Run run(o);
  self = &run;
  const auto r = run.trainer.fit(run.loader);
  // Probe: 20 steps of 0.5 s (E = 10); A = 100 - 10 - 10 - 2 = 78 -> 156 more steps.
  REQUIRE(r.plan.has_value());
  const auto& p = *r.plan;
  CHECK(run.reserve_calls == 1);
  CHECK(p.seconds_per_step == 0.5);
  CHECK(p.refined);
  CHECK(p.elapsed_at_plan == 53.0);  // refined after the 16 warmup steps, and again at step 106: 176 each time
  CHECK(p.reserve_seconds == 10.0);
  CHECK(p.margin_seconds == 2.0);
  CHECK(p.total_steps == 176);
  CHECK(p.probe_steps == 20);
  CHECK(p.warmup_steps == 16);  // round(0.1 * 156)
  CHECK(r.stopped_by_plan);
  CHECK_FALSE(r.stopped_by_limit);
  CHECK(r.steps == 176);  // epochs = 1 is ignored: 25 whole epochs and one step of the 26th
  CHECK(r.epochs_completed == 25);
  CHECK(run.trainer.state().batch == 1);
  // Within the budget, and not wasting it: the run ends at B - R - M.
  CHECK(run.now + p.reserve_seconds + p.margin_seconds <= p.budget_seconds);
  CHECK(run.now == 88.0);
  CHECK(p.predicted_seconds == 88.0);
  // The last step taken is the last planned step, at LR 0; no step before it is at 0.
  CHECK(run.trainer.lr_at(175) == 0.0);
  CHECK(run.trainer.state().last_lr == 0.0);
  for (std::int64_t k = 0; k < 175; ++k) REQUIRE(run.trainer.lr_at(k) > 0.0);
  CHECK(run.trainer.lr_at(19) == 0.02 * 0.1);
  CHECK(run.trainer.lr_at(36) == 0.02);
  // The plan is in last/state.json.
  const auto st = state_of(dir.path / "last");
  CHECK(st["plan.total_steps"].get<std::int64_t>() == 176);
  CHECK(st["plan.warmup_steps"].get<std::int64_t>() == 16);
  CHECK(st["plan.seconds_per_step"].get<double>() == 0.5);
  CHECK(st["plan.budget_seconds"].get<double>() == 100.0);
  CHECK(st["plan.reserve_seconds"].get<double>() == 10.0);
  CHECK(st["step"].get<std::int64_t>() == 176);
  // Resuming a finished plan does nothing more.
  Run again(o);
  self = &again;
  REQUIRE(again.trainer.resume());
  const auto r2 = again.trainer.fit(again.loader);
  CHECK(r2.stopped_by_plan);
  CHECK(r2.steps == 176);
  CHECK(again.now == 0.0);
  CHECK(again.reserve_calls == 0);
}

TEST_CASE("trainer budget: the plan is refined once at the end of the warmup from the warmup's step times") {
  for (const bool refine : {true, false}) {
    CAPTURE(refine);
    TempDir dir("refine");
    train::TrainerOptions o{.run_dir = dir.path, .seed = 5};
    o.budget = train::TimeBudget{.seconds = 100, .reserve = 10.0};
    o.budget->refine_after_warmup = refine;
    o.budget->replan_midway = false;  // tested below
    Run run(o);
    // The probe's 20 steps take 0.5 s, every later one 0.25 s (caches warm, the machine quiet)
    // but step 30, in the warmup, which takes 1.75 s (the loader was late).
    run.loader.per_batch_later = 0.25, run.loader.switch_after = 20;
    run.loader.slow_at = 30, run.loader.slow_extra = 1.5;
    const auto r = run.trainer.fit(run.loader);
    REQUIRE(r.plan.has_value());
    CHECK(r.plan->refined);
    CHECK(r.plan->probe_steps == 20);
    CHECK(r.plan->warmup_steps == 16);  // planned after the probe (round(0.1 * 156)), kept
    if (refine) {
      // At step 36: the mean of steps 21..35 is (14 * 0.25 + 1.75) / 15 = 0.35 s (the median
      // would say 0.25); E = 20 * 0.5 + 16 * 0.25 + 1.5 = 15.5, A = 100 - 15.5 - 10 - 2 = 72.5
      // -> 207 more steps.
      CHECK(r.plan->seconds_per_step == doctest::Approx(0.35).epsilon(1e-12));
      CHECK(r.plan->elapsed_at_plan == 15.5);
      CHECK(r.plan->total_steps == 243);
      CHECK(run.now == 15.5 + 207 * 0.25);
    } else {
      CHECK(r.plan->total_steps == 176);  // the probe's plan: 156 steps at 0.5 s, taken at 0.25 s
      CHECK(run.now == 50.5);             // half the budget left unused
    }
    CHECK(run.now + r.plan->reserve_seconds + r.plan->margin_seconds <= 100.0);
    CHECK(r.steps == r.plan->total_steps);
    CHECK(run.trainer.state().last_lr == 0.0);
    // The warmup is unchanged and the cosine starts from base right after it.
    CHECK(run.trainer.lr_at(19) == 0.02 * 0.1);
    CHECK(run.trainer.lr_at(36) == 0.02);
    for (std::int64_t k = 0; k + 1 < r.plan->total_steps; ++k) REQUIRE(run.trainer.lr_at(k) > 0.0);
    const auto st = state_of(dir.path / "last");
    CHECK(st["plan.total_steps"].get<std::int64_t>() == r.plan->total_steps);
    CHECK(st["plan.refined"].get<bool>());
  }
}

TEST_CASE("trainer budget: planned once more halfway through the annealing, a machine that speeds up still fills its budget") {
  for (const bool midway : {true, false}) {
    CAPTURE(midway);
    TempDir dir("midway");
    train::TrainerOptions o{.run_dir = dir.path, .seed = 5};
    o.budget = train::TimeBudget{.seconds = 100, .reserve = 10.0};
    o.budget->replan_midway = midway;
    Run run(o);
    // 0.5 s per step until batch 60, 0.25 s after: the probe and the warmup plan 176 steps
    // (the first test), which the faster second part of the run takes in far less time.
    run.loader.per_batch_later = 0.25, run.loader.switch_after = 60;
    const auto r = run.trainer.fit(run.loader);
    REQUIRE(r.plan.has_value());
    CHECK((r.plan->refined && r.plan->replanned));
    CHECK(r.steps == r.plan->total_steps);
    CHECK(run.trainer.state().last_lr == 0.0);
    CHECK(run.now + r.plan->reserve_seconds + r.plan->margin_seconds <= 100.0);
    const auto before = Sched{.base = 0.02, .warmup_fraction = 0.1, .start_factor = 0.1}.with_plan(20, 16, 176);
    if (midway) {
      // Halfway (step 36 + 140 / 2 = 106) the later half of the steps since the warmup took
      // 0.25 s each: the rest of the budget is planned at that speed and used up to less
      // than one step.
      CHECK(r.plan->replan_step == 106);
      CHECK(r.plan->replan_from == 176);
      CHECK(r.plan->seconds_per_step == 0.25);
      CHECK(r.plan->total_steps > 176);
      CHECK(run.now + r.plan->reserve_seconds + r.plan->margin_seconds > 100.0 - 0.25);
      for (std::int64_t k = 0; k <= 106; ++k) REQUIRE(run.trainer.lr_at(k) == before.lr(k));
      for (std::int64_t k = 106; k + 1 < r.plan->total_steps; ++k) REQUIRE(run.trainer.lr_at(k + 1) < run.trainer.lr_at(k));
      const auto st = state_of(dir.path / "last");
      CHECK(st["plan.replan_step"].get<std::int64_t>() == 106);
      CHECK(st["plan.replan_from"].get<std::int64_t>() == 176);
      CHECK(st["plan.replanned"].get<bool>());
    } else {
      CHECK(r.plan->total_steps == 176);
      CHECK(r.plan->replan_step == 0);
      CHECK(run.now == 20 * 0.5 + 40 * 0.5 + 116 * 0.25);  // 29 s of the 88 left unused
    }
  }
}

TEST_CASE("trainer budget: over budget, the later plans keep min_steps after the probe") {
  // 5 s at 0.5 s per step: the probe alone takes 10 s, so every plan is over budget and the
  // run takes the probe plus min_steps (10); the midway plan, which asks for only 2 more steps
  // from where it is, must not cut that short (it ended at 28 steps here).
  train::TrainerOptions o{.seed = 5};
  o.budget = train::TimeBudget{.seconds = 5};
  Run run(o);
  const auto r = run.trainer.fit(run.loader);
  REQUIRE(r.plan.has_value());
  CHECK(r.plan->over_budget);
  CHECK(r.plan->replanned);
  CHECK(r.steps == r.plan->total_steps);
  CHECK(r.steps >= 20 + 10);
  CHECK(run.trainer.state().last_lr == 0.0);
}

TEST_CASE("trainer budget: a run stopped after its midway plan resumes onto the same bent schedule, bit for bit") {
  auto options = [](const fs::path& d, std::int64_t stop) {
    train::TrainerOptions o{.run_dir = d, .stop_after_steps = stop, .seed = 11};
    o.budget = train::TimeBudget{.seconds = 100, .reserve = 10.0};
    return o;
  };
  TempDir a("midway_a"), b("midway_b");
  Run straight(options(a.path, -1));
  straight.loader.per_batch_later = 0.25, straight.loader.switch_after = 60;
  const auto rs = straight.trainer.fit(straight.loader);
  REQUIRE(rs.plan.has_value());
  REQUIRE(rs.plan->replan_step == 106);
  const std::int64_t total = rs.plan->total_steps;
  {
    Run part(options(b.path, 120));
    part.loader.per_batch_later = 0.25, part.loader.switch_after = 60;
    const auto r = part.trainer.fit(part.loader);
    CHECK(r.stopped_by_limit);
    REQUIRE(r.plan.has_value());
    CHECK(r.plan->total_steps == total);
  }
  Run rest(options(b.path, -1), 5.0);  // a slower clock after the resume changes nothing
  REQUIRE(rest.trainer.resume());
  REQUIRE(rest.trainer.plan().has_value());
  CHECK(rest.trainer.plan()->replan_step == 106);
  const auto r = rest.trainer.fit(rest.loader);
  CHECK(r.stopped_by_plan);
  CHECK(r.steps == total);
  for (std::int64_t k = 0; k < total; ++k) REQUIRE(rest.trainer.lr_at(k) == straight.trainer.lr_at(k));
  const auto want = straight.model.snapshot(), got = rest.model.snapshot();
  REQUIRE(got.size() == want.size());
  std::size_t differing = 0;
  for (std::size_t i = 0; i < got.size(); ++i) differing += got[i] != want[i];
  CHECK_MESSAGE(differing == 0, differing, " of ", got.size(), " values differ from the uninterrupted run");
}

TEST_CASE("trainer budget: validation cost measured at the probe's epoch ends is planned for") {
  TempDir dir("val");
  int val_calls = 0;
  Run* self = nullptr;
  train::TrainerOptions o{.run_dir = dir.path, .seed = 5};
  o.budget = train::TimeBudget{.seconds = 100, .reserve = 10.0};
  Run run(o);
  self = &run;
  run.trainer.set_validation([&](TinyMlp<float>&, std::int64_t) {
    ++val_calls;
    self->now += 3.0;
    return std::map<std::string, double>{{"val_score", 0.5}};
  });
  const auto r = run.trainer.fit(run.loader);
  REQUIRE(r.plan.has_value());
  // Epoch ends at steps 7 and 14 in the probe: E = 20 * 0.5 + 2 * 3 = 16, q = 6, V = 3;
  // A = 72, cost(r) = 0.5 r + 3 floor((5 + r) / 7): cost(78) = 39 + 33 = 72, cost(79) = 75.5.
  // Refined after the 8-step warmup (at 16 + 8 * 0.5 + 2 * 3 = 26 s), planned again at step
  // 28 + 70 / 2 = 63 (63 * 0.5 + 9 epoch ends * 3): the same 98 steps each time.
  CHECK(r.plan->elapsed_at_plan == 58.5);
  CHECK(r.plan->validation_seconds == 3.0);
  CHECK(r.plan->epoch_end_seconds == 0.0);  // saves take no time on this clock
  CHECK(r.plan->total_steps == 98);
  CHECK(r.steps == 98);
  CHECK(r.epochs_completed == 13);  // step 98 ends epoch 14, but the run stops before its validation
  CHECK(val_calls == 13);
  CHECK(run.now == 88.0);
  CHECK(run.now + r.plan->reserve_seconds + r.plan->margin_seconds <= 100.0);
  CHECK(run.trainer.state().last_lr == 0.0);
}

TEST_CASE("trainer budget: validate_every_epochs validates every k-th epoch and plans only those") {
  std::vector<std::int64_t> seen;
  Run* self = nullptr;
  train::TrainerOptions o{.seed = 5};
  o.validate_every_epochs = 3;
  o.budget = train::TimeBudget{.seconds = 100, .reserve = 10.0, .validation = 3.0};
  Run run(o);
  self = &run;
  run.trainer.set_validation([&](TinyMlp<float>&, std::int64_t epoch) {
    seen.push_back(epoch);
    self->now += 3.0;
    return std::map<std::string, double>{{"val_score", 0.5}};
  });
  const auto r = run.trainer.fit(run.loader);
  REQUIRE(r.plan.has_value());
  CHECK(r.plan->validate_every == 3);
  CHECK(r.plan->validation_seconds == 3.0);
  // Every validation at the end of an epoch e with (e + 1) % 3 == 0, and all of those run.
  REQUIRE(!seen.empty());
  for (const auto e : seen) CHECK((e + 1) % 3 == 0);
  CHECK(static_cast<std::int64_t>(seen.size()) == r.epochs_completed / 3);
  // A third of the validations of the every-epoch case above (98 steps): the time goes to steps.
  CHECK(r.plan->total_steps > 98);
  CHECK(r.steps == r.plan->total_steps);
  CHECK(run.now + r.plan->reserve_seconds + r.plan->margin_seconds <= 100.0);
  // Left unused: less than one step (0.5 s) and one validation (3 s).
  CHECK(run.now + r.plan->reserve_seconds + r.plan->margin_seconds > 100.0 - 3.5);
  // Early stopping counts epochs: it needs a validation after each.
  train::TrainerOptions es{.seed = 5};
  es.validate_every_epochs = 2;
  es.early_stopping = train::EarlyStoppingOptions{"val_score", train::Mode::max, 3, 0.0};
  es.budget = train::TimeBudget{.seconds = 100};
  CHECK_THROWS_WITH_AS(Run{es}, doctest::Contains("validate_every_epochs=2"), Error);
}

TEST_CASE("trainer budget: validation before the first epoch end is timed once, or taken from the estimate") {
  for (const bool estimate : {false, true}) {
    CAPTURE(estimate);
    int val_calls = 0;
    Run* self = nullptr;
    train::TrainerOptions o{.seed = 5};
    o.budget = train::TimeBudget{.seconds = 100, .probe_steps = 5};
    if (estimate) o.budget->validation = 4.0;
    Run run(o, 0.5, 2);  // 20 steps per epoch: no epoch end in the probe
    self = &run;
    run.trainer.set_validation([&](TinyMlp<float>&, std::int64_t) {
      ++val_calls;
      self->now += 4.0;
      return std::map<std::string, double>{};
    });
    const auto r = run.trainer.fit(run.loader);
    REQUIRE(r.plan.has_value());
    CHECK(r.plan->validation_seconds == 4.0);
    // E = 2.5 (+ 4 for the timing call), q = 5, A = 100 - E - 2 = 95.5 or 91.5, cost(r) =
    // 0.5 r + 4 floor((4 + r) / 20): cost(135) = 67.5 + 24 = 91.5, cost(136) = 68 + 28 = 96.
    // Refined after the 14-step warmup (7 s more), and again at step 19 + 121 / 2 = 79 (39.5 s
    // of steps, 3 validations, the timing call): the same total each time.
    CHECK(r.plan->elapsed_at_plan == (estimate ? 51.5 : 55.5));
    CHECK(r.plan->total_steps == 140);
    CHECK(r.plan->predicted_seconds == (estimate ? 94.0 : 98.0));
    CHECK(val_calls == r.epochs_completed + (estimate ? 0 : 1));
    CHECK(run.now == r.plan->predicted_seconds);
    CHECK(run.now + r.plan->margin_seconds <= 100.0);
  }
}

TEST_CASE("trainer budget: a validation grown slower than planned is skipped, so the run still ends in budget") {
  for (const bool guard : {true, false}) {
    CAPTURE(guard);
    int val_calls = 0;
    Run* self = nullptr;
    train::TrainerOptions o{.seed = 5};
    o.budget = train::TimeBudget{.seconds = 100, .reserve = 10.0, .skip_late_validation = guard};
    o.budget->refine_after_warmup = false;  // the skip guards the rest of the run, planned again or not
    o.budget->replan_midway = false;
    Run run(o);
    self = &run;
    // 3 s in the probe (what the plan counts), 12 s afterwards.
    run.trainer.set_validation([&](TinyMlp<float>&, std::int64_t) {
      ++val_calls;
      self->now += val_calls <= 2 ? 3.0 : 12.0;
      return std::map<std::string, double>{};
    });
    const auto r = run.trainer.fit(run.loader);
    REQUIRE(r.plan.has_value());
    CHECK(r.plan->total_steps == 98);  // as planned with 3 s validations (see above)
    CHECK(r.steps == 98);
    if (guard) {
      CHECK(run.now + r.plan->reserve_seconds + r.plan->margin_seconds <= 100.0);
      CHECK(val_calls < 2 + 11);  // some of the 11 epoch ends after the plan were skipped
      CHECK(val_calls > 2);
    } else {
      CHECK(val_calls == 13);
      CHECK(run.now == 88.0 + 11 * 9.0);  // over: nothing stopped the slow validations
    }
  }
}

TEST_CASE("trainer budget: a clock that does not advance is refused after the probe") {
  double frozen = 5.0;
  TinyMlp<float> model(kIn, kHidden, kClasses, 1);
  loss::BCEWithLogitsLoss<float> loss;
  optim::AdamW<float> opt(model.params(), {});
  const Sched sched{.base = 0.1};
  Loader loader(make_data().first, make_data().second, 6, 0);
  train::TrainerOptions o{.progress = train::Progress::off, .now_seconds = [&] { return frozen; }};
  o.budget = train::TimeBudget{.seconds = 100, .probe_steps = 4};
  TinyTrainer tr(model, loss, opt, sched, o);
  CHECK_THROWS_WITH_AS(tr.fit(loader), doctest::Contains("the probe measured 0 s per step over 3 steps"), Error);
  CHECK(tr.state().step == 4);
}

TEST_CASE("trainer budget: resume keeps the plan; interrupted runs give the bits of the uninterrupted one") {
  auto options = [](const fs::path& d, std::int64_t stop) {
    train::TrainerOptions o{.run_dir = d, .accum_steps = 2, .max_grad_norm = 1.0, .stop_after_steps = stop, .seed = 11};
    o.budget = train::TimeBudget{.seconds = 60, .reserve = 5.0};
    o.budget->replan_midway = false;  // its resume: the test after this one
    return o;
  };
  // Two uninterrupted runs: the probe's plan kept, and refined after the warmup (the default).
  // 4 steps per epoch (2 + 2 + 2 + 1 batches of 0.5 s): the probe's median 1 s/step; E = 5
  // epochs * 3.5 s = 17.5; A = 60 - 17.5 - 5 - 1.2 = 36.3 -> 36 more steps, warmup 4 (to step
  // 24). At step 24 the mean of steps 21..23 (1, 0.5, 1 s) is 5/6 s: 63 steps in all.
  TempDir a_plain("resume_a_plain"), a_refined("resume_a_refined");
  auto plain_options = [&](const fs::path& d, std::int64_t stop) {
    auto o = options(d, stop);
    o.budget->refine_after_warmup = false;
    return o;
  };
  Run plain(plain_options(a_plain.path, -1)), refined(options(a_refined.path, -1));
  const auto rp = plain.trainer.fit(plain.loader), rr = refined.trainer.fit(refined.loader);
  REQUIRE((rp.plan.has_value() && rr.plan.has_value()));
  CHECK(rp.plan->seconds_per_step == 1.0);
  CHECK(rp.plan->total_steps == 56);
  CHECK(rp.steps == 56);
  CHECK(rr.plan->seconds_per_step == doctest::Approx(5.0 / 6.0).epsilon(1e-12));
  CHECK(rr.plan->total_steps == 63);
  CHECK(rr.steps == 63);
  // Interrupted at these steps and resumed: a run stopped before its refinement (step 24)
  // follows the probe's plan from then on (bits of `plain`), one stopped after it the refined
  // plan (bits of `refined`).
  for (const std::vector<std::int64_t>& stops : {std::vector<std::int64_t>{21}, {24, 41}, {30}, {55}}) {
    CAPTURE(stops.front());
    const bool before_refining = stops.front() <= 24;
    Run& straight = before_refining ? plain : refined;
    const fs::path& a = before_refining ? a_plain.path : a_refined.path;
    const std::int64_t total = before_refining ? 56 : 63;
    const auto want = straight.model.snapshot();
    TempDir b("resume_b");
    for (const auto k : stops) {
      Run part(options(b.path, k), 0.5);
      part.trainer.resume();
      const auto r = part.trainer.fit(part.loader);
      CHECK(r.stopped_by_limit);
      CHECK(r.steps == k);
      REQUIRE(r.plan.has_value());
      CHECK(r.plan->total_steps == (k <= 24 ? 56 : total));
    }
    // A slower clock after the resume: a re-plan would take fewer steps; the saved plan does not.
    Run rest(options(b.path, -1), 5.0);
    REQUIRE(rest.trainer.resume());
    REQUIRE(rest.trainer.plan().has_value());
    CHECK(rest.trainer.plan()->total_steps == total);
    const auto r = rest.trainer.fit(rest.loader);
    CHECK(r.stopped_by_plan);
    CHECK(r.steps == total);
    for (std::int64_t k = 0; k < total; ++k) REQUIRE(rest.trainer.lr_at(k) == straight.trainer.lr_at(k));
    const auto got = rest.model.snapshot();
    REQUIRE(got.size() == want.size());
    std::size_t differing = 0;
    for (std::size_t i = 0; i < got.size(); ++i) differing += got[i] != want[i];
    CHECK_MESSAGE(differing == 0, differing, " of ", got.size(), " values differ from the uninterrupted run");
    CHECK(io::read_file(b.path / "last" / "optimizer.safetensors") == io::read_file(a / "last" / "optimizer.safetensors"));
  }
}

TEST_CASE("trainer budget: refused without a plannable schedule; plan and budget must match on resume") {
  TinyMlp<float> model(kIn, kHidden, kClasses, 1);
  loss::BCEWithLogitsLoss<float> loss;
  optim::AdamW<float> opt(model.params(), {});
  const optim::WarmupCosineLR cosine{0.1, 2, 50};
  train::TrainerOptions budgeted{.progress = train::Progress::off};
  budgeted.budget = train::TimeBudget{.seconds = 10};
  using Cosine = train::Trainer<TinyMlp<float>, loss::BCEWithLogitsLoss<float>, optim::AdamW<float>, optim::WarmupCosineLR>;
  CHECK_THROWS_WITH_AS([&] { Cosine t(model, loss, opt, cosine, budgeted); }(), doctest::Contains("needs a schedule the time plan can size"), Error);
  const Sched unplanned{.base = 0.1};
  CHECK_THROWS_WITH_AS([&] { TinyTrainer t(model, loss, opt, unplanned, {.progress = train::Progress::off}); }(),
                       doctest::Contains("has no plan (total=0)"), Error);
  budgeted.budget->probe_steps = 1;
  CHECK_THROWS_WITH_AS([&] { TinyTrainer t(model, loss, opt, unplanned, budgeted); }(), doctest::Contains("probe_steps=1"), Error);

  TempDir dir("mismatch");
  {
    train::TrainerOptions o{.run_dir = dir.path, .stop_after_steps = 25, .seed = 3};
    o.budget = train::TimeBudget{.seconds = 100};
    Run run(o);
    run.trainer.fit(run.loader);
  }
  const auto fixed = unplanned.with_plan(0, 5, 100);
  TinyTrainer plain(model, loss, opt, fixed, {.run_dir = dir.path, .seed = 3, .progress = train::Progress::off});
  CHECK_THROWS_WITH_AS(plain.resume(), doctest::Contains("was trained with a time budget but this run has none"), Error);
  // Another base LR with the same plan would not continue the same curve.
  train::TrainerOptions o{.run_dir = dir.path, .seed = 3, .progress = train::Progress::off};
  o.budget = train::TimeBudget{.seconds = 100};
  const Sched other{.base = 0.5};
  TinyTrainer changed(model, loss, opt, other, o);
  CHECK_THROWS_WITH_AS(changed.resume(), doctest::Contains("this run's, with the same plan, is planned_warmup_cosine(base=0.5"),
                       Error);
}

TEST_CASE("trainer budget: progress shows the probe, the plan and its steps") {
  std::ostringstream os;
  train::TrainerOptions o{.seed = 5, .progress = train::Progress::plain, .plain_every_seconds = 0.25};
  o.out = &os;
  o.budget = train::TimeBudget{.seconds = 100, .reserve = 10.0};
  Run run(o);
  run.trainer.fit(run.loader);
  const std::string out = os.str();
  CHECK(out.find("step 5 (probe)") != std::string::npos);
  CHECK(out.find("plan: 176 steps (20 probe + 16 warmup + 140 annealing) at 0.5 s/step") != std::string::npos);
  CHECK(out.find("step 100/176") != std::string::npos);
  CHECK(out.find("ETA 0m38s") != std::string::npos);  // 76 steps left at 0.5 s
  CHECK(out.find("epoch 3  step 21/176") != std::string::npos);
  CHECK(out.find("plan complete: 176 steps") != std::string::npos);
}

TEST_CASE("trainer: max_minutes and img/s read the injected clock") {
  double now = 0.0;
  TinyMlp<float> model(kIn, kHidden, kClasses, 1);
  loss::BCEWithLogitsLoss<float> loss;
  optim::AdamW<float> opt(model.params(), {});
  const optim::ConstantLR sched{0.01};
  ClockedLoader loader{Loader(make_data().first, make_data().second, 6, 0), &now, 10.0};
  std::ostringstream os;
  train::Trainer tr(model, loss, opt, sched,
                    {.epochs = 10, .max_minutes = 1.0, .progress = train::Progress::plain, .plain_every_seconds = 0.0,
                     .out = &os, .now_seconds = [&] { return now; }});
  const auto r = tr.fit(loader);
  CHECK(r.stopped_by_limit);
  CHECK(r.steps == 6);  // 6 batches of 10 s = the minute
  CHECK(tr.state().wall_seconds == 60.0);
  CHECK_FALSE(r.plan.has_value());
}
