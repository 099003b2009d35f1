#pragma once
/// 2-D convolution (no bias, no dilation, no groups) as im2col + GEMM, forward and backward.
///
/// Layouts: x [N,C,H,W], w [K,C,KH,KW], y [N,K,OH,OW], all contiguous row-major; x and y may
/// instead be batch-folded (Layout::cnhw, kernels/layout.hpp): then a 1x1 stride-1 convolution
/// is one GEMM [K,C] x [C,N*H*W] on x itself, and every product writes its samples' columns of
/// y in place (no scatter, no gather in backward).
/// Samples are processed in groups of G (conv2d_group): the group's columns sit side by side
/// in one [C*KH*KW, G*OH*OW] matrix, so small spatial sizes (layer4 at 32x32 has OH*OW = 1)
/// still give BLAS a wide product instead of G matrix-vector products. A 1x1 stride-1
/// unpadded convolution with G = 1 needs no columns at all: y_n = w * x_n directly. A strided
/// 1x1 convolution (ResNet's downsample) gathers the subsampled pixels only ([C, OH*OW]), never
/// a KH*KW-expanded matrix.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "sieve/core/check.hpp"
#include "sieve/core/parallel.hpp"
#include "sieve/core/simd.hpp"
#include "sieve/kernels/gemm.hpp"
#include "sieve/kernels/layout.hpp"
#include "sieve/kernels/sgemm_fused.hpp"
#include "sieve/kernels/winograd.hpp"

namespace sieve::kernels {

/// Kernel size, stride and zero padding of a convolution or pooling window.
struct Conv2dGeom {
  std::size_t kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0;
};

/// How the forward and input-gradient products are computed (the weight gradient is always
/// im2col + GEMM).
enum class Conv2dAlgo {
  automatic,  ///< Winograd where it applies and pays (conv2d_uses_winograd), else im2col
  im2col,     ///< im2col + GEMM (exact products)
  winograd,   ///< Winograd F(2x2,3x3); only for 3x3, stride 1, padding 1
  winograd4,  ///< Winograd F(4x4,3x3); as winograd (fewer multiplies, a larger float error)
};

/// The full problem size of one convolution.
struct Conv2dDims {
  std::size_t N = 0, C = 0, H = 0, W = 0, K = 0;
  Conv2dGeom g{};
  std::size_t group = 0;  ///< samples per GEMM group; 0 = automatic (conv2d_group_budget)
  Conv2dAlgo algo = Conv2dAlgo::automatic;
  Layout in = Layout::nchw;   ///< x's layout (and dx's)
  Layout out = Layout::nchw;  ///< y's layout (and dy's); CNHW in needs CNHW out
  /// A float forward may take fused_sgemm (sgemm_fused.hpp) instead of BLAS for its products
  /// (batch-folded 1x1, Winograd's 16, im2col's into a CNHW output or one sample): same
  /// accuracy, different rounding. ResNet turns it off in training (see Bottleneck).
  bool fused = true;
  /// No backward follows this forward and the caller keeps Winograd's transformed weights
  /// across calls (inference): the automatic choice then takes Winograd on more geometries,
  /// F(4x4,3x3) among them (fewer multiplies, 5x F(2x2,3x3)'s rounding error;
  /// conv2d_winograd_tile).
  bool forward_only = false;

