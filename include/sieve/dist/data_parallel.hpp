#pragma once
/// Data-parallel training: a bucketed gradient allreduce, parameter/buffer broadcast from rank
/// 0, a model wrapper that plugs both into train::Trainer unchanged, and gathers for sharded
/// inference.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/param.hpp"
#include "sieve/core/rng.hpp"
#include "sieve/core/stage.hpp"
#include "sieve/core/xt.hpp"
#include "sieve/dist/communicator.hpp"

namespace sieve::dist {

/// Copy parameter values from `root` to every rank (at start, and after a resume).
template <class T>
void broadcast_params(Communicator& c, const std::vector<ParamRef<T>>& params, int root = 0) {
  for (const auto& p : params) c.broadcast(p.value, root, p.name);
}

/// Copy buffers (BN running statistics, step counters, optimizer state) from `root`.
template <class T>
void broadcast_buffers(Communicator& c, const std::vector<BufferRef<T>>& buffers, int root = 0) {
  for (const auto& b : buffers) {
    if (b.is_count()) c.broadcast(std::span<std::int64_t>(b.count, 1), root, b.name);
    else c.broadcast(b.value, root, b.name);
  }
}

struct AllreduceOptions {
  /// Gradient bytes per message. Large enough that per-message latency is negligible, small
  /// enough that packing the next bucket overlaps the sum of the previous one (PyTorch DDP: 25 MB).
  std::size_t bucket_bytes = std::size_t{25} << 20;
};

/// Sums the gradients of `params` over all ranks as a sample-weighted average:
///   g = sum_r w_r g_r / sum_r w_r
/// where g_r is rank r's gradient of its MEAN loss and w_r its sample count, so ranks with a
/// short last shard weigh what they hold, and the result equals the gradient of the mean loss
/// over the global batch. Frozen parameters are skipped (the flag must agree on all ranks).
/// Gradients travel in buckets of bucket_bytes, two in flight: bucket k+1 is packed while
/// bucket k is being summed.
template <class T>
class GradientAllreducer {
 public:
  GradientAllreducer(Communicator& c, std::vector<ParamRef<T>> params, AllreduceOptions o = {})
      : c_(c), params_(std::move(params)), cap_(std::max<std::size_t>(o.bucket_bytes / sizeof(T), 2)) {}

  /// Replace local gradients by the weighted global average. Requires: weight > 0 on at least
  /// one rank. Collective.
  void reduce(double weight) {
    ++calls_;
    if (c_.size() == 1) return;  // the average over one rank is the gradient itself
    // Element 0 of the first bucket carries the weight, so the total arrives with the gradients.
    std::size_t slot = 0;
    std::size_t bucket = 0;
    Buf* cur = &bufs_[0];
    cur->data.assign(1, static_cast<T>(weight));
    cur->items.clear();
    total_ = 0;
    have_total_ = false;
    auto flush = [&] {
      if (cur->data.empty()) return;
      cur->handle = c_.start_allreduce_sum(cur->data.data(), cur->data.size(), dtype_of<T>(),
                                           str("gradient bucket ", bucket, " (", cur->data.size() * sizeof(T), " bytes)"));
      cur->in_flight = true;
      ++bucket;
      elements_ += cur->data.size();
      slot ^= 1;
      cur = &bufs_[slot];
      if (cur->in_flight) finish(*cur);
      cur->data.clear();
      cur->items.clear();
    };
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const auto& p = params_[i];
      if (p.is_frozen()) continue;
      std::size_t off = 0;
      while (off < p.grad.size()) {
        const std::size_t take = std::min(p.grad.size() - off, cap_ - cur->data.size());
        const std::size_t at = cur->data.size();
        cur->data.resize(at + take);
        const T w = static_cast<T>(weight);
        for (std::size_t k = 0; k < take; ++k) cur->data[at + k] = p.grad[off + k] * w;
        cur->items.push_back({i, off, at, take});
        off += take;
        if (cur->data.size() == cap_) flush();
      }
    }
    flush();
    for (auto& b : bufs_) if (b.in_flight) finish(b);
    buckets_ = bucket;
  }

