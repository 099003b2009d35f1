#pragma once
/// Rank-aware sampling: every rank gets a disjoint share of each GLOBAL batch, where the global
/// batches are exactly the ones a single process would draw (io::EpochSampler, same seed), so N
/// ranks with per-rank batch B/N see, together, what one rank with batch B sees.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/xt.hpp"
#include "sieve/io/dataset.hpp"
#include "sieve/io/loader.hpp"

namespace sieve::dist {

/// Block `rank` of `size` contiguous blocks of [0, n): [lo, hi). Concatenating the blocks in
/// rank order gives [0, n) back (what sharded inference relies on to gather in order).
inline std::pair<std::size_t, std::size_t> shard_range(std::size_t n, int rank, int size) {
  SIEVE_CHECK(size >= 1 && rank >= 0 && rank < size, "shard_range: rank ", rank, " of ", size);
  const auto r = static_cast<std::size_t>(rank), s = static_cast<std::size_t>(size);
  return {n * r / s, n * (r + 1) / s};
}

/// This rank's part of sharded inference is `RangeDataset(ds, shard_range(ds.size(), rank,
/// ranks))`, then gather in rank order (the view lives in io/dataset.hpp).
using io::RangeDataset;

/// How an epoch of `n` samples is cut into global batches of `global_batch` and shared by ranks.
struct ShardPlan {
  std::size_t n = 0;
  std::size_t global_batch = 0;  ///< B; each rank takes B / ranks samples of a full batch
  std::uint64_t seed = 0;        ///< the loader seed (io::LoaderOptions::seed)
  bool shuffle = true;
  bool drop_last = false;
  int rank = 0, ranks = 1;

  /// Requires: global_batch a positive multiple of ranks, n > 0.
  void validate() const {
    SIEVE_CHECK(ranks >= 1 && rank >= 0 && rank < ranks, "ShardPlan: rank ", rank, " of ", ranks);
    SIEVE_CHECK(global_batch >= 1 && global_batch % static_cast<std::size_t>(ranks) == 0, "ShardPlan: global batch ",
                global_batch, " must be a positive multiple of the ", ranks,
                " ranks (each rank takes global_batch / ranks samples)");
    SIEVE_CHECK(n > 0, "ShardPlan: empty dataset");
  }
  std::size_t per_rank() const { return global_batch / static_cast<std::size_t>(ranks); }

  /// Seed for the io::Loader over a ShardedDataset. That loader does not shuffle (the plan
  /// orders the epoch), so its seed only keys augmentation, by the rank-LOCAL sample index:
  /// a distinct seed per rank keeps ranks from drawing the same crops for their i-th samples.
  std::uint64_t loader_seed() const {
    return seed ^ (0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(rank + 1));
  }

  /// Global batches per epoch, the same on every rank. A short last batch with fewer samples
  /// than ranks is dropped (some rank would have nothing to train on).
  std::size_t batches() const {
    const std::size_t full = n / global_batch, rest = n % global_batch;
    if (drop_last || rest < static_cast<std::size_t>(ranks)) return full;
    return full + 1;
  }

  /// Positions in the epoch order, [lo, hi), that this rank takes from global batch `b`.
  std::pair<std::size_t, std::size_t> positions(std::size_t b) const {
    const std::size_t start = b * global_batch;
    const std::size_t len = std::min(global_batch, n - start);
    const auto [lo, hi] = shard_range(len, rank, ranks);
    return {start + lo, start + hi};
  }

  /// This rank's sample indices for `epoch`, batch after batch (what its loader should visit).
  std::vector<std::size_t> indices(std::uint64_t epoch) const {
    validate();
    const auto order = io::EpochSampler{n, seed, shuffle}.order(epoch);
    std::vector<std::size_t> out;
    out.reserve(batches() * per_rank());
    for (std::size_t b = 0; b < batches(); ++b) {
      const auto [lo, hi] = positions(b);
      for (std::size_t p = lo; p < hi; ++p) out.push_back(order[p]);
    }
    return out;
  }
};

/// A view of `base` holding this rank's samples of one epoch in order. Wrap it in an io::Loader
/// with batch_size = plan.per_rank(), shuffle = false, drop_last = false, seed =
/// plan.loader_seed(): the loader's batch b is then this rank's share of global batch b (the
/// last share may be smaller). Batch::indices are rank-local; global_index() maps them back.
/// Call set_epoch() only while the loader over it is stopped (ShardedLoader does this).
class ShardedDataset final : public io::Dataset {
 public:
  /// Requires: `base` outlives this view; plan.n == base.size().
  ShardedDataset(const io::Dataset& base, ShardPlan plan) : base_(base), plan_(plan) {
    SIEVE_CHECK(plan_.n == base.size(), "ShardedDataset: plan is for ", plan_.n, " samples but the dataset has ",
                base.size());
    plan_.validate();
    set_epoch(0);
  }
  void set_epoch(std::uint64_t epoch) {
    if (epoch_ == epoch && !map_.empty()) return;
    map_ = plan_.indices(epoch);
    epoch_ = epoch;
  }
  const ShardPlan& plan() const { return plan_; }
  std::size_t global_index(std::size_t i) const {
    SIEVE_CHECK(i < map_.size(), "ShardedDataset: index ", i, " out of range (", map_.size(), " samples on ",
                "rank ", plan_.rank, ")");
    return map_[i];
  }
  std::size_t size() const override { return map_.size(); }
  std::string id(std::size_t i) const override { return base_.id(global_index(i)); }
  std::string source(std::size_t i) const override { return base_.source(global_index(i)); }
  std::vector<std::int32_t> labels(std::size_t i) const override { return base_.labels(global_index(i)); }
  void load(std::size_t i, Image& out) const override { base_.load(global_index(i), out); }
  std::uint64_t peak_load_bytes() const override { return base_.peak_load_bytes(); }

