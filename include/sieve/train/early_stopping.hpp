#pragma once
/// Early stopping on a validation metric, with PyTorch Lightning's EarlyStopping semantics.

#include <cmath>
#include <cstdint>
#include <string>

#include "sieve/core/check.hpp"

namespace sieve::train {

enum class Mode { max, min };

struct EarlyStoppingOptions {
  std::string monitor = "val_map5";  ///< key of the validation metric
  Mode mode = Mode::max;
  std::int64_t patience = 3;         ///< evaluations without improvement before stopping
  double min_delta = 0.0;            ///< an improvement must exceed this (absolute)
};

/// Lightning's rule: `current` improves on `best` when current - min_delta > best (max) or
/// current + min_delta < best (min); the first finite value always improves. Each evaluation
/// without improvement increments `wait`; training should stop once wait >= patience
/// (patience 0 stops at the first evaluation that does not improve). NaN never improves.
class EarlyStopping {
 public:
  /// Requires: patience >= 0, min_delta >= 0.
  explicit EarlyStopping(EarlyStoppingOptions options = {}) : opt_(std::move(options)) {
    SIEVE_CHECK(opt_.patience >= 0 && opt_.min_delta >= 0.0, "EarlyStopping: patience=", opt_.patience,
                " and min_delta=", opt_.min_delta, " must be >= 0");
  }

  /// Record the metric of `epoch`. Returns true when it is a new best (save best weights).
  bool update(double current, std::int64_t epoch) {
    const bool improved = std::isfinite(current) &&
                          (!has_best_ || (opt_.mode == Mode::max ? current - opt_.min_delta > best_
                                                                 : current + opt_.min_delta < best_));
    if (improved) {
      best_ = current;
      best_epoch_ = epoch;
      has_best_ = true;
      wait_ = 0;
    } else {
      ++wait_;
    }
    return improved;
  }

  bool should_stop() const { return wait_ > 0 && wait_ >= opt_.patience; }
  bool has_best() const { return has_best_; }
  double best() const { return best_; }
  std::int64_t best_epoch() const { return best_epoch_; }
  std::int64_t wait() const { return wait_; }
  const EarlyStoppingOptions& options() const { return opt_; }

  /// Restore from a checkpoint (values as returned by the accessors above).
  void restore(bool has_best, double best, std::int64_t best_epoch, std::int64_t wait) {
    has_best_ = has_best;
    best_ = best;
    best_epoch_ = best_epoch;
    wait_ = wait;
  }

 private:
  EarlyStoppingOptions opt_;
  bool has_best_ = false;
  double best_ = 0.0;
  std::int64_t best_epoch_ = -1;
  std::int64_t wait_ = 0;
};

}  // namespace sieve::train
