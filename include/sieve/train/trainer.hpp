#pragma once
/// The training loop: epochs of optimizer steps over a loader, with gradient accumulation, a
/// non-finite guard, clipping, validation + early stopping, progress, metrics.jsonl and
/// durable checkpoints that resume bit-identically (also mid-epoch). With a TimeBudget the
/// run is sized to a wall-clock budget and ends on a fully annealed model (see budget.hpp).

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/param.hpp"
#include "sieve/core/rng.hpp"
#include "sieve/core/stage.hpp"
#include "sieve/core/xt.hpp"
#include "sieve/io/file.hpp"
#include "sieve/io/safetensors.hpp"
#include "sieve/optim/param_groups.hpp"
#include "sieve/optim/schedule.hpp"
#include "sieve/train/budget.hpp"
#include "sieve/train/checkpoint.hpp"
#include "sieve/train/detail/flat_json.hpp"
#include "sieve/train/early_stopping.hpp"
#include "sieve/train/metrics_log.hpp"
#include "sieve/train/weights.hpp"

namespace sieve::train {

/// A loader the trainer can resume anywhere: `num_batches(epoch)`, `start_epoch(epoch,
/// first_batch)` positions it at a batch of an epoch, and `next_batch()` yields the next batch,
/// an object with `.x` (the model input) and `.y` (the loss targets). The batches of an epoch
/// must be a pure function of (seed, epoch, batch index): that is what makes resume exact.
template <class L>
concept BatchLoader = requires(L& l, std::int64_t epoch, std::int64_t batch) {
  { l.num_batches(epoch) } -> std::convertible_to<std::int64_t>;
  l.start_epoch(epoch, batch);
  l.next_batch().x;
  l.next_batch().y;
};

/// An optimizer: `step(lr)` applies one update; `state()` exposes its tensors for checkpoints.
template <class O>
concept Optimizer = requires(O& o, double lr) {
  o.step(lr);
  o.state();
};

enum class Progress {
  automatic,  ///< `terminal` when the output stream is stderr and stderr is a terminal, else `plain`
  terminal,   ///< one line redrawn after every step, plus a line per epoch
  plain,      ///< one line per epoch, plus a step line every `plain_every_seconds` (logs, pipes)
  off,
};

struct TrainerOptions {
  std::filesystem::path run_dir{};        ///< checkpoints (last/, best/) and metrics.jsonl; empty = none
  std::int64_t epochs = 1;
  std::int64_t accum_steps = 1;           ///< micro-batches per optimizer step (gradient accumulation)
  double max_grad_norm = 0.0;             ///< > 0: clip the global gradient norm to this
  /// A step whose loss or global gradient norm is non-finite is skipped: gradients dropped,
  /// model buffers (BN statistics) restored, no optimizer update; it still counts as a step, so
  /// the LR schedule does not shift. After this many in a row the trainer throws; so does a
  /// fit() (not stopped by stop_requested) that ends with every step of the run skipped.
  std::int64_t max_nonfinite_in_row = 5;
  std::int64_t checkpoint_every_steps = 0;  ///< > 0: also save last/ every K optimizer steps
  /// > 0: also save last/ after a step when this many minutes passed since the last save of
  /// this fit() call (or its start). Mid-epoch checkpoints resume exactly (see BatchLoader).
  double checkpoint_every_minutes = 0.0;
  double max_minutes = 0.0;               ///< > 0: save last/ and return once this much wall time passed
  std::int64_t stop_after_steps = -1;     ///< >= 0: save last/ and return after this many optimizer steps
  /// Polled after every optimizer step and every epoch end: when it returns true, fit() saves
  /// last/ (exactly resumable, mid-epoch too) and returns with FitResult::stopped_by_request.
  /// For SIGINT/SIGTERM the caller's handler sets an atomic flag this reads; the library
  /// installs no handler and keeps no global state.
  std::function<bool()> stop_requested{};
  std::uint64_t seed = 0;                 ///< keys dropout randomness (and is checked on resume)
  Progress progress = Progress::automatic;
  double plain_every_seconds = 60.0;       ///< plain progress: a step line at most this often (0 = none)
  /// Images counted per local image in img/s (data-parallel over N equal shards: N, so the
  /// progress line and metrics.jsonl's images_per_sec show the whole job's throughput).
  double throughput_scale = 1.0;
  std::ostream* out = nullptr;            ///< progress stream; nullptr = std::cerr
  std::map<std::string, std::string> config{};  ///< recorded in state.json (config.<key>)
  std::optional<EarlyStoppingOptions> early_stopping{};  ///< needs a validation hook and validate_every_epochs 1
  /// The validation hook runs at the end of epochs e (0-based) with (e + 1) % this == 0: every
  /// epoch by default; a budgeted run plans for exactly these (budget.hpp) and spends the
  /// time the others would have taken on steps.
  std::int64_t validate_every_epochs = 1;
  /// When fit() ends by early stopping or by running out of epochs (not by a step/time limit)
  /// and best/ exists, load its weights into the model.
  bool restore_best_at_end = true;
  /// Train for a wall-clock budget (see budget.hpp): needs a plannable schedule
  /// (optim::PlannedWarmupCosineLR); `epochs`, early stopping and restore_best_at_end are then
  /// ignored, fit() ends after exactly the planned steps (mid-epoch is fine) with last/ saved.
  std::optional<TimeBudget> budget{};
  /// Seconds on a monotonic clock (max_minutes, img/s, progress, the time plan); empty =
  /// std::chrono::steady_clock. Tests inject a fake one.
  std::function<double()> now_seconds{};
};

/// Where training stands; saved in state.json and restored on resume.
struct TrainState {
  std::int64_t epoch = 0;        ///< current epoch (0-based)
  std::int64_t batch = 0;        ///< next batch index inside the epoch
  std::int64_t step = 0;         ///< optimizer steps taken (including skipped non-finite ones)
  std::int64_t nonfinite_skipped = 0;
  std::int64_t nonfinite_in_row = 0;
  double epoch_loss_sum = 0.0;   ///< over the steps of the current epoch that were applied
  std::int64_t epoch_loss_count = 0;
  std::int64_t epoch_images = 0;
  double wall_seconds = 0.0;     ///< training wall time summed over all runs
  double last_lr = 0.0;
};

struct FitResult {
  std::int64_t steps = 0;
  std::int64_t epochs_completed = 0;
  bool early_stopped = false;
  bool stopped_by_limit = false;  ///< stop_after_steps or max_minutes
  bool stopped_by_plan = false;   ///< a budgeted run took all its planned steps
  bool stopped_by_request = false;  ///< options.stop_requested returned true (last/ saved)
  std::optional<TimePlan> plan{}; ///< the time plan followed (budgeted runs, once made)
  std::int64_t nonfinite_skipped = 0;
  double last_epoch_loss = 0.0;
};

/// Validation hook: returns named metrics (e.g. {"val_map5", 0.41}); the model is in eval and
/// inference mode (stages that have one keep nothing for backward, see nn::ResNet::set_inference).
template <class Model>
using ValidationFn = std::function<std::map<std::string, double>(Model&, std::int64_t epoch)>;

/// Generic trainer. Model: a TrainableStage with params() (and optionally buffers()) of T.
/// Randomness in training forwards must be a function of the position: either drawn from the
/// Rng the trainer passes to forward(x, rng) (keyed by (seed, epoch, batch)), or, for models
/// whose random stages count their own steps, via `set_random_step(uint64_t)`, which the
/// trainer calls before every forward with (epoch << 32) | batch.
/// Loss: `double forward(const Model::output_type&, const Targets&, double grad_scale)` and
/// `const Model::output_type& backward()`; Optimizer built by the caller over model.params();
/// Schedule: `double lr(step)`.
template <class Model, class Loss, class Opt, class Schedule>
  requires TrainableStage<Model> && Optimizer<Opt>
class Trainer {
 public:
  using T = typename Loss::value_type;