  /// Output height; Requires: H + 2*ph >= kh and sh > 0 (checked by conv2d_check).
  std::size_t OH() const { return (H + 2 * g.ph - g.kh) / g.sh + 1; }
  std::size_t OW() const { return (W + 2 * g.pw - g.kw) / g.sw + 1; }
  /// Rows of the column matrix: C*KH*KW.
  std::size_t CKK() const { return C * g.kh * g.kw; }
  bool direct() const { return g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0; }
  /// A batch-folded 1x1 stride-1 convolution: one product over all samples, no columns.
  bool folded_direct() const { return in == Layout::cnhw && direct(); }
};

/// Elements a group's workspace may use before samples stop being batched together.
inline constexpr std::size_t conv2d_group_budget = std::size_t{1} << 21;

/// Throws sieve::Error naming `what` when the geometry is impossible.
inline void conv2d_check(const Conv2dDims& d, const char* what) {
  SIEVE_CHECK(d.g.kh > 0 && d.g.kw > 0 && d.g.sh > 0 && d.g.sw > 0, what, ": kernel ", d.g.kh, "x", d.g.kw,
              " and stride ", d.g.sh, "x", d.g.sw, " must be positive");
  SIEVE_CHECK(d.H + 2 * d.g.ph >= d.g.kh && d.W + 2 * d.g.pw >= d.g.kw, what, ": input ", d.H, "x", d.W,
              " with padding ", d.g.ph, "x", d.g.pw, " is smaller than the kernel ", d.g.kh, "x", d.g.kw);
  SIEVE_CHECK(d.in == Layout::nchw || d.out == Layout::cnhw, what, ": a ", layout_name(d.in), " input needs a ",
              layout_name(Layout::cnhw), " output, got ", layout_name(d.out));
}

namespace detail {
// Output planes of at most this many pixels (4x4, and the 2x2 and 1x1 planes of layer3/4 at
// small inputs) copy through a table of source pixels: a handful of values per column row,
// where the per-line copies of the general loop cost more than the values.
inline constexpr std::size_t conv2d_tiny_pixels = 16;
inline constexpr std::size_t conv2d_tiny_taps = 49;  // kernels up to 7x7
inline constexpr std::size_t conv2d_tiny_table = conv2d_tiny_taps * conv2d_tiny_pixels;

// src[t*P + p]: the input pixel (ih*W + iw) that kernel tap t = i*KW + j reads for output
// pixel p, or -1 in the padding. Requires: KH*KW*P <= conv2d_tiny_table.
inline void conv2d_tiny_sources(const Conv2dDims& d, int* src) {
  const std::size_t OH = d.OH(), OW = d.OW(), P = OH * OW;
  for (std::size_t i = 0; i < d.g.kh; ++i)
    for (std::size_t j = 0; j < d.g.kw; ++j)
      for (std::size_t oh = 0; oh < OH; ++oh)
        for (std::size_t ow = 0; ow < OW; ++ow) {
          using D = std::ptrdiff_t;
          const D ih = static_cast<D>(oh * d.g.sh + i) - static_cast<D>(d.g.ph);
          const D iw = static_cast<D>(ow * d.g.sw + j) - static_cast<D>(d.g.pw);
          const bool in = ih >= 0 && iw >= 0 && ih < static_cast<D>(d.H) && iw < static_cast<D>(d.W);
          src[(i * d.g.kw + j) * P + oh * OW + ow] = in ? static_cast<int>(ih * static_cast<D>(d.W) + iw) : -1;
        }
}
inline bool conv2d_tiny(const Conv2dDims& d) {
  const std::size_t P = d.OH() * d.OW();
  return P <= conv2d_tiny_pixels && d.g.kh * d.g.kw <= conv2d_tiny_taps;
}

// The kernel taps (t = i*KW + j) that read an input pixel for some output pixel, in order.
// On tiny planes some taps may read only padding (a 3x3 kernel with padding 1 on a 1x1 plane
// uses its centre alone); their column rows would be all zeros and are left out.
struct Conv2dTaps {
  std::size_t n = 0;  // live taps; == KH*KW: all (the list is then unused)
  std::array<std::uint8_t, conv2d_tiny_taps> tap{};
};
inline Conv2dTaps conv2d_live_taps(const Conv2dDims& d) {
  Conv2dTaps L;
  const std::size_t taps = d.g.kh * d.g.kw, P = d.OH() * d.OW();
  L.n = taps;
  if (!conv2d_tiny(d)) return L;
  int src[conv2d_tiny_table];
  conv2d_tiny_sources(d, src);
  L.n = 0;
  for (std::size_t t = 0; t < taps; ++t) {
    bool live = false;
    for (std::size_t p = 0; p < P; ++p) live = live || src[t * P + p] >= 0;
    if (live) L.tap[L.n++] = static_cast<std::uint8_t>(t);
  }
  return L;
}

// The tiny-plane loop of im2col and col2im (adjoints): f(col_row, x_plane, sources, P) for
// every (channel, live tap) row, sources[p] the plane index tap reads for output p, or -1.
template <class F>
void conv2d_tiny_rows(const Conv2dDims& d, const Conv2dTaps* live, F&& f) {
  int src[conv2d_tiny_table];
  conv2d_tiny_sources(d, src);
  const std::size_t P = d.OH() * d.OW(), taps = live ? live->n : d.g.kh * d.g.kw;
  for (std::size_t c = 0; c < d.C; ++c)
    for (std::size_t t = 0; t < taps; ++t) f(c * taps + t, c, src + (live ? live->tap[t] : t) * P, P);
}
}  // namespace detail

/// Output planes at least this large already give BLAS a wide product: no grouping (which
/// would cost a gather/scatter copy per sample).
inline constexpr std::size_t conv2d_group_min_pixels = 1024;

/// A 1x1 stride-1 convolution multiplies the samples' own [C, OH*OW] planes in place from
/// this many pixels up, instead of copying them side by side for one wide GEMM (measured on
/// ResNet50 at 64x64, batch 64: 16x16 planes this way, eval +8-12%, train +5-10%).
inline constexpr std::size_t conv2d_direct_min_pixels = 256;

/// Multiply-adds a thread should get before a convolution is split (waking threads and
/// waiting for the slowest costs more than a small convolution).
inline constexpr std::size_t conv2d_parallel_min_macs = std::size_t{1} << 21;

/// Threads a convolution of this size may use (at most one per sample group, see below).
inline std::size_t conv2d_max_parts(const Conv2dDims& d) {
  return d.N * d.K * d.CKK() * d.OH() * d.OW() / conv2d_parallel_min_macs;
}

/// Samples per GEMM group: 1 for large output planes, else as many as fit the budget (at
/// least 1, at most N), and no more than leave one group per thread; the groups then evened
/// out so that their count is a multiple of the threads (64 samples of which 28 fit: 4 groups
/// of 16, not 28 + 28 + 8, where one thread would do twice the other's work). A batch-folded
/// 1x1 convolution takes all N at once.
inline std::size_t conv2d_group(const Conv2dDims& d) {
  const std::size_t N = std::max<std::size_t>(d.N, 1);
  if (d.folded_direct()) return N;
  if (d.group > 0) return std::min(d.group, N);
  if (d.OH() * d.OW() >= conv2d_group_min_pixels) return 1;
  if (d.out == Layout::nchw && d.direct() && d.OH() * d.OW() >= conv2d_direct_min_pixels) return 1;
  // A CNHW output needs no product buffer: the GEMM writes the group's columns of y.
  const std::size_t per_sample = (d.CKK() + (d.out == Layout::cnhw ? 0 : d.K)) * d.OH() * d.OW();
  const std::size_t g = per_sample == 0 ? 1 : conv2d_group_budget / per_sample;
  const std::size_t T = std::max<std::size_t>(parallel_parts(N, conv2d_max_parts(d)), 1);
  const std::size_t fit = std::clamp<std::size_t>(g, 1, (N + T - 1) / T);
  const std::size_t groups = (N + fit - 1) / fit, even = (groups + T - 1) / T * T;
  return (N + even - 1) / even;
}

/// How a convolution's samples are split: groups of G samples, `parts` threads each taking a
/// contiguous run of groups with its own slice of the workspace.
struct Conv2dPlan {
  std::size_t G = 1, groups = 0, parts = 1;
  std::size_t part_ws = 0;  ///< workspace elements of one part: columns (+ the group's product)
  std::size_t dw_ws = 0;    ///< elements of one private weight-gradient partial (parts > 1)
  /// Column rows per sample: C*KH*KW, or C*(live taps) when taps reading only padding are
  /// left out (compact: the weights are then gathered to [K, C*live] in the workspace, and
  /// every part's weight gradient goes through a compact partial).
  std::size_t rows = 0;
  bool compact = false;
  std::size_t wc_ws = 0;  ///< elements of the gathered weights (compact)
  /// Workspace elements in all.
  std::size_t total() const { return parts * part_ws + (compact ? parts : parts - 1) * dw_ws + wc_ws; }
};

inline Conv2dPlan conv2d_plan(const Conv2dDims& d) {
  Conv2dPlan p;
  p.G = conv2d_group(d);
  if (d.folded_direct()) {  // one product; gemm splits its columns across threads itself
    p.groups = d.N > 0 ? 1 : 0;
    p.rows = d.C;
    return p;
  }
  p.groups = (d.N + p.G - 1) / p.G;
  p.parts = std::max<std::size_t>(parallel_parts(p.groups, conv2d_max_parts(d)), 1);
  const std::size_t P = d.OH() * d.OW(), live = detail::conv2d_live_taps(d).n;
  p.compact = live < d.g.kh * d.g.kw;
  p.rows = d.C * live;
  p.part_ws = p.G == 1 && d.direct() ? 0 : p.rows * p.G * P + (p.G > 1 && d.out == Layout::nchw ? d.K * p.G * P : 0);
  if (d.fused && p.part_ws > 0) p.part_ws += fused_sgemm_b_workspace();  // after the columns (and product)
  p.dw_ws = p.parts > 1 || p.compact ? d.K * p.rows : 0;
  p.wc_ws = p.compact ? d.K * p.rows : 0;
  return p;
}

/// When the automatic choice takes Winograd F(2x2,3x3) where a backward may follow (training,
/// the weights transformed once a step; bench_conv, 2 threads, CNHW,
/// benchmarks/nn.md): planes of at least 8x8 whose 2x2 tiles waste at most 15% (7x7 pads to
/// 8x8 and loses), at least 64 channels in and out and at least 8192 input values per sample
/// (64 channels at 8x8 lose to the transforms; 128 at 8x8 and 64 at 16x16 win); or, with 256+
/// channels in and out, planes down to 4x4 (bench_conv at batch 64: 256 channels at 4x4
/// +10-20%, eval/64/64 +2%; 128 channels +4-10% alone but eval/32/64 -15% in the model; 2x2
/// planes, one tile each, lose 30%).
inline constexpr std::size_t conv2d_winograd_min_pixels = 64;
inline constexpr std::size_t conv2d_winograd_min_channels = 64;
inline constexpr std::size_t conv2d_winograd_min_volume = 8192;
inline constexpr std::size_t conv2d_winograd_small_pixels = 16;
inline constexpr std::size_t conv2d_winograd_small_channels = 256;
/// Inference (Conv2dDims::forward_only: no backward follows, the caller keeps the transformed
/// weights, as nn::Conv2d does) is chosen by the product's width, tiles x samples: F(4x4,3x3)
/// from this many columns on planes whose 4x4 tiles waste at most 35%, else F(2x2,3x3) from
/// this many columns on planes whose 2x2 tiles waste at most 35%, at least 64 channels in
/// and out (bench_conv SIEVE_BENCH_CONV_INFER=1, CNHW, medians of 3, ms im2col / F(2x2) /
/// F(4x4): 512 channels at 7x7 batch 16 26.1 / 17.1 / 12.4, batch 8 F(2x2) 7.90 / F(4x4) 7.28,
/// batch 4 7.73 / 4.89 / 6.92; 256 at 14x14 batch 16 23.6 / 15.1 / 13.2, batch 2 F(2x2) 2.08 /
/// F(4x4) 1.53, batch 1 2.87 / 1.07 / 1.33; 512 at 2x2 batch 64 8.64 / 4.24, batch 32 3.69 /
/// 2.21, batch 16 1.84 / 2.23; 64 at 8x8 batch 64 2.97 / 2.18 / 1.24). Per call, with the
/// weights transformed each time (training's case), the transforms cost too much for these.
inline constexpr std::size_t conv2d_winograd_kept_min_columns = 32;
inline constexpr std::size_t conv2d_winograd_kept_max_waste_percent = 35;

/// The output tile side of the Winograd path conv2d_forward and conv2d_backward_input take:
/// 2 (F(2x2,3x3)), 4 (F(4x4,3x3)), or 0 (no Winograd). Throws when Conv2dAlgo::winograd or
/// winograd4 is asked for a geometry it cannot compute.
inline std::size_t conv2d_winograd_tile(const Conv2dDims& d) {
  const bool fits = d.g.kh == 3 && d.g.kw == 3 && d.g.sh == 1 && d.g.sw == 1 && d.g.ph == 1 && d.g.pw == 1 &&
                    d.in == d.out;
  switch (d.algo) {
    case Conv2dAlgo::im2col: return 0;
    case Conv2dAlgo::winograd:
    case Conv2dAlgo::winograd4:
      SIEVE_CHECK(fits, "conv2d: Winograd F(", d.algo == Conv2dAlgo::winograd ? "2x2" : "4x4",
                  ",3x3) needs a 3x3 kernel, stride 1, padding 1 and one layout, got ", d.g.kh, "x", d.g.kw,
                  " stride ", d.g.sh, "x", d.g.sw, " padding ", d.g.ph, "x", d.g.pw, " ", layout_name(d.in), " to ",
                  layout_name(d.out));
      return d.algo == Conv2dAlgo::winograd ? 2 : 4;
    case Conv2dAlgo::automatic: break;
  }
  if (!fits) return 0;
  auto tiles = [&](std::size_t m) { return ((d.H + m - 1) / m) * ((d.W + m - 1) / m); };
  auto waste_ok = [&](std::size_t m, std::size_t max_percent) {
    return tiles(m) * m * m * 100 <= d.H * d.W * (100 + max_percent);
  };
  if (d.forward_only) {
    if (d.C < conv2d_winograd_min_channels || d.K < conv2d_winograd_min_channels) return 0;
    for (const std::size_t m : {std::size_t{4}, std::size_t{2}})
      if (waste_ok(m, conv2d_winograd_kept_max_waste_percent) && tiles(m) * d.N >= conv2d_winograd_kept_min_columns)
        return m;
    return 0;
  }
  const bool large = d.H * d.W >= conv2d_winograd_min_pixels && d.C >= conv2d_winograd_min_channels &&
                     d.K >= conv2d_winograd_min_channels && d.C * d.H * d.W >= conv2d_winograd_min_volume;
  const bool small_wide = d.H * d.W >= conv2d_winograd_small_pixels && d.C >= conv2d_winograd_small_channels &&
                          d.K >= conv2d_winograd_small_channels;
  return waste_ok(2, 15) && (large || small_wide) ? 2 : 0;
}

/// Whether conv2d_forward and conv2d_backward_input take a Winograd path (see
/// conv2d_winograd_tile).
inline bool conv2d_uses_winograd(const Conv2dDims& d) { return conv2d_winograd_tile(d) != 0; }

namespace detail {
// The Winograd tile side the plans and weights of d are sized for (2 where none is taken).
inline std::size_t conv2d_winograd_m(const Conv2dDims& d) { return std::max<std::size_t>(conv2d_winograd_tile(d), 2); }
}  // namespace detail

/// The Winograd plans of the forward (C -> K) and of the input gradient (K -> C).
inline WinogradPlan conv2d_winograd_plan(const Conv2dDims& d, bool input_gradient) {
  const std::size_t m = detail::conv2d_winograd_m(d);
  return input_gradient ? winograd_plan(d.N, d.K, d.H, d.W, d.C, conv2d_max_parts(d), d.in, false, m)
                        : winograd_plan(d.N, d.C, d.H, d.W, d.K, conv2d_max_parts(d), d.in, d.fused, m);
}

/// Elements of the forward Winograd weights of a convolution ((m+2)^2 * K * C for tile side m).
inline std::size_t conv2d_winograd_weights_size(const Conv2dDims& d) {
  const std::size_t a = detail::conv2d_winograd_m(d) + 2;
  return a * a * d.K * d.C;
}

/// The forward Winograd weights of w [K,C,3,3] into U (conv2d_winograd_weights_size(d)
/// elements), for a caller that keeps them across conv2d_forward calls.
template <class T>
void conv2d_winograd_weights(const T* w, const Conv2dDims& d, T* U) {
  winograd_weights(w, d.K, d.C, false, detail::conv2d_winograd_m(d), U);
}

/// Workspace elements conv2d_forward / _backward_input / _backward_weight need (at the current
/// thread count: per-thread columns, and per-thread weight-gradient partials; or Winograd's
/// transformed weights and per-thread tile buffers).
inline std::size_t conv2d_workspace_size(const Conv2dDims& d) {
  const Conv2dPlan p = conv2d_plan(d);
  std::size_t n = p.total();
  if (d.fused && d.folded_direct())  // fused_sgemm's per-thread blocks of B (float, AVX2)
    n = std::max(n, parallel_parts((d.N * d.OH() * d.OW() + 15) / 16, conv2d_max_parts(d)) *
                        fused_sgemm_b_workspace());
  if (conv2d_uses_winograd(d))
    n = std::max({n, winograd_workspace_size(conv2d_winograd_plan(d, false)),
                  winograd_workspace_size(conv2d_winograd_plan(d, true))});
  return n;
}

/// Valid output range [lo, hi) along one axis: out*s - p + k lands inside [0, extent).
inline void conv2d_valid_range(std::size_t k, std::size_t s, std::size_t p, std::size_t extent, std::size_t out,
                               std::size_t& lo, std::size_t& hi) {
  // out*s + k >= p  and  out*s + k < extent + p
  lo = k >= p ? 0 : (p - k + s - 1) / s;
  hi = extent + p > k ? (extent + p - k + s - 1) / s : 0;
  lo = std::min(lo, out);
  hi = std::clamp(hi, lo, out);
}

namespace detail {
// out[o] = x[2*o] for o < n: im2col's line for a stride-2 kernel column. Reads x[0 .. 2n-2]
// only. With AVX2, 8 values from two loads (x[2o..2o+7] and x[2o+7..2o+14], so nothing past
// the last value is read) and two lane permutes; as a loop it stayed scalar.
template <class T>
void copy_stride2(const T* x, T* out, std::size_t n) {
  std::size_t o = 0;
#if SIEVE_AVX2_FMA
  if constexpr (std::is_same_v<T, float>) {
    const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 0, 0, 0, 0), odd = _mm256_setr_epi32(0, 0, 0, 0, 1, 3, 5, 7);
    for (; o + 8 <= n; o += 8) {
      const __m256 a = _mm256_permutevar8x32_ps(_mm256_loadu_ps(x + 2 * o), even);
      const __m256 b = _mm256_permutevar8x32_ps(_mm256_loadu_ps(x + 2 * o + 7), odd);
      _mm256_storeu_ps(out + o, _mm256_blend_ps(a, b, 0xF0));
    }
  }
#endif
  for (; o < n; ++o) out[o] = x[2 * o];
}

// conv2d_valid_range for kernel offsets 0..k-1 along one axis, computed once per call rather
// than per channel (two divisions per column row cost about as much as copying a short line).
// Offsets past the table compute theirs when asked.
struct Conv2dRanges {
  static constexpr std::size_t cached = 16;
  std::size_t s, p, extent, out;
  std::array<std::size_t, cached> lo{}, hi{};
  Conv2dRanges(std::size_t k, std::size_t s_, std::size_t p_, std::size_t extent_, std::size_t out_)
      : s(s_), p(p_), extent(extent_), out(out_) {
    for (std::size_t i = 0; i < std::min(k, cached); ++i) conv2d_valid_range(i, s, p, extent, out, lo[i], hi[i]);
  }
  void operator()(std::size_t i, std::size_t& l, std::size_t& h) const {
    if (i < cached) l = lo[i], h = hi[i];
    else conv2d_valid_range(i, s, p, extent, out, l, h);
  }
};
}  // namespace detail

