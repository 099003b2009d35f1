#pragma once
/// Datasets: indexable samples (an image source plus labels). A label list holding only -1
/// (or empty) means "no label" (a distractor in retrieval terms).

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/io/image.hpp"

namespace sieve::io {

/// The interface loaders read. Implementations must make every const method safe to call
/// from several threads at once.
class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual std::size_t size() const = 0;
  /// Stable sample id (file stem, CSV id, "t10k:17" ...), used in errors and batches.
  virtual std::string id(std::size_t i) const = 0;
  /// Where the pixels come from (a path, or a description such as "train-images-idx3-ubyte.gz[17]").
  virtual std::string source(std::size_t i) const = 0;
  /// Class ids of sample i (multi-label); {-1} or {} = none.
  virtual std::vector<std::int32_t> labels(std::size_t i) const = 0;
  /// Decode sample i into `out` (RGB). Throws sieve::Error naming the sample and its source.
  virtual void load(std::size_t i, Image& out) const = 0;
  /// The most memory one load() may hold while it runs, beyond `out`'s final pixels (a file
  /// dataset's encoded bytes and decode buffers); 0 when negligible (samples already decoded).
  /// Loaders bound how many loads run at once by it (LoaderOptions::memory_budget).
  virtual std::uint64_t peak_load_bytes() const { return 0; }
};

/// One file-backed sample.
struct FileSample {
  std::string id;
  std::filesystem::path path;
  std::vector<std::int32_t> labels;  ///< {-1} or {} = no label
};

/// Samples stored as JPEG/PNG files, decoded on demand with DecodeLimits.
class FileDataset final : public Dataset {
 public:
  explicit FileDataset(std::vector<FileSample> samples, DecodeLimits limits = {})
      : samples_(std::move(samples)), limits_(limits) {}
  std::size_t size() const override { return samples_.size(); }
  std::string id(std::size_t i) const override { return at(i).id; }
  std::string source(std::size_t i) const override { return at(i).path.string(); }
  std::vector<std::int32_t> labels(std::size_t i) const override { return at(i).labels; }
  void load(std::size_t i, Image& out) const override {
    const auto& s = at(i);
    try {
      read_image_into(s.path, out, limits_);
    } catch (const Error& e) {
      fail("sample '", s.id, "': ", e.what());
    }
  }
  std::uint64_t peak_load_bytes() const override { return limits_.peak_bytes(); }
  const std::vector<FileSample>& samples() const { return samples_; }

  /// Reads every sample's image header (read_image_header: the checks of the limits, no pixel
  /// decoded) and returns one line per bad sample ("sample 'id': reason"), in order: what a
  /// command checks before work that a bad image would end midway. `progress(done, total)` is
  /// called every 1024 samples and at the end.
  std::vector<std::string> header_problems(const std::function<void(std::size_t, std::size_t)>& progress = {}) const {
    std::vector<std::string> out;
    for (std::size_t i = 0; i < samples_.size(); ++i) {
      try {
        (void)read_image_header(samples_[i].path, limits_);
      } catch (const Error& e) {
        out.push_back(str("sample '", samples_[i].id, "': ", e.what()));
      }
      if (progress && ((i + 1) % 1024 == 0 || i + 1 == samples_.size())) progress(i + 1, samples_.size());
    }
    return out;
  }

 private:
  const FileSample& at(std::size_t i) const {
    SIEVE_CHECK(i < samples_.size(), "FileDataset: index ", i, " out of range (size ", samples_.size(), ")");
    return samples_[i];
  }
  std::vector<FileSample> samples_;
  DecodeLimits limits_;
};

/// Decoded images held in memory (small sets, tests, synthetic data).
class MemoryDataset final : public Dataset {
 public:
  void add(std::string id, Image img, std::vector<std::int32_t> labels) {
    ids_.push_back(std::move(id));
    images_.push_back(std::move(img));
    labels_.push_back(std::move(labels));
  }
  std::size_t size() const override { return images_.size(); }
  std::string id(std::size_t i) const override { return ids_.at(i); }
  std::string source(std::size_t i) const override { return str("<memory>[", i, "]"); }
  std::vector<std::int32_t> labels(std::size_t i) const override { return labels_.at(i); }
  void load(std::size_t i, Image& out) const override {
    SIEVE_CHECK(i < images_.size(), "MemoryDataset: index ", i, " out of range (size ", images_.size(), ")");
    out = images_[i];
  }

 private:
  std::vector<std::string> ids_;
  std::vector<Image> images_;
  std::vector<std::vector<std::int32_t>> labels_;
};

/// A contiguous slice [lo, hi) of `base` as a dataset, e.g. the labelled head of a list, or one
/// rank's part of sharded inference (dist::shard_range).
class RangeDataset final : public Dataset {
 public:
  /// Requires: `base` outlives this view; lo <= hi <= base.size().
  RangeDataset(const Dataset& base, std::pair<std::size_t, std::size_t> range)
      : base_(base), lo_(range.first), hi_(range.second) {
    SIEVE_CHECK(lo_ <= hi_ && hi_ <= base.size(), "RangeDataset: [", lo_, ", ", hi_, ") outside a dataset of ",
                base.size());
  }
  std::size_t size() const override { return hi_ - lo_; }
  std::string id(std::size_t i) const override { return base_.id(at(i)); }
  std::string source(std::size_t i) const override { return base_.source(at(i)); }
  std::vector<std::int32_t> labels(std::size_t i) const override { return base_.labels(at(i)); }
  void load(std::size_t i, Image& out) const override { base_.load(at(i), out); }
  std::uint64_t peak_load_bytes() const override { return base_.peak_load_bytes(); }

 private:
  std::size_t at(std::size_t i) const {
    SIEVE_CHECK(i < size(), "RangeDataset: index ", i, " out of range (size ", size(), ")");
    return lo_ + i;
  }
  const Dataset& base_;
  std::size_t lo_, hi_;
};

/// True when the label list means "no label".
inline bool is_unlabelled(const std::vector<std::int32_t>& labels) {
  return labels.empty() || (labels.size() == 1 && labels[0] == -1);
}

}  // namespace sieve::io