  /// Requires: model, loss, optimizer and schedule outlive the trainer (held by reference);
  /// the optimizer was built over model.params(). Ensures: state() is a fresh run (epoch 0)
  /// until resume() loads a checkpoint.
  Trainer(Model& model, Loss& loss, Opt& optimizer, const Schedule& schedule, TrainerOptions options)
      : model_(model), loss_(loss), opt_(optimizer), schedule_(schedule), o_(std::move(options)),
        params_(model.params()), es_(o_.early_stopping.value_or(EarlyStoppingOptions{})) {
    SIEVE_CHECK(o_.checkpoint_every_minutes >= 0.0 && std::isfinite(o_.checkpoint_every_minutes),
                "Trainer: checkpoint_every_minutes=", o_.checkpoint_every_minutes, " (need a finite value >= 0)");
    SIEVE_CHECK(o_.epochs >= 0 && o_.accum_steps >= 1 && o_.max_nonfinite_in_row >= 1,
                "Trainer: epochs=", o_.epochs, " accum_steps=", o_.accum_steps, " max_nonfinite_in_row=",
                o_.max_nonfinite_in_row, " (need >= 0, >= 1, >= 1)");
    SIEVE_CHECK(o_.validate_every_epochs >= 1 && (!o_.early_stopping || o_.validate_every_epochs == 1),
                "Trainer: validate_every_epochs=", o_.validate_every_epochs,
                " (need >= 1, and 1 with early stopping: its patience counts epochs)");
    if (o_.budget) {
      const TimeBudget& b = *o_.budget;
      SIEVE_CHECK(b.seconds > 0.0 && std::isfinite(b.seconds) && b.probe_steps >= 2 && b.min_steps >= 2,
                  "Trainer: budget.seconds=", b.seconds, " probe_steps=", b.probe_steps, " min_steps=", b.min_steps,
                  " (need a finite budget > 0, probe_steps >= 2, min_steps >= 2)");
      SIEVE_CHECK(b.margin_seconds >= 0.0 && b.margin_fraction >= 0.0 && b.margin_fraction < 1.0,
                  "Trainer: budget.margin_seconds=", b.margin_seconds, " margin_fraction=", b.margin_fraction,
                  " (need >= 0 and [0, 1))");
      if constexpr (!optim::PlannableSchedule<Schedule>)
        fail("Trainer: options.budget needs a schedule the time plan can size (optim::PlannedWarmupCosineLR); "
             "this one has no warmup_for/with_plan, so a budgeted run would not end annealed");
    }
    if constexpr (requires { schedule.planned(); })
      SIEVE_CHECK(o_.budget || schedule.planned(), "Trainer: ", schedule.describe(),
                  " has no plan (total=0): set options.budget, or fill it in with with_plan()");
  }

  void set_validation(ValidationFn<Model> fn) { validate_ = std::move(fn); }
  const TrainState& state() const { return st_; }
  const EarlyStopping& early_stopping() const { return es_; }
  /// The time plan of a budgeted run (made after the probe or restored by resume).
  const std::optional<TimePlan>& plan() const { return plan_; }
  /// The LR of optimizer step `step` (0-based) as this run uses it (the planned schedule once planned).
  double lr_at(std::int64_t step) const {
    if constexpr (optim::PlannableSchedule<Schedule>)
      if (planned_) return planned_->lr(step);
    return schedule_.lr(step);
  }

  /// Resume from RUN/last/ if it exists. Returns true when it resumed.
  bool resume() {
    if (o_.run_dir.empty()) return false;
    recover_slot(o_.run_dir, "last");
    if (!std::filesystem::exists(o_.run_dir / "last")) {
      // No checkpoint: training starts again at step 0, so lines that a start killed before its
      // first save logged would be logged twice.
      if (std::filesystem::exists(o_.run_dir / "metrics.jsonl")) (void)truncate_metrics_log(o_.run_dir / "metrics.jsonl", 0);
      return false;
    }
    resume_from(o_.run_dir / "last");
    return true;
  }

