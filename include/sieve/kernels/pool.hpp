#pragma once
/// Pooling: max pooling with a window (keeps the argmax for backward), global average and
/// global max.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/parallel.hpp"
#include "sieve/core/simd.hpp"
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

#if SIEVE_AVX2_FMA
// The 2x2/2 windows of one output row, 8 at a time: rows r0, r1 (16 inputs each) split into
// even and odd columns, the four taps taken in scan order with max_pool2d_forward's rule (a tap
// replaces the maximum when larger, or when it is a NaN and the maximum is not), the argmax
// (flat index in the plane: i0 / i1 are rows 2*oh and 2*oh+1's offsets) carried alongside as
// int32 bits in the same blends. The row's last (OW mod 8) windows take masked loads and stores:
// PoolNet's later planes (14 and 7 wide at 28 px) are mostly tail, and a scalar tail, compiled
// into branches, kept this kernel at 5% of a training step. Results are bit-identical to the
// scalar loop's.
// With ar null (inference) the argmax is neither computed nor stored.
inline void max_pool_2x2_row_avx2(const float* r0, const float* r1, std::size_t OW, std::int32_t i0,
                                  std::int32_t i1, float* yr, std::int32_t* ar) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i lane2 = _mm256_add_epi32(lanes, lanes);
  const __m256i one = _mm256_set1_epi32(1);
  // Inputs [p, p+16) of one row, or the first `valid` of them (masked: nothing past is read).
  auto split = [&](const float* p, std::size_t valid, __m256& even, __m256& odd) {
    __m256 a, b;
    if (valid >= 16) {
      a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8);
    } else {
      const __m256i n = _mm256_set1_epi32(static_cast<int>(valid));
      a = _mm256_maskload_ps(p, _mm256_cmpgt_epi32(n, lanes));
      b = _mm256_maskload_ps(p + 8, _mm256_cmpgt_epi32(_mm256_sub_epi32(n, _mm256_set1_epi32(8)), lanes));
    }
    // shuffle gives [a0 a2 b0 b2 | a4 a6 b4 b6]; the 64-bit permute puts the pairs in order.
    even = _mm256_castpd_ps(
        _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0))), 0xD8));
    odd = _mm256_castpd_ps(
        _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))), 0xD8));
  };
  for (std::size_t ow = 0; ow < OW; ow += 8) {
    const std::size_t n = std::min<std::size_t>(8, OW - ow);
    __m256 t0, t1, t2, t3;
    split(r0 + 2 * ow, 2 * n, t0, t1);
    split(r1 + 2 * ow, 2 * n, t2, t3);
    const auto w = static_cast<std::int32_t>(2 * ow);
    const __m256i base0 = _mm256_add_epi32(_mm256_set1_epi32(i0 + w), lane2);
    const __m256i base1 = _mm256_add_epi32(_mm256_set1_epi32(i1 + w), lane2);
    __m256 best = t0;
    __m256 at = _mm256_castsi256_ps(base0);
    auto tap = [&](__m256 v, __m256i idx) {
      const __m256 larger = _mm256_cmp_ps(v, best, _CMP_GT_OQ);
      const __m256 nan_over_number =
          _mm256_and_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q), _mm256_cmp_ps(best, best, _CMP_ORD_Q));
      const __m256 take = _mm256_or_ps(larger, nan_over_number);
      best = _mm256_blendv_ps(best, v, take);
      if (ar) at = _mm256_blendv_ps(at, _mm256_castsi256_ps(idx), take);
    };
    tap(t1, _mm256_add_epi32(base0, one));
    tap(t2, base1);
    tap(t3, _mm256_add_epi32(base1, one));
    if (n == 8) {
      _mm256_storeu_ps(yr + ow, best);
      if (ar) _mm256_storeu_si256(reinterpret_cast<__m256i*>(ar + ow), _mm256_castps_si256(at));
    } else {
      const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), lanes);
      _mm256_maskstore_ps(yr + ow, m, best);
      if (ar) _mm256_maskstore_epi32(ar + ow, m, _mm256_castps_si256(at));
    }
  }
}
#endif
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
    // PoolNet training step (perf, 2026-12-07); this scalar loop 5% of bench_small's
    // train/poolnetw16/1x28/512, the AVX2 rows (float) 2.2%.
    parallel_for(NC, pool_plane_grain(H * W), [&](std::size_t nc0, std::size_t nc1) {
      for (std::size_t nc = nc0; nc < nc1; ++nc) {
        const T* xp = x + nc * H * W;
        T* yp = y + nc * OH * OW;
        std::int32_t* ap = argmax ? argmax + nc * OH * OW : nullptr;
        for (std::size_t oh = 0; oh < OH; ++oh) {
          const T* r0 = xp + 2 * oh * W;
          const T* r1 = r0 + W;
          T* yr = yp + oh * OW;
#if SIEVE_AVX2_FMA
          if constexpr (std::is_same_v<T, float>) {
            const auto i0 = static_cast<std::int32_t>(2 * oh * W), i1 = static_cast<std::int32_t>((2 * oh + 1) * W);
            detail::max_pool_2x2_row_avx2(r0, r1, OW, i0, i1, yr, ap ? ap + oh * OW : nullptr);
            continue;
          }
#endif
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

/// y[n, c] = max of plane (n, c) of x, argmax[n, c] = its first position (a NaN wins, as in
/// PyTorch's adaptive_max_pool2d). x: [N,C,HW] in layout l -> y, argmax: [N,C] row-major.
template <class T>
void global_max_pool_forward(const T* x, std::size_t N, std::size_t C, std::size_t HW, T* y, std::int32_t* argmax,
                             Layout l = Layout::nchw) {
  parallel_for(N * C, pool_plane_grain(HW), [&](std::size_t i0, std::size_t i1) {
    for (std::size_t i = i0; i < i1; ++i) {
      const T* xp = x + plane_index(l, N, C, i / C, i % C) * HW;
      std::size_t best = 0;
      for (std::size_t p = 1; p < HW && !std::isnan(xp[best]); ++p)
        if (xp[p] > xp[best] || std::isnan(xp[p])) best = p;
      y[i] = xp[best];
      argmax[i] = static_cast<std::int32_t>(best);
    }
  });
}

/// dx[n, c, argmax[n, c]] = dy[n, c], every other element 0 (assigned). dy: [N,C] -> dx:
/// [N,C,HW] in layout l.
template <class T>
void global_max_pool_backward(const T* dy, const std::int32_t* argmax, std::size_t N, std::size_t C, std::size_t HW,
                              T* dx, Layout l = Layout::nchw) {
  parallel_for(N * C, pool_plane_grain(HW), [&](std::size_t i0, std::size_t i1) {
    for (std::size_t i = i0; i < i1; ++i) {
      T* dp = dx + plane_index(l, N, C, i / C, i % C) * HW;
      std::fill(dp, dp + HW, T(0));
      dp[argmax[i]] = dy[i];
    }
  });
}

}  // namespace sieve::kernels
