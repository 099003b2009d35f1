#pragma once
/// Batch normalisation over [N,C,HW], as PyTorch's BatchNorm2d: per channel c,
/// y = (x - mean_c) * invstd_c * gamma_c + beta_c with invstd_c = 1 / sqrt(var_c + eps).
/// Training uses the batch's mean and biased variance and updates the running estimates with
/// momentum (running = (1 - m) * running + m * batch, the variance unbiased: * n / (n - 1));
/// evaluation uses the running estimates. Channel sums accumulate in double, so float and
/// double results differ only by the final rounding.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <type_traits>

#include "sieve/core/check.hpp"
#include "sieve/core/parallel.hpp"
#include "sieve/core/simd.hpp"
#include "sieve/kernels/layout.hpp"

namespace sieve::kernels {

/// Sizes and constants of one batch-norm call: x viewed as [N, C, HW], stored in `layout`
/// (the sums run over samples, then pixels, in either: results are identical).
struct BatchNormDims {
  std::size_t N = 0, C = 0, HW = 0;
  double eps = 1e-5;
  double momentum = 0.1;
  Layout layout = Layout::nchw;
  /// Offset of sample i's plane of channel c.
  std::size_t at(std::size_t i, std::size_t c) const { return plane_index(layout, N, C, i, c) * HW; }
};

namespace detail {
// Channel sums run in double over kBnLanes independent accumulators: vector lanes (one double
// accumulator would be a serial chain of additions). Value k of a channel, in
// (sample, pixel) order, goes to accumulator k % kBnLanes in either layout, so the additions'
// order is fixed: results depend neither on the layout nor on the thread count.
inline constexpr std::size_t kBnLanes = 8;

inline double bn_lanes_total(const double (&a)[kBnLanes]) {
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

// Calls f(offset, count, k0) for the runs of contiguous memory that hold channel c in
// (sample, pixel) order: one run of N*HW values where the layout keeps the channel's planes
// together (CNHW, or a single sample), else one run of HW per sample; k0 is the run's first
// value's index within the channel.
template <class F>
void bn_channel_runs(const BatchNormDims& d, std::size_t c, F&& f) {
  if (d.layout == Layout::cnhw || d.N == 1) {
    f(d.at(0, c), d.N * d.HW, std::size_t{0});
  } else {
    for (std::size_t i = 0; i < d.N; ++i) f(d.at(i, c), d.HW, i * d.HW);
  }
}

// The per-channel sums, each value k of a run going to lane (k0 + k) % kBnLanes of its
// accumulators: the values (sum_x: a += x), the squared deviations (sum_sq: b += (x - m)^2), or
// backward's gradient sums (sum_grad: g = dy, or 0 where relu_y <= 0 when relu_y is given;
// a += g, b += g (x - m)). Float values widen to double before any arithmetic.
enum class BnSum { sum_x, sum_sq, sum_grad };

template <BnSum op, class T>
void bn_sums(const T* x, const T* dy, const T* relu_y, double m, std::size_t count, std::size_t k0,
             double (&a)[kBnLanes], double (&b)[kBnLanes]) {
  constexpr std::size_t L = kBnLanes;
  std::size_t p = 0;
#if SIEVE_AVX2_FMA
  // Whole blocks of 8 where the run starts at lane 0: lanes 0-3 and 4-7 as two vectors of
  // doubles, the same operations as the scalar loop (so the same bits; GCC leaves that loop
  // scalar: it does not vectorise the widening with the select).
  if constexpr (std::is_same_v<T, float>) {
    if (k0 % L == 0 && count >= L) {
      const __m256d mv = _mm256_set1_pd(m);
      __m256d a0 = _mm256_loadu_pd(a), a1 = _mm256_loadu_pd(a + 4);
      __m256d b0 = _mm256_loadu_pd(b), b1 = _mm256_loadu_pd(b + 4);
      for (; p + L <= count; p += L) {
        const __m256 xv = _mm256_loadu_ps(x + p);
        const __m256d x0 = _mm256_cvtps_pd(_mm256_castps256_ps128(xv));
        const __m256d x1 = _mm256_cvtps_pd(_mm256_extractf128_ps(xv, 1));
        if constexpr (op == BnSum::sum_x) {
          a0 = _mm256_add_pd(a0, x0), a1 = _mm256_add_pd(a1, x1);
        } else if constexpr (op == BnSum::sum_sq) {
          const __m256d t0 = _mm256_sub_pd(x0, mv), t1 = _mm256_sub_pd(x1, mv);
          b0 = _mm256_add_pd(b0, _mm256_mul_pd(t0, t0)), b1 = _mm256_add_pd(b1, _mm256_mul_pd(t1, t1));
        } else {
          __m256 gv = _mm256_loadu_ps(dy + p);
          if (relu_y)
            gv = _mm256_and_ps(gv, _mm256_cmp_ps(_mm256_loadu_ps(relu_y + p), _mm256_setzero_ps(), _CMP_GT_OQ));
          const __m256d g0 = _mm256_cvtps_pd(_mm256_castps256_ps128(gv));
          const __m256d g1 = _mm256_cvtps_pd(_mm256_extractf128_ps(gv, 1));
          a0 = _mm256_add_pd(a0, g0), a1 = _mm256_add_pd(a1, g1);
          b0 = _mm256_add_pd(b0, _mm256_mul_pd(g0, _mm256_sub_pd(x0, mv)));
          b1 = _mm256_add_pd(b1, _mm256_mul_pd(g1, _mm256_sub_pd(x1, mv)));
        }
      }
      _mm256_storeu_pd(a, a0), _mm256_storeu_pd(a + 4, a1);
      _mm256_storeu_pd(b, b0), _mm256_storeu_pd(b + 4, b1);
    }
  }
#endif
  for (; p < count; ++p) {
    const std::size_t j = (k0 + p) % L;
    if constexpr (op == BnSum::sum_x) {
      a[j] += x[p];
    } else if constexpr (op == BnSum::sum_sq) {
      const double t = x[p] - m;
      b[j] += t * t;
    } else {
      const T dv = dy[p];
      const T g = relu_y && !(relu_y[p] > T(0)) ? T(0) : dv;
      a[j] += g;
      b[j] += g * (x[p] - m);
    }
  }
}

// y = x * scale + shift over channel c of [N,C,HW] (then max(y, 0) when relu).
template <class T>
void bn_affine(const T* x, T* y, const BatchNormDims& d, std::size_t c, T scale, T shift, bool relu) {
  bn_channel_runs(d, c, [&](std::size_t o, std::size_t count, std::size_t) {
    const T* xc = x + o;
    T* yc = y + o;
    if (relu) {
      for (std::size_t p = 0; p < count; ++p) {
        const T v = xc[p] * scale + shift;
        yc[p] = v > T(0) ? v : T(0);
      }
    } else {
      for (std::size_t p = 0; p < count; ++p) yc[p] = xc[p] * scale + shift;
    }
  });
}

// Channels per thread so that each thread gets enough values to be worth waking.
inline std::size_t bn_channel_grain(std::size_t per_channel) {
  return std::max<std::size_t>(1, parallel_grain_elements / std::max<std::size_t>(per_channel, 1));
}
}  // namespace detail

/// Training forward: batch statistics, running-stat update, y (assigned; max(y, 0) when relu).
/// x: [N,C,HW] gamma, beta: [C] -> y: [N,C,HW]; save_mean, save_invstd: [C] (for backward);
/// running_mean, running_var: [C] updated in place. Channels are split across threads.
/// Requires: N*HW > 1 (the unbiased variance needs two values per channel, as PyTorch).
template <class T>
void batch_norm_forward_train(const T* x, const T* gamma, const T* beta, T* y, T* save_mean, T* save_invstd,
                              T* running_mean, T* running_var, const BatchNormDims& d, bool relu = false) {
  constexpr std::size_t L = detail::kBnLanes;
  const std::size_t N = d.N, C = d.C, HW = d.HW, n = N * HW;
  SIEVE_CHECK(n > 1, "batch_norm_forward_train: expected more than 1 value per channel when training, got N=", N,
              " x HW=", HW);
  parallel_for(C, detail::bn_channel_grain(n), [&](std::size_t c0, std::size_t c1) {
    for (std::size_t c = c0; c < c1; ++c) {
      double a[L] = {}, b[L] = {};
      detail::bn_channel_runs(d, c, [&](std::size_t o, std::size_t count, std::size_t k0) {
        detail::bn_sums<detail::BnSum::sum_x, T>(x + o, nullptr, nullptr, 0.0, count, k0, a, b);
      });
      const double mean = detail::bn_lanes_total(a) / static_cast<double>(n);
      // two-pass variance: no cancellation for large means
      detail::bn_channel_runs(d, c, [&](std::size_t o, std::size_t count, std::size_t k0) {
        detail::bn_sums<detail::BnSum::sum_sq, T>(x + o, nullptr, nullptr, mean, count, k0, a, b);
      });
      const double ss = detail::bn_lanes_total(b);
      const double var = ss / static_cast<double>(n);
      const double invstd = 1.0 / std::sqrt(var + d.eps);
      save_mean[c] = static_cast<T>(mean);
      save_invstd[c] = static_cast<T>(invstd);
      const double unbiased = ss / static_cast<double>(n - 1);
      running_mean[c] = static_cast<T>((1.0 - d.momentum) * running_mean[c] + d.momentum * mean);
      running_var[c] = static_cast<T>((1.0 - d.momentum) * running_var[c] + d.momentum * unbiased);
      const T scale = static_cast<T>(invstd * gamma[c]);
      const T shift = static_cast<T>(beta[c] - mean * invstd * gamma[c]);
      detail::bn_affine(x, y, d, c, scale, shift, relu);
    }
  });
}

/// Eval-mode batch norm as one per-channel affine map, y = x * scale + shift, with
/// invstd = 1/sqrt(running_var + eps) in double (returned, rounded to T); the one formula
/// batch_norm_forward_eval and a convolution's folded epilogue both use.
template <class T>
T batch_norm_eval_affine(const T* gamma, const T* beta, const T* running_mean, const T* running_var, double eps,
                         std::size_t c, T& scale, T& shift) {
  const double invstd = 1.0 / std::sqrt(static_cast<double>(running_var[c]) + eps);
  scale = static_cast<T>(invstd * gamma[c]);
  shift = static_cast<T>(beta[c] - running_mean[c] * invstd * gamma[c]);
  return static_cast<T>(invstd);
}

/// Evaluation forward with the running statistics (y assigned; max(y, 0) when relu);
/// save_mean/save_invstd receive the running mean and 1/sqrt(running_var + eps) for the
/// backward pass. x: [N,C,HW] -> y: [N,C,HW].
template <class T>
void batch_norm_forward_eval(const T* x, const T* gamma, const T* beta, const T* running_mean,
                             const T* running_var, T* y, T* save_mean, T* save_invstd, const BatchNormDims& d,
                             bool relu = false) {
  const std::size_t N = d.N, C = d.C, HW = d.HW;
  parallel_for(C, detail::bn_channel_grain(N * HW), [&](std::size_t c0, std::size_t c1) {
    for (std::size_t c = c0; c < c1; ++c) {
      T scale, shift;
      save_invstd[c] = batch_norm_eval_affine(gamma, beta, running_mean, running_var, d.eps, c, scale, shift);
      save_mean[c] = running_mean[c];
      detail::bn_affine(x, y, d, c, scale, shift, relu);
    }
  });
}

/// Backward of either forward. With xhat = (x - mean) * invstd:
///   dbeta += sum dy, dgamma += sum dy * xhat (accumulated);
///   dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))   when batch_stats,
///   dx = gamma * invstd * dy                                         otherwise (assigned).
/// x, dy: [N,C,HW]; mean, invstd: what the forward saved. dx, dgamma, dbeta may each be
/// null to skip that output (frozen parameters, no input gradient needed). dx may alias dy
/// (each channel's sums are complete before its dx is written). When relu_y is non-null the
/// forward applied a ReLU to its output in place (relu_y is that output), and dy is taken as
/// zero wherever relu_y <= 0. Channels are split across threads.
template <class T>
void batch_norm_backward(const T* x, const T* dy, const T* gamma, const T* mean, const T* invstd, bool batch_stats,
                         std::type_identity_t<T>* dx, std::type_identity_t<T>* dgamma,
                         std::type_identity_t<T>* dbeta, const BatchNormDims& d,
                         const std::type_identity_t<T>* relu_y = nullptr) {
  constexpr std::size_t L = detail::kBnLanes;
  const std::size_t N = d.N, C = d.C, HW = d.HW;
  const double n = static_cast<double>(N * HW);
  const bool need_sums = dgamma || dbeta || (dx && batch_stats);
  parallel_for(C, detail::bn_channel_grain(N * HW), [&](std::size_t c0, std::size_t c1) {
    for (std::size_t c = c0; c < c1; ++c) {
      const double m = mean[c], is = invstd[c];
      double sdy = 0, sdyx = 0;
      if (need_sums) {
        double a[L] = {}, b[L] = {};
        detail::bn_channel_runs(d, c, [&](std::size_t o, std::size_t count, std::size_t k0) {
          detail::bn_sums<detail::BnSum::sum_grad, T>(x + o, dy + o, relu_y ? relu_y + o : nullptr, m, count, k0,
                                                      a, b);
        });
        sdy = detail::bn_lanes_total(a);
        sdyx = detail::bn_lanes_total(b) * is;  // sum dy * xhat
      }
      if (dbeta) dbeta[c] += static_cast<T>(sdy);
      if (dgamma) dgamma[c] += static_cast<T>(sdyx);
      if (!dx) continue;
      // dx = k*dy - k*mean(dy) - k*xhat*mean(dy*xhat), xhat = (x - m)*is, computed as
      // a*dy + e*(x - m) + b: the deviation first, as PyTorch does. Folding -e*m into b
      // (a*dy + e*x + b') cancels terms |m|/std times larger than dx: float dx drifted to 1.7e-6
      // from the double result at a mean 1000 std from zero, against 7e-8 this way (the unit
      // test "channels whose mean is far from their spread"), and the ResNet50 gradient-accuracy
      // test's worst tensor went from 2.1x PyTorch float32's distance to 1.6x.
      const double k = gamma[c] * is;
      const T a = static_cast<T>(k);
      const T b = batch_stats ? static_cast<T>(-k * sdy / n) : T(0);
      const T e = batch_stats ? static_cast<T>(-k * is * sdyx / n) : T(0);
      const T mc = mean[c];
      detail::bn_channel_runs(d, c, [&](std::size_t o, std::size_t count, std::size_t) {
        T* dxc = dx + o;
        const T* xc = x + o;
        const T* dyc = dy + o;
        if (relu_y) {
          const T* yc = relu_y + o;
          if (batch_stats) {
            for (std::size_t p = 0; p < count; ++p) {
              const T dv = dyc[p];
              dxc[p] = a * (yc[p] > T(0) ? dv : T(0)) + e * (xc[p] - mc) + b;
            }
          } else {
            for (std::size_t p = 0; p < count; ++p) {
              const T dv = dyc[p];
              dxc[p] = a * (yc[p] > T(0) ? dv : T(0));
            }
          }
        } else if (batch_stats) {
          for (std::size_t p = 0; p < count; ++p) dxc[p] = a * dyc[p] + e * (xc[p] - mc) + b;
        } else {
          for (std::size_t p = 0; p < count; ++p) dxc[p] = a * dyc[p];
        }
      });
    }
  });
}

}  // namespace sieve::kernels
