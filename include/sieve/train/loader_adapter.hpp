#pragma once
/// Adapts a sequential, resumable loader — `batches_per_epoch()`, `start(epoch, first_batch)`,
/// `next()` returning std::optional<Batch> — such as io::Loader, to the trainer's BatchLoader.

#include <cstdint>
#include <optional>
#include <type_traits>
#include <utility>

#include "sieve/core/check.hpp"

namespace sieve::train {

/// A batch as the trainer consumes it: model input and loss targets.
template <class X, class Y>
struct XY {
  X x;
  Y y;
};

/// `convert(Batch&&) -> XY<X,Y>` maps the loader's batch (e.g. images + labels) to the model's
/// input and the loss's targets (e.g. {std::move(b.images), io::multi_hot(b, K)}).
template <class L, class Convert>
class SequentialLoaderAdapter {
  using Batch = typename std::remove_cvref_t<decltype(*std::declval<L&>().next())>;

 public:
  using value_type = std::invoke_result_t<Convert&, Batch&&>;

  /// Requires: `loader` outlives the adapter.
  SequentialLoaderAdapter(L& loader, Convert convert) : loader_(loader), convert_(std::move(convert)) {}

  std::int64_t num_batches(std::int64_t /*epoch*/) const { return static_cast<std::int64_t>(loader_.batches_per_epoch()); }

  void start_epoch(std::int64_t epoch, std::int64_t first_batch) {
    SIEVE_CHECK(epoch >= 0 && first_batch >= 0, "SequentialLoaderAdapter: epoch ", epoch, ", batch ", first_batch);
    loader_.start(static_cast<std::uint64_t>(epoch), static_cast<std::size_t>(first_batch));
  }

  /// Ensures: the next batch of the epoch, converted. Throws when the loader ran dry early.
  const value_type& next_batch() {
    auto b = loader_.next();
    SIEVE_CHECK(b.has_value(), "SequentialLoaderAdapter: the loader ended the epoch before batches_per_epoch()=",
                loader_.batches_per_epoch(), " batches");
    current_.emplace(convert_(std::move(*b)));
    return *current_;
  }

 private:
  L& loader_;
  Convert convert_;
  std::optional<value_type> current_;
};

}  // namespace sieve::train