/// col[(c*KH + i)*KW + j, off + oh*OW + ow] = x[c, oh*SH - PH + i, ow*SW - PW + j] (0 outside).
/// x: one sample's C planes of [H,W], cs elements apart (0: H*W, NCHW; N*H*W for CNHW);
/// col has leading dimension ld. With `live` (conv2d_plan's compact case) the rows are
/// (c, live tap) only: [C*live.n, ...].
template <class T>
void im2col(const T* x, const Conv2dDims& d, T* col, std::size_t ld, std::size_t off, std::size_t cs = 0,
            const detail::Conv2dTaps* live = nullptr) {
  const std::size_t C = d.C, H = d.H, W = d.W, KH = d.g.kh, KW = d.g.kw, SH = d.g.sh, SW = d.g.sw, PH = d.g.ph,
                    PW = d.g.pw, OH = d.OH(), OW = d.OW();
  if (cs == 0) cs = H * W;
  if (detail::conv2d_tiny(d)) {
    detail::conv2d_tiny_rows(d, live, [&](std::size_t r, std::size_t c, const int* st, std::size_t P) {
      T* row = col + r * ld + off;
      const T* xc = x + c * cs;
      for (std::size_t p = 0; p < P; ++p) row[p] = st[p] >= 0 ? xc[st[p]] : T(0);
    });
    return;
  }
  // A stride-1 window that keeps the plane's size (3x3 with padding 1): each column row is
  // the plane shifted, so small planes cost one copy per row instead of one per output line.
  const bool same = SH == 1 && SW == 1 && OH == H && OW == W;
  const detail::Conv2dRanges rows(KH, SH, PH, H, OH), cols(KW, SW, PW, W, OW);
  for (std::size_t c = 0; c < C; ++c) {
    const T* xc = x + c * cs;
    for (std::size_t i = 0; i < KH; ++i) {
      std::size_t oh_lo, oh_hi;
      rows(i, oh_lo, oh_hi);
      for (std::size_t j = 0; j < KW; ++j) {
        std::size_t ow_lo, ow_hi;
        cols(j, ow_lo, ow_hi);
        T* row = col + ((c * KH + i) * KW + j) * ld + off;
        if (same) {  // the plane shifted by (i - PH, j - PW): one copy, then the zero borders
          const std::ptrdiff_t P = static_cast<std::ptrdiff_t>(H * W), Wd = static_cast<std::ptrdiff_t>(W);
          const std::ptrdiff_t dlt = (static_cast<std::ptrdiff_t>(i) - static_cast<std::ptrdiff_t>(PH)) * Wd +
                                     static_cast<std::ptrdiff_t>(j) - static_cast<std::ptrdiff_t>(PW);
          // Valid rows, cut to where the source index p + dlt lies inside the plane (what the
          // cut removes are wrapped columns, zeroed below); none left: all zeros.
          std::ptrdiff_t lo = std::max(static_cast<std::ptrdiff_t>(oh_lo) * Wd, -dlt);
          std::ptrdiff_t hi = std::min(static_cast<std::ptrdiff_t>(oh_hi) * Wd, P - dlt);
          if (hi <= lo) lo = hi = 0;
          std::fill(row, row + lo, T(0));
          if (hi > lo) std::memcpy(row + lo, xc + lo + dlt, static_cast<std::size_t>(hi - lo) * sizeof(T));
          std::fill(row + hi, row + P, T(0));
          if (ow_lo > 0 || ow_hi < OW)
            for (std::size_t oh = oh_lo; oh < oh_hi; ++oh) {
              T* out = row + oh * OW;
              for (std::size_t ow = 0; ow < ow_lo; ++ow) out[ow] = T(0);
              for (std::size_t ow = ow_hi; ow < OW; ++ow) out[ow] = T(0);
            }
          continue;
        }
        for (std::size_t oh = 0; oh < OH; ++oh) {
          T* out = row + oh * OW;
          if (oh < oh_lo || oh >= oh_hi) {
            std::fill(out, out + OW, T(0));
            continue;
          }
          const T* xr = xc + (oh * SH + i - PH) * W;  // in range: oh*SH + i >= PH
          std::fill(out, out + ow_lo, T(0));
          if (SW == 1) {
            if (ow_hi > ow_lo) std::memcpy(out + ow_lo, xr + (ow_lo + j - PW), (ow_hi - ow_lo) * sizeof(T));
          } else if (SW == 2) {
            if (ow_hi > ow_lo) detail::copy_stride2(xr + (ow_lo * 2 + j - PW), out + ow_lo, ow_hi - ow_lo);
          } else {
            for (std::size_t ow = ow_lo; ow < ow_hi; ++ow) out[ow] = xr[ow * SW + j - PW];
          }
          std::fill(out + ow_hi, out + OW, T(0));
        }
      }
    }
  }
}