 private:
  const io::Dataset& base_;
  ShardPlan plan_;
  std::uint64_t epoch_ = 0;
  std::vector<std::size_t> map_;
};

/// A trainer BatchLoader over a ShardedDataset: points the dataset at the epoch before the inner
/// loader (e.g. train::SequentialLoaderAdapter over an io::Loader built on `ds`) starts it, and
/// reports the global batch count, which is the same on every rank.
template <class Inner>
class ShardedLoader {
 public:
  ShardedLoader(ShardedDataset& ds, Inner& inner) : ds_(ds), inner_(inner) {}
  std::int64_t num_batches(std::int64_t /*epoch*/) const { return static_cast<std::int64_t>(ds_.plan().batches()); }
  void start_epoch(std::int64_t epoch, std::int64_t batch) {
    ds_.set_epoch(static_cast<std::uint64_t>(epoch));
    inner_.start_epoch(epoch, batch);
  }
  decltype(auto) next_batch() { return inner_.next_batch(); }

 private:
  ShardedDataset& ds_;
  Inner& inner_;
};

/// train::InMemoryLoader's epochs, sharded: rows are visited in the same seeded order (the same
/// Fisher-Yates as io::EpochSampler), and batch b on this rank is its share of global batch b.
/// For in-memory data such as the embedding cache of a frozen backbone.
template <class T, std::size_t RX, class U, std::size_t RY>
class ShardedInMemoryLoader {
 public:
  struct Batch {
    Tensor<T, RX> x;
    Tensor<U, RY> y;
  };
  /// Requires: x and y have plan.n rows; see ShardPlan::validate.
  ShardedInMemoryLoader(Tensor<T, RX> x, Tensor<U, RY> y, ShardPlan plan)
      : x_(std::move(x)), y_(std::move(y)), plan_(plan) {
    SIEVE_CHECK(x_.shape()[0] == plan_.n && y_.shape()[0] == plan_.n, "ShardedInMemoryLoader: x has ", x_.shape()[0],
                " rows, y has ", y_.shape()[0], ", the plan says ", plan_.n);
    plan_.validate();
  }
  const ShardPlan& plan() const { return plan_; }
  std::int64_t num_batches(std::int64_t /*epoch*/) const { return static_cast<std::int64_t>(plan_.batches()); }
  void start_epoch(std::int64_t epoch, std::int64_t batch) {
    SIEVE_CHECK(batch >= 0 && batch <= num_batches(epoch), "ShardedInMemoryLoader: batch ", batch, " outside [0, ",
                num_batches(epoch), "]");
    order_ = io::EpochSampler{plan_.n, plan_.seed, plan_.shuffle}.order(static_cast<std::uint64_t>(epoch));
    batch_index_ = static_cast<std::size_t>(batch);
  }
  /// Ensures: this rank's share of the next global batch.
  const Batch& next_batch() {
    SIEVE_CHECK(batch_index_ < plan_.batches(), "ShardedInMemoryLoader: next_batch past the end of the epoch");
    const auto [lo, hi] = plan_.positions(batch_index_++);
    copy_rows(x_, batch_.x, lo, hi);
    copy_rows(y_, batch_.y, lo, hi);
    return batch_;
  }

 private:
  template <class V, std::size_t R>
  void copy_rows(const Tensor<V, R>& src, Tensor<V, R>& dst, std::size_t lo, std::size_t hi) const {
    Shape<R> shape;
    for (std::size_t d = 0; d < R; ++d) shape[d] = src.shape()[d];
    shape[0] = hi - lo;
    ensure_shape(dst, shape);
    const std::size_t row = src.size() / src.shape()[0];
    for (std::size_t i = lo; i < hi; ++i)
      std::memcpy(dst.data() + (i - lo) * row, src.data() + order_[i] * row, row * sizeof(V));
  }

  Tensor<T, RX> x_;
  Tensor<U, RY> y_;
  ShardPlan plan_;
  std::vector<std::size_t> order_;
  std::size_t batch_index_ = 0;
  Batch batch_;
};

}  // namespace sieve::dist
