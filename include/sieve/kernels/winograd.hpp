#pragma once
/// Winograd convolution (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
/// 2016) for 3x3 convolutions with stride 1 and padding 1, F(2x2,3x3) and F(4x4,3x3): every
/// m x m output tile comes from an a x a input tile (a = m + 2) with a*a multiplies per (input,
/// output) channel pair instead of 9*m*m (16 for 36 at m = 2, 36 for 144 at m = 4), and the
/// multiplies of all tiles form a*a GEMMs [Kout, Cin] x [Cin, tiles]:
///   U = G g G^T (weights), V = B^T d B (input tiles), M_e = U_e V_e (e < a*a), y = A^T M A.
/// The matrices are Lavin's: F(2x2,3x3) interpolates at 0, 1, -1 (and infinity), F(4x4,3x3) at
/// 0, 1, -1, 2, -2 (and infinity).
/// Rounding: the weight transform runs in double. F(2x2,3x3)'s other transforms only add and
/// subtract; measured against float64, its float error is of im2col's size (2.6e-7 vs 2.9e-7
/// relative on a 64-channel 14x14 layer: the kernel tests, benchmarks/nn.md). F(4x4,3x3)'s
/// transforms multiply by up to 8 and 5, and its float error is larger (1.5e-6, 5x, on the same
/// layer: the kernel tests); conv2d takes it for inference only (Conv2dDims::forward_only).

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <type_traits>

#include "sieve/core/parallel.hpp"
#include "sieve/core/simd.hpp"
#include "sieve/kernels/gemm.hpp"
#include "sieve/kernels/layout.hpp"
#include "sieve/kernels/sgemm_fused.hpp"