  /// Load weights, optimizer state and training position from a checkpoint directory.
  /// Throws naming the file when it is incomplete, truncated, corrupted or from another seed.
  /// Ensures: RUN/metrics.jsonl holds only the checkpoint's epochs (truncate_metrics_log).
  void resume_from(const std::filesystem::path& dir) {
    const auto files = load_checkpoint_files(dir);
    auto need = [&](const char* name) -> const std::vector<std::byte>& {
      const auto it = files.find(name);
      if (it == files.end()) fail("checkpoint ", dir.string(), ": ", name, " is not in the manifest");
      return it->second;
    };
    const auto& sj = need("state.json");
    const auto j = detail::FlatJson::parse(std::string_view(reinterpret_cast<const char*>(sj.data()), sj.size()),
                                           (dir / "state.json").string());
    SIEVE_CHECK(j.get_string("format") == "sieve.train.state v1", (dir / "state.json").string(), ": unknown format '",
                j.get_string("format"), "'");
    const std::uint64_t seed = j.get_u64("seed");
    SIEVE_CHECK(seed == o_.seed, "resume: checkpoint ", dir.string(), " was trained with seed ", seed,
                " but this run has seed ", o_.seed, ": resuming would not be exact");
    tensors_from_safetensors<T>(io::SafeTensors::parse(need("model.safetensors"), (dir / "model.safetensors").string()),
                                params_, buffers_of<T>(model_));
    tensors_from_safetensors<T>(
        io::SafeTensors::parse(need("optimizer.safetensors"), (dir / "optimizer.safetensors").string()), {},
        opt_.state());
    st_.epoch = j.get_i64("epoch");
    st_.batch = j.get_i64("batch");
    st_.step = j.get_i64("step");
    st_.nonfinite_skipped = j.get_i64("nonfinite_skipped");
    st_.nonfinite_in_row = j.get_i64("nonfinite_in_row");
    st_.epoch_loss_sum = j.get_double("epoch_loss_sum");
    st_.epoch_loss_count = j.get_i64("epoch_loss_count");
    st_.epoch_images = j.get_i64("epoch_images");
    st_.wall_seconds = j.get_double("wall_seconds");
    st_.last_lr = j.get_double("last_lr");
    es_.restore(j.get_bool("early_stopping.has_best"), j.get_double("early_stopping.best"),
                j.get_i64("early_stopping.best_epoch"), j.get_i64("early_stopping.wait"));
    restore_plan(j, dir);
    // Lines logged after this checkpoint was saved would be logged twice by the resumed run.
    if (!o_.run_dir.empty()) {
      const auto path = o_.run_dir / "metrics.jsonl";
      const MetricsTruncation t = truncate_metrics_log(path, st_.epoch);
      if (t.changed())
        out() << "resume: " << path.string() << " cut back to the checkpoint's " << st_.epoch << " epoch(s): "
              << t.kept << " line(s) kept, " << t.dropped << " logged after it dropped"
              << (t.torn ? ", a torn last line dropped" : "") << "\n" << std::flush;
    }
  }

