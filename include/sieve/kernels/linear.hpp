#pragma once
/// Fully connected layer, PyTorch layout: y = x w^T + b with w stored [Out, In].

#include <cstddef>

#include "sieve/kernels/gemm.hpp"

namespace sieve::kernels {

/// y = x w^T + b. x: [N,In] w: [Out,In] b: [Out] (may be null) -> y: [N,Out] (assigned).
template <class T>
void linear_forward(const T* x, const T* w, const T* b, T* y, std::size_t N, std::size_t In, std::size_t Out) {
  gemm(Trans::no, Trans::yes, N, Out, In, T(1), x, w, T(0), y);
  if (b)
    for (std::size_t i = 0; i < N; ++i)
      for (std::size_t o = 0; o < Out; ++o) y[i * Out + o] += b[o];
}

/// dx = dy w (assigned). dy: [N,Out] w: [Out,In] -> dx: [N,In].
template <class T>
void linear_backward_input(const T* dy, const T* w, T* dx, std::size_t N, std::size_t In, std::size_t Out) {
  gemm(Trans::no, Trans::no, N, In, Out, T(1), dy, w, T(0), dx);
}

/// dw += dy^T x, db += sum_n dy (accumulated; db may be null).
/// x: [N,In] dy: [N,Out] -> dw: [Out,In], db: [Out].
template <class T>
void linear_backward_params(const T* x, const T* dy, T* dw, T* db, std::size_t N, std::size_t In, std::size_t Out) {
  gemm(Trans::yes, Trans::no, Out, In, N, T(1), dy, x, T(1), dw);
  if (db)
    for (std::size_t i = 0; i < N; ++i)
      for (std::size_t o = 0; o < Out; ++o) db[o] += dy[i * Out + o];
}

}  // namespace sieve::kernels