/// The adjoint of im2col: dx[c, ih, iw] += every column entry that im2col copied from it.
/// dx: one sample's planes, cs apart as in im2col (accumulated into, callers zero it first);
/// `live` as in im2col.
template <class T>
void col2im(const T* col, const Conv2dDims& d, std::size_t ld, std::size_t off, T* dx, std::size_t cs = 0,
            const detail::Conv2dTaps* live = nullptr) {
  const std::size_t C = d.C, H = d.H, W = d.W, KH = d.g.kh, KW = d.g.kw, SH = d.g.sh, SW = d.g.sw, PH = d.g.ph,
                    PW = d.g.pw, OH = d.OH(), OW = d.OW();
  if (cs == 0) cs = H * W;
  if (detail::conv2d_tiny(d)) {  // the same order of additions as the loop below
    detail::conv2d_tiny_rows(d, live, [&](std::size_t r, std::size_t c, const int* st, std::size_t P) {
      const T* row = col + r * ld + off;
      T* dxc = dx + c * cs;
      for (std::size_t p = 0; p < P; ++p)
        if (st[p] >= 0) dxc[st[p]] += row[p];
    });
    return;
  }
  for (std::size_t c = 0; c < C; ++c) {
    T* dxc = dx + c * cs;
    for (std::size_t i = 0; i < KH; ++i) {
      std::size_t oh_lo, oh_hi;
      conv2d_valid_range(i, SH, PH, H, OH, oh_lo, oh_hi);
      for (std::size_t j = 0; j < KW; ++j) {
        std::size_t ow_lo, ow_hi;
        conv2d_valid_range(j, SW, PW, W, OW, ow_lo, ow_hi);
        const T* row = col + ((c * KH + i) * KW + j) * ld + off;
        for (std::size_t oh = oh_lo; oh < oh_hi; ++oh) {
          const T* in = row + oh * OW;
          T* xr = dxc + (oh * SH + i - PH) * W;
          if (SW == 1) {
            for (std::size_t ow = ow_lo; ow < ow_hi; ++ow) xr[ow + j - PW] += in[ow];
          } else {
            for (std::size_t ow = ow_lo; ow < ow_hi; ++ow) xr[ow * SW + j - PW] += in[ow];
          }
        }
      }
    }
  }
}