  /// Train until `epochs` are done, early stopping triggers, or a step/time limit is hit; with
  /// options.budget, until the planned step count is reached (see budget.hpp).
  template <BatchLoader L>
  FitResult fit(L& loader) {
    const double t0 = now();
    const double wall_before = st_.wall_seconds;
    const std::int64_t step_at_start = st_.step;
    std::int64_t images_this_run = 0;
    auto elapsed = [&] { return now() - t0; };
    FitResult r;
    const bool budgeted = o_.budget.has_value();
    std::vector<double> probe_seconds;  // durations of this run's steps before the plan
    std::vector<double> warmup_seconds;  // and after it, until the plan is refined
    std::vector<double> steady_seconds;  // and after that, until it is planned again midway
    // Sized once, so no training step grows them: the probe, then (planned) the warmup and
    // the first half of the annealing.
    if (budgeted) probe_seconds.reserve(static_cast<std::size_t>(o_.budget->probe_steps) + 1);
    val_seconds_ = -1.0;
    save_seconds_ = -1.0;
    last_save_at_ = t0;
    stage_set_training(model_, true);
    model_.zero_grad();
    const std::uint64_t dropout_key = derive_seed(o_.seed, RngPurpose::dropout);
    bool stop = false;
    while (!stop && (budgeted || st_.epoch < o_.epochs)) {
      if (plan_ && st_.step >= plan_->total_steps) {  // resumed a run that had finished its plan
        r.stopped_by_plan = true;
        break;
      }
      const std::int64_t nb = loader.num_batches(st_.epoch);
      SIEVE_CHECK(st_.batch <= nb, "Trainer: resuming at batch ", st_.batch, " but epoch ", st_.epoch, " has only ",
                  nb, " batches (loader changed since the checkpoint?)");
      SIEVE_CHECK(!budgeted || nb > 0, "Trainer: epoch ", st_.epoch, " has no batches: a budgeted run would never end");
      if (st_.batch < nb) loader.start_epoch(st_.epoch, st_.batch);
      while (st_.batch < nb) {
        if (budgeted && !plan_ && st_.step >= o_.budget->probe_steps && probe_seconds.size() >= 2) {
          make_plan(probe_seconds, nb, elapsed);
          if (plan_) warmup_seconds.reserve(static_cast<std::size_t>(plan_->warmup_steps) + 1);
        }
        if (budgeted && plan_ && !plan_->refined && st_.step >= plan_->probe_steps + plan_->warmup_steps &&
            warmup_seconds.size() >= 2) {
          refine_plan(warmup_seconds, nb, elapsed());
          const std::int64_t to_midway = std::max<std::int64_t>(midway(*plan_) - st_.step, 0);
          steady_seconds.reserve(static_cast<std::size_t>(to_midway) + 1);
        }
        if (budgeted && plan_ && plan_->refined && !plan_->replanned && st_.step >= midway(*plan_) &&
            steady_seconds.size() >= 2)
          replan_midway(steady_seconds, nb, elapsed());
        const double step_t0 = now();
        // A step averages `group` micro-batches; the last group of an epoch may be short.
        const std::int64_t group = std::min(o_.accum_steps, nb - st_.batch);
        // A skipped step must leave no trace: BN running statistics (buffers) updated by a
        // poisoned forward are put back as they were.
        save_buffers();
        bool finite = true;
        double group_loss = 0.0;
        for (std::int64_t m = 0; m < group; ++m) {
          auto&& b = loader.next_batch();
          Rng rng = Rng::for_sample(dropout_key, static_cast<std::uint64_t>(st_.epoch), static_cast<std::uint64_t>(st_.batch));
          // Models whose random stages keep their own counter (nn::Dropout's step) are re-keyed
          // by position, so a resumed run draws what the uninterrupted one drew.
          if constexpr (requires { model_.set_random_step(std::uint64_t{}); })
            model_.set_random_step((static_cast<std::uint64_t>(st_.epoch) << 32) | static_cast<std::uint64_t>(st_.batch));
          const auto& out = stage_forward(model_, b.x, rng);
          const double l = loss_.forward(out, b.y, 1.0 / static_cast<double>(group));
          finite = finite && std::isfinite(l);
          model_.backward(loss_.backward());
          group_loss += l / static_cast<double>(group);
          const auto n = static_cast<std::int64_t>(b.x.shape()[0]);
          st_.epoch_images += n;
          images_this_run += n;
          ++st_.batch;
        }
        const double gnorm = optim::global_grad_norm(params_);
        const double lr = lr_at(st_.step);
        if (!finite || !std::isfinite(gnorm)) {
          restore_buffers();
          ++st_.nonfinite_skipped;
          if (++st_.nonfinite_in_row >= o_.max_nonfinite_in_row)
            fail("Trainer: ", st_.nonfinite_in_row, " optimizer steps in a row had a non-finite ",
                 finite ? "gradient norm" : "loss", " (epoch ", st_.epoch, ", step ", st_.step,
                 "; lr ", lr, "); stopping. Lower the learning rate or enable gradient clipping (max_grad_norm)");
        } else {
          st_.nonfinite_in_row = 0;
          if (o_.max_grad_norm > 0.0) optim::clip_grad_norm(params_, o_.max_grad_norm);
          opt_.step(lr);
          st_.epoch_loss_sum += group_loss;
          ++st_.epoch_loss_count;
          st_.last_lr = lr;
        }
        model_.zero_grad();
        ++st_.step;
        const double secs = elapsed();
        if (budgeted && !plan_) probe_seconds.push_back(now() - step_t0);
        else if (budgeted && !plan_->refined) warmup_seconds.push_back(now() - step_t0);
        else if (budgeted && !plan_->replanned) steady_seconds.push_back(now() - step_t0);
        st_.wall_seconds = wall_before + secs;
        show_step(nb, group_loss, images_this_run, secs, st_.step - step_at_start);
        const bool limit = (o_.stop_after_steps >= 0 && st_.step >= o_.stop_after_steps) ||
                           (o_.max_minutes > 0.0 && secs >= o_.max_minutes * 60.0);
        const bool done = plan_ && st_.step >= plan_->total_steps;
        const bool requested = !done && !limit && o_.stop_requested && o_.stop_requested();
        if (limit || done || requested) {
          timed_save("last");
          r.stopped_by_limit = limit && !done;
          r.stopped_by_plan = done;
          r.stopped_by_request = requested;
          if (done)
            line(str("plan complete: ", st_.step, " steps in ", hms(elapsed()), " (planned ",
                     hms(plan_->predicted_seconds), "), last lr ", lr));
          stop = true;
          break;
        }
        if ((o_.checkpoint_every_steps > 0 && st_.step % o_.checkpoint_every_steps == 0) ||
            (o_.checkpoint_every_minutes > 0.0 && now() - last_save_at_ >= o_.checkpoint_every_minutes * 60.0))
          timed_save("last");
      }
      if (stop) break;
      // End of epoch: validate, log, maybe save best, advance, save last.
      std::map<std::string, double> val;
      if (validate_ && (st_.epoch + 1) % o_.validate_every_epochs == 0) {
        // A budgeted run skips a validation that would leave too little time for the steps
        // left: elapsed + validation + (total - step) s/step + final save > B - R - M.
        const bool skip = budgeted && plan_ && o_.budget->skip_late_validation && val_seconds_ >= 0.0 &&
                          elapsed() + val_seconds_ +
                                  static_cast<double>(plan_->total_steps - st_.step) * plan_->seconds_per_step +
                                  plan_->save_seconds >
                              plan_->budget_seconds - plan_->reserve_seconds - plan_->margin_seconds;
        if (skip)
          line(str("epoch ", st_.epoch + 1, ": validation skipped (", val_seconds_, " s would overrun the ",
                   plan_->budget_seconds, " s budget)"));
        else
          val = timed_validation();
      }
      const double epoch_loss = st_.epoch_loss_count > 0 ? st_.epoch_loss_sum / static_cast<double>(st_.epoch_loss_count)
                                                         : std::nan("");
      r.last_epoch_loss = epoch_loss;
      bool improved = false;
      if (o_.early_stopping && !budgeted) {
        const auto it = val.find(es_.options().monitor);
        if (it == val.end())
          fail("Trainer: early stopping monitors '", es_.options().monitor, "' but the validation hook returned ",
               val.empty() ? "no metrics" : "other metrics", " (epoch ", st_.epoch, ")");
        improved = es_.update(it->second, st_.epoch);
      }
      st_.wall_seconds = wall_before + elapsed();
      log_epoch(epoch_loss, val, images_this_run, elapsed());
      const std::int64_t finished = st_.epoch;
      ++st_.epoch;
      st_.batch = 0;
      st_.epoch_loss_sum = 0.0;
      st_.epoch_loss_count = 0;
      st_.epoch_images = 0;
      ++r.epochs_completed;
      if (improved) save("best");
      timed_save("last");
      if (o_.early_stopping && !budgeted && es_.should_stop()) {
        r.early_stopped = true;
        line(str("early stopping after epoch ", finished + 1, ": ", es_.options().monitor, " has not improved for ",
                 es_.wait(), " epochs; best ", es_.best(), " at epoch ", es_.best_epoch() + 1));
        break;
      }
      if ((budgeted || st_.epoch < o_.epochs) && o_.stop_requested && o_.stop_requested()) {
        r.stopped_by_request = true;  // last/ is this epoch's end
        break;
      }
    }
    if (!budgeted && !r.stopped_by_limit && !r.stopped_by_request && o_.restore_best_at_end && !o_.run_dir.empty() &&
        o_.early_stopping && es_.has_best() && std::filesystem::exists(o_.run_dir / "best")) {
      const auto files = load_checkpoint_files(o_.run_dir / "best");
      tensors_from_safetensors<T>(io::SafeTensors::parse(files.at("model.safetensors"), (o_.run_dir / "best/model.safetensors").string()),
                                  params_, buffers_of<T>(model_));
    }
    r.steps = st_.step;
    r.nonfinite_skipped = st_.nonfinite_skipped;
    r.plan = plan_;
    // Fewer poisoned steps than max_nonfinite_in_row can make a whole short run: the model is
    // then exactly its initial weights, which must not pass for a trained one.
    if (st_.step > 0 && st_.nonfinite_skipped == st_.step && !r.stopped_by_request)
      fail("Trainer: all ", st_.step, " optimizer steps were skipped (non-finite loss or gradient norm), so "
           "nothing was trained; check the initial weights and the inputs, lower the learning rate or enable "
           "gradient clipping (max_grad_norm)");
    return r;
  }