namespace sieve::kernels {

/// Elements of tile data (input and product, all planes) one thread works on at a time.
inline constexpr std::size_t winograd_chunk_budget = std::size_t{1} << 20;
/// Floats between consecutive planes of V and M beyond their data: the transforms walk all
/// a*a planes at once, and planes a multiple of 4 KiB apart would share one L1 set (measured:
/// F(4x4,3x3) on 64 channels at 56x56, 224 tiles a chunk, spent 3x longer in its transforms).
inline constexpr std::size_t winograd_plane_pad = 16;
/// Elements from one plane of V (channels = Cin) or M (channels = Kout) to the next, for a
/// chunk of cnt tiles.
inline std::size_t winograd_plane_stride(std::size_t channels, std::size_t cnt) {
  return channels * cnt + winograd_plane_pad;
}

/// Tiles and how they are split: chunks of whole tile rows (`chunk_rows` rows of tiles_w
/// tiles), `parts` threads each taking a run of chunks with its own slice of the workspace
/// after U: the [a*a, Cin + Kout, chunk] tile data, a transformed input rows and, when the
/// products are fused_sgemm's, its block of B.
struct WinogradPlan {
  std::size_t m = 2;  ///< output tile side: 2 (F(2x2,3x3)) or 4 (F(4x4,3x3))
  std::size_t tiles_h = 0, tiles_w = 0, rows = 0, chunk_rows = 0, chunks = 0, parts = 1;
  std::size_t N = 0, Cin = 0, Kout = 0, u_ws = 0, part_ws = 0;
  Layout layout = Layout::nchw;  ///< of x and y alike
  /// The a*a products by fused_sgemm (float with AVX2 only; else BLAS): it packs only the
  /// tiles, reads U in place and writes M once, where sgemm also packs U and clears M.
  bool fused = false;
  std::size_t chunk() const { return chunk_rows * tiles_w; }
  std::size_t a() const { return m + 2; }  ///< input tile side
  std::size_t brow_ws() const { return a() * (m * tiles_w + 2); }
};

/// N samples of [Cin, H, W] to [Kout, H, W], both in layout l, by F(m x m, 3x3) (m = 2 or 4);
/// max_parts: threads the work is worth; fused: WinogradPlan::fused.
inline WinogradPlan winograd_plan(std::size_t N, std::size_t Cin, std::size_t H, std::size_t W, std::size_t Kout,
                                  std::size_t max_parts, Layout l = Layout::nchw, bool fused = false,
                                  std::size_t m = 2) {
  SIEVE_CHECK(m == 2 || m == 4, "winograd_plan: output tiles are 2x2 or 4x4, not ", m, "x", m);
  WinogradPlan p;
  p.m = m, p.N = N, p.Cin = Cin, p.Kout = Kout, p.layout = l, p.fused = fused;
  p.tiles_h = (H + m - 1) / m, p.tiles_w = (W + m - 1) / m;
  p.rows = N * p.tiles_h;
  const std::size_t aa = p.a() * p.a(), per_row = aa * (Cin + Kout) * p.tiles_w;
  const std::size_t T = std::max<std::size_t>(parallel_parts(std::max<std::size_t>(p.rows, 1), max_parts), 1);
  // Chunks as large as the budget allows (wide GEMMs), in a multiple of the thread count so
  // every thread gets the same number of rows.
  const std::size_t max_rows = std::max<std::size_t>(1, winograd_chunk_budget / std::max<std::size_t>(per_row, 1));
  const std::size_t per_thread = (p.rows + T - 1) / T;
  const std::size_t k = (per_thread + max_rows - 1) / max_rows;
  p.chunk_rows = std::max<std::size_t>(1, (per_thread + k - 1) / k);
  p.chunks = (p.rows + p.chunk_rows - 1) / p.chunk_rows;
  p.parts = std::max<std::size_t>(parallel_parts(p.chunks, max_parts), 1);
  p.u_ws = aa * Kout * Cin;
  p.part_ws = aa * (winograd_plane_stride(Cin, p.chunk()) + winograd_plane_stride(Kout, p.chunk())) +
              p.brow_ws() + (fused ? fused_sgemm_b_workspace() : 0);
  return p;
}

inline std::size_t winograd_workspace_size(const WinogradPlan& p) { return p.u_ws + p.parts * p.part_ws; }

namespace detail {
// One column of a tile through F(m x m, 3x3)'s matrices: in: r = B^T d (a values to a),
// out: o = A^T s (a values to m), weight: r = G g (3 values to a, in double).
template <std::size_t m>
struct WinogradMatrices;

template <>
struct WinogradMatrices<2> {
  template <class T>
  static void in(const T* d, T* r) {
    r[0] = d[0] - d[2];
    r[1] = d[1] + d[2];
    r[2] = d[2] - d[1];
    r[3] = d[1] - d[3];
  }
  template <class T>
  static void out(const T* s, T* o) {
    o[0] = s[0] + s[1] + s[2];
    o[1] = s[1] - s[2] - s[3];
  }
  static void weight(const double* g, double* r) {
    r[0] = g[0];
    r[1] = 0.5 * (g[0] + g[1] + g[2]);
    r[2] = 0.5 * (g[0] - g[1] + g[2]);
    r[3] = g[2];
  }
};

template <>
struct WinogradMatrices<4> {
  template <class T>
  static void in(const T* d, T* r) {
    const T d13 = d[1] - d[3], d42 = d[4] - d[2];
    r[0] = (d[4] - T(5) * d[2]) + T(4) * d[0];
    r[1] = (d[3] + d[4]) - T(4) * (d[1] + d[2]);
    r[2] = (d[4] - d[3]) + T(4) * (d[1] - d[2]);
    r[3] = d42 - T(2) * d13;
    r[4] = d42 + T(2) * d13;
    r[5] = (d[5] - T(5) * d[3]) + T(4) * d[1];
  }
  template <class T>
  static void out(const T* s, T* o) {
    const T p12 = s[1] + s[2], m12 = s[1] - s[2], p34 = s[3] + s[4], m34 = s[3] - s[4];
    o[0] = s[0] + p12 + p34;
    o[1] = m12 + T(2) * m34;
    o[2] = p12 + T(4) * p34;
    o[3] = (m12 + T(8) * m34) + s[5];
  }
  static void weight(const double* g, double* r) {
    r[0] = g[0] / 4;
    r[1] = -(g[0] + g[1] + g[2]) / 6;
    r[2] = -(g[0] - g[1] + g[2]) / 6;
    r[3] = g[0] / 24 + g[1] / 12 + g[2] / 6;
    r[4] = g[0] / 24 - g[1] / 12 + g[2] / 6;
    r[5] = g[2];
  }
};

// U[e, ko, ci] = (G g G^T)[e] for g = the 3x3 filter from input channel ci to output ko.
// forward: w is [Kout, Cin, 3, 3]; transposed_flipped (the input gradient's filter): w is
// [Cin, Kout, 3, 3] and g[i][j] = w[ci, ko, 2-i, 2-j]. Computed in double, rounded once.
template <std::size_t m, class T>
void winograd_weights(const T* w, std::size_t Kout, std::size_t Cin, bool transposed_flipped, T* U) {
  constexpr std::size_t a = m + 2;
  parallel_for(Kout, std::max<std::size_t>(1, 4096 / std::max<std::size_t>(Cin, 1)), [&](std::size_t k0, std::size_t k1) {
    for (std::size_t ko = k0; ko < k1; ++ko)
      for (std::size_t ci = 0; ci < Cin; ++ci) {
        double gt[3][3];  // g transposed: gt[j] is column j of g
        for (std::size_t i = 0; i < 3; ++i)
          for (std::size_t j = 0; j < 3; ++j)
            gt[j][i] = transposed_flipped ? w[(ci * Kout + ko) * 9 + (2 - i) * 3 + (2 - j)] : w[(ko * Cin + ci) * 9 + i * 3 + j];
        double t[3][a];  // t[j] = G (column j of g): the columns of G g
        for (std::size_t j = 0; j < 3; ++j) WinogradMatrices<m>::weight(gt[j], t[j]);
        for (std::size_t r = 0; r < a; ++r) {  // row r of (G g) G^T = G (row r of G g)
          const double row[3] = {t[0][r], t[1][r], t[2][r]};
          double u[a];
          WinogradMatrices<m>::weight(row, u);
          for (std::size_t c = 0; c < a; ++c) U[((r * a + c) * Kout + ko) * Cin + ci] = static_cast<T>(u[c]);
        }
      }
  });
}

// Planes of fewer than winograd_lanes tiles a row leave the input transform's column pass
// (8 tiles of a row by lanes) scalar: there the lanes run across the chunk's tiles instead,
// whatever tile row or sample each belongs to (V holds a chunk's tiles side by side). The
// arithmetic is the row-lane path's, in the same order: B^T d down each column, then across
// each row (only the padding columns, which that path sets to zero, are transformed zeros
// here). bench_conv, kept weights, batch 64, medians of 3: F(4x4,3x3) 128 channels at 8x8
// 3.28 -> 3.00-3.08 ms, 256 at 4x4 2.73-2.96 -> 2.49-2.58, F(2x2,3x3) 512 at 2x2 4.40-4.58 ->
// 3.99-4.16 (planes up to 8 wide). Extended to planes of up to 7 tiles a row once the output
// transform ran by lanes too: F(4x4,3x3) 256 channels at 14x14, batch 16, the input
// transform's share 12.4% -> 11.2% of the layer (perf), 64 at 16x16 batch 64 about 3% faster.
// F(2x2,3x3) keeps the row lanes from 9 columns: at 14x14 they had been faster (15.8-16.0 ms
// against 17.1-18.5) and measured level again now (training's forward, batch 16).
inline constexpr std::size_t winograd_lanes = 8;

// Where chunk tile t (tile rows from r0) lives: sample n, tile row th, tile column tw.
struct WinogradTileAt {
  std::size_t n, th, tw;
};
inline WinogradTileAt winograd_tile_at(const WinogradPlan& p, std::size_t r0, std::size_t t) {
  const std::size_t r = r0 + t / p.tiles_w;
  return {r / p.tiles_h, r % p.tiles_h, t % p.tiles_w};
}

// One pass of a transform by lanes: for every column j and lane l, column j of `in` (RI values)
// through f into column j of `out` (RO values). The input and output transforms' first passes.
template <std::size_t RO, std::size_t RI, std::size_t A, class T, class F>
[[gnu::always_inline]] inline void winograd_lanes_columns(const T (&in)[RI][A][winograd_lanes], T (&out)[RO][A][winograd_lanes], F f) {
  for (std::size_t j = 0; j < A; ++j)
    for (std::size_t l = 0; l < winograd_lanes; ++l) {
      T ci[RI], co[RO];
      for (std::size_t i = 0; i < RI; ++i) ci[i] = in[i][j][l];
      f(ci, co);
      for (std::size_t r = 0; r < RO; ++r) out[r][j][l] = co[r];
    }
}

// V[e, ci, t] for the chunk's tiles t in [t0, t0 + L), L <= winograd_lanes, by lanes.
template <std::size_t m, class T>
void winograd_input_lanes(const T* x, std::size_t H, std::size_t W, const WinogradPlan& p, std::size_t r0,
                          std::size_t ci, std::size_t t0, std::size_t L, T* V, std::size_t estride,
                          std::size_t cnt) {
  constexpr std::size_t a = m + 2, NL = winograd_lanes;
  T d[a][a][NL] = {};  // the tiles' input windows, zero outside the plane
  for (std::size_t l = 0; l < L; ++l) {
    const WinogradTileAt at = winograd_tile_at(p, r0, t0 + l);
    const T* xc = x + plane_index(p.layout, p.N, p.Cin, at.n, ci) * H * W;
    for (std::size_t i = 0; i < a; ++i) {
      const std::ptrdiff_t h = static_cast<std::ptrdiff_t>(m * at.th + i) - 1;
      if (h < 0 || h >= static_cast<std::ptrdiff_t>(H)) continue;
      for (std::size_t j = 0; j < a; ++j) {
        const std::ptrdiff_t w = static_cast<std::ptrdiff_t>(m * at.tw + j) - 1;
        if (w >= 0 && w < static_cast<std::ptrdiff_t>(W)) d[i][j][l] = xc[h * static_cast<std::ptrdiff_t>(W) + w];
      }
    }
  }
  T t[a][a][NL];  // B^T d: down each column
  winograd_lanes_columns(d, t, [](const T* di, T* oi) { WinogradMatrices<m>::in(di, oi); });
  for (std::size_t i = 0; i < a; ++i) {  // (B^T d) B: across each row, stored by lanes
    T o[a][NL];
    for (std::size_t l = 0; l < NL; ++l) {
      T di[a], oi[a];
      for (std::size_t j = 0; j < a; ++j) di[j] = t[i][j][l];
      WinogradMatrices<m>::in(di, oi);
      for (std::size_t j = 0; j < a; ++j) o[j][l] = oi[j];
    }
    for (std::size_t j = 0; j < a; ++j) {
      T* v = V + (i * a + j) * estride + ci * cnt + t0;
      if (L == NL) {  // a fixed-size copy (vector moves), not a call
        std::memcpy(v, o[j], NL * sizeof(T));
      } else {
        for (std::size_t l = 0; l < L; ++l) v[l] = o[j][l];
      }
    }
  }
}

// V[e, ci, tl] = (B^T d B)[e] for the tiles of tile rows r0 <= r < r1 (tl counts from r0's
// first tile), x [N, Cin, H, W] in p.layout. Per tile row and channel, the row transform B^T d
// runs over whole input rows (contiguous), then the column transform over the tiles (each
// tile's columns m*tw-1 .. m*tw+m sit at b[m*tw .. m*tw+m+1], b holding column -1 at index 0).
template <std::size_t m, class T>
void winograd_input(const T* x, std::size_t H, std::size_t W, const WinogradPlan& p, std::size_t r0,
                    std::size_t r1, T* V, T* brow) {
  constexpr std::size_t a = m + 2;
  const std::size_t Cin = p.Cin, TW = p.tiles_w, cnt = (r1 - r0) * TW, BW = m * TW + 2;
  const std::size_t estride = winograd_plane_stride(Cin, cnt);
  if (W <= winograd_lanes || (m == 4 && TW < winograd_lanes)) {  // lanes across the chunk's tiles
    for (std::size_t ci = 0; ci < Cin; ++ci)
      for (std::size_t t0 = 0; t0 < cnt; t0 += winograd_lanes)
        winograd_input_lanes<m>(x, H, W, p, r0, ci, t0, std::min(winograd_lanes, cnt - t0), V, estride, cnt);
    return;
  }
  T* b[a];
  for (std::size_t i = 0; i < a; ++i) b[i] = brow + i * BW;
  // Channel by channel, its tile rows in turn: each of the a*a output streams V[e, ci, .] and
  // the channel's input plane are then walked in order.
  for (std::size_t ci = 0; ci < Cin; ++ci) {
    for (std::size_t r = r0; r < r1; ++r) {
      const std::size_t n = r / p.tiles_h, th = r % p.tiles_h, tl0 = (r - r0) * TW;
      const T* xc = x + plane_index(p.layout, p.N, Cin, n, ci) * H * W;
      const T* row[a];
      bool inside = true;
      for (std::size_t i = 0; i < a; ++i) {
        const std::ptrdiff_t h = static_cast<std::ptrdiff_t>(m * th + i) - 1;
        row[i] = h >= 0 && h < static_cast<std::ptrdiff_t>(H) ? xc + h * static_cast<std::ptrdiff_t>(W) : nullptr;
        inside = inside && row[i];
      }
      for (std::size_t i = 0; i < a; ++i) b[i][0] = T(0);  // column -1
      for (std::size_t col = W + 1; col < BW; ++col)
        for (std::size_t i = 0; i < a; ++i) b[i][col] = T(0);  // columns W .. m*TW (padding)
      if (inside) {
        std::size_t c = 0;
        for (; c + 8 <= W; c += 8) {  // 8 columns by lanes: loads, transform, stores (vector code)
          T d[a][8], o[a][8];
          for (std::size_t i = 0; i < a; ++i)
            for (std::size_t l = 0; l < 8; ++l) d[i][l] = row[i][c + l];
          for (std::size_t l = 0; l < 8; ++l) {
            T di[a], oi[a];
            for (std::size_t i = 0; i < a; ++i) di[i] = d[i][l];
            WinogradMatrices<m>::in(di, oi);
            for (std::size_t i = 0; i < a; ++i) o[i][l] = oi[i];
          }
          for (std::size_t i = 0; i < a; ++i)
            for (std::size_t l = 0; l < 8; ++l) b[i][c + 1 + l] = o[i][l];
        }
        for (; c < W; ++c) {
          T d[a], o[a];
          for (std::size_t i = 0; i < a; ++i) d[i] = row[i][c];
          WinogradMatrices<m>::in(d, o);
          for (std::size_t i = 0; i < a; ++i) b[i][c + 1] = o[i];
        }
      } else {
        for (std::size_t c = 0; c < W; ++c) {
          T d[a], o[a];
          for (std::size_t i = 0; i < a; ++i) d[i] = row[i] ? row[i][c] : T(0);
          WinogradMatrices<m>::in(d, o);
          for (std::size_t i = 0; i < a; ++i) b[i][c + 1] = o[i];
        }
      }
      for (std::size_t i = 0; i < a; ++i) {
        const T* bi = b[i];
        T* v[a];
        for (std::size_t j = 0; j < a; ++j) v[j] = V + (i * a + j) * estride + ci * cnt + tl0;
        std::size_t tw = 0;
        for (; tw + 8 <= TW; tw += 8) {  // 8 tiles by lanes (vector code)
          T o[a][8];
          for (std::size_t l = 0; l < 8; ++l) {
            T d[a], r[a];
            for (std::size_t q = 0; q < a; ++q) d[q] = bi[m * (tw + l) + q];
            WinogradMatrices<m>::in(d, r);
            for (std::size_t j = 0; j < a; ++j) o[j][l] = r[j];
          }
          for (std::size_t j = 0; j < a; ++j)
            for (std::size_t l = 0; l < 8; ++l) v[j][tw + l] = o[j][l];
        }
        for (; tw < TW; ++tw) {
          T o[a];
          WinogradMatrices<m>::in(bi + m * tw, o);
          for (std::size_t j = 0; j < a; ++j) v[j][tw] = o[j];
        }
      }
    }
  }
}

#if SIEVE_AVX2_FMA
// r[0..7] (8 floats each) transposed in place: r[i][j] <- r[j][i].
inline void winograd_transpose8(__m256* r) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  // s0: column 0 of rows 0-3 | column 4; s1: columns 1 | 5; s2: 2 | 6; s3: 3 | 7 (s4-s7: rows 4-7)
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20), r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20), r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31), r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31), r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}
#endif