namespace detail {
// t[k, s*P + p] = y[n0+s, k, p] for s < g: NCHW to the group's [K, g*P] layout (conv2d_finish
// is the way back).
template <class T>
void conv2d_gather(const T* y, std::size_t K, std::size_t P, std::size_t g, T* t) {
  for (std::size_t s = 0; s < g; ++s)
    for (std::size_t k = 0; k < K; ++k) std::memcpy(t + k * g * P + s * P, y + (s * K + k) * P, P * sizeof(T));
}
inline void conv2d_check_ws(const Conv2dDims& d, std::size_t ws_size, const char* what) {
  SIEVE_CHECK(ws_size >= conv2d_workspace_size(d), what, ": workspace has ", ws_size, " elements but N=", d.N,
              " C=", d.C, " H=", d.H, " W=", d.W, " K=", d.K, " needs ", conv2d_workspace_size(d));
}
}  // namespace detail

/// What conv2d_forward applies to each output row while it is still in cache, so an
/// inference pass needs no separate batch-norm, residual or ReLU sweeps over memory:
///   y = max(((y * scale[k] + shift[k]) + residual), 0)
/// where each step happens only when set (scale and shift together). The arithmetic, in this
/// order and unfused (-ffp-contract=off), is exactly eval-mode batch norm's and the residual
/// block's, so the result is bit-identical to running them separately.
template <class T>
struct Conv2dEpilogue {
  const T* scale = nullptr;     ///< [K]
  const T* shift = nullptr;     ///< [K]
  const T* residual = nullptr;  ///< [N,K,OH,OW] in y's layout, may not alias y
  bool relu = false;
};

