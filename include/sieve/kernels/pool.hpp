#pragma once
/// Pooling: max pooling with a window (keeps the argmax for backward) and global average.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>

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

/// y[n,c,oh,ow] = max over the window of x (padding counts as -inf, as PyTorch);
/// argmax[n,c,oh,ow] = flat index ih*W + iw of the maximum in its [H,W] plane (first on ties).
/// x: [N*C, H, W] -> y, argmax: [N*C, OH, OW].
/// Requires: window geometry with p <= k/2 (PyTorch's rule), so every window holds an input.
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
  parallel_for(NC, pool_plane_grain(H * W), [&](std::size_t nc0, std::size_t nc1) {
    for (std::size_t nc = nc0; nc < nc1; ++nc) {
      const T* xp = x + nc * H * W;
      T* yp = y + nc * OH * OW;
      std::int32_t* ap = argmax + nc * OH * OW;
      for (std::size_t oh = 0; oh < OH; ++oh) {
        const std::size_t h0 = oh * g.sh, h_lo = h0 >= g.ph ? h0 - g.ph : 0, h_hi = std::min(h0 + g.kh - g.ph, H);
        for (std::size_t ow = 0; ow < OW; ++ow) {
          const std::size_t w0 = ow * g.sw, w_lo = w0 >= g.pw ? w0 - g.pw : 0,
                            w_hi = std::min(w0 + g.kw - g.pw, W);
          T best = -std::numeric_limits<T>::infinity();
          std::size_t at = h_lo * W + w_lo;
          for (std::size_t ih = h_lo; ih < h_hi; ++ih)
            for (std::size_t iw = w_lo; iw < w_hi; ++iw) {
              const T v = xp[ih * W + iw];
              if (v > best || v != v) {  // NaN propagates, as PyTorch
                best = v;
                at = ih * W + iw;
                if (v != v) goto done;
              }
            }
        done:
          yp[oh * OW + ow] = best;
          ap[oh * OW + ow] = static_cast<std::int32_t>(at);
        }
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