// A^T M A of winograd_lanes tiles by lanes: tile l's M element e at src[e*estride + l], for
// l < L (the lanes past L compute zeros); result (q, c2) of lane l at o[q*m + c2][l] (rows
// from m*m on: zero). Shared by both output paths; forced inline (GCC had left it a call:
// the narrow path's output share of a 4x4 layer 9.6% against 8.0%, one perf pair).
template <std::size_t m, class T>
[[gnu::always_inline]] inline void winograd_output_block(const T* src, std::size_t estride, std::size_t L,
                           T (&o)[2 * winograd_lanes][winograd_lanes]) {
  constexpr std::size_t a = m + 2, NL = winograd_lanes;
  T c[a][a][NL] = {};
  for (std::size_t i = 0; i < a; ++i)
    for (std::size_t j = 0; j < a; ++j) {
      const T* e = src + (i * a + j) * estride;
      if (L == NL) {  // a fixed-size copy, not a call
        std::memcpy(c[i][j], e, NL * sizeof(T));
      } else {
        for (std::size_t l = 0; l < L; ++l) c[i][j][l] = e[l];
      }
    }
  T s[m][a][NL];  // A^T M, column by column
  winograd_lanes_columns(c, s, [](const T* ci, T* co) { WinogradMatrices<m>::out(ci, co); });
  for (std::size_t q = 0; q < m; ++q)  // (A^T M) A, across each row
    for (std::size_t l = 0; l < NL; ++l) {
      T cj[a], oq[m];
      for (std::size_t j = 0; j < a; ++j) cj[j] = s[q][j][l];
      WinogradMatrices<m>::out(cj, oq);
      for (std::size_t c2 = 0; c2 < m; ++c2) o[q * m + c2][l] = oq[c2];
    }
  for (std::size_t r = m * m; r < 2 * NL; ++r)
    for (std::size_t l = 0; l < NL; ++l) o[r][l] = T(0);
}