namespace detail {
// dst[p] = epilogue(src[p]) for one output row of channel k; src may be dst. One pass: the
// ReLU is applied with the rest, not over dst again (a second pass over a folded layer's
// rows went back to L2 for them).
template <class T>
void conv2d_epilogue_row(const T* src, T* dst, const T* res, std::size_t P, std::size_t k,
                         const Conv2dEpilogue<T>& e) {
  auto pass = [&](auto relu) {
    auto out = [](T v) { return decltype(relu)::value ? (v > T(0) ? v : T(0)) : v; };
    if (e.scale) {
      const T a = e.scale[k], b = e.shift[k];
      if (res)
        for (std::size_t p = 0; p < P; ++p) dst[p] = out((src[p] * a + b) + res[p]);
      else
        for (std::size_t p = 0; p < P; ++p) dst[p] = out(src[p] * a + b);
    } else if (res) {
      for (std::size_t p = 0; p < P; ++p) dst[p] = out(src[p] + res[p]);
    } else {
      for (std::size_t p = 0; p < P; ++p) dst[p] = out(src[p]);
    }
  };
  if (e.relu)
    pass(std::true_type{});
  else if (e.scale || res || src != dst)
    pass(std::false_type{});
}
// The g samples' outputs y[s,k,p] = epilogue(t[k, s*P + p]): from the group's [K, g*P]
// product to NCHW (t may be y when g == 1); res points at the same samples' residual.
template <class T>
void conv2d_finish(const T* t, std::size_t K, std::size_t P, std::size_t g, T* y, const T* res,
                   const Conv2dEpilogue<T>& e) {
  for (std::size_t s = 0; s < g; ++s)
    for (std::size_t k = 0; k < K; ++k) {
      const std::size_t o = (s * K + k) * P;
      conv2d_epilogue_row(t + k * g * P + s * P, y + o, res ? res + o : nullptr, P, k, e);
    }
}
// The epilogue in place on a block of len columns of a [K, ld] output: rows y + k*ld; res
// points at the residual's same block.
template <class T>
void conv2d_finish_block(T* y, std::size_t K, std::size_t ld, std::size_t len, const T* res,
                         const Conv2dEpilogue<T>& e) {
  for (std::size_t k = 0; k < K; ++k)
    conv2d_epilogue_row(y + k * ld, y + k * ld, res ? res + k * ld : nullptr, len, k, e);
}
// Where sample n0's input or output starts, and the row length of a group's output block.
struct Conv2dStrides {
  std::size_t xs, cs;   // x: sample stride, channel stride (im2col's cs)
  std::size_t ys, ldy;  // y: sample stride, leading dimension of a group's [K, g*P] block
  explicit Conv2dStrides(const Conv2dDims& d) {
    const std::size_t HW = d.H * d.W, P = d.OH() * d.OW();
    const bool ci = d.in == Layout::cnhw, co = d.out == Layout::cnhw;
    xs = ci ? HW : d.C * HW;
    cs = ci ? d.N * HW : HW;
    ys = co ? P : d.K * P;
    ldy = co ? d.N * P : P;
  }
};

// wc[k, c*n + t] = w[k, c, tap t] (the live taps' weights, conv2d_plan's compact case).
template <class T>
void conv2d_gather_weights(const T* w, const Conv2dDims& d, const Conv2dTaps& L, T* wc) {
  const std::size_t taps = d.g.kh * d.g.kw;
  for (std::size_t kc = 0; kc < d.K * d.C; ++kc)
    for (std::size_t t = 0; t < L.n; ++t) wc[kc * L.n + t] = w[kc * taps + L.tap[t]];
}
// The [K, pl.rows] weight matrix of the products: w itself, or (compact) the live taps'
// weights gathered into the workspace's last pl.wc_ws elements.
template <class T>
const T* conv2d_weight_matrix(const T* w, const Conv2dDims& d, const Conv2dPlan& pl, const Conv2dTaps& L, T* ws) {
  if (!pl.compact) return w;
  T* wc = ws + pl.total() - pl.wc_ws;
  conv2d_gather_weights(w, d, L, wc);
  return wc;
}
// dw[k, c, tap t] += sum over parts of part[k, c*n + t], parts added in order.
template <class T>
void conv2d_scatter_weight_grad(const T* partials, std::size_t parts, std::size_t stride, const Conv2dDims& d,
                                const Conv2dTaps& L, T* dw) {
  const std::size_t taps = d.g.kh * d.g.kw;
  for (std::size_t q = 0; q < parts; ++q) {
    const T* pq = partials + q * stride;
    for (std::size_t kc = 0; kc < d.K * d.C; ++kc)
      for (std::size_t t = 0; t < L.n; ++t) dw[kc * taps + L.tap[t]] += pq[kc * L.n + t];
  }
}
}  // namespace detail