  /// The checkpoint files of the current state (what save() writes), for tests and tools.
  CheckpointFiles checkpoint_files() {
    CheckpointFiles f;
    const std::map<std::string, std::string> meta{{"format", "pt"}, {"producer", "sieve"}};
    f["model.safetensors"] = tensors_to_safetensors<T>(params_, buffers_of<T>(model_), meta);
    f["optimizer.safetensors"] = tensors_to_safetensors<T>({}, opt_.state(), {{"producer", "sieve"}});
    detail::FlatJson j;
    j.set_string("format", "sieve.train.state v1");
    j.set("epoch", st_.epoch);
    j.set("batch", st_.batch);
    j.set("step", st_.step);
    j.set_u64("seed", o_.seed);
    j.set_u64("rng.dropout_key", derive_seed(o_.seed, RngPurpose::dropout));
    j.set_string("rng.scheme", "Philox4x32-10; dropout stream = for_sample(dropout_key, epoch, batch)");
    j.set("nonfinite_skipped", st_.nonfinite_skipped);
    j.set("nonfinite_in_row", st_.nonfinite_in_row);
    j.set("epoch_loss_sum", st_.epoch_loss_sum);
    j.set("epoch_loss_count", st_.epoch_loss_count);
    j.set("epoch_images", st_.epoch_images);
    j.set("wall_seconds", st_.wall_seconds);
    j.set("last_lr", st_.last_lr);
    if constexpr (requires { schedule_.describe(); }) j.set_string("schedule", schedule_description());
    j.set("schedule.step", st_.step);
    j.set("early_stopping.enabled", o_.early_stopping.has_value());
    j.set_string("early_stopping.monitor", es_.options().monitor);
    j.set_string("early_stopping.mode", es_.options().mode == Mode::max ? "max" : "min");
    j.set("early_stopping.patience", es_.options().patience);
    j.set("early_stopping.min_delta", es_.options().min_delta);
    j.set("early_stopping.has_best", es_.has_best());
    j.set("early_stopping.best", es_.best());
    j.set("early_stopping.best_epoch", es_.best_epoch());
    j.set("early_stopping.wait", es_.wait());
    j.set("options.epochs", o_.epochs);
    j.set("options.accum_steps", o_.accum_steps);
    j.set("options.max_grad_norm", o_.max_grad_norm);
    j.set("plan.budgeted", o_.budget.has_value());
    if (plan_) {
      j.set("plan.total_steps", plan_->total_steps);
      j.set("plan.probe_steps", plan_->probe_steps);
      j.set("plan.warmup_steps", plan_->warmup_steps);
      j.set("plan.seconds_per_step", plan_->seconds_per_step);
      j.set("plan.epoch_end_seconds", plan_->epoch_end_seconds);
      j.set("plan.validation_seconds", plan_->validation_seconds);
      j.set("plan.validate_every", plan_->validate_every);
      j.set("plan.save_seconds", plan_->save_seconds);
      j.set("plan.reserve_seconds", plan_->reserve_seconds);
      j.set("plan.margin_seconds", plan_->margin_seconds);
      j.set("plan.budget_seconds", plan_->budget_seconds);
      j.set("plan.elapsed_at_plan", plan_->elapsed_at_plan);
      j.set("plan.predicted_seconds", plan_->predicted_seconds);
      j.set("plan.over_budget", plan_->over_budget);
      j.set("plan.refined", plan_->refined);
      j.set("plan.replanned", plan_->replanned);
      j.set("plan.replan_step", plan_->replan_step);
      j.set("plan.replan_from", plan_->replan_from);
    }
    for (const auto& [k, v] : o_.config) j.set_string("config." + k, v);
    const std::string text = j.dump();
    f["state.json"] = std::vector<std::byte>(reinterpret_cast<const std::byte*>(text.data()),
                                             reinterpret_cast<const std::byte*>(text.data()) + text.size());
    return f;
  }

  /// Save the current state as RUN/<slot> (no-op without a run directory).
  void save(const std::string& slot) {
    if (o_.run_dir.empty()) return;
    save_checkpoint_files(o_.run_dir, slot, checkpoint_files());
    if (slot == "last") last_save_at_ = now();
  }

 private:
  double now() const {
    if (o_.now_seconds) return o_.now_seconds();
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  }

  std::string schedule_description() const {
    if constexpr (optim::PlannableSchedule<Schedule>)
      if (planned_) return planned_->describe();
    return schedule_.describe();
  }

  /// save(slot), remembering the slowest save of this run (the plan's checkpoint cost).
  void timed_save(const std::string& slot) {
    if (o_.run_dir.empty()) return;
    const double t = now();
    save(slot);
    save_seconds_ = std::max(save_seconds_, now() - t);
  }

  /// The validation hook in eval + inference mode, remembering the slowest call of this run.
  std::map<std::string, double> timed_validation() {
    const double t = now();
    stage_set_training(model_, false);
    stage_set_inference(model_, true);
    auto val = validate_(model_, st_.epoch);
    stage_set_inference(model_, false);
    stage_set_training(model_, true);
    val_seconds_ = std::max(val_seconds_, now() - t);
    return val;
  }