// winograd_output on planes of fewer than winograd_lanes tiles a row (the lanes along a tile
// row never fill): lanes across the chunk's tiles, a block of whole tile rows at a time, the
// same operations in the same order as the tile-by-tile loop. The lanes' m x m results are
// then turned tile by tile (with AVX2 by 8x8 transposes; as scalar stores from lanes it was
// slower than the scalar loop) and copied out row by row.
template <std::size_t m, class T, class Finish>
void winograd_output_lanes(const T* M, std::size_t H, std::size_t W, const WinogradPlan& p, std::size_t r0,
                           std::size_t r1, T* y, Finish& finish) {
  constexpr std::size_t NL = winograd_lanes;
  static_assert(m * m <= 2 * NL, "a tile's results fit two rows of the transpose");
  const std::size_t Kout = p.Kout, TW = p.tiles_w, cnt = (r1 - r0) * TW, estride = winograd_plane_stride(Kout, cnt);
  const std::size_t R = NL / TW;  // whole tile rows per block (TW < NL)
  for (std::size_t k = 0; k < Kout; ++k) {
    const T* mk = M + k * cnt;
    for (std::size_t r = r0; r < r1; r += R) {
      const std::size_t rb = std::min(R, r1 - r), t0 = (r - r0) * TW, L = rb * TW;
      alignas(32) T o[2 * NL][NL];  // (A^T M A)[q][c2] of lane l at o[q*m + c2][l]
      winograd_output_block<m>(mk + t0, estride, L, o);
      alignas(32) T tile[NL][2 * NL];  // tile l's m x m results, row by row
      bool done = false;
#if SIEVE_AVX2_FMA
      if constexpr (std::is_same_v<T, float>) {
        for (std::size_t h = 0; h < m * m; h += NL) {
          __m256 v[NL];
          for (std::size_t i = 0; i < NL; ++i) v[i] = _mm256_load_ps(o[h + i]);
          winograd_transpose8(v);
          for (std::size_t l = 0; l < NL; ++l) _mm256_store_ps(tile[l] + h, v[l]);
        }
        done = true;
      }
#endif
      if (!done)
        for (std::size_t l = 0; l < L; ++l)
          for (std::size_t e = 0; e < m * m; ++e) tile[l][e] = o[e][l];
      for (std::size_t l = 0; l < L; ++l) {
        const WinogradTileAt at = winograd_tile_at(p, r0, t0 + l);
        const std::size_t oh = m * at.th, ow = m * at.tw, rows = std::min(m, H - oh), cols = std::min(m, W - ow);
        T* dst = y + (plane_index(p.layout, p.N, Kout, at.n, k) * H + oh) * W + ow;
        for (std::size_t q = 0; q < rows; ++q) {
          if (cols == m) {  // a fixed-size copy (one vector move), not a call
            std::memcpy(dst + q * W, tile[l] + q * m, m * sizeof(T));
          } else {
            for (std::size_t c2 = 0; c2 < cols; ++c2) dst[q * W + c2] = tile[l][q * m + c2];
          }
        }
      }
      for (std::size_t rr = r; rr < r + rb; ++rr) {  // the block's output rows, now complete
        const std::size_t n = rr / p.tiles_h, oh = m * (rr % p.tiles_h), rows = std::min(m, H - oh);
        T* y0 = y + (plane_index(p.layout, p.N, Kout, n, k) * H + oh) * W;
        for (std::size_t q = 0; q < rows; ++q) finish(k, n, oh + q, y0 + q * W);
      }
    }
  }
}