/// y = conv(x, w): y[n,k,oh,ow] = sum_{c,i,j} w[k,c,i,j] x[n,c,oh*SH-PH+i,ow*SW-PW+j], then
/// the epilogue (none by default).
/// x: [N,C,H,W] in d.in's layout, w: [K,C,KH,KW] -> y: [N,K,OH,OW] in d.out's (assigned).
/// Requires: ws holds ws_size >= conv2d_workspace_size(d) elements; winograd_u is null or,
/// when the convolution takes Winograd, conv2d_winograd_weights of this w (kept by the
/// caller across calls). Ensures: no allocation.
template <class T>
void conv2d_forward(const T* x, const T* w, T* y, const Conv2dDims& d, T* ws, std::size_t ws_size,
                    const Conv2dEpilogue<T>& epi = {}, const T* winograd_u = nullptr) {
  conv2d_check(d, "conv2d_forward");
  detail::conv2d_check_ws(d, ws_size, "conv2d_forward");
  const Conv2dPlan pl = conv2d_plan(d);
  const std::size_t G = pl.G, P = d.OH() * d.OW(), CKK = d.CKK(), K = d.K;
  const detail::Conv2dStrides st(d);
  SIEVE_CHECK(!epi.scale == !epi.shift, "conv2d_forward: epilogue scale and shift go together");
  const bool active = epi.scale || epi.residual || epi.relu;
  auto res_at = [&](const T* yb) { return epi.residual ? epi.residual + (yb - y) : nullptr; };
  if (conv2d_uses_winograd(d)) {
    winograd_conv3x3(x, w, y, d.H, d.W, false, conv2d_winograd_plan(d, false), ws,
                     [&](std::size_t k, std::size_t n, std::size_t oh, T* row) {
                       if (!active) return;
                       const std::size_t o = (plane_index(d.out, d.N, K, n, k) * d.H + oh) * d.W;
                       detail::conv2d_epilogue_row(row, row, epi.residual ? epi.residual + o : nullptr, d.W, k, epi);
                     }, winograd_u);
    return;
  }
  if (d.folded_direct()) {  // y[K, N*P] = w[K,C] x[C, N*P], a block of columns per thread
    const std::size_t NP = d.N * P, blocks = (NP + 15) / 16;
    if constexpr (std::is_same_v<T, float> && fused_sgemm_available) {
      if (d.fused) {
        // The epilogue in the product's registers, C written once (sgemm_fused.hpp).
        parallel_for_parts(blocks, conv2d_max_parts(d), [&](std::size_t t, std::size_t b0, std::size_t b1) {
          const std::size_t j0 = b0 * 16, len = std::min(NP, b1 * 16) - j0;
          const RowEpilogue re{epi.scale, epi.shift, res_at(y + j0), NP, epi.relu};
          fused_sgemm(K, len, CKK, w, CKK, x + j0, NP, y + j0, NP, re, ws + t * fused_sgemm_b_workspace());
        });
        return;
      }
    }
    parallel_for_parts(blocks, conv2d_max_parts(d), [&](std::size_t, std::size_t b0, std::size_t b1) {
      const std::size_t j0 = b0 * 16, len = std::min(NP, b1 * 16) - j0;
      gemm_ld(Trans::no, Trans::no, K, len, CKK, T(1), w, CKK, x + j0, NP, T(0), y + j0, NP);
      if (active) detail::conv2d_finish_block(y + j0, K, NP, len, res_at(y + j0), epi);
    });
    return;
  }
  const bool cn_out = d.out == Layout::cnhw;
  const detail::Conv2dTaps live = detail::conv2d_live_taps(d);
  const detail::Conv2dTaps* lp = pl.compact ? &live : nullptr;
  const T* wm = detail::conv2d_weight_matrix(w, d, pl, live, ws);  // [K, R]
  const std::size_t R = pl.rows;
  parallel_for_parts(pl.groups, pl.parts, [&](std::size_t t, std::size_t b0, std::size_t b1) {
    T* col = ws + t * pl.part_ws;
    for (std::size_t b = b0; b < b1; ++b) {
      const std::size_t n0 = b * G, g = std::min(G, d.N - n0);
      T* yb = y + n0 * st.ys;  // the group's [K, g*P] block of y (row length st.ldy) when cn_out or g == 1
      if (G == 1 && d.direct()) {
        gemm_ld(Trans::no, Trans::no, K, P, CKK, T(1), w, CKK, x + n0 * st.xs, P, T(0), yb, st.ldy);
        if (active) detail::conv2d_finish_block(yb, K, st.ldy, P, res_at(yb), epi);
        continue;
      }
      for (std::size_t s = 0; s < g; ++s) im2col(x + (n0 + s) * st.xs, d, col, g * P, s * P, st.cs, lp);
      if (cn_out || g == 1) {
        if constexpr (std::is_same_v<T, float> && fused_sgemm_available) {
          if (d.fused) {  // the epilogue in registers, y written once
            const RowEpilogue re{epi.scale, epi.shift, res_at(yb), st.ldy, epi.relu};
            fused_sgemm(K, g * P, R, wm, R, col, g * P, yb, st.ldy, re, col + pl.part_ws - fused_sgemm_b_workspace());
            continue;
          }
        }
        gemm_ld(Trans::no, Trans::no, K, g * P, R, T(1), wm, R, col, g * P, T(0), yb, st.ldy);
        if (active) detail::conv2d_finish_block(yb, K, st.ldy, g * P, res_at(yb), epi);
      } else {
        T* prod = col + R * G * P;
        gemm(Trans::no, Trans::no, K, g * P, R, T(1), wm, col, T(0), prod);
        detail::conv2d_finish(prod, K, P, g, yb, res_at(yb), epi);  // the scatter, with the epilogue
      }
    }
  });
}