  std::size_t buckets_last_reduce() const { return buckets_; }
  /// Elements sent (gradients + one weight per reduce) since construction.
  std::size_t elements_sent() const { return elements_; }
  std::size_t reduces() const { return calls_; }

 private:
  struct Item {
    std::size_t param, offset, at, count;
  };
  struct Buf {
    std::vector<T> data;
    std::vector<Item> items;
    std::size_t handle = 0;
    bool in_flight = false;
  };

  void finish(Buf& b) {
    c_.wait(b.handle);
    b.in_flight = false;
    if (!have_total_) {  // the first bucket to finish is the first started: element 0 is the weight
      total_ = static_cast<double>(b.data[0]);
      SIEVE_CHECK(total_ > 0, "dist: gradient allreduce: the ranks' sample weights sum to ", total_, " (need > 0)");
      have_total_ = true;
    }
    const T inv = static_cast<T>(1.0 / total_);
    for (const auto& it : b.items) {
      auto g = params_[it.param].grad.subspan(it.offset, it.count);
      for (std::size_t k = 0; k < it.count; ++k) g[k] = b.data[it.at + k] * inv;
    }
  }

  Communicator& c_;
  std::vector<ParamRef<T>> params_;
  std::size_t cap_;
  Buf bufs_[2];
  double total_ = 0;
  bool have_total_ = false;
  std::size_t buckets_ = 0, elements_ = 0, calls_ = 0;
};

struct DataParallelOptions {
  AllreduceOptions allreduce{};
  /// As PyTorch DDP's broadcast_buffers=True: at each training forward, BN running statistics
  /// (and counters) are copied from rank 0, so every rank evaluates and saves the same model.
  /// Batch statistics themselves stay per rank (no SyncBatchNorm).
  bool broadcast_buffers = true;
};

/// Wraps a TrainableStage so that train::Trainer trains it data-parallel without knowing:
/// parameters (and buffers) are broadcast from rank 0 at construction; backward() ends with the
/// weighted gradient allreduce, so the trainer's norm, clipping, non-finite guard and optimizer
/// step all see the global gradient and agree on every rank. Parameter names are the model's.
/// Gradient accumulation (TrainerOptions::accum_steps > 1) is refused: raise the per-rank batch.
template <class Model>
  requires TrainableStage<Model>
class DataParallel {
 public:
  using input_type = input_t<Model>;
  using output_type = output_t<Model>;
  using value_type = std::remove_cvref_t<decltype(std::declval<Model&>().params()[0].value[0])>;
  using T = value_type;

  /// Collective. Requires: `model` and `comm` outlive the wrapper; same architecture on all ranks.
  DataParallel(Model& model, Communicator& comm, DataParallelOptions o = {})
      : m_(model), c_(comm), o_(o), reducer_(comm, model.params(), o.allreduce) {
    sync_from_root();
  }

  /// Copy parameters and buffers from rank 0 (call after every rank resumed from a checkpoint).
  void sync_from_root() {
    broadcast_params(c_, m_.params());
    broadcast_buffers(c_, buffers());
  }

  const output_type& forward(const input_type& x, Rng& rng) {
    before_forward(x);
    return stage_forward(m_, x, rng);
  }
  const output_type& forward(const input_type& x) {
    before_forward(x);
    return m_.forward(x);
  }

  const input_type& backward(const output_type& dy) {
    SIEVE_CHECK(clean_, "DataParallel: backward twice without zero_grad() (gradient accumulation, accum_steps > 1) ",
                "is not supported on ", c_.who(), ": use a larger per-rank batch or more ranks instead");
    const auto& dx = m_.backward(dy);
    reducer_.reduce(static_cast<double>(batch_));
    clean_ = false;
    return dx;
  }

