#pragma once
/// Deterministic parallel data loading: an epoch sampler (seeded Fisher-Yates), batch
/// collation into [N,3,H,W] float tensors plus labels, and a Loader with background workers
/// and a bounded prefetch queue.
///
/// Determinism: batch b of epoch e holds the samples at positions [b*B, (b+1)*B) of the
/// epoch's permutation, and sample i's augmentation draws from
/// Rng::for_sample(derive_seed(seed, RngPurpose::augment), e, i). So the output is
/// bit-identical for any worker count, and starting at (e, b) equals an uninterrupted run.

#include <unistd.h>

#include <algorithm>
#include <array>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <numeric>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/rng.hpp"
#include "sieve/core/shuffle.hpp"
#include "sieve/core/stage.hpp"
#include "sieve/core/xt.hpp"
#include "sieve/io/dataset.hpp"

namespace sieve::io {

/// Seeded epoch order over n samples.
struct EpochSampler {
  std::size_t n = 0;
  std::uint64_t seed = 0;
  bool shuffle = true;

  /// The permutation for `epoch`: sieve::shuffle driven by Rng(derive_seed(seed, shuffle),
  /// epoch) (identity when shuffle is false).
  std::vector<std::size_t> order(std::uint64_t epoch) const {
    if (!shuffle) {
      std::vector<std::size_t> p(n);
      std::iota(p.begin(), p.end(), std::size_t{0});
      return p;
    }
    Rng rng(derive_seed(seed, RngPurpose::shuffle), epoch);
    return permutation(n, rng);
  }
};

/// What the loader does with a sample that fails to load or transform.
enum class OnError {
  fail,  ///< the error reaches the consumer (naming the sample id and file)
  skip,  ///< drop the sample from its batch, count it, keep going
};

struct LoaderOptions {
  std::size_t batch_size = 32;
  std::size_t workers = 2;   ///< 0 = build batches on the consumer's thread (see memory_budget)
  /// Bytes the workers' loads may hold at once: the loader runs at most memory_budget /
  /// Dataset::peak_load_bytes() workers (at least one), so a large --workers cannot multiply
  /// the worst-case decode (an 8192x8192 file of under 1 MB) past the machine.
  /// 0 = half the physical memory (default_loader_memory_budget).
  std::uint64_t memory_budget = 0;
  std::size_t prefetch = 4;  ///< batches built ahead of the consumer (>= 1)
  bool shuffle = true;
  bool drop_last = false;
  std::uint64_t seed = 0;
  OnError on_error = OnError::fail;
};

struct SkippedSample {
  std::size_t index = 0;
  std::string id, source, error;
};

/// Half the machine's physical memory (sysconf), or 4 GiB when it cannot be read.
inline std::uint64_t default_loader_memory_budget() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page <= 0) return std::uint64_t{4} << 30;
  return static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page) / 2;
}

/// Workers a loader runs for `requested` workers over `ds`: min(requested, budget / the
/// dataset's peak bytes per load), and at least 1 unless 0 were requested (budget 0 = default).
inline std::size_t loader_workers(const Dataset& ds, std::size_t requested, std::uint64_t budget = 0) {
  const std::uint64_t peak = ds.peak_load_bytes();
  if (requested == 0 || peak == 0) return requested;
  const std::uint64_t fit = (budget ? budget : default_loader_memory_budget()) / peak;
  return static_cast<std::size_t>(std::max<std::uint64_t>(1, std::min<std::uint64_t>(requested, fit)));
}

/// One collated batch. images: [N, 3, H, W]; labels[k] belongs to ids[k] / indices[k].
struct Batch {
  std::uint64_t epoch = 0;
  std::size_t index = 0;  ///< batch number within the epoch
  Tensor4f images;
  std::vector<std::size_t> indices;
  std::vector<std::string> ids;
  std::vector<std::vector<std::int32_t>> labels;
  std::vector<SkippedSample> skipped;  ///< samples dropped from this batch (OnError::skip)
  std::size_t size() const { return indices.size(); }
};

