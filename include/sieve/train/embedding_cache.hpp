#pragma once
/// Frozen-backbone fast path: backbone embeddings computed once and cached on disk.
///
/// With a frozen backbone and no augmentation, every epoch would recompute the same [N,2048]
/// embeddings — on 2 CPU cores that is nearly all of the time. The cache stores them in a
/// safetensors file keyed by (content hash of every image, transform description, hash of the
/// backbone weights); the head then trains on them in seconds. Any change of images, order,
/// transform or weights is a different key, so a stale cache is never used.

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <algorithm>
#include <functional>
#include <optional>
#include <type_traits>
#include <span>
#include <string>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/param.hpp"
#include "sieve/core/xt.hpp"
#include "sieve/io/safetensors.hpp"

namespace sieve::train {

/// 64-bit FNV-1a over bytes, continuing from `h` (chain calls to hash several pieces).
inline std::uint64_t fnv1a64(std::span<const std::byte> data, std::uint64_t h = 0xcbf29ce484222325ull) {
  for (const std::byte b : data) {
    h ^= static_cast<std::uint64_t>(b);
    h *= 0x100000001b3ull;
  }
  return h;
}

inline std::uint64_t fnv1a64(std::string_view s, std::uint64_t h = 0xcbf29ce484222325ull) {
  return fnv1a64(std::as_bytes(std::span<const char>(s.data(), s.size())), h);
}

/// Hash of a model's weights: names, shapes and exact value bits of parameters and buffers.
template <class T>
std::uint64_t weights_hash(const std::vector<ParamRef<T>>& params, const std::vector<BufferRef<T>>& buffers = {}) {
  std::uint64_t h = fnv1a64(std::string_view("sieve-weights"));
  auto shape_bytes = [](const std::vector<std::size_t>& s) {
    return std::as_bytes(std::span<const std::size_t>(s.data(), s.size()));
  };
  for (const auto& p : params) {
    h = fnv1a64(p.name, h);
    h = fnv1a64(shape_bytes(p.shape), h);
    h = fnv1a64(std::as_bytes(std::span<const T>(p.value.data(), p.value.size())), h);
  }
  for (const auto& b : buffers) {
    h = fnv1a64(b.name, h);
    if (b.is_count()) continue;  // num_batches_tracked does not change what eval mode computes
    h = fnv1a64(shape_bytes(b.shape), h);
    h = fnv1a64(std::as_bytes(std::span<const T>(b.value.data(), b.value.size())), h);
  }
  return h;
}

/// What the cached embeddings depend on.
struct EmbeddingCacheKey {
  std::vector<std::uint64_t> content_hashes;  ///< one per image, in dataset order (e.g. fnv1a64 of the file bytes)
  std::string transform;                      ///< e.g. "resize(256)|center_crop(224)|normalize(imagenet)"
  std::uint64_t weights_hash = 0;             ///< weights_hash(backbone params, buffers)

  std::uint64_t digest() const {
    std::uint64_t h = fnv1a64(transform);
    h = fnv1a64(std::as_bytes(std::span<const std::uint64_t>(&weights_hash, 1)), h);
    return fnv1a64(std::as_bytes(std::span<const std::uint64_t>(content_hashes.data(), content_hashes.size())), h);
  }
};

/// A directory of cached embedding files, one per key.
template <class T>
class EmbeddingCache {
 public:
  /// embed(begin, end) -> Tensor2<T> [end-begin, D]: embeddings of items [begin, end).
  using EmbedFn = std::function<Tensor2<T>(std::size_t begin, std::size_t end)>;

  explicit EmbeddingCache(std::filesystem::path dir) : dir_(std::move(dir)) {}

  std::filesystem::path path_for(const EmbeddingCacheKey& key) const {
    char buf[40];
    std::snprintf(buf, sizeof buf, "emb-%016llx.safetensors", static_cast<unsigned long long>(key.digest()));
    return dir_ / buf;
  }

