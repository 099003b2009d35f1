#pragma once
/// sieve's float matrix product on CPUs with AVX-512 (builds whose target has AVX512F):
///   C[M,N] = epi( alpha * op(A)[M,K] op(B)[K,N] + beta * C )
/// with gemm.hpp's conventions (row-major, leading dimensions as stored) and sgemm_fused.hpp's
/// row epilogue. gemm() sends its float products here on such builds, fused_sgemm likewise.
///
/// Why hand-written when OpenBLAS is linked: Debian 12's OpenBLAS (0.3.21) picks its kernels by
/// the CPU it recognises, and runs AVX2 ones (Haswell) on a CPU it does not know or when the
/// environment says OPENBLAS_CORETYPE=Haswell, as on the machines this project is measured on
/// (AMD EPYC with AVX-512). There its sgemm reached 100-122 GFLOP/s on one thread where
/// 512-bit FMAs give twice that (bench_gemm, benchmarks/nn.md "AVX-512 products"), and the
/// PyTorch peer's oneDNN convolutions use AVX-512 whatever OpenBLAS does. Written here, the
/// product also takes the convolutions' epilogue in its registers, and needs no workspace.
///
/// The algorithm: 8x32 register tiles, 16 accumulators of 16 floats. op(B) is packed one panel
/// of 32 columns and up to 256 k at a time ([k][32], 32 KB on the stack, stays in L1; from B^T,
/// the weight gradients' col^T, through 16x16 transposes), and every row panel of op(A) runs
/// against it. A is read in place (op(A) = A: 8 row pointers; op(A) = A^T: 8 adjacent floats of
/// one stored row), each value broadcast into the FMAs.
///
/// Numerics: every sum is taken in k order within blocks of 256, the blocks added in order;
/// results differ from BLAS's by rounding only, and do not depend on how C's columns are split
/// between threads.

#include <algorithm>
#include <cstddef>

#include "sieve/core/check.hpp"
#include "sieve/core/simd.hpp"

namespace sieve::kernels {

/// The epilogue of row i: scale/shift [M] (both or neither), residual rows with leading
/// dimension ldr (null: none), then the ReLU.
struct RowEpilogue {
  const float* scale = nullptr;
  const float* shift = nullptr;
  const float* residual = nullptr;
  std::size_t ldr = 0;
  bool relu = false;
};

/// True when this build has the AVX-512 product (the target has AVX512F).
inline constexpr bool sgemm512_available = SIEVE_AVX512 == 1;

inline constexpr std::size_t sgemm512_mr = 8, sgemm512_nr = 32, sgemm512_kc = 256;

#if SIEVE_AVX512
namespace detail {

// Columns [j0, j0 + cols) of B's rows [k0, k0 + kc) -> Bp[k][32], zero past cols.
inline void sgemm512_pack_b(const float* B, std::size_t ldb, std::size_t k0, std::size_t kc, std::size_t j0,
                            std::size_t cols, float* Bp) {
  const __mmask16 m0 = cols >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << cols) - 1);
  const __mmask16 m1 = cols >= 32 ? __mmask16(0xFFFF) : cols > 16 ? __mmask16((1u << (cols - 16)) - 1) : 0;
  const float* src = B + k0 * ldb + j0;
  for (std::size_t k = 0; k < kc; ++k, src += ldb, Bp += sgemm512_nr) {
    _mm512_store_ps(Bp, _mm512_maskz_loadu_ps(m0, src));
    _mm512_store_ps(Bp + 16, _mm512_maskz_loadu_ps(m1, src + 16));
  }
}