/// Multi-hot targets [N, num_classes] for BCE; unlabelled samples ({-1}) get all zeros.
/// Requires: every label in [-1, num_classes).
inline Tensor2f multi_hot(const Batch& b, std::size_t num_classes) {
  Tensor2f t = xt::zeros<float>({b.size(), num_classes});
  for (std::size_t k = 0; k < b.size(); ++k)
    for (std::int32_t l : b.labels[k]) {
      if (l == -1) continue;
      SIEVE_CHECK(l >= 0 && static_cast<std::size_t>(l) < num_classes, "multi_hot: sample '", b.ids[k], "' has label ",
                  l, " outside [0, ", num_classes, ")");
      t(k, static_cast<std::size_t>(l)) = 1.0f;
    }
  return t;
}

/// Background loader. `Transform` is a Stage from Image to Tensor3f (e.g. a Pipeline of
/// augment stages); each worker owns a copy, since stages own their buffers.
template <class Transform>
  requires(Stage<Transform> && std::same_as<input_t<Transform>, Image> && std::same_as<output_t<Transform>, Tensor3f>)
class Loader {
 public:
  /// Requires: `dataset` outlives the loader; batch_size >= 1; prefetch >= 1.
  /// Ensures: workers() == loader_workers(dataset, opt.workers, opt.memory_budget).
  Loader(const Dataset& dataset, Transform transform, LoaderOptions opt)
      : ds_(dataset), proto_(std::move(transform)), opt_(opt) {
    SIEVE_CHECK(opt.batch_size >= 1, "Loader: batch_size must be >= 1");
    SIEVE_CHECK(opt.prefetch >= 1, "Loader: prefetch must be >= 1");
    opt_.workers = loader_workers(dataset, opt.workers, opt.memory_budget);
  }
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;
  ~Loader() { stop(); }

  /// Worker threads this loader runs (the requested count, bounded by the memory budget).
  std::size_t workers() const { return opt_.workers; }

  std::size_t batches_per_epoch() const {
    const std::size_t n = ds_.size(), B = opt_.batch_size;
    return opt_.drop_last ? n / B : (n + B - 1) / B;
  }

  /// Begin (or resume) `epoch` at batch `first_batch`; any running epoch is stopped first.
  void start(std::uint64_t epoch, std::size_t first_batch = 0) {
    stop();
    SIEVE_CHECK(first_batch <= batches_per_epoch(), "Loader::start: first_batch ", first_batch, " > ",
                batches_per_epoch(), " batches per epoch");
    epoch_ = epoch;
    order_ = EpochSampler{ds_.size(), opt_.seed, opt_.shuffle}.order(epoch);
    next_claim_ = next_deliver_ = first_batch;
    end_ = batches_per_epoch();
    stopping_ = false;
    ready_.clear();
    started_ = true;
    if (opt_.workers == 0) {
      local_.emplace(proto_);
      return;
    }
    for (std::size_t w = 0; w < opt_.workers; ++w) threads_.emplace_back([this] { work(); });
  }

  /// The next batch of the current epoch in order, or nullopt after the last one. Rethrows a
  /// worker's error (OnError::fail) when its batch is reached.
  std::optional<Batch> next() {
    SIEVE_CHECK(started_, "Loader::next: call start(epoch) first");
    if (opt_.workers == 0) {
      if (next_deliver_ >= end_) return std::nullopt;
      Batch b = build(next_deliver_++, *local_);
      account(b);
      return b;
    }
    std::unique_lock lock(mu_);
    if (next_deliver_ >= end_) return std::nullopt;
    cv_.wait(lock, [&] { return ready_.count(next_deliver_) > 0 || stopping_; });
    if (ready_.count(next_deliver_) == 0) fail("Loader::next: the loader was stopped; call start() again");
    Result r = std::move(ready_[next_deliver_]);
    ready_.erase(next_deliver_);
    ++next_deliver_;
    lock.unlock();
    cv_.notify_all();
    if (r.error) {
      stop();
      std::rethrow_exception(r.error);
    }
    account(r.batch);
    return std::move(r.batch);
  }

  /// Stop workers (idempotent); the epoch can be restarted with start().
  void stop() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

