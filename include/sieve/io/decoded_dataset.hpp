#pragma once
/// A dataset decoded once and held in memory. Small images (Fashion-MNIST's 28x28 PNGs) cost
/// more to open and decode than to train on: decoding the ~58,000 training files anew every
/// epoch spends a core's seconds per epoch that the convolutions need. Decoded, they take
/// H*W*3 bytes each (136 MB for 58,000 images of 28x28) and the loader only crops and flips.

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/parallel.hpp"
#include "sieve/io/dataset.hpp"
#include "sieve/io/image.hpp"

namespace sieve::io {

/// Called with (images decoded, total) now and then; may be empty.
using DecodeProgress = std::function<void(std::size_t, std::size_t)>;

/// Every sample of another dataset, decoded. ids, sources and labels are the original's, so
/// errors and batches still name the files.
class DecodedDataset final : public Dataset {
 public:
  /// Decodes every sample of `ds` on sieve's threads, or returns nullopt as soon as the
  /// decoded pixels would pass `max_bytes` (the caller then reads files as before).
  /// Ensures: load(i) equals ds.load(i). Throws one sieve::Error listing every sample that
  /// fails (its id, file and reason, as ds.load names them), not only the first.
  static std::optional<DecodedDataset> decode(const Dataset& ds, std::uint64_t max_bytes,
                                              const DecodeProgress& progress = {}) {
    DecodedDataset out;
    const std::size_t n = ds.size();
    out.images_.resize(n);
    out.ids_.reserve(n), out.sources_.reserve(n), out.labels_.reserve(n);
    for (std::size_t i = 0; i < n; ++i)
      out.ids_.push_back(ds.id(i)), out.sources_.push_back(ds.source(i)), out.labels_.push_back(ds.labels(i));
    std::atomic<std::uint64_t> bytes{0};
    std::atomic<bool> over{false};
    for_each_sample(ds, progress, over, [&](std::size_t i, Image&) {
      Image& im = out.images_[i];  // on a throw left as is: the error ends decode
      ds.load(i, im);
      im.pixels.shrink_to_fit();
      if (bytes.fetch_add(im.size()) + im.size() > max_bytes) over = true;
    });
    if (over) return std::nullopt;
    out.bytes_ = bytes.load();
    return out;
  }

  /// Decodes every sample of `ds` on sieve's threads, keeping nothing, and throws one
  /// sieve::Error listing every sample that fails: the check that names each bad image before
  /// work that would meet them one at a time, for sets too large to keep (see decode).
  static void check_all(const Dataset& ds, const DecodeProgress& progress = {}) {
    const std::atomic<bool> never{false};
    for_each_sample(ds, progress, never, [&](std::size_t i, Image& scratch) { ds.load(i, scratch); });
  }

  std::size_t size() const override { return images_.size(); }
  std::string id(std::size_t i) const override { return ids_.at(i); }
  std::string source(std::size_t i) const override { return sources_.at(i); }
  std::vector<std::int32_t> labels(std::size_t i) const override { return labels_.at(i); }
  void load(std::size_t i, Image& out) const override {
    SIEVE_CHECK(i < images_.size(), "DecodedDataset: index ", i, " out of range (size ", images_.size(), ")");
    const Image& im = images_[i];
    out.reshape(im.height, im.width);
    std::copy(im.pixels.begin(), im.pixels.end(), out.pixels.begin());
  }
  /// Bytes of decoded pixels held.
  std::uint64_t bytes() const { return bytes_; }

 private:
  DecodedDataset() = default;

  // visit(i, scratch) for every sample, in chunks on sieve's threads (`scratch`: one image
  // buffer per parallel part), until `stop` is set; the progress callback runs on the calling
  // thread between chunks. Each sample's sieve::Error is kept, and all are thrown as one.
  template <class Visit>
  static void for_each_sample(const Dataset& ds, const DecodeProgress& progress, const std::atomic<bool>& stop,
                              Visit visit) {
    const std::size_t n = ds.size(), chunk = 4096;
    std::vector<std::string> errors(n);  // by sample: each thread writes only its own
    for (std::size_t lo = 0; lo < n && !stop; lo += chunk) {
      const std::size_t hi = std::min(n, lo + chunk);
      parallel_for(hi - lo, 16, [&](std::size_t a, std::size_t b) {
        Image scratch;
        for (std::size_t i = lo + a; i < lo + b && !stop.load(std::memory_order_relaxed); ++i) {
          try {
            visit(i, scratch);
          } catch (const Error& e) {
            errors[i] = e.what();
          }
        }
      });
      if (progress) progress(hi, n);
    }
    std::vector<std::string> bad;
    for (const auto& e : errors)
      if (!e.empty()) bad.push_back(e);
    if (!bad.empty()) fail(bad.size(), " of ", n, " images cannot be decoded:", join_problems(bad, 10));
  }
  std::vector<Image> images_;
  std::vector<std::string> ids_, sources_;
  std::vector<std::vector<std::int32_t>> labels_;
  std::uint64_t bytes_ = 0;
};

}  // namespace sieve::io
