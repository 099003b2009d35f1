#pragma once
/// Rectified linear unit, elementwise on a contiguous buffer.

#include <cstddef>

namespace sieve::kernels {

/// y = max(x, 0). x, y: [n]; y may alias x (in place).
template <class T>
void relu_forward(const T* x, T* y, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) y[i] = x[i] > T(0) ? x[i] : T(0);
}

/// dx = dy where the forward output y > 0, else 0 (assigned; the derivative at 0 is 0, as
/// PyTorch). y, dy, dx: [n]; dx may alias dy.
template <class T>
void relu_backward(const T* y, const T* dy, T* dx, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    const T g = dy[i];  // loaded unconditionally: a select, not a branch per value
    dx[i] = y[i] > T(0) ? g : T(0);
  }
}

}  // namespace sieve::kernels
