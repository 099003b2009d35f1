#pragma once
/// Pooling: max pooling with a window (keeps the argmax for backward) and global average.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/parallel.hpp"
#include "sieve/kernels/conv2d.hpp"
#include "sieve/kernels/layout.hpp"

namespace sieve::kernels {

/// Max pooling output size along one axis (floor mode, as PyTorch's default).
/// Planes per thread so that each thread gets enough elements to be worth waking.
inline std::size_t pool_plane_grain(std::size_t plane) {
  return std::max<std::size_t>(1, parallel_grain_elements / std::max<std::size_t>(plane, 1));
}

inline std::size_t pool_out(std::size_t in, std::size_t k, std::size_t s, std::size_t p) {
  return (in + 2 * p - k) / s + 1;
}

namespace detail {
// The running maximum of max pooling: a NaN replaces it and then stays (PyTorch propagates
// NaN). Written as a select so loops over it vectorize and never branch on the data.
template <class T>
inline T pool_max(T best, T v) {
  return (v > best || v != v) ? v : best;
}
// Whether v is where a window's maximum `best` (pool_max's result) came from: equal to it, or
// a NaN when it is NaN. The argmax passes keep the first such position in scan order.
template <class T>
inline bool pool_is_max(T v, T best) {
  return v == best || (best != best && v != v);
}
}  // namespace detail

/// y[n,c,oh,ow] = max over the window of x (padding counts as -inf, as PyTorch);
/// argmax[n,c,oh,ow] = flat index ih*W + iw of the maximum in its [H,W] plane: the first in
/// row-major window order on ties, the first NaN if the window holds one. argmax may be null
/// (inference: values only). x: [N*C, H, W] -> y, argmax: [N*C, OH, OW].
/// Requires: window geometry with p <= k/2 (PyTorch's rule), so every window holds an input.
///
/// The window's rows are first reduced column by column into one row (contiguous, vectorized),
/// then that row across each window's columns; the argmax, when wanted, is a second, branch-free
/// pass that looks for the maximum's first position. A data-dependent branch per element
/// mispredicted on random data and cost 5% of a 224x224 inference.
template <class T>
void max_pool2d_forward(const T* x, std::size_t NC, std::size_t H, std::size_t W, const Conv2dGeom& g, T* y,
                        std::int32_t* argmax) {
  SIEVE_CHECK(g.ph * 2 <= g.kh && g.pw * 2 <= g.kw && g.sh > 0 && g.sw > 0, "max_pool2d: padding ", g.ph, "x",
              g.pw, " must be at most half the kernel ", g.kh, "x", g.kw);
  SIEVE_CHECK(H + 2 * g.ph >= g.kh && W + 2 * g.pw >= g.kw, "max_pool2d: input ", H, "x", W,
              " is smaller than the window ", g.kh, "x", g.kw);
  SIEVE_CHECK(H * W <= static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()),
              "max_pool2d: plane ", H, "x", W, " too large for int32 argmax");
  const std::size_t OH = pool_out(H, g.kh, g.sh, g.ph), OW = pool_out(W, g.kw, g.sw, g.pw);
  if (g.kh == 2 && g.kw == 2 && g.sh == 2 && g.sw == 2 && g.ph == 0 && g.pw == 0) {
    // 2x2/2 without padding (PoolNet's downsampling): every window whole, its four taps
    // compared in scan order with the same rules, values and argmax in one pass. The general
    // path below spends per output row what these windows need per element: it took 10% of a
    // PoolNet training step (perf, 2026-12-07).
    parallel_for(NC, pool_plane_grain(H * W), [&](std::size_t nc0, std::size_t nc1) {
      for (std::size_t nc = nc0; nc < nc1; ++nc) {
        const T* xp = x + nc * H * W;
        T* yp = y + nc * OH * OW;
        std::int32_t* ap = argmax ? argmax + nc * OH * OW : nullptr;
        for (std::size_t oh = 0; oh < OH; ++oh) {
          const T* r0 = xp + 2 * oh * W;
          const T* r1 = r0 + W;
          T* yr = yp + oh * OW;
          if (!ap) {
            for (std::size_t ow = 0; ow < OW; ++ow)
              yr[ow] = detail::pool_max(detail::pool_max(detail::pool_max(r0[2 * ow], r0[2 * ow + 1]), r1[2 * ow]),
                                        r1[2 * ow + 1]);
            continue;
          }
          std::int32_t* ar = ap + oh * OW;
          const auto i0 = static_cast<std::int32_t>(2 * oh * W), i1 = static_cast<std::int32_t>((2 * oh + 1) * W);
          for (std::size_t ow = 0; ow < OW; ++ow) {
            const auto w = static_cast<std::int32_t>(2 * ow);
            T best = r0[2 * ow];
            std::int32_t at = i0 + w;
            // A tap replaces the running maximum when larger, or when a NaN replaces a number:
            // the first of equal values and the first NaN keep the argmax (pool_is_max's rule).
            auto tap = [&](T v, std::int32_t i) {
              const bool take = v > best || (v != v && best == best);
              best = take ? v : best;
              at = take ? i : at;
            };
            tap(r0[2 * ow + 1], i0 + w + 1);
            tap(r1[2 * ow], i1 + w);
            tap(r1[2 * ow + 1], i1 + w + 1);
            yr[ow] = best;
            ar[ow] = at;
          }
        }
      }
    });
    return;
  }
  // Output columns [ow_a, ow_b) have their whole window inside the plane; the others are
  // clipped by padding and take the general loop.
  const std::size_t ow_a = std::min(OW, (g.pw + g.sw - 1) / g.sw),
                    ow_b = std::max(ow_a, W + g.pw >= g.kw ? std::min(OW, (W + g.pw - g.kw) / g.sw + 1) : 0);
  // The window's column loop with the stride as a constant where it is 1 or 2 (ResNet's),
  // so the compiler turns the strided loads into vector shuffles.
  auto by_stride = [&](auto&& body) {
    if (g.sw == 1) body(std::integral_constant<std::size_t, 1>{});
    else if (g.sw == 2) body(std::integral_constant<std::size_t, 2>{});
    else body(g.sw);
  };
  parallel_for(NC, pool_plane_grain(H * W), [&](std::size_t nc0, std::size_t nc1) {
    // The window rows' column maxima: one buffer per thread, grown once (a steady-state
    // step allocates nothing; a stack buffer of fixed size measured 45% slower).
    thread_local std::vector<T> col;
    if (col.size() < W) col.resize(W);
    for (std::size_t nc = nc0; nc < nc1; ++nc) {
      const T* xp = x + nc * H * W;
      T* yp = y + nc * OH * OW;
      for (std::size_t oh = 0; oh < OH; ++oh) {
        const std::size_t h0 = oh * g.sh, h_lo = h0 >= g.ph ? h0 - g.ph : 0, h_hi = std::min(h0 + g.kh - g.ph, H);
        T* c = col.data();
        std::copy(xp + h_lo * W, xp + (h_lo + 1) * W, c);
        for (std::size_t ih = h_lo + 1; ih < h_hi; ++ih) {
          const T* r = xp + ih * W;
          for (std::size_t w = 0; w < W; ++w) c[w] = detail::pool_max(c[w], r[w]);
        }
        T* yr = yp + oh * OW;
        std::int32_t* ar = argmax ? argmax + nc * OH * OW + oh * OW : nullptr;
        // Clipped windows: one at a time.
        auto edge = [&](std::size_t ow) {
          const std::size_t w0 = ow * g.sw, w_lo = w0 >= g.pw ? w0 - g.pw : 0,
                            w_hi = std::min(w0 + g.kw - g.pw, W);
          T best = c[w_lo];
          for (std::size_t w = w_lo + 1; w < w_hi; ++w) best = detail::pool_max(best, c[w]);
          yr[ow] = best;
          if (!ar) return;
          // The first position in scan order holding the maximum (or a NaN when it is one):
          // scanning backwards, every match overwrites, so the first one is left.
          std::size_t at = 0;
          for (std::size_t ih = h_hi; ih-- > h_lo;)
            for (std::size_t iw = w_hi; iw-- > w_lo;)
              at = detail::pool_is_max(xp[ih * W + iw], best) ? ih * W + iw : at;
          ar[ow] = static_cast<std::int32_t>(at);
        };
        for (std::size_t ow = 0; ow < ow_a; ++ow) edge(ow);
        for (std::size_t ow = ow_b; ow < OW; ++ow) edge(ow);
        // Whole windows: each tap of the window across all of them (vectorized over ow).
        by_stride([&](auto sw) {
          const T* c0 = c - g.pw;  // c0[ow * sw + j] is tap j of window ow
          for (std::size_t ow = ow_a; ow < ow_b; ++ow) yr[ow] = c0[ow * sw];
          for (std::size_t j = 1; j < g.kw; ++j)
            for (std::size_t ow = ow_a; ow < ow_b; ++ow) yr[ow] = detail::pool_max(yr[ow], c0[ow * sw + j]);
          if (!ar) return;
          for (std::size_t ow = ow_a; ow < ow_b; ++ow) ar[ow] = 0;
          for (std::size_t ih = h_hi; ih-- > h_lo;)
            for (std::size_t j = g.kw; j-- > 0;) {
              const T* r0 = xp + ih * W - g.pw + j;  // r0[ow * sw]: tap (ih, j) of window ow
              const auto base = static_cast<std::int32_t>(ih * W - g.pw + j);
              for (std::size_t ow = ow_a; ow < ow_b; ++ow)
                ar[ow] = detail::pool_is_max(r0[ow * sw], yr[ow]) ? base + static_cast<std::int32_t>(ow * sw) : ar[ow];
            }
        });
      }
    }
  });
}

