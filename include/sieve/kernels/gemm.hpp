#pragma once
/// The one BLAS wrapper: every BLAS product in sieve goes through gemm() below. On builds with
/// AVX-512 its float products are sieve's own (sgemm_avx512.hpp says why), not BLAS's. (Float
/// convolution forwards in evaluation do not use BLAS: their products, batch-folded 1x1,
/// Winograd's and im2col's, take sgemm_fused.hpp, which applies the convolution's epilogue in
/// its registers.)
///
/// Conventions, stated once: all matrices are row-major and dense. gemm computes
///   C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C[M,N]
/// with op(X) = X or X^T. The leading dimension of a row-major matrix is its row length as
/// stored: A is stored [M,K] (lda = K) or, when transposed, [K,M] (lda = M); likewise B is
/// [K,N] (ldb = N) or [N,K] (ldb = K); C is [M,N] (ldc = N). Callers pass only the logical
/// sizes, so no call site reasons about leading dimensions again.
///
/// The wrapper calls BLAS's Fortran interface (sgemm_/dgemm_), declared below exactly as
/// OpenBLAS's f77blas.h does: including <cblas.h> here would clash with the CBLAS declarations
/// xtensor-blas bundles (xflens), and users may include both. Fortran is column-major, so the
/// row-major product C = op(A) op(B) is computed as the column-major C^T = op(B)^T op(A)^T:
/// the operands swap places and the row-major leading dimensions carry over unchanged.

#include <algorithm>
#include <cstddef>
#include <limits>
#include <type_traits>

#include "sieve/core/check.hpp"
#include "sieve/core/parallel.hpp"
#include "sieve/kernels/sgemm_avx512.hpp"

extern "C" {
void sgemm_(char*, char*, int*, int*, int*, float*, float*, int*, float*, int*, float*, float*, int*);
void dgemm_(char*, char*, int*, int*, int*, double*, double*, int*, double*, int*, double*, double*, int*);
void openblas_set_num_threads(int);
int openblas_get_num_threads(void);
}

namespace sieve::kernels {

enum class Trans : bool { no = false, yes = true };

namespace detail {
// One BLAS call with explicit row-major leading dimensions (see the header comment).
template <class T>
void blas_gemm(Trans ta, Trans tb, int m, int n, int k, T alpha, const T* A, int lda, const T* B, int ldb, T beta,
             T* C, int ldc) {
  char opa = ta == Trans::yes ? 'T' : 'N', opb = tb == Trans::yes ? 'T' : 'N';
  // Column-major view: C^T[N,M] = op(B)^T[N,K] * op(A)^T[K,M].
  auto* a = const_cast<T*>(A);  // the Fortran interface is not const-correct; BLAS only reads A, B
  auto* b = const_cast<T*>(B);
  if constexpr (std::is_same_v<T, float>)
    sgemm_(&opb, &opa, &n, &m, &k, &alpha, b, &ldb, a, &lda, &beta, C, &ldc);
  else
    dgemm_(&opb, &opa, &n, &m, &k, &alpha, b, &ldb, a, &lda, &beta, C, &ldc);
}

// OpenBLAS runs every call on the calling thread: sieve's own threads are the only level of
// parallelism (core/parallel.hpp). Done once, before the first product.
inline void blas_pin_single_thread() {
  static const bool pinned = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)pinned;
}
}  // namespace detail

/// Products smaller than this many multiply-adds run on one thread.
inline constexpr std::size_t gemm_parallel_min_macs = std::size_t{1} << 21;

/// As gemm below, with explicit leading dimensions (row lengths as stored; see the header
/// comment): A, B or C may be a block of columns of a wider matrix, e.g. one group of
/// samples in a batch-folded [C, N*H*W] activation. Requires: each ld at least its stored
/// row's length; sizes fit in int.
template <class T>
void gemm_ld(Trans ta, Trans tb, std::size_t M, std::size_t N, std::size_t K, T alpha, const T* A, std::size_t lda,
             const T* B, std::size_t ldb, T beta, T* C, std::size_t ldc) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "gemm: float or double only");
  constexpr auto int_max = static_cast<std::size_t>(std::numeric_limits<int>::max());
  SIEVE_CHECK(M <= int_max && N <= int_max && K <= int_max && lda <= int_max && ldb <= int_max && ldc <= int_max,
              "gemm: M=", M, " N=", N, " K=", K, " or a leading dimension exceeds BLAS's int index range");
  SIEVE_CHECK(lda >= (ta == Trans::yes ? M : K) && ldb >= (tb == Trans::yes ? K : N) && ldc >= N,
              "gemm: leading dimensions lda=", lda, " ldb=", ldb, " ldc=", ldc, " are shorter than the rows of a ",
              M, "x", K, " by ", K, "x", N, " product");
  if (M == 0 || N == 0) return;
  detail::blas_pin_single_thread();
  const int m = static_cast<int>(M), k = static_cast<int>(K);
  // BLAS rejects a leading dimension of 0 even when K == 0; keep them at least 1.
  const int la = std::max(1, static_cast<int>(lda)), lb = std::max(1, static_cast<int>(ldb)),
            lc = std::max(1, static_cast<int>(ldc));
  // Column blocks of C (multiples of 16 columns) keep every block a wide product.
  constexpr std::size_t align = 16;
  const std::size_t blocks = (N + align - 1) / align;
  const std::size_t max_parts = M * N * K < gemm_parallel_min_macs ? 1 : blocks;
  parallel_for_parts(blocks, max_parts, [&](std::size_t, std::size_t b0, std::size_t b1) {
    const std::size_t j0 = b0 * align, j1 = std::min(N, b1 * align);
    // Columns j0..j1 of op(B): B stored [K,N] -> offset j0; stored [N,K] (transposed) -> rows j0..
    const T* Bj = tb == Trans::yes ? B + j0 * ldb : B + j0;
    if constexpr (std::is_same_v<T, float> && sgemm512_available) {
      if (K > 0) {
        sgemm512(ta == Trans::yes, tb == Trans::yes, M, j1 - j0, K, alpha, A, lda, Bj, ldb, beta, C + j0, ldc);
        return;
      }
    }
    detail::blas_gemm(ta, tb, m, static_cast<int>(j1 - j0), k, alpha, A, la, Bj, lb, beta, C + j0, lc);
  });
}

/// Requires: A, B, C hold at least M*K, K*N, M*N elements; sizes fit in int (BLAS's index).
/// Ensures: outside a parallel region a large product is split into column blocks of C, one
/// per thread (each element's sum over K is computed in the same order whatever the split).
template <class T>
void gemm(Trans ta, Trans tb, std::size_t M, std::size_t N, std::size_t K, T alpha, const T* A, const T* B,
          T beta, T* C) {
  gemm_ld(ta, tb, M, N, K, alpha, A, ta == Trans::yes ? M : K, B, tb == Trans::yes ? K : N, beta, C, N);
}

/// Sets the threads of sieve's compute, kernels and BLAS calls alike: sieve::set_threads (kept
/// under this name for code written before sieve had its own threads; deprecated, to be removed).
[[deprecated("use sieve::set_threads")]] inline void blas_set_threads(int n) { set_threads(n); }
[[deprecated("use sieve::threads")]] inline int blas_threads() { return threads(); }

}  // namespace sieve::kernels