// y[n, k, rows of tile rows r0 <= r < r1] = A^T M A, then finish(k, n, oh, row) per output row.
template <std::size_t m, class T, class Finish>
void winograd_output(const T* M, std::size_t H, std::size_t W, const WinogradPlan& p, std::size_t r0,
                     std::size_t r1, T* y, Finish&& finish) {
  constexpr std::size_t a = m + 2;
  const std::size_t Kout = p.Kout, TW = p.tiles_w, cnt = (r1 - r0) * TW, estride = winograd_plane_stride(Kout, cnt);
  if (TW < winograd_lanes) {
    winograd_output_lanes<m>(M, H, W, p, r0, r1, y, finish);
    return;
  }
  // Channel by channel, its tile rows in turn (M's a*a streams and the output plane in order).
  for (std::size_t k = 0; k < Kout; ++k) {
    for (std::size_t r = r0; r < r1; ++r) {
      const std::size_t n = r / p.tiles_h, th = r % p.tiles_h, tl0 = (r - r0) * TW, oh = m * th;
      const T* mk = M + k * cnt + tl0;
      const std::size_t rows = std::min(m, H - oh);  // output rows of this tile row
      T* yr[m] = {};
      yr[0] = y + (plane_index(p.layout, p.N, Kout, n, k) * H + oh) * W;
      for (std::size_t q = 1; q < rows; ++q) yr[q] = yr[0] + q * W;
      // Blocks of L whole tiles (inside the plane's width): the transform runs across the
      // tiles, lane by lane, reading each of M's streams contiguously (vector code).
      constexpr std::size_t L = winograd_lanes;
      std::size_t tw = 0;
      for (; (tw + L) * m <= W; tw += L) {
        alignas(32) T o[2 * L][L];
        winograd_output_block<m>(mk + tw, estride, L, o);
        for (std::size_t q = 0; q < rows; ++q) {
          T* yq = yr[q] + m * tw;
          for (std::size_t l = 0; l < L; ++l)
            for (std::size_t c2 = 0; c2 < m; ++c2) yq[l * m + c2] = o[q * m + c2][l];
        }
      }
      for (; tw < TW; ++tw) {
        T s[m][a];  // A^T M, column by column
        for (std::size_t j = 0; j < a; ++j) {
          T c[a], o[m];
          for (std::size_t i = 0; i < a; ++i) c[i] = mk[(i * a + j) * estride + tw];
          WinogradMatrices<m>::out(c, o);
          for (std::size_t q = 0; q < m; ++q) s[q][j] = o[q];
        }
        const std::size_t ow = m * tw, cols = std::min(m, W - ow);
        for (std::size_t q = 0; q < rows; ++q) {  // (A^T M) A
          T o[m];
          WinogradMatrices<m>::out(s[q], o);
          for (std::size_t c2 = 0; c2 < cols; ++c2) yr[q][ow + c2] = o[c2];
        }
      }
      for (std::size_t q = 0; q < rows; ++q) finish(k, n, oh + q, yr[q]);
    }
  }
}

