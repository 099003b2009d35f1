#pragma once
/// Fashion-MNIST reader: the gzip'd IDX files of Debian's dataset-fashion-mnist
/// (/usr/share/datasets/fashion-mnist), validated, as a Dataset of 28x28 gray images
/// (served as RGB with R = G = B) and labels 0..9.

#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/io/dataset.hpp"

namespace sieve::io {

namespace detail {
/// Decompress a whole .gz file (or a plain file: gzread passes those through), capped.
inline std::vector<std::uint8_t> read_gz(const std::filesystem::path& path, std::size_t max_bytes) {
  gzFile f = ::gzopen(path.c_str(), "rb");
  if (f == nullptr) fail(path.string(), ": cannot open");
  std::vector<std::uint8_t> out;
  std::uint8_t buf[1 << 16];
  for (;;) {
    const int n = ::gzread(f, buf, sizeof buf);
    if (n < 0) {
      int code = 0;
      const std::string why = ::gzerror(f, &code);
      ::gzclose(f);
      fail(path.string(), ": gzip decompression failed after ", out.size(), " bytes: ", why);
    }
    if (n == 0) break;
    out.insert(out.end(), buf, buf + n);
    if (out.size() > max_bytes) {
      ::gzclose(f);
      fail(path.string(), ": decompresses to more than ", max_bytes, " bytes");
    }
  }
  ::gzclose(f);
  return out;
}

inline std::uint32_t idx_u32(const std::vector<std::uint8_t>& b, std::size_t i) {
  return (std::uint32_t{b[i]} << 24) | (std::uint32_t{b[i + 1]} << 16) | (std::uint32_t{b[i + 2]} << 8) | b[i + 3];
}
}  // namespace detail

/// IDX image file contents: count images of rows x cols bytes.
struct IdxImages {
  std::size_t count = 0, rows = 0, cols = 0;
  std::vector<std::uint8_t> pixels;
};

/// Read an IDX3 ubyte image file (magic 0x00000803). Validates magic, dims and length.
inline IdxImages read_idx_images(const std::filesystem::path& path, std::size_t max_bytes = std::size_t{1} << 30) {
  auto b = detail::read_gz(path, max_bytes);
  if (b.size() < 16) fail(path.string(), ": IDX image file truncated: ", b.size(), " bytes, header needs 16");
  const std::uint32_t magic = detail::idx_u32(b, 0);
  if (magic != 0x00000803u)
    fail(path.string(), ": bad IDX image magic 0x", std::hex, magic, " (expected 0x00000803: ubyte, 3 dims)");
  IdxImages out;
  out.count = detail::idx_u32(b, 4);
  out.rows = detail::idx_u32(b, 8);
  out.cols = detail::idx_u32(b, 12);
  if (out.rows == 0 || out.cols == 0 || out.rows > 4096 || out.cols > 4096)
    fail(path.string(), ": IDX image dims ", out.rows, "x", out.cols, " out of range");
  const std::uint64_t need = std::uint64_t{out.count} * out.rows * out.cols;
  if (b.size() - 16 < need)
    fail(path.string(), ": IDX image file truncated: header declares ", out.count, " images of ", out.rows, "x",
         out.cols, " (", need, " bytes) but only ", b.size() - 16, " follow");
  if (b.size() - 16 > need)
    fail(path.string(), ": IDX image file has ", b.size() - 16 - need, " unexpected trailing bytes");
  out.pixels.assign(b.begin() + 16, b.end());
  return out;
}

/// Read an IDX1 ubyte label file (magic 0x00000801); every label must be < num_classes.
inline std::vector<std::uint8_t> read_idx_labels(const std::filesystem::path& path, std::uint32_t num_classes = 10) {
  auto b = detail::read_gz(path, std::size_t{1} << 28);
  if (b.size() < 8) fail(path.string(), ": IDX label file truncated: ", b.size(), " bytes, header needs 8");
  const std::uint32_t magic = detail::idx_u32(b, 0);
  if (magic != 0x00000801u)
    fail(path.string(), ": bad IDX label magic 0x", std::hex, magic, " (expected 0x00000801: ubyte, 1 dim)");
  const std::size_t count = detail::idx_u32(b, 4);
  if (b.size() - 8 != count)
    fail(path.string(), ": IDX label file declares ", count, " labels but holds ", b.size() - 8);
  std::vector<std::uint8_t> labels(b.begin() + 8, b.end());
  for (std::size_t i = 0; i < labels.size(); ++i)
    if (labels[i] >= num_classes)
      fail(path.string(), ": label ", int(labels[i]), " of sample ", i, " is not below ", num_classes);
  return labels;
}

/// Fashion-MNIST as a Dataset; ids are "<split>:<index>".
class FashionMnist final : public Dataset {
 public:
  /// Class names in label order (Zalando's README).
  static constexpr const char* class_names[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                  "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

  /// Load split "train" or "t10k" from `dir` (files <split>-images-idx3-ubyte.gz and
  /// <split>-labels-idx1-ubyte.gz). Requires: matching counts, 28x28 images, labels < 10.
  FashionMnist(const std::filesystem::path& dir, const std::string& split) : split_(split) {
    SIEVE_CHECK(split == "train" || split == "t10k", "FashionMnist: split '", split, "' must be 'train' or 't10k'");
    const auto ip = dir / (split + "-images-idx3-ubyte.gz");
    const auto lp = dir / (split + "-labels-idx1-ubyte.gz");
    images_ = read_idx_images(ip);
    labels_ = read_idx_labels(lp);
    if (images_.rows != 28 || images_.cols != 28)
      fail(ip.string(), ": Fashion-MNIST images must be 28x28, found ", images_.rows, "x", images_.cols);
    if (images_.count != labels_.size())
      fail(ip.string(), " holds ", images_.count, " images but ", lp.string(), " holds ", labels_.size(), " labels");
    source_ = ip.filename().string();
  }

  std::size_t size() const override { return images_.count; }
  std::string id(std::size_t i) const override { return split_ + ":" + std::to_string(i); }
  std::string source(std::size_t i) const override { return source_ + "[" + std::to_string(i) + "]"; }
  std::vector<std::int32_t> labels(std::size_t i) const override { return {label(i)}; }
  std::int32_t label(std::size_t i) const {
    SIEVE_CHECK(i < labels_.size(), "FashionMnist: index ", i, " out of range (size ", labels_.size(), ")");
    return labels_[i];
  }
  /// The 784 gray bytes of image i.
  const std::uint8_t* gray(std::size_t i) const {
    SIEVE_CHECK(i < images_.count, "FashionMnist: index ", i, " out of range (size ", images_.count, ")");
    return images_.pixels.data() + i * 784;
  }
  void load(std::size_t i, Image& out) const override {
    const std::uint8_t* g = gray(i);
    out.reshape(28, 28);
    for (std::size_t p = 0; p < 784; ++p) out.pixels[p * 3] = out.pixels[p * 3 + 1] = out.pixels[p * 3 + 2] = g[p];
  }

 private:
  std::string split_, source_;
  IdxImages images_;
  std::vector<std::uint8_t> labels_;
};

}  // namespace sieve::io
