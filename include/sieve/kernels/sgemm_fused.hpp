#pragma once
/// A float matrix product with a per-row epilogue applied in registers before the one store
/// (on AVX-512 builds computed by sgemm512, sgemm_avx512.hpp; the 6x16 tiles below are AVX2's):
///   C[i, j] = epi_i( sum_k A[i,k] B[k,j] ),  epi_i(v) = relu?( (v * scale[i] + shift[i]) + R[i, j] )
/// (every part optional). It exists for the convolutions' forward products (batch-folded 1x1,
/// im2col's, Winograd's), whose output is large next to their inner dimension: through BLAS
/// such a product costs a pass that clears C (beta = 0), packing both operands, the product
/// reading and writing C, and the epilogue's pass reading it again; here C is written once.
/// A is read in place (a 6-row panel, reused across a whole block of B, stays in L1; packing
/// it cost a serial pass over the weights per call); each thread packs its own blocks of B.
///
/// Blocking: 6x16 register tiles (12 accumulators of 8 floats), the inner dimension in blocks
/// of 256, B in blocks of at most 128 KB (L2); for each block of B the tiles run row panel by
/// row panel, so C and R are read and written as 6 sequential row streams. With AVX2 and FMA
/// (-march=native on such a CPU) the tile is vector code; otherwise a portable loop computes the
/// same tiles (correct, not fast: conv2d then keeps using BLAS, see fused_sgemm_available).
///
/// Numerics: each C element sums its products in k order within a block of 256, the blocks'
/// sums then added in order; results differ from BLAS's by rounding only.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "sieve/core/check.hpp"
#include "sieve/core/simd.hpp"
#include "sieve/kernels/sgemm_avx512.hpp"

