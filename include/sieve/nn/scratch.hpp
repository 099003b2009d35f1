#pragma once
/// ScratchPool: the memory plan for temporaries that live only inside one layer's forward or
/// one block's backward (input gradients, residual-branch outputs). A model owns one pool and
/// its layers take views of numbered slots, so a 50-layer network needs a handful of buffers
/// instead of one per layer.

#include <cstddef>
#include <memory>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/xt.hpp"

namespace sieve::nn {

template <class T>
class ScratchPool {
 public:
  /// Slot i grows to hold at least `elements` values. Growth happens only while shapes are
  /// new (the first steps), and invalidates earlier views of that slot: callers reserve what
  /// they will view before taking any view (a Bottleneck's forward its two forward slots,
  /// ResNet::backward every block's backward slots at once), so no live view is ever moved.
  void reserve(std::size_t slot, std::size_t elements) {
    if (slots_.size() <= slot) slots_.resize(slot + 1);
    if (slots_[slot].size() < elements) {
      slots_[slot].clear();
      slots_[slot].shrink_to_fit();  // release before growing: never hold both
      slots_[slot].resize(elements);
    }
  }
  /// A view of slot i shaped `s`. Requires: reserve(i, >= elements of s) was called.
  TensorRef4<T> view(std::size_t slot, const Shape<4>& s) {
    const std::size_t n = shape_size(s);
    SIEVE_CHECK(slot < slots_.size() && slots_[slot].size() >= n, "ScratchPool.view: slot ", slot, " holds ",
                slot < slots_.size() ? slots_[slot].size() : 0, " elements, [", s[0], ",", s[1], ",", s[2], ",",
                s[3], "] needs ", n, " (reserve first)");
    return {slots_[slot].data(), s};
  }
  /// Elements held over all slots (for memory accounting in tests and benchmarks).
  std::size_t held() const {
    std::size_t n = 0;
    for (const auto& v : slots_) n += v.size();
    return n;
  }

 private:
  std::vector<std::vector<T>> slots_;
};

template <class T>
using ScratchHandle = std::shared_ptr<ScratchPool<T>>;

}  // namespace sieve::nn