template <std::size_t m, class T, class Finish>
void winograd_run(const T* x, const T* w, T* y, std::size_t H, std::size_t W, bool transposed_flipped,
                  const WinogradPlan& p, T* ws, Finish& finish, const T* U_given) {
  constexpr std::size_t aa = (m + 2) * (m + 2);
  const std::size_t Cin = p.Cin, Kout = p.Kout;
  const T* U = U_given;
  if (!U) {
    winograd_weights<m>(w, Kout, Cin, transposed_flipped, ws);
    U = ws;
  }
  parallel_for_parts(p.chunks, p.parts, [&](std::size_t part, std::size_t c0, std::size_t c1) {
    T* V = ws + p.u_ws + part * p.part_ws;
    T* M = V + aa * winograd_plane_stride(Cin, p.chunk());
    T* brow = M + aa * winograd_plane_stride(Kout, p.chunk());
    T* bws = brow + p.brow_ws();  // fused_sgemm's block of B (p.fused)
    for (std::size_t c = c0; c < c1; ++c) {
      const std::size_t r0 = c * p.chunk_rows, r1 = std::min(p.rows, r0 + p.chunk_rows), cnt = (r1 - r0) * p.tiles_w;
      winograd_input<m>(x, H, W, p, r0, r1, V, brow);
      const std::size_t vs = winograd_plane_stride(Cin, cnt), ms = winograd_plane_stride(Kout, cnt);
      for (std::size_t e = 0; e < aa; ++e) {
        if constexpr (std::is_same_v<T, float> && fused_sgemm_available) {
          if (p.fused) {
            fused_sgemm(Kout, cnt, Cin, U + e * Kout * Cin, Cin, V + e * vs, cnt, M + e * ms, cnt, {}, bws);
            continue;
          }
        }
        gemm(Trans::no, Trans::no, Kout, cnt, Cin, T(1), U + e * Kout * Cin, V + e * vs, T(0), M + e * ms);
      }
      winograd_output<m>(M, H, W, p, r0, r1, y, finish);
    }
  });
}
}  // namespace detail