  /// The embeddings for `key`: read from the cache when a file with the same key exists and
  /// verifies (hit), else computed by `embed` in batches of `batch_size` and stored (miss).
  /// A corrupt or mismatching cache file counts as a miss and is overwritten.
  /// Requires: key.content_hashes non-empty; embed returns [end-begin, D] with the same D each call.
  Tensor2<T> get_or_compute(const EmbeddingCacheKey& key, std::size_t batch_size, const EmbedFn& embed) {
    const std::size_t N = key.content_hashes.size();
    SIEVE_CHECK(N > 0 && batch_size > 0, "EmbeddingCache: ", N, " items, batch_size ", batch_size);
    const auto path = path_for(key);
    if (std::filesystem::exists(path)) {
      if (auto hit = try_load(path, key)) {
        last_hit_ = true;
        ++hits_;
        return std::move(*hit);
      }
    }
    last_hit_ = false;
    ++misses_;
    Tensor2<T> out;
    std::size_t D = 0;
    for (std::size_t b = 0; b < N; b += batch_size) {
      const std::size_t e = std::min(N, b + batch_size);
      const Tensor2<T> part = embed(b, e);
      SIEVE_CHECK(part.shape()[0] == e - b && (D == 0 || part.shape()[1] == D), "EmbeddingCache: embed(", b, ", ", e,
                  ") returned [", part.shape()[0], ",", part.shape()[1], "], expected [", e - b, ",", (D ? D : part.shape()[1]), "]");
      if (D == 0) {
        D = part.shape()[1];
        out = xt::zeros<T>(Shape<2>{N, D});
      }
      std::copy(part.data(), part.data() + part.size(), out.data() + b * D);
    }
    std::filesystem::create_directories(dir_);
    io::SafeTensorsWriter w;
    w.add("embeddings", {N, D}, std::span<const T>(out.data(), out.size()));
    std::vector<std::int64_t> ids(key.content_hashes.begin(), key.content_hashes.end());
    w.add("content_hashes", {N}, std::span<const std::int64_t>(ids));
    w.set_metadata("transform", key.transform);
    w.set_metadata("weights_hash", std::to_string(key.weights_hash));
    w.write(path);
    return out;
  }

  bool last_was_hit() const { return last_hit_; }
  std::size_t hits() const { return hits_; }
  std::size_t misses() const { return misses_; }

 private:
  std::optional<Tensor2<T>> try_load(const std::filesystem::path& path, const EmbeddingCacheKey& key) const {
    try {
      const auto st = io::SafeTensors::load(path);
      const auto& meta = st.metadata();
      const auto t = meta.find("transform"), w = meta.find("weights_hash");
      if (t == meta.end() || t->second != key.transform || w == meta.end() || w->second != std::to_string(key.weights_hash))
        return std::nullopt;
      const auto ids = st.ints("content_hashes");
      if (ids.size() != key.content_hashes.size()) return std::nullopt;
      for (std::size_t i = 0; i < ids.size(); ++i)
        if (static_cast<std::uint64_t>(ids[i]) != key.content_hashes[i]) return std::nullopt;
      const auto& info = st.info("embeddings");
      if (info.shape.size() != 2 || info.shape[0] != ids.size()) return std::nullopt;
      Tensor2<T> out = xt::zeros<T>(Shape<2>{info.shape[0], info.shape[1]});
      if constexpr (std::is_same_v<T, float>) {
        const auto v = st.floats("embeddings");
        std::copy(v.begin(), v.end(), out.data());
      } else {
        const auto v = st.doubles("embeddings");
        std::copy(v.begin(), v.end(), out.data());
      }
      return out;
    } catch (const std::exception&) {
      return std::nullopt;  // unreadable: recompute and overwrite
    }
  }

  std::filesystem::path dir_;
  bool last_hit_ = false;
  std::size_t hits_ = 0, misses_ = 0;
};

}  // namespace sieve::train