  /// The planner's inputs at the current step (make_plan and refine_plan differ only in the
  /// values they pass): `val_s` is one validation (0 when none runs), `save_s` one checkpoint
  /// save; every epoch end costs a save, every validate_every_epochs-th a validation too.
  PlanInputs plan_inputs(double budget, double elapsed, double reserve, double margin, double seconds_per_step,
                         std::int64_t min_steps, std::int64_t nb, double val_s, double save_s) const {
    PlanInputs in;
    in.budget = budget;
    in.elapsed = elapsed;
    in.reserve = reserve;
    in.margin = margin;
    in.seconds_per_step = seconds_per_step;
    in.steps_done = st_.step;
    in.min_steps = min_steps;
    in.steps_per_epoch = (nb + o_.accum_steps - 1) / o_.accum_steps;
    in.steps_into_epoch = (st_.batch + o_.accum_steps - 1) / o_.accum_steps;
    in.epoch_end_seconds = save_s;
    in.validation_seconds = val_s;
    in.validate_every = o_.validate_every_epochs;
    in.epoch = st_.epoch;
    in.save_every_steps = o_.checkpoint_every_steps;
    in.save_seconds = save_s;
    return in;
  }

  /// After the probe: measure what is still unknown, then fix the plan for the rest of the run.
  template <class Elapsed>
  void make_plan(const std::vector<double>& probe_seconds, std::int64_t nb, Elapsed&& elapsed) {
    if constexpr (optim::PlannableSchedule<Schedule>) {
      const TimeBudget& b = *o_.budget;
      double val_s = 0.0;
      if (validate_) {
        if (val_seconds_ >= 0.0) {
          val_s = val_seconds_;  // an epoch ended during the probe
        } else if (b.validation.known()) {
          val_s = val_seconds_ = b.validation.get("validation");
        } else {
          (void)timed_validation();  // one timing call; its metrics are not logged
          val_s = val_seconds_;
        }
      }
      if (!o_.run_dir.empty() && save_seconds_ < 0.0) timed_save("last");  // plan-free: resume re-probes
      const double reserve = b.reserve.get("reserve");  // after the probe, as documented
      const double seconds_per_step = probe_seconds_per_step(probe_seconds);
      SIEVE_CHECK(seconds_per_step > 0.0, "Trainer: the probe measured ", seconds_per_step, " s per step over ",
                  probe_seconds.size() - 1, " steps: is the clock (options.now_seconds) advancing?");
      const PlanInputs in = plan_inputs(b.seconds, elapsed(), reserve, b.margin_seconds + b.margin_fraction * b.seconds,
                                        seconds_per_step, b.min_steps, nb, val_s, std::max(save_seconds_, 0.0));
      TimePlan p = plan_steps(in);
      if (b.agree_total) {
        const std::int64_t agreed = b.agree_total(p.total_steps);
        SIEVE_CHECK(agreed >= p.probe_steps + 2, "Trainer: budget.agree_total returned ", agreed,
                    " steps for a plan of ", p.total_steps, " (need >= probe ", p.probe_steps, " + 2)");
        p.total_steps = agreed;
      }
      p.warmup_steps = schedule_.warmup_for(p.probe_steps, p.total_steps);
      planned_ = schedule_.with_plan(p.probe_steps, p.warmup_steps, p.total_steps);
      plan_ = p;
      line(str("plan: ", p.total_steps, " steps (", p.probe_steps, " probe + ", p.warmup_steps, " warmup + ",
               p.total_steps - p.probe_steps - p.warmup_steps, " annealing) at ", p.seconds_per_step,
               " s/step; epoch end ", p.epoch_end_seconds, " s", validation_text(p), "; reserve ",
               p.reserve_seconds, " s; margin ",
               p.margin_seconds, " s; predicted ", hms(p.predicted_seconds), " of the ", hms(p.budget_seconds),
               " budget", p.over_budget ? str(" (OVER BUDGET: the budget has no room for min_steps=", b.min_steps,
                                               " steps after the probe)")
                                         : std::string()));
    }
  }

  /// ", validation W s every k epochs" for the plan lines (nothing when no validation is planned).
  static std::string validation_text(const TimePlan& p) {
    if (p.validation_seconds <= 0.0) return {};
    return p.validate_every == 1 ? str(", validation ", p.validation_seconds, " s")
                                 : str(", validation ", p.validation_seconds, " s every ", p.validate_every, " epochs");
  }

  /// The plan `old` made again at the current step from `seconds_per_step` and the validation
  /// and save measured so far (budget, reserve, margin, probe and warmup kept); at least 2
  /// more steps, and never fewer than the probe plus the budget's min_steps (the first plan's
  /// promise when the budget has no room). `spent`: seconds of this fit() call so far.
  TimePlan plan_again(const TimePlan& old, double seconds_per_step, std::int64_t min_steps, std::int64_t nb,
                      double spent) {
    const double save_s = save_seconds_ >= 0.0 ? save_seconds_ : old.save_seconds;
    const double val_s = val_seconds_ >= 0.0 ? val_seconds_ : old.validation_seconds;
    TimePlan p = plan_steps(plan_inputs(old.budget_seconds, spent, old.reserve_seconds, old.margin_seconds,
                                        seconds_per_step, min_steps, nb, validate_ ? std::max(val_s, 0.0) : 0.0,
                                        save_s));
    if (o_.budget->agree_total) p.total_steps = o_.budget->agree_total(p.total_steps);
    const std::int64_t promised = old.probe_steps + std::max<std::int64_t>(2, o_.budget->min_steps);
    p.total_steps = std::max({p.total_steps, st_.step + 2, promised});
    p.probe_steps = old.probe_steps;
    p.warmup_steps = old.warmup_steps;
    return p;
  }

  /// At the end of the warmup: the total planned again from the warmup's step times (mean,
  /// the first left out); the cosine has not started, so only its length changes.
  void refine_plan(const std::vector<double>& step_seconds, std::int64_t nb, double spent) {
    if constexpr (optim::PlannableSchedule<Schedule>) {
      TimePlan& old = *plan_;
      old.refined = true;  // whatever happens below, once
      if (!o_.budget->refine_after_warmup) return;
      TimePlan p = plan_again(old, mean_seconds_per_step(step_seconds), std::max<std::int64_t>(2, o_.budget->min_steps),
                              nb, spent);
      const std::int64_t was = old.total_steps;
      const double was_s = old.seconds_per_step;
      p.refined = true;
      planned_ = schedule_.with_plan(p.probe_steps, p.warmup_steps, p.total_steps);
      plan_ = p;
      line(str("plan refined after the warmup: ", p.total_steps, " steps (was ", was, ") at ", p.seconds_per_step,
               " s/step (probe ", was_s, "); epoch end ", p.epoch_end_seconds, " s", validation_text(p),
               "; predicted ", hms(p.predicted_seconds), " of the ", hms(p.budget_seconds), " budget",
               p.over_budget ? " (OVER BUDGET)" : ""));
    }
  }