/// dx[n,c,argmax] += dy[n,c,oh,ow]; dx is assigned (zeroed first).
/// dy, argmax: [N*C, OH, OW] -> dx: [N*C, H, W].
template <class T>
void max_pool2d_backward(const T* dy, const std::int32_t* argmax, std::size_t NC, std::size_t H, std::size_t W,
                         std::size_t OH, std::size_t OW, T* dx) {
  parallel_for(NC, pool_plane_grain(H * W), [&](std::size_t nc0, std::size_t nc1) {
    std::fill(dx + nc0 * H * W, dx + nc1 * H * W, T(0));
    for (std::size_t nc = nc0; nc < nc1; ++nc) {
      const T* dyp = dy + nc * OH * OW;
      const std::int32_t* ap = argmax + nc * OH * OW;
      T* dxp = dx + nc * H * W;
      for (std::size_t o = 0; o < OH * OW; ++o) dxp[ap[o]] += dyp[o];
    }
  });
}

/// y[n, c] = mean of plane (n, c) of x. x: [N,C,HW] in layout l -> y: [N,C] (row-major
/// whatever l, so a batch-folded network hands on ordinary embeddings).
template <class T>
void global_avg_pool_forward(const T* x, std::size_t N, std::size_t C, std::size_t HW, T* y,
                             Layout l = Layout::nchw) {
  parallel_for(N * C, pool_plane_grain(HW), [&](std::size_t i0, std::size_t i1) {
    for (std::size_t i = i0; i < i1; ++i) {  // i: the output index n*C + c
      const T* xp = x + plane_index(l, N, C, i / C, i % C) * HW;
      double s = 0;
      for (std::size_t p = 0; p < HW; ++p) s += xp[p];
      y[i] = static_cast<T>(s / static_cast<double>(HW));
    }
  });
}

/// dx[n, c, p] = dy[n, c] / HW (assigned). dy: [N,C] -> dx: [N,C,HW] in layout l.
template <class T>
void global_avg_pool_backward(const T* dy, std::size_t N, std::size_t C, std::size_t HW, T* dx,
                              Layout l = Layout::nchw) {
  const T inv = T(1) / static_cast<T>(HW);
  parallel_for(N * C, pool_plane_grain(HW), [&](std::size_t i0, std::size_t i1) {
    for (std::size_t i = i0; i < i1; ++i) {
      T* dp = dx + plane_index(l, N, C, i / C, i % C) * HW;
      std::fill(dp, dp + HW, dy[i] * inv);
    }
  });
}

}  // namespace sieve::kernels