  std::vector<ParamRef<T>> params() { return m_.params(); }
  std::vector<BufferRef<T>> buffers() {
    if constexpr (requires { m_.buffers(); }) return m_.buffers();
    else return {};
  }
  void zero_grad() {
    m_.zero_grad();
    clean_ = true;
  }
  void set_training(bool t) {
    training_ = t;
    stage_set_training(m_, t);
  }
  void set_inference(bool on) { stage_set_inference(m_, on); }
  void set_random_step(std::uint64_t s)
    requires requires(Model& m, std::uint64_t v) { m.set_random_step(v); }
  {
    m_.set_random_step(s);
  }

  Model& module() { return m_; }
  Communicator& comm() { return c_; }
  const GradientAllreducer<T>& reducer() const { return reducer_; }

 private:
  void before_forward(const input_type& x) {
    batch_ = x.shape()[0];
    if (training_ && o_.broadcast_buffers && c_.size() > 1) broadcast_buffers(c_, buffers());
  }

  Model& m_;
  Communicator& c_;
  DataParallelOptions o_;
  GradientAllreducer<T> reducer_;
  std::size_t batch_ = 0;
  bool clean_ = true, training_ = true;
};

/// Concatenate every rank's rows (axis 0) in rank order, on every rank: with shard_range()
/// blocks this restores the original order. Requires: the same trailing shape on every rank.
template <class T, std::size_t R>
Tensor<T, R> allgather_rows(Communicator& c, const Tensor<T, R>& mine, std::string_view what) {
  std::size_t row = 1;
  Shape<R> shape;
  for (std::size_t d = 0; d < R; ++d) shape[d] = mine.shape()[d];
  for (std::size_t d = 1; d < R; ++d) row *= shape[d];
  // Rows from different ranks must agree in width: gather the widths first.
  const std::int64_t w = static_cast<std::int64_t>(row);
  std::vector<std::size_t> counts;
  const auto widths = c.allgather_bytes(std::as_bytes(std::span(&w, 1)), counts, str(what, " row widths"));
  for (int r = 0; r < c.size(); ++r) {
    std::int64_t wr = 0;
    std::memcpy(&wr, widths.data() + static_cast<std::size_t>(r) * sizeof wr, sizeof wr);
    SIEVE_CHECK(wr == w, "allgather_rows '", what, "': rank ", r, " has rows of ", wr, " values, ", c.who(), " has ", w);
  }
  const auto bytes = c.allgather_bytes(std::as_bytes(std::span(mine.data(), mine.size())), counts, what);
  shape[0] = bytes.size() / sizeof(T) / std::max<std::size_t>(row, 1);
  Tensor<T, R> out(shape);
  if (!bytes.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

/// Concatenate every rank's values (e.g. labels) in rank order, on every rank.
template <class T>
  requires std::is_trivially_copyable_v<T>
std::vector<T> allgather_values(Communicator& c, const std::vector<T>& mine, std::string_view what) {
  std::vector<std::size_t> counts;
  const auto bytes = c.allgather_bytes(std::as_bytes(std::span(mine)), counts, what);
  std::vector<T> out(bytes.size() / sizeof(T));
  if (!bytes.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

/// Concatenate every rank's strings (e.g. sample ids) in rank order, on every rank.
inline std::vector<std::string> allgather_strings(Communicator& c, const std::vector<std::string>& mine,
                                                  std::string_view what) {
  std::vector<std::byte> packed;
  for (const auto& s : mine) {
    const auto* p = reinterpret_cast<const std::byte*>(s.data());
    packed.insert(packed.end(), p, p + s.size());
    packed.push_back(std::byte{0});
  }
  std::vector<std::size_t> counts;
  const auto all = c.allgather_bytes(packed, counts, what);
  std::vector<std::string> out;
  std::string cur;
  for (auto b : all) {
    if (b == std::byte{0}) {
      out.push_back(std::move(cur));
      cur.clear();
    } else {
      cur.push_back(static_cast<char>(b));
    }
  }
  return out;
}

}  // namespace sieve::dist
