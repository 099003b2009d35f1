#pragma once
/// A BatchLoader over tensors held in memory (cached embeddings, small datasets, tests).

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/rng.hpp"
#include "sieve/core/xt.hpp"
#include "sieve/io/loader.hpp"

namespace sieve::train {

/// Samples are the rows (axis 0) of `x` and `y`. Each epoch visits them in io::EpochSampler's
/// order (the file loader's and the data-parallel shards' too), so batch b of epoch e is a pure
/// function of (seed, e, b): start_epoch(e, b) resumes exactly.
template <class T, std::size_t RX, class U, std::size_t RY>
class InMemoryLoader {
 public:
  struct Batch {
    Tensor<T, RX> x;
    Tensor<U, RY> y;
  };

  /// Requires: x and y have the same number of rows > 0; batch_size > 0.
  InMemoryLoader(Tensor<T, RX> x, Tensor<U, RY> y, std::size_t batch_size, std::uint64_t seed, bool shuffle = true)
      : x_(std::move(x)), y_(std::move(y)), bs_(batch_size), seed_(seed), shuffle_(shuffle) {
    SIEVE_CHECK(x_.shape()[0] == y_.shape()[0] && x_.shape()[0] > 0 && bs_ > 0, "InMemoryLoader: x has ",
                x_.shape()[0], " rows, y has ", y_.shape()[0], ", batch_size ", bs_, " (need equal rows > 0, batch > 0)");
  }

  std::size_t size() const { return x_.shape()[0]; }
  std::int64_t num_batches(std::int64_t /*epoch*/) const { return static_cast<std::int64_t>((size() + bs_ - 1) / bs_); }

  void start_epoch(std::int64_t epoch, std::int64_t batch) {
    SIEVE_CHECK(batch >= 0 && batch <= num_batches(epoch), "InMemoryLoader: batch ", batch, " outside [0, ",
                num_batches(epoch), "]");
    order_ = io::EpochSampler{size(), seed_, shuffle_}.order(static_cast<std::uint64_t>(epoch));
    cursor_ = static_cast<std::size_t>(batch) * bs_;
  }

  /// Ensures: the next batch in this epoch's order (the last one may be smaller).
  const Batch& next_batch() {
    SIEVE_CHECK(cursor_ < size(), "InMemoryLoader: next_batch past the end of the epoch (", size(), " samples)");
    const std::size_t n = std::min(bs_, size() - cursor_);
    copy_rows(x_, batch_.x, n);
    copy_rows(y_, batch_.y, n);
    cursor_ += n;
    return batch_;
  }

 private:
  template <class V, std::size_t R>
  void copy_rows(const Tensor<V, R>& src, Tensor<V, R>& dst, std::size_t n) const {
    Shape<R> shape;
    for (std::size_t d = 0; d < R; ++d) shape[d] = src.shape()[d];
    shape[0] = n;
    ensure_shape(dst, shape);
    const std::size_t row = src.size() / src.shape()[0];
    for (std::size_t i = 0; i < n; ++i)
      std::memcpy(dst.data() + i * row, src.data() + order_[cursor_ + i] * row, row * sizeof(V));
  }

  Tensor<T, RX> x_;
  Tensor<U, RY> y_;
  std::size_t bs_;
  std::uint64_t seed_;
  bool shuffle_;
  std::vector<std::size_t> order_;
  std::size_t cursor_ = 0;
  Batch batch_;
};

}  // namespace sieve::train