/// dx = conv^T(dy, w), the gradient of conv2d_forward with respect to x (assigned).
/// dy: [N,K,OH,OW] in d.out's layout, w: [K,C,KH,KW] -> dx: [N,C,H,W] in d.in's.
/// Requires: workspace as for conv2d_forward. Ensures: every element of dx is written.
template <class T>
void conv2d_backward_input(const T* dy, const T* w, T* dx, const Conv2dDims& d, T* ws, std::size_t ws_size) {
  conv2d_check(d, "conv2d_backward_input");
  detail::conv2d_check_ws(d, ws_size, "conv2d_backward_input");
  if (conv2d_uses_winograd(d)) {  // dx = dy convolved with w transposed and rotated, same geometry
    winograd_conv3x3(dy, w, dx, d.H, d.W, true, conv2d_winograd_plan(d, true), ws,
                     [](std::size_t, std::size_t, std::size_t, T*) {});
    return;
  }
  const Conv2dPlan pl = conv2d_plan(d);
  const std::size_t G = pl.G, P = d.OH() * d.OW(), K = d.K, HW = d.H * d.W;
  const detail::Conv2dStrides st(d);
  if (d.folded_direct()) {  // dx[C, N*P] = w^T[C,K] dy[K, N*P] (gemm splits the columns)
    const std::size_t NP = d.N * P;
    gemm_ld(Trans::yes, Trans::no, d.C, NP, K, T(1), w, d.C, dy, NP, T(0), dx, NP);
    return;
  }
  const bool cn_out = d.out == Layout::cnhw, cn_in = d.in == Layout::cnhw;
  const detail::Conv2dTaps live = detail::conv2d_live_taps(d);
  const detail::Conv2dTaps* lp = pl.compact ? &live : nullptr;
  const T* wm = detail::conv2d_weight_matrix(w, d, pl, live, ws);  // [K, R]
  const std::size_t R = pl.rows;
  parallel_for_parts(pl.groups, pl.parts, [&](std::size_t t, std::size_t b0, std::size_t b1) {
    T* col = ws + t * pl.part_ws;
    for (std::size_t b = b0; b < b1; ++b) {
      const std::size_t n0 = b * G, g = std::min(G, d.N - n0);
      const T* dyg = dy + n0 * st.ys;  // the group's [K, g*P] block, row length ldg
      std::size_t ldg = st.ldy;
      if (G == 1 && d.direct()) {
        // dx_n[C,HW] = w^T[C,K] dy_n[K,HW]
        gemm_ld(Trans::yes, Trans::no, d.C, P, K, T(1), w, d.C, dyg, ldg, T(0), dx + n0 * st.xs, P);
        continue;
      }
      if (!cn_out && g > 1) {
        T* gathered = col + R * G * P;
        detail::conv2d_gather(dyg, K, P, g, gathered);
        dyg = gathered, ldg = g * P;
      }
      // dcol[R, g*P] = w^T[R,K] dy_g[K, g*P]
      gemm_ld(Trans::yes, Trans::no, R, g * P, K, T(1), wm, R, dyg, ldg, T(0), col, g * P);
      if (cn_in) {
        for (std::size_t c = 0; c < d.C; ++c) std::fill_n(dx + (c * d.N + n0) * HW, g * HW, T(0));
      } else {
        std::fill(dx + n0 * st.xs, dx + (n0 + g) * st.xs, T(0));
      }
      for (std::size_t s = 0; s < g; ++s) col2im(col, d, g * P, s * P, dx + (n0 + s) * st.xs, st.cs, lp);
    }
  });
}

/// dw += dy (*) x, the gradient of conv2d_forward with respect to w (accumulated: beta = 1).
/// x: [N,C,H,W] and dy: [N,K,OH,OW] in their layouts -> dw: [K,C,KH,KW].
/// Requires: workspace as for conv2d_forward. Ensures: with several threads, thread 0
/// accumulates into dw and the others into private partials added to dw in thread order; a
/// batch-folded 1x1 convolution is one product split by columns of dw (no partials).
template <class T>
void conv2d_backward_weight(const T* x, const T* dy, T* dw, const Conv2dDims& d, T* ws, std::size_t ws_size) {
  conv2d_check(d, "conv2d_backward_weight");
  detail::conv2d_check_ws(d, ws_size, "conv2d_backward_weight");
  const Conv2dPlan pl = conv2d_plan(d);
  const std::size_t G = pl.G, P = d.OH() * d.OW(), CKK = d.CKK(), K = d.K;
  const detail::Conv2dStrides st(d);
  if (d.folded_direct()) {  // dw[K,C] += dy[K, N*P] x[C, N*P]^T
    const std::size_t NP = d.N * P;
    gemm_ld(Trans::no, Trans::yes, K, CKK, NP, T(1), dy, NP, x, NP, T(1), dw, CKK);
    return;
  }
  const bool cn_out = d.out == Layout::cnhw;
  const detail::Conv2dTaps live = detail::conv2d_live_taps(d);
  const detail::Conv2dTaps* lp = pl.compact ? &live : nullptr;
  const std::size_t R = pl.rows;
  // parts - 1 partials of [K, CKK] (threads after the first), or, compact, one [K, R] per part
  T* partials = ws + pl.parts * pl.part_ws;
  const std::size_t used = parallel_for_parts(pl.groups, pl.parts, [&](std::size_t t, std::size_t b0, std::size_t b1) {
    T* col = ws + t * pl.part_ws;
    T* dwt = dw;
    if (pl.compact || t > 0) {
      dwt = partials + (pl.compact ? t : t - 1) * pl.dw_ws;
      std::fill(dwt, dwt + K * R, T(0));
    }
    for (std::size_t b = b0; b < b1; ++b) {
      const std::size_t n0 = b * G, g = std::min(G, d.N - n0);
      const T* dyg = dy + n0 * st.ys;
      std::size_t ldg = st.ldy;
      if (G == 1 && d.direct()) {
        // dw[K,C] += dy_n[K,HW] x_n^T[HW,C]
        gemm_ld(Trans::no, Trans::yes, K, CKK, P, T(1), dyg, ldg, x + n0 * st.xs, P, T(1), dwt, CKK);
        continue;
      }
      for (std::size_t s = 0; s < g; ++s) im2col(x + (n0 + s) * st.xs, d, col, g * P, s * P, st.cs, lp);
      if (!cn_out && g > 1) {
        T* gathered = col + R * G * P;
        detail::conv2d_gather(dyg, K, P, g, gathered);
        dyg = gathered, ldg = g * P;
      }
      gemm_ld(Trans::no, Trans::yes, K, R, g * P, T(1), dyg, ldg, col, g * P, T(1), dwt, R);
    }
  });
  if (pl.compact) {
    detail::conv2d_scatter_weight_grad(partials, used, pl.dw_ws, d, live, dw);
    return;
  }
  if (used <= 1) return;
  parallel_for(K * CKK, parallel_grain_elements, [&](std::size_t lo, std::size_t hi) {
    for (std::size_t t = 1; t < used; ++t) {
      const T* pt = partials + (t - 1) * pl.dw_ws;
      for (std::size_t i = lo; i < hi; ++i) dw[i] += pt[i];
    }
  });
}

}  // namespace sieve::kernels