namespace sieve::kernels {

/// True when the fused product is vector code on this build (conv2d takes it only then).
inline constexpr bool fused_sgemm_available = SIEVE_AVX2_FMA == 1;

inline constexpr std::size_t fused_sgemm_mr = 6, fused_sgemm_nr = 16, fused_sgemm_kc = 256;
/// Floats of one packed block of B (kc rows by a multiple of 16 columns): 128 KB.
inline constexpr std::size_t fused_sgemm_b_floats = 32768;

/// Elements of one thread's B workspace: a block (its columns are a multiple of 16 with
/// columns * kc <= fused_sgemm_b_floats, as 16 * kc <= 4096) and room to align it to 32 bytes.
inline std::size_t fused_sgemm_b_workspace() { return fused_sgemm_b_floats + 8; }

namespace detail {
// B rows [k0, k0+kc), columns [j0, j0+nc) -> panels of 16 columns, Bp[q][k][16], zero-padded.
// Row by row: each row's columns of the block are one contiguous read (B's rows lie ldb apart,
// often 64 KB or more: going down a panel first touched a new page every 64 bytes), with the
// rows a few ahead prefetched, and the copy of 16 floats a memcpy (two vector moves: as a loop
// it stayed scalar, the compiler not knowing that Bp and B do not overlap).
inline constexpr std::size_t fused_sgemm_pack_ahead = 4;

inline void fused_sgemm_pack_b(const float* B, std::size_t ldb, std::size_t k0, std::size_t kc, std::size_t j0,
                               std::size_t nc, float* Bp) {
  constexpr std::size_t NR = fused_sgemm_nr, D = fused_sgemm_pack_ahead;
  const std::size_t full = nc / NR, w = nc - full * NR;  // whole panels, then the last one's width
  for (std::size_t k = 0; k < kc; ++k) {
    const float* src = B + (k0 + k) * ldb + j0;
    if (k + D < kc)
      for (std::size_t j = 0; j < nc; j += NR) __builtin_prefetch(src + D * ldb + j, 0, 3);
    float* dst = Bp + k * NR;
    for (std::size_t q = 0; q < full; ++q) std::memcpy(dst + q * kc * NR, src + q * NR, NR * sizeof(float));
    if (w > 0) {
      float* last = dst + full * kc * NR;
      for (std::size_t j = 0; j < NR; ++j) last[j] = j < w ? src[full * NR + j] : 0.0f;
    }
  }
}

// One 6x16 tile: acc = rows a[0..5] (each kc long, in place) x b-panel; then (unless first)
// acc += C; on the last block the epilogue of rows row0..row0+5; then the store. res: the
// tile's residual (or null).
inline void fused_sgemm_tile(std::size_t kc, const float* const* a, const float* b, float* c, std::size_t ldc,
                             bool first, bool last, const RowEpilogue& e, std::size_t row0, const float* res) {
  constexpr std::size_t MR = fused_sgemm_mr, NR = fused_sgemm_nr;
#if SIEVE_AVX2_FMA
  __m256 c0[MR], c1[MR];
  for (std::size_t i = 0; i < MR; ++i) c0[i] = _mm256_setzero_ps(), c1[i] = _mm256_setzero_ps();
  for (std::size_t i = 0; i < MR; ++i) _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
#pragma GCC unroll 4
  for (std::size_t k = 0; k < kc; ++k) {
    _mm_prefetch(reinterpret_cast<const char*>(b + 8 * NR), _MM_HINT_T0);
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
    for (std::size_t i = 0; i < MR; ++i) {
      const __m256 ai = _mm256_broadcast_ss(a[i] + k);
      c0[i] = _mm256_fmadd_ps(ai, b0, c0[i]);
      c1[i] = _mm256_fmadd_ps(ai, b1, c1[i]);
    }
    b += NR;
  }
#pragma GCC unroll 6
  for (std::size_t i = 0; i < MR; ++i) {
    float* ci = c + i * ldc;
    if (!first) {
      c0[i] = _mm256_add_ps(c0[i], _mm256_loadu_ps(ci));
      c1[i] = _mm256_add_ps(c1[i], _mm256_loadu_ps(ci + 8));
    }
    if (last) {
      if (e.scale) {
        const __m256 s = _mm256_broadcast_ss(e.scale + row0 + i), t = _mm256_broadcast_ss(e.shift + row0 + i);
        c0[i] = _mm256_add_ps(_mm256_mul_ps(c0[i], s), t);
        c1[i] = _mm256_add_ps(_mm256_mul_ps(c1[i], s), t);
      }
      if (res) {
        c0[i] = _mm256_add_ps(c0[i], _mm256_loadu_ps(res + i * e.ldr));
        c1[i] = _mm256_add_ps(c1[i], _mm256_loadu_ps(res + i * e.ldr + 8));
      }
      if (e.relu) {  // max(v, 0) returns its second operand for NaN and for -0: 0, as v > 0 ? v : 0
        c0[i] = _mm256_max_ps(c0[i], _mm256_setzero_ps());
        c1[i] = _mm256_max_ps(c1[i], _mm256_setzero_ps());
      }
    }
    _mm256_storeu_ps(ci, c0[i]);
    _mm256_storeu_ps(ci + 8, c1[i]);
  }
#else
  float acc[MR][NR] = {};
  for (std::size_t k = 0; k < kc; ++k, b += NR)
    for (std::size_t i = 0; i < MR; ++i)
      for (std::size_t j = 0; j < NR; ++j) acc[i][j] += a[i][k] * b[j];
  for (std::size_t i = 0; i < MR; ++i)
    for (std::size_t j = 0; j < NR; ++j) {
      float v = acc[i][j];
      if (!first) v += c[i * ldc + j];
      if (last) {
        if (e.scale) v = v * e.scale[row0 + i] + e.shift[row0 + i];
        if (res) v += res[i * e.ldr + j];
        if (e.relu) v = v > 0.0f ? v : 0.0f;
      }
      c[i * ldc + j] = v;
    }
#endif
}
}  // namespace detail

/// C[M, N] (leading dimension ldc) = epilogue(A B) with A [M, K] (leading dimension lda) and
/// B [K, N] (leading dimension ldb), all row-major; C is assigned (never read before it is written,
/// so it may hold anything). Requires: bws holds fused_sgemm_b_workspace() floats, private to
/// the caller's thread; the residual (if any) does not overlap C. Single-threaded: callers
/// split the columns.
inline void fused_sgemm(std::size_t M, std::size_t N, std::size_t K, const float* A, std::size_t lda,
                        const float* B, std::size_t ldb, float* C, std::size_t ldc, const RowEpilogue& e,
                        float* bws) {
  constexpr std::size_t MR = fused_sgemm_mr, NR = fused_sgemm_nr;
  SIEVE_CHECK(!e.scale == !e.shift, "fused_sgemm: epilogue scale and shift go together");
  SIEVE_CHECK(K > 0, "fused_sgemm: empty inner dimension");
  if (M == 0 || N == 0) return;
#if SIEVE_AVX512
  (void)bws;  // the 512-bit product packs on its stack (sgemm_avx512.hpp)
  sgemm512(false, false, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, ldc, &e);
  return;
#endif
  // The packed block starts on a 32-byte boundary (aligned loads in the tile).
  float* Bp = reinterpret_cast<float*>((reinterpret_cast<std::uintptr_t>(bws) + 31) & ~std::uintptr_t{31});
  for (std::size_t k0 = 0; k0 < K; k0 += fused_sgemm_kc) {
    const std::size_t kc = std::min(fused_sgemm_kc, K - k0);
    const bool first = k0 == 0, last = k0 + kc == K;
    const std::size_t ncb = std::max(NR, fused_sgemm_b_floats / kc / NR * NR);
    for (std::size_t jc = 0; jc < N; jc += ncb) {
      const std::size_t nc = std::min(ncb, N - jc);
      detail::fused_sgemm_pack_b(B, ldb, k0, kc, jc, nc, Bp);
      for (std::size_t ir = 0; ir < M; ir += MR) {
        // The panel's rows from column k0; rows past M repeat the last one (their results are
        // computed but never stored, see the cut tiles below).
        const std::size_t rows = std::min(MR, M - ir);
        const float* a[MR];
        for (std::size_t i = 0; i < MR; ++i) a[i] = A + (ir + std::min(i, rows - 1)) * lda + k0;
        for (std::size_t q = 0; q * NR < nc; ++q) {
          const std::size_t j = jc + q * NR;
          float* c = C + ir * ldc + j;
          const float* res = e.residual ? e.residual + ir * e.ldr + j : nullptr;
          const float* b = Bp + q * kc * NR;
          const std::size_t cols = std::min(NR, nc - q * NR);
          if (rows == MR && cols == NR) {
            detail::fused_sgemm_tile(kc, a, b, c, ldc, first, last, e, ir, res);
            continue;
          }
          // A tile cut by the edge of C: computed whole into a local tile, then the part that
          // exists copied out (read in first when accumulating, the residual likewise).
          alignas(32) float t[MR * NR] = {}, rt[MR * NR] = {};
          for (std::size_t i = 0; i < rows; ++i)
            for (std::size_t jj = 0; jj < cols; ++jj) {
              if (!first) t[i * NR + jj] = c[i * ldc + jj];
              if (res) rt[i * NR + jj] = res[i * e.ldr + jj];
            }
          RowEpilogue le = e;
          le.ldr = NR;
          // Rows past M read scale/shift beyond [M]: give the tile its own copies.
          float sc[MR] = {}, sh[MR] = {};
          if (e.scale)
            for (std::size_t i = 0; i < rows; ++i) sc[i] = e.scale[ir + i], sh[i] = e.shift[ir + i];
          le.scale = e.scale ? sc : nullptr;
          le.shift = e.scale ? sh : nullptr;
          detail::fused_sgemm_tile(kc, a, b, t, NR, first, last, le, 0, res ? rt : nullptr);
          for (std::size_t i = 0; i < rows; ++i)
            for (std::size_t jj = 0; jj < cols; ++jj) c[i * ldc + jj] = t[i * NR + jj];
        }
      }
    }
  }
}

}  // namespace sieve::kernels