  /// The step of the midway plan: halfway through the annealing steps of the current plan.
  static std::int64_t midway(const TimePlan& p) {
    const std::int64_t a = p.probe_steps + p.warmup_steps;
    return a + (p.total_steps - a) / 2;
  }

  /// Halfway through the annealing: the total planned again from the mean time of the later
  /// half of the steps since the warmup (the recent speed, a late batch still counted); the
  /// schedule keeps its LR at this step and bends towards the new end.
  void replan_midway(const std::vector<double>& step_seconds, std::int64_t nb, double spent) {
    if constexpr (requires(const Schedule& sc) { sc.replanned(std::int64_t{}, std::int64_t{}); }) {
      TimePlan& old = *plan_;
      old.replanned = true;  // whatever happens below, once
      if (!o_.budget->replan_midway) return;
      const auto recent = std::span(step_seconds).last(std::max<std::size_t>(2, step_seconds.size() / 2));
      TimePlan p = plan_again(old, mean_seconds_per_step(recent), 2, nb, spent);
      const std::int64_t was = old.total_steps;
      const double was_s = old.seconds_per_step;
      p.refined = p.replanned = true;
      if (p.total_steps != was) {
        p.replan_step = st_.step;
        p.replan_from = was;
        planned_ = planned_->replanned(st_.step, p.total_steps);
      }
      plan_ = p;
      line(str("plan at step ", st_.step, " (halfway through the annealing): ", p.total_steps, " steps (was ", was,
               ") at ", p.seconds_per_step, " s/step (after the warmup ", was_s, "); predicted ",
               hms(p.predicted_seconds), " of the ", hms(p.budget_seconds), " budget",
               p.over_budget ? " (OVER BUDGET)" : ""));
    } else {
      plan_->replanned = true;
    }
  }

  /// resume_from: continue the checkpoint's plan (never re-plan), refusing a budget mismatch.
  void restore_plan(const detail::FlatJson& j, const std::filesystem::path& dir) {
    const bool was_budgeted = j.has("plan.budgeted") && j.get_bool("plan.budgeted");
    SIEVE_CHECK(was_budgeted == o_.budget.has_value(), "resume: checkpoint ", dir.string(), " was trained ",
                was_budgeted ? "with" : "without", " a time budget but this run has ",
                o_.budget ? "one" : "none", ": the LR schedule would not continue");
    plan_.reset();
    if constexpr (optim::PlannableSchedule<Schedule>) {
      planned_.reset();
      if (!j.has("plan.total_steps")) return;  // stopped during the probe: this run plans
      TimePlan p;
      p.total_steps = j.get_i64("plan.total_steps");
      p.probe_steps = j.get_i64("plan.probe_steps");
      p.warmup_steps = j.get_i64("plan.warmup_steps");
      p.seconds_per_step = j.get_double("plan.seconds_per_step");
      p.epoch_end_seconds = j.get_double("plan.epoch_end_seconds");
      if (j.has("plan.validation_seconds")) {  // checkpoints before 2026-12-07 counted it in the epoch end
        p.validation_seconds = j.get_double("plan.validation_seconds");
        p.validate_every = j.get_i64("plan.validate_every");
      }
      p.save_seconds = j.get_double("plan.save_seconds");
      p.reserve_seconds = j.get_double("plan.reserve_seconds");
      p.margin_seconds = j.get_double("plan.margin_seconds");
      p.budget_seconds = j.get_double("plan.budget_seconds");
      p.elapsed_at_plan = j.get_double("plan.elapsed_at_plan");
      p.predicted_seconds = j.get_double("plan.predicted_seconds");
      p.over_budget = j.get_bool("plan.over_budget");
      // A resumed run follows the saved plan as it is, refined or not: refining needs this
      // fit() call's own clock from the probe on (and checkpoints written before refinement
      // existed have no flag).
      p.refined = p.replanned = true;
      if (j.has("plan.replan_step")) {
        p.replan_step = j.get_i64("plan.replan_step");
        p.replan_from = j.get_i64("plan.replan_from");
      }
      if (p.replan_step > 0) {
        if constexpr (requires(const Schedule& sc) { sc.replanned(std::int64_t{}, std::int64_t{}); })
          planned_ = schedule_.with_plan(p.probe_steps, p.warmup_steps, p.replan_from)
                         .replanned(p.replan_step, p.total_steps);
        else
          fail("resume: checkpoint ", dir.string(), " moved its plan at step ", p.replan_step,
               " but this run's schedule cannot (no replanned())");
      } else {
        planned_ = schedule_.with_plan(p.probe_steps, p.warmup_steps, p.total_steps);
      }
      plan_ = p;
      if (j.has("schedule"))
        SIEVE_CHECK(j.get_string("schedule") == planned_->describe(), "resume: checkpoint ", dir.string(),
                    " followed the schedule ", j.get_string("schedule"), " but this run's, with the same plan, is ",
                    planned_->describe());
    }
  }

  void save_buffers() {
    std::size_t vi = 0, ci = 0;
    for (const auto& b : buffers_) {
      if (b.is_count()) {
        if (ci == saved_counts_.size()) saved_counts_.push_back(0);
        saved_counts_[ci++] = *b.count;
      } else {
        saved_values_.resize(std::max(saved_values_.size(), vi + b.value.size()));
        std::copy(b.value.begin(), b.value.end(), saved_values_.begin() + static_cast<std::ptrdiff_t>(vi));
        vi += b.value.size();
      }
    }
  }
  void restore_buffers() {
    std::size_t vi = 0, ci = 0;
    for (const auto& b : buffers_) {
      if (b.is_count()) {
        *b.count = saved_counts_[ci++];
      } else {
        std::copy_n(saved_values_.begin() + static_cast<std::ptrdiff_t>(vi), b.value.size(), b.value.begin());
        vi += b.value.size();
      }
    }
  }