// r[0..15], 16 rows of 16 floats -> r[t] = column t (a 16x16 transpose in 4 shuffle stages:
// pairs of rows interleaved, then pairs of pairs, then 128-bit lanes twice). The zero-masked
// forms throughout: GCC 12's plain ones warn of their undefined pass-through operand.
inline void sgemm512_transpose16(__m512* r) {
  constexpr __mmask16 all = 0xFFFF;
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_maskz_unpacklo_ps(all, r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_maskz_unpackhi_ps(all, r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    const int b = 4 * i;
    r[b] = _mm512_maskz_shuffle_ps(all, t[b], t[b + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[b + 1] = _mm512_maskz_shuffle_ps(all, t[b], t[b + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[b + 2] = _mm512_maskz_shuffle_ps(all, t[b + 1], t[b + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[b + 3] = _mm512_maskz_shuffle_ps(all, t[b + 1], t[b + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_maskz_shuffle_f32x4(all, r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_maskz_shuffle_f32x4(all, r[i], r[i + 4], 0xDD);
    t[i + 8] = _mm512_maskz_shuffle_f32x4(all, r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_maskz_shuffle_f32x4(all, r[i + 8], r[i + 12], 0xDD);
  }
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_maskz_shuffle_f32x4(all, t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_maskz_shuffle_f32x4(all, t[i], t[i + 8], 0xDD);
  }
}

// op(B) = B^T (B stored [N,K]): rows [j0, j0 + cols) of B, their k in [k0, k0 + kc) ->
// Bp[k][32], 16 k at a time through 16x16 transposes. Columns past cols repeat the last row
// (computed, never stored).
inline void sgemm512_pack_bt(const float* B, std::size_t ldb, std::size_t k0, std::size_t kc, std::size_t j0,
                             std::size_t cols, float* Bp) {
  constexpr std::size_t NR = sgemm512_nr;
  for (std::size_t h = 0; h < NR; h += 16) {
    const float* row[16];
    for (std::size_t j = 0; j < 16; ++j) row[j] = B + (j0 + std::min(h + j, cols - 1)) * ldb + k0;
    for (std::size_t k = 0; k < kc; k += 16) {
      const std::size_t n = std::min<std::size_t>(16, kc - k);
      const __mmask16 m = n == 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1);
      __m512 r[16];
      for (std::size_t j = 0; j < 16; ++j) r[j] = _mm512_maskz_loadu_ps(m, row[j] + k);
      sgemm512_transpose16(r);
      for (std::size_t t = 0; t < n; ++t) _mm512_store_ps(Bp + (k + t) * NR + h, r[t]);
    }
  }
}

// How the tile reads A: op(A) = A (row i at a[i], k contiguous) or A^T (k's values of the 8
// rows side by side at t + k*lda).
struct Sgemm512ARows {
  const float* a[sgemm512_mr];
  float at(std::size_t i, std::size_t k) const { return a[i][k]; }
};
struct Sgemm512ACols {
  const float* t;
  std::size_t lda;
  float at(std::size_t i, std::size_t k) const { return t[k * lda + i]; }
};

// What a tile does with its sums: v = alpha * acc, then (accumulate) v += beta_c * C, then on
// the last block of k the epilogue; stored to the tile's rows x cols of C.
struct Sgemm512Store {
  float alpha = 1.0f, beta_c = 0.0f;
  bool accumulate = false;
  const RowEpilogue* epi = nullptr;  // only on the last block of k
};

template <class ARead>
inline void sgemm512_tile(std::size_t kc, const ARead& A, const float* bp, float* c, std::size_t ldc, std::size_t rows,
                          std::size_t cols, const Sgemm512Store& s, std::size_t row0, std::size_t col0) {
  constexpr std::size_t MR = sgemm512_mr;
  __m512 c0[MR], c1[MR];
#pragma GCC unroll 8
  for (std::size_t i = 0; i < MR; ++i) c0[i] = _mm512_setzero_ps(), c1[i] = _mm512_setzero_ps();
#pragma GCC unroll 2
  for (std::size_t k = 0; k < kc; ++k, bp += sgemm512_nr) {
    const __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16);
#pragma GCC unroll 8
    for (std::size_t i = 0; i < MR; ++i) {
      const __m512 ai = _mm512_set1_ps(A.at(i, k));
      c0[i] = _mm512_fmadd_ps(ai, b0, c0[i]);
      c1[i] = _mm512_fmadd_ps(ai, b1, c1[i]);
    }
  }
  const __mmask16 m0 = cols >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << cols) - 1);
  const __mmask16 m1 = cols >= 32 ? __mmask16(0xFFFF) : cols > 16 ? __mmask16((1u << (cols - 16)) - 1) : 0;
  const __m512 alpha = _mm512_set1_ps(s.alpha), beta = _mm512_set1_ps(s.beta_c);
  const RowEpilogue* e = s.epi;
#pragma GCC unroll 8
  for (std::size_t i = 0; i < MR; ++i) {
    if (i >= rows) break;
    float* ci = c + i * ldc;
    __m512 v0 = c0[i], v1 = c1[i];
    if (s.alpha != 1.0f) v0 = _mm512_mul_ps(v0, alpha), v1 = _mm512_mul_ps(v1, alpha);
    if (s.accumulate) {
      __m512 o0 = _mm512_maskz_loadu_ps(m0, ci), o1 = _mm512_maskz_loadu_ps(m1, ci + 16);
      if (s.beta_c != 1.0f) o0 = _mm512_mul_ps(o0, beta), o1 = _mm512_mul_ps(o1, beta);
      v0 = _mm512_add_ps(v0, o0), v1 = _mm512_add_ps(v1, o1);
    }
    if (e) {
      if (e->scale) {
        const __m512 sc = _mm512_set1_ps(e->scale[row0 + i]), sh = _mm512_set1_ps(e->shift[row0 + i]);
        v0 = _mm512_add_ps(_mm512_mul_ps(v0, sc), sh), v1 = _mm512_add_ps(_mm512_mul_ps(v1, sc), sh);
      }
      if (e->residual) {
        const float* r = e->residual + (row0 + i) * e->ldr + col0;
        v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, r));
        v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, r + 16));
      }
      if (e->relu) {
        // max(v, 0) returns its second operand for NaN and for -0: 0, as v > 0 ? v : 0 (zero-
        // masked: GCC 12's plain _mm512_max_ps warns of its undefined pass-through operand).
        v0 = _mm512_maskz_max_ps(0xFFFF, v0, _mm512_setzero_ps());
        v1 = _mm512_maskz_max_ps(0xFFFF, v1, _mm512_setzero_ps());
      }
    }
    _mm512_mask_storeu_ps(ci, m0, v0);
    _mm512_mask_storeu_ps(ci + 16, m1, v1);
  }
}

// Panels of op(B) against every row panel of op(A).
inline void sgemm512_tiles(bool trans_a, bool trans_b, std::size_t M, std::size_t N, std::size_t K, float alpha,
                           const float* A, std::size_t lda, const float* B, std::size_t ldb, float beta, float* C,
                           std::size_t ldc, const RowEpilogue* epi) {
  constexpr std::size_t MR = sgemm512_mr, NR = sgemm512_nr, KC = sgemm512_kc;
  alignas(64) float bp[KC * NR];
  for (std::size_t k0 = 0; k0 < K; k0 += KC) {
    const std::size_t kc = std::min(KC, K - k0);
    const bool first = k0 == 0, last = k0 + kc == K;
    Sgemm512Store s;
    s.alpha = alpha;
    s.accumulate = !first || beta != 0.0f;
    s.beta_c = first ? beta : 1.0f;
    s.epi = last ? epi : nullptr;
    for (std::size_t j0 = 0; j0 < N; j0 += NR) {
      const std::size_t cols = std::min(NR, N - j0);
      if (trans_b)
        sgemm512_pack_bt(B, ldb, k0, kc, j0, cols, bp);
      else
        sgemm512_pack_b(B, ldb, k0, kc, j0, cols, bp);
      for (std::size_t i0 = 0; i0 < M; i0 += MR) {
        const std::size_t rows = std::min(MR, M - i0);
        float* c = C + i0 * ldc + j0;
        if (trans_a) {
          // A whole panel reads 8 adjacent floats of each stored row; a cut one (fewer than 8
          // rows left) would read past the row's end: it reads a zero-padded copy instead.
          if (rows == MR) {
            sgemm512_tile(kc, Sgemm512ACols{A + k0 * lda + i0, lda}, bp, c, ldc, rows, cols, s, i0, j0);
          } else {
            alignas(64) float at[KC * MR];
            for (std::size_t k = 0; k < kc; ++k)
              for (std::size_t i = 0; i < MR; ++i) at[k * MR + i] = i < rows ? A[(k0 + k) * lda + i0 + i] : 0.0f;
            sgemm512_tile(kc, Sgemm512ACols{at, MR}, bp, c, ldc, rows, cols, s, i0, j0);
          }
        } else {
          Sgemm512ARows a;
          for (std::size_t i = 0; i < MR; ++i) a.a[i] = A + (i0 + std::min(i, rows - 1)) * lda + k0;
          sgemm512_tile(kc, a, bp, c, ldc, rows, cols, s, i0, j0);
        }
      }
    }
  }
}

}  // namespace detail

/// C[M,N] = epi(alpha * op(A) op(B) + beta * C), leading dimensions as stored (gemm.hpp's
/// conventions); with beta == 0, C is not read (it may hold anything, NaN included).
/// Requires: the residual (if any) does not overlap C; K > 0. Single-threaded (callers split
/// C's columns); no allocation (40 KB of stack).
inline void sgemm512(bool trans_a, bool trans_b, std::size_t M, std::size_t N, std::size_t K, float alpha,
                     const float* A, std::size_t lda, const float* B, std::size_t ldb, float beta, float* C,
                     std::size_t ldc, const RowEpilogue* epi = nullptr) {
  SIEVE_CHECK(K > 0, "sgemm512: empty inner dimension");
  SIEVE_CHECK(!epi || !epi->scale == !epi->shift, "sgemm512: epilogue scale and shift go together");
  if (M == 0 || N == 0) return;
  detail::sgemm512_tiles(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, epi);
}
#endif

}  // namespace sieve::kernels
