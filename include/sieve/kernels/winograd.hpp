#pragma once
/// Winograd F(2x2, 3x3) convolution (Lavin & Gray, "Fast Algorithms for Convolutional Neural
/// Networks", 2016) for 3x3 convolutions with stride 1 and padding 1: every 2x2 output tile
/// comes from a 4x4 input tile with 16 multiplies per (input, output) channel pair instead of
/// 36, and the multiplies of all tiles form 16 GEMMs [Kout, Cin] x [Cin, tiles]:
///   U = G g G^T (weights, once per call), V = B^T d B (input tiles), M_e = U_e V_e (e < 16),
///   y = A^T M A (output tiles).
/// Rounding: the transforms only add, subtract and halve, and the weight transform runs in
/// double; measured against float64, the float result's error is of im2col's size (2.6e-7
/// vs 2.9e-7 relative on a 64-channel 14x14 layer: the kernel tests, benchmarks/nn.md).

#include <algorithm>
#include <cstddef>

#include "sieve/core/parallel.hpp"
#include "sieve/kernels/gemm.hpp"
#include "sieve/kernels/layout.hpp"
#include "sieve/kernels/sgemm_fused.hpp"

namespace sieve::kernels {

/// Elements of tile data (input and product, all 16 planes) one thread works on at a time.
inline constexpr std::size_t winograd_chunk_budget = std::size_t{1} << 20;

/// Tiles and how they are split: chunks of whole tile rows (`chunk_rows` rows of tiles_w
/// tiles), `parts` threads each taking a run of chunks with its own slice of the workspace
/// after U: the [16, Cin + Kout, chunk] tile data, 4 transformed input rows and, when the
/// products are fused_sgemm's, its block of B.
struct WinogradPlan {
  std::size_t tiles_h = 0, tiles_w = 0, rows = 0, chunk_rows = 0, chunks = 0, parts = 1;
  std::size_t N = 0, Cin = 0, Kout = 0, u_ws = 0, part_ws = 0;
  Layout layout = Layout::nchw;  ///< of x and y alike
  /// The 16 products by fused_sgemm (float with AVX2 only; else BLAS): it packs only the
  /// tiles, reads U in place and writes M once, where sgemm also packs U and clears M.
  bool fused = false;
  std::size_t chunk() const { return chunk_rows * tiles_w; }
};

/// N samples of [Cin, H, W] to [Kout, H, W], both in layout l; max_parts: threads the work
/// is worth; fused: WinogradPlan::fused.
inline WinogradPlan winograd_plan(std::size_t N, std::size_t Cin, std::size_t H, std::size_t W, std::size_t Kout,
                                  std::size_t max_parts, Layout l = Layout::nchw, bool fused = false) {
  WinogradPlan p;
  p.N = N, p.Cin = Cin, p.Kout = Kout, p.layout = l, p.fused = fused;
  p.tiles_h = (H + 1) / 2, p.tiles_w = (W + 1) / 2;
  p.rows = N * p.tiles_h;
  const std::size_t per_row = 16 * (Cin + Kout) * p.tiles_w;
  const std::size_t T = std::max<std::size_t>(parallel_parts(std::max<std::size_t>(p.rows, 1), max_parts), 1);
  // Chunks as large as the budget allows (wide GEMMs), in a multiple of the thread count so
  // every thread gets the same number of rows.
  const std::size_t max_rows = std::max<std::size_t>(1, winograd_chunk_budget / std::max<std::size_t>(per_row, 1));
  const std::size_t per_thread = (p.rows + T - 1) / T;
  const std::size_t k = (per_thread + max_rows - 1) / max_rows;
  p.chunk_rows = std::max<std::size_t>(1, (per_thread + k - 1) / k);
  p.chunks = (p.rows + p.chunk_rows - 1) / p.chunk_rows;
  p.parts = std::max<std::size_t>(parallel_parts(p.chunks, max_parts), 1);
  p.u_ws = 16 * Kout * Cin;
  p.part_ws = 16 * (Cin + Kout) * p.chunk() + 4 * (2 * p.tiles_w + 2) + (fused ? fused_sgemm_b_workspace() : 0);
  return p;
}

inline std::size_t winograd_workspace_size(const WinogradPlan& p) { return p.u_ws + p.parts * p.part_ws; }

namespace detail {
// U[e, ko, ci] = (G g G^T)[e] for g = the 3x3 filter from input channel ci to output ko.
// forward: w is [Kout, Cin, 3, 3]; transposed_flipped (the input gradient's filter): w is
// [Cin, Kout, 3, 3] and g[i][j] = w[ci, ko, 2-i, 2-j]. Computed in double, rounded once.
template <class T>
void winograd_weights(const T* w, std::size_t Kout, std::size_t Cin, bool transposed_flipped, T* U) {
  parallel_for(Kout, std::max<std::size_t>(1, 4096 / std::max<std::size_t>(Cin, 1)), [&](std::size_t k0, std::size_t k1) {
    for (std::size_t ko = k0; ko < k1; ++ko)
      for (std::size_t ci = 0; ci < Cin; ++ci) {
        double g[3][3];
        for (std::size_t i = 0; i < 3; ++i)
          for (std::size_t j = 0; j < 3; ++j)
            g[i][j] = transposed_flipped ? w[(ci * Kout + ko) * 9 + (2 - i) * 3 + (2 - j)] : w[(ko * Cin + ci) * 9 + i * 3 + j];
        double t[4][3];  // G g
        for (std::size_t j = 0; j < 3; ++j) {
          t[0][j] = g[0][j];
          t[1][j] = 0.5 * (g[0][j] + g[1][j] + g[2][j]);
          t[2][j] = 0.5 * (g[0][j] - g[1][j] + g[2][j]);
          t[3][j] = g[2][j];
        }
        for (std::size_t r = 0; r < 4; ++r) {  // (G g) G^T
          const double u[4] = {t[r][0], 0.5 * (t[r][0] + t[r][1] + t[r][2]), 0.5 * (t[r][0] - t[r][1] + t[r][2]),
                               t[r][2]};
          for (std::size_t c = 0; c < 4; ++c) U[((r * 4 + c) * Kout + ko) * Cin + ci] = static_cast<T>(u[c]);
        }
      }
  });
}

// V[e, ci, tl] = (B^T d B)[e] for the tiles of tile rows r0 <= r < r1 (tl counts from r0's
// first tile), x [N, Cin, H, W] in p.layout. Per tile row and channel, the row transform B^T d runs over
// whole input rows (contiguous), then the column transform over the tiles (each tile's
// columns 2tw-1 .. 2tw+2 sit at b[2tw .. 2tw+3], b holding column -1 at index 0).
template <class T>
void winograd_input(const T* x, std::size_t H, std::size_t W, const WinogradPlan& p, std::size_t r0,
                    std::size_t r1, T* V, T* brow) {
  const std::size_t Cin = p.Cin, TW = p.tiles_w, cnt = (r1 - r0) * TW, estride = Cin * cnt, BW = 2 * TW + 2;
  T* b[4] = {brow, brow + BW, brow + 2 * BW, brow + 3 * BW};
  // Channel by channel, its tile rows in turn: each of the 16 output streams V[e, ci, .] and
  // the channel's input plane are then walked in order.
  for (std::size_t ci = 0; ci < Cin; ++ci) {
    for (std::size_t r = r0; r < r1; ++r) {
      const std::size_t n = r / p.tiles_h, th = r % p.tiles_h, tl0 = (r - r0) * TW;
      const T* xc = x + plane_index(p.layout, p.N, Cin, n, ci) * H * W;
      const T* row[4];
      for (std::size_t i = 0; i < 4; ++i) {
        const std::ptrdiff_t h = static_cast<std::ptrdiff_t>(2 * th + i) - 1;
        row[i] = h >= 0 && h < static_cast<std::ptrdiff_t>(H) ? xc + h * static_cast<std::ptrdiff_t>(W) : nullptr;
      }
      auto at = [](const T* rp, std::size_t col) { return rp ? rp[col] : T(0); };
      for (std::size_t i = 0; i < 4; ++i) b[i][0] = T(0);  // column -1
      for (std::size_t col = W + 1; col < BW; ++col)
        for (std::size_t i = 0; i < 4; ++i) b[i][col] = T(0);  // columns W .. 2TW (padding)
      if (row[0] && row[1] && row[2] && row[3]) {
        const T *x0 = row[0], *x1 = row[1], *x2 = row[2], *x3 = row[3];
        T *b0 = b[0] + 1, *b1 = b[1] + 1, *b2 = b[2] + 1, *b3 = b[3] + 1;
        for (std::size_t c = 0; c < W; ++c) {
          b0[c] = x0[c] - x2[c];
          b1[c] = x1[c] + x2[c];
          b2[c] = x2[c] - x1[c];
          b3[c] = x1[c] - x3[c];
        }
      } else {
        for (std::size_t c = 0; c < W; ++c) {
          const T d0 = at(row[0], c), d1 = at(row[1], c), d2 = at(row[2], c), d3 = at(row[3], c);
          b[0][c + 1] = d0 - d2;
          b[1][c + 1] = d1 + d2;
          b[2][c + 1] = d2 - d1;
          b[3][c + 1] = d1 - d3;
        }
      }
      for (std::size_t i = 0; i < 4; ++i) {
        const T* bi = b[i];
        T* v0 = V + (i * 4 + 0) * estride + ci * cnt + tl0;
        T* v1 = V + (i * 4 + 1) * estride + ci * cnt + tl0;
        T* v2 = V + (i * 4 + 2) * estride + ci * cnt + tl0;
        T* v3 = V + (i * 4 + 3) * estride + ci * cnt + tl0;
        for (std::size_t tw = 0; tw < TW; ++tw) {
          const T c0 = bi[2 * tw], c1 = bi[2 * tw + 1], c2 = bi[2 * tw + 2], c3 = bi[2 * tw + 3];
          v0[tw] = c0 - c2;
          v1[tw] = c1 + c2;
          v2[tw] = c2 - c1;
          v3[tw] = c1 - c3;
        }
      }
    }
  }
}

// y rows of tile rows r0 <= r < r1 = A^T M A; then finish(k, n, oh, row pointer) on each
// completed output row (the epilogue, while the row is in cache).
template <class T, class Finish>
void winograd_output(const T* M, std::size_t H, std::size_t W, const WinogradPlan& p, std::size_t r0,
                     std::size_t r1, T* y, Finish&& finish) {
  const std::size_t Kout = p.Kout, TW = p.tiles_w, cnt = (r1 - r0) * TW, estride = Kout * cnt;
  // Channel by channel, its tile rows in turn (M's 16 streams and the output plane in order).
  for (std::size_t k = 0; k < Kout; ++k) {
    for (std::size_t r = r0; r < r1; ++r) {
      const std::size_t n = r / p.tiles_h, th = r % p.tiles_h, tl0 = (r - r0) * TW, oh = 2 * th;
      const T* m = M + k * cnt + tl0;
      T* y0 = y + (plane_index(p.layout, p.N, Kout, n, k) * H + oh) * W;
      T* y1 = y0 + W;
      const bool two = oh + 1 < H;
      for (std::size_t tw = 0; tw < TW; ++tw) {
        T a0[4], a1[4];  // A^T M
        for (std::size_t j = 0; j < 4; ++j) {
          const T m0 = m[j * estride + tw], m1 = m[(4 + j) * estride + tw], m2 = m[(8 + j) * estride + tw],
                  m3 = m[(12 + j) * estride + tw];
          a0[j] = m0 + m1 + m2;
          a1[j] = m1 - m2 - m3;
        }
        const std::size_t ow = 2 * tw;
        y0[ow] = a0[0] + a0[1] + a0[2];  // (A^T M) A
        if (ow + 1 < W) y0[ow + 1] = a0[1] - a0[2] - a0[3];
        if (two) {
          y1[ow] = a1[0] + a1[1] + a1[2];
          if (ow + 1 < W) y1[ow + 1] = a1[1] - a1[2] - a1[3];
        }
      }
      finish(k, n, oh, y0);
      if (two) finish(k, n, oh + 1, y1);
    }
  }
}
}  // namespace detail

/// y = conv3x3(x, w), stride 1, padding 1, by Winograd F(2x2,3x3), then finish(k, n, oh, row)
/// on every output row (y[n,k,oh,:], W values) while it is in cache.
/// forward: x [N,Cin,H,W] (in p.layout, as y), w [Kout,Cin,3,3]. transposed_flipped: w is [Cin,Kout,3,3] and used
/// rotated by 180 degrees (the input gradient of a 3x3 stride-1 pad-1 convolution: dy in, dx out).
/// -> y [N,Kout,H,W]. Requires: p = winograd_plan(N, Cin, H, W, Kout, ...); ws holds
/// winograd_workspace_size(p) elements; U, when given, holds winograd_weights(w, ...) of this
/// w and direction (a caller that keeps the transformed weights between calls), else null.
/// Ensures: no allocation; every y element written.
template <class T, class Finish>
void winograd_f2x3(const T* x, const T* w, T* y, std::size_t H, std::size_t W, bool transposed_flipped,
                   const WinogradPlan& p, T* ws, Finish&& finish, const T* U_given = nullptr) {
  const std::size_t Cin = p.Cin, Kout = p.Kout;
  const T* U = U_given;
  if (!U) {
    detail::winograd_weights(w, Kout, Cin, transposed_flipped, ws);
    U = ws;
  }
  parallel_for_parts(p.chunks, p.parts, [&](std::size_t part, std::size_t c0, std::size_t c1) {
    T* V = ws + p.u_ws + part * p.part_ws;
    T* M = V + 16 * Cin * p.chunk();
    T* brow = M + 16 * Kout * p.chunk();
    for (std::size_t c = c0; c < c1; ++c) {
      const std::size_t r0 = c * p.chunk_rows, r1 = std::min(p.rows, r0 + p.chunk_rows), cnt = (r1 - r0) * p.tiles_w;
      detail::winograd_input(x, H, W, p, r0, r1, V, brow);
      for (std::size_t e = 0; e < 16; ++e) {
        if constexpr (std::is_same_v<T, float> && fused_sgemm_available) {
          if (p.fused) {
            fused_sgemm(Kout, cnt, Cin, U + e * Kout * Cin, Cin, V + e * Cin * cnt, cnt, M + e * Kout * cnt, cnt, {},
                        brow + 4 * (2 * p.tiles_w + 2));
            continue;
          }
        }
        gemm(Trans::no, Trans::no, Kout, cnt, Cin, T(1), U + e * Kout * Cin, V + e * Cin * cnt, T(0),
             M + e * Kout * cnt);
      }
      detail::winograd_output(M, H, W, p, r0, r1, y, finish);
    }
  });
}

}  // namespace sieve::kernels