/// The transformed weights U of F(m x m, 3x3) (m = 2 or 4; (m+2)^2 * Kout * Cin elements) of w
/// (see winograd_conv3x3 for w's two readings).
template <class T>
void winograd_weights(const T* w, std::size_t Kout, std::size_t Cin, bool transposed_flipped, std::size_t m, T* U) {
  if (m == 4)
    detail::winograd_weights<4>(w, Kout, Cin, transposed_flipped, U);
  else
    detail::winograd_weights<2>(w, Kout, Cin, transposed_flipped, U);
}

/// y = conv3x3(x, w), stride 1, padding 1, by Winograd F(m x m, 3x3) with m = p.m, then
/// finish(k, n, oh, row) on every output row (y[n,k,oh,:], W values) while it is in cache.
/// forward: x [N,Cin,H,W] (in p.layout, as y), w [Kout,Cin,3,3]. transposed_flipped: w is [Cin,Kout,3,3] and used
/// rotated by 180 degrees (the input gradient of a 3x3 stride-1 pad-1 convolution: dy in, dx out).
/// -> y [N,Kout,H,W]. Requires: p = winograd_plan(N, Cin, H, W, Kout, ...); ws holds
/// winograd_workspace_size(p) elements; U, when given, holds winograd_weights(w, ...) of this
/// w, direction and m (a caller that keeps the transformed weights between calls), else null.
/// Ensures: no allocation; every y element written.
template <class T, class Finish>
void winograd_conv3x3(const T* x, const T* w, T* y, std::size_t H, std::size_t W, bool transposed_flipped,
                      const WinogradPlan& p, T* ws, Finish&& finish, const T* U_given = nullptr) {
  if (p.m == 4)
    detail::winograd_run<4>(x, w, y, H, W, transposed_flipped, p, ws, finish, U_given);
  else
    detail::winograd_run<2>(x, w, y, H, W, transposed_flipped, p, ws, finish, U_given);
}

}  // namespace sieve::kernels
