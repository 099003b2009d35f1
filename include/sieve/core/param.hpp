#pragma once
/// Named references to a stage's parameters and buffers, under torchvision's state_dict names.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace sieve {

/// A trainable parameter: its value and its gradient (which accumulates until zero_grad()).
template <class T>
struct ParamRef {
  std::string name;                 ///< torchvision state_dict name, e.g. "layer1.0.conv1.weight"
  std::vector<std::size_t> shape;   ///< PyTorch shape, e.g. {K, C, KH, KW}
  std::span<T> value;
  std::span<T> grad;
  bool decay = true;                ///< false for BN affine parameters and biases
  bool* frozen = nullptr;           ///< when non-null and true, the optimizer skips it

  bool is_frozen() const { return frozen != nullptr && *frozen; }
};

/// A non-trainable tensor saved with the weights: BN running statistics (`value`), or a
/// step counter such as `num_batches_tracked` (`count` non-null, rank 0, int64 on disk).
template <class T>
struct BufferRef {
  std::string name;
  std::vector<std::size_t> shape;
  std::span<T> value;
  std::int64_t* count = nullptr;

  bool is_count() const { return count != nullptr; }
};

/// Prefix every name in `refs` with `prefix` (e.g. "layer1.0.").
template <class Ref>
std::vector<Ref> prefixed(std::vector<Ref> refs, const std::string& prefix) {
  for (auto& r : refs) r.name = prefix + r.name;
  return refs;
}

/// Append `more` to `into`.
template <class Ref>
void append(std::vector<Ref>& into, std::vector<Ref> more) {
  for (auto& r : more) into.push_back(std::move(r));
}

}  // namespace sieve
