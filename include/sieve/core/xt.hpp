#pragma once
/// The one place sieve includes xtensor: every other header includes this one.
/// Fixed-rank xt::xtensor only: under -std=c++20 with GCC 12, xtensor 0.24.3's dynamic-rank
/// xt::xarray reducer chains and xt::pad misbehave (see STYLE.md).

#include <array>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <xtensor/xadapt.hpp>
#include <xtensor/xbuilder.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>

namespace sieve {

/// A dense, row-major tensor of fixed rank. Hot loops use .data() and explicit indexing.
template <class T, std::size_t Rank>
using Tensor = xt::xtensor<T, Rank>;

template <class T> using Tensor1 = Tensor<T, 1>;
template <class T> using Tensor2 = Tensor<T, 2>;
template <class T> using Tensor3 = Tensor<T, 3>;
template <class T> using Tensor4 = Tensor<T, 4>;

using Tensor1f = Tensor1<float>;
using Tensor2f = Tensor2<float>;
using Tensor3f = Tensor3<float>;
using Tensor4f = Tensor4<float>;
using Tensor4d = Tensor4<double>;

template <std::size_t Rank>
using Shape = std::array<std::size_t, Rank>;

/// Resize `t` to `shape` only when it differs, so steady-state buffers are reused.
template <class T, std::size_t Rank>
void ensure_shape(Tensor<T, Rank>& t, const Shape<Rank>& shape) {
  bool same = true;
  for (std::size_t i = 0; i < Rank; ++i) same = same && t.shape()[i] == shape[i];
  if (!same) t.resize(shape);
}

/// Elements of a tensor of this shape.
template <std::size_t Rank>
constexpr std::size_t shape_size(const Shape<Rank>& s) {
  std::size_t n = 1;
  for (std::size_t d : s) n *= d;
  return n;
}

/// A non-owning view of a dense row-major buffer with a fixed-rank shape. Stages take their
/// temporary gradients as TensorRefs so one model-wide scratch pool (nn::ScratchPool) can back
/// many layers' buffers without reallocating; T may be const for read-only views.
template <class T, std::size_t Rank>
struct TensorRef {
  T* data = nullptr;
  Shape<Rank> shape{};

  TensorRef() = default;
  TensorRef(T* d, const Shape<Rank>& s) : data(d), shape(s) {}
  /// Views of whole tensors, and const views of mutable ones, convert implicitly.
  TensorRef(Tensor<std::remove_const_t<T>, Rank>& t) : data(t.data()) { copy_shape(t.shape()); }
  TensorRef(const Tensor<std::remove_const_t<T>, Rank>& t)
    requires std::is_const_v<T>
      : data(t.data()) {
    copy_shape(t.shape());
  }
  template <class U>
    requires(std::is_const_v<T> && std::is_same_v<U, std::remove_const_t<T>>)
  TensorRef(const TensorRef<U, Rank>& o) : data(o.data), shape(o.shape) {}

  std::size_t size() const { return shape_size(shape); }

 private:
  template <class S>
  void copy_shape(const S& s) {
    for (std::size_t i = 0; i < Rank; ++i) shape[i] = s[i];
  }
};

template <class T> using TensorRef4 = TensorRef<T, 4>;

}  // namespace sieve