  /// Every sample skipped so far (OnError::skip), in delivery order.
  const std::vector<SkippedSample>& skipped() const { return skipped_; }
  /// "N samples skipped" plus the first few ids and reasons.
  std::string summary() const {
    std::string s = str(skipped_.size(), " sample(s) skipped");
    for (std::size_t i = 0; i < skipped_.size() && i < 5; ++i)
      s += str("\n  ", skipped_[i].id, " (", skipped_[i].source, "): ", skipped_[i].error);
    if (skipped_.size() > 5) s += str("\n  ... and ", skipped_.size() - 5, " more");
    return s;
  }

 private:
  struct Result {
    Batch batch;
    std::exception_ptr error;
  };

  void account(const Batch& b) { skipped_.insert(skipped_.end(), b.skipped.begin(), b.skipped.end()); }

  void work() {
    Transform t = proto_;
    for (;;) {
      std::size_t k = 0;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || next_claim_ >= end_ || next_claim_ < next_deliver_ + opt_.prefetch; });
        if (stopping_ || next_claim_ >= end_) return;
        k = next_claim_++;
      }
      Result r;
      try {
        r.batch = build(k, t);
      } catch (...) {
        r.error = std::current_exception();
      }
      {
        std::lock_guard lock(mu_);
        ready_[k] = std::move(r);
      }
      cv_.notify_all();
    }
  }

  /// Load, transform and collate batch k. Pure function of (epoch, k, dataset, options).
  Batch build(std::size_t k, Transform& t) const {
    Batch b;
    b.epoch = epoch_;
    b.index = k;
    const std::size_t lo = k * opt_.batch_size, hi = std::min(lo + opt_.batch_size, order_.size());
    const std::uint64_t aug_seed = derive_seed(opt_.seed, RngPurpose::augment);
    Image img;
    std::array<std::size_t, 3> s0{};  // per-sample shape, fixed by the first sample
    std::size_t per = 0;
    for (std::size_t p = lo; p < hi; ++p) {
      const std::size_t i = order_[p];
      try {
        ds_.load(i, img);
        Rng rng = Rng::for_sample(aug_seed, epoch_, i);
        const Tensor3f& y = stage_forward(t, img, rng);
        const auto& s = y.shape();
        if (b.indices.empty()) {
          s0 = {s[0], s[1], s[2]};
          per = s[0] * s[1] * s[2];
          // Outputs go straight into the batch tensor: no per-sample copies.
          b.images = Tensor4f::from_shape({hi - lo, s0[0], s0[1], s0[2]});
        }
        SIEVE_CHECK(s[0] == s0[0] && s[1] == s0[1] && s[2] == s0[2], "loader: batch ", k, ": sample '", ds_.id(i),
                    "' transformed to [", s[0], ",", s[1], ",", s[2], "] but sample '", b.ids.at(0), "' to [", s0[0],
                    ",", s0[1], ",", s0[2], "]; add a Resize/CenterCrop so all samples match");
        std::memcpy(b.images.data() + b.indices.size() * per, y.data(), per * sizeof(float));
      } catch (const Error& e) {
        if (opt_.on_error == OnError::fail)
          fail("loader: epoch ", epoch_, " batch ", k, ": sample '", ds_.id(i), "' (", ds_.source(i), ") failed: ",
               e.what());
        b.skipped.push_back({i, ds_.id(i), ds_.source(i), e.what()});
        continue;
      }
      b.indices.push_back(i);
      b.ids.push_back(ds_.id(i));
      b.labels.push_back(ds_.labels(i));
    }
    if (b.indices.empty()) {
      b.images = Tensor4f::from_shape({0, 3, 0, 0});
    } else if (b.indices.size() < hi - lo) {  // skipped samples: shrink to the delivered count
      Tensor4f kept = Tensor4f::from_shape({b.indices.size(), s0[0], s0[1], s0[2]});
      std::memcpy(kept.data(), b.images.data(), kept.size() * sizeof(float));
      b.images = std::move(kept);
    }
    return b;
  }

  const Dataset& ds_;
  Transform proto_;
  LoaderOptions opt_;
  std::optional<Transform> local_;
  std::uint64_t epoch_ = 0;
  std::vector<std::size_t> order_;
  bool started_ = false;

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::thread> threads_;
  std::size_t next_claim_ = 0, next_deliver_ = 0, end_ = 0;
  bool stopping_ = false;
  std::map<std::size_t, Result> ready_;
  std::vector<SkippedSample> skipped_;
};

}  // namespace sieve::io