  std::ostream& out() const { return o_.out ? *o_.out : std::cerr; }
  Progress mode() const {
    if (o_.progress != Progress::automatic) return o_.progress;
    return o_.out == nullptr && ::isatty(2) ? Progress::terminal : Progress::plain;
  }
  void line(const std::string& s) {
    if (mode() == Progress::off) return;
    if (mode() == Progress::terminal) out() << "\r\033[2K";
    out() << s << "\n" << std::flush;
  }

  static std::string hms(double s) {
    if (!std::isfinite(s) || s < 0) return "?";
    const auto t = static_cast<long long>(s + 0.5);
    char buf[32];
    if (t >= 3600) std::snprintf(buf, sizeof buf, "%lldh%02lldm", t / 3600, (t / 60) % 60);
    else std::snprintf(buf, sizeof buf, "%lldm%02llds", t / 60, t % 60);
    return buf;
  }

  void show_step(std::int64_t nb, double loss, std::int64_t images, double secs, std::int64_t steps_this_run) {
    const Progress m = mode();
    if (m == Progress::plain) {
      // Long epochs in a log file: a line now and then, so a reader sees the run is alive.
      const double t = now();
      if (o_.plain_every_seconds <= 0 || t - last_plain_ < o_.plain_every_seconds) return;
      if (std::isnan(last_plain_)) {  // the first call starts the clock
        last_plain_ = t;
        return;
      }
      last_plain_ = t;
    } else if (m != Progress::terminal) {
      return;
    }
    const std::int64_t steps_per_epoch = (nb + o_.accum_steps - 1) / o_.accum_steps;
    const std::int64_t left_in_epoch = (nb - st_.batch + o_.accum_steps - 1) / o_.accum_steps;
    // Budgeted: the plan's steps left (unknown during the probe); else the epochs' steps left.
    const std::int64_t left = o_.budget ? (plan_ ? plan_->total_steps - st_.step : -1)
                                        : left_in_epoch + (o_.epochs - st_.epoch - 1) * steps_per_epoch;
    const double per_step = steps_this_run > 0 ? secs / static_cast<double>(steps_this_run) : 0.0;
    char buf[240];
    std::snprintf(buf, sizeof buf, "%s%s  batch %lld/%lld  %s  loss %.4f  %.1f img/s  ETA %s%s",
                  m == Progress::terminal ? "\r\033[2K" : "", epoch_label().c_str(),
                  static_cast<long long>(st_.batch), static_cast<long long>(nb), step_label().c_str(), loss,
                  secs > 0 ? o_.throughput_scale * static_cast<double>(images) / secs : 0.0,
                  hms(left < 0 ? -1.0 : per_step * static_cast<double>(left)).c_str(),
                  m == Progress::terminal ? "" : "\n");
    out() << buf << std::flush;
  }

  /// "epoch 3/10"; budgeted runs have no epoch count: "epoch 3".
  std::string epoch_label() const {
    return o_.budget ? str("epoch ", st_.epoch + 1) : str("epoch ", st_.epoch + 1, "/", o_.epochs);
  }
  /// "step 40"; budgeted: "step 40/120" once planned, "step 4 (probe)" before.
  std::string step_label() const {
    if (!o_.budget) return str("step ", st_.step);
    return plan_ ? str("step ", st_.step, "/", plan_->total_steps) : str("step ", st_.step, " (probe)");
  }

  void log_epoch(double loss, const std::map<std::string, double>& val, std::int64_t images, double secs) {
    const double ips = secs > 0 ? o_.throughput_scale * static_cast<double>(images) / secs : 0.0;
    std::string msg = str(epoch_label(), "  ", step_label(), "  loss ", loss, "  lr ", st_.last_lr);
    for (const auto& [k, v] : val) msg += str("  ", k, " ", v);
    msg += str("  ", static_cast<long long>(ips), " img/s");
    if (st_.nonfinite_skipped > 0) msg += str("  skipped ", st_.nonfinite_skipped);
    line(msg);
    if (o_.run_dir.empty()) return;
    detail::FlatJson j;
    j.set("epoch", st_.epoch + 1);  // 1-based: epochs completed, as the progress line shows
    j.set("step", st_.step);
    j.set("lr", st_.last_lr);
    j.set("loss", loss);
    for (const auto& [k, v] : val) j.set(k, v);
    j.set("images_per_sec", ips);
    j.set("wall_time_s", st_.wall_seconds);
    j.set("nonfinite_skipped", st_.nonfinite_skipped);
    std::string text = "{";
    for (std::size_t i = 0; i < j.items().size(); ++i)
      text += (i ? ", " : "") + detail::FlatJson::quote(j.items()[i].first) + ": " + j.items()[i].second;
    text += "}\n";
    std::filesystem::create_directories(o_.run_dir);
    // Durable before the checkpoint that counts this epoch; see metrics_log.hpp for the rules.
    io::append_file_durable(o_.run_dir / "metrics.jsonl", text);
  }

  Model& model_;
  Loss& loss_;
  Opt& opt_;
  const Schedule& schedule_;
  TrainerOptions o_;
  std::vector<ParamRef<T>> params_;
  std::vector<BufferRef<T>> buffers_ = buffers_of<T>(model_);
  std::vector<T> saved_values_;
  std::vector<std::int64_t> saved_counts_;
  double last_plain_ = std::nan("");  ///< now() of the last plain progress line (NaN = not yet)
  EarlyStopping es_;
  TrainState st_;
  ValidationFn<Model> validate_;
  std::optional<TimePlan> plan_;      ///< budgeted runs: made after the probe, or restored
  std::optional<Schedule> planned_;   ///< schedule_ with the plan filled in (plannable schedules)
  double val_seconds_ = -1.0;         ///< slowest validation call of this fit() (-1 = none yet)
  double save_seconds_ = -1.0;        ///< slowest checkpoint save of this fit() (-1 = none yet)
  double last_save_at_ = 0.0;         ///< now() of the last save of last/ (or fit()'s start)
};

}  // namespace sieve::train
