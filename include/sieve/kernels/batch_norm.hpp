#pragma once
/// Batch normalisation over [N,C,HW], as PyTorch's BatchNorm2d: per channel c,
/// y = (x - mean_c) * invstd_c * gamma_c + beta_c with invstd_c = 1 / sqrt(var_c + eps).
/// Training uses the batch's mean and biased variance and updates the running estimates with
/// momentum (running = (1 - m) * running + m * batch, the variance unbiased: * n / (n - 1));
/// evaluation uses the running estimates. Channel sums accumulate in double, so float and
/// double results differ only by the final rounding.

#include <cmath>
#include <cstddef>
#include <type_traits>

#include "sieve/core/check.hpp"

namespace sieve::kernels {

/// Sizes and constants of one batch-norm call: x viewed as [N, C, HW].
struct BatchNormDims {
  std::size_t N = 0, C = 0, HW = 0;
  double eps = 1e-5;
  double momentum = 0.1;
};

/// Training forward: batch statistics, running-stat update, y (assigned).
/// x: [N,C,HW] gamma, beta: [C] -> y: [N,C,HW]; save_mean, save_invstd: [C] (for backward);
/// running_mean, running_var: [C] updated in place.
/// Requires: N*HW > 1 (the unbiased variance needs two values per channel, as PyTorch).
template <class T>
void batch_norm_forward_train(const T* x, const T* gamma, const T* beta, T* y, T* save_mean, T* save_invstd,
                              T* running_mean, T* running_var, const BatchNormDims& d) {
  const std::size_t N = d.N, C = d.C, HW = d.HW, n = N * HW;
  SIEVE_CHECK(n > 1, "batch_norm_forward_train: expected more than 1 value per channel when training, got N=", N,
              " x HW=", HW);
  for (std::size_t c = 0; c < C; ++c) {
    double sum = 0;
    for (std::size_t i = 0; i < N; ++i) {
      const T* xc = x + (i * C + c) * HW;
      for (std::size_t p = 0; p < HW; ++p) sum += xc[p];
    }
    const double mean = sum / static_cast<double>(n);
    double ss = 0;  // two-pass variance: no cancellation for large means
    for (std::size_t i = 0; i < N; ++i) {
      const T* xc = x + (i * C + c) * HW;
      for (std::size_t p = 0; p < HW; ++p) {
        const double t = xc[p] - mean;
        ss += t * t;
      }
    }
    const double var = ss / static_cast<double>(n);
    const double invstd = 1.0 / std::sqrt(var + d.eps);
    save_mean[c] = static_cast<T>(mean);
    save_invstd[c] = static_cast<T>(invstd);
    const double unbiased = ss / static_cast<double>(n - 1);
    running_mean[c] = static_cast<T>((1.0 - d.momentum) * running_mean[c] + d.momentum * mean);
    running_var[c] = static_cast<T>((1.0 - d.momentum) * running_var[c] + d.momentum * unbiased);
    const T scale = static_cast<T>(invstd * gamma[c]);
    const T shift = static_cast<T>(beta[c] - mean * invstd * gamma[c]);
    for (std::size_t i = 0; i < N; ++i) {
      const T* xc = x + (i * C + c) * HW;
      T* yc = y + (i * C + c) * HW;
      for (std::size_t p = 0; p < HW; ++p) yc[p] = xc[p] * scale + shift;
    }
  }
}

/// Evaluation forward with the running statistics (y assigned); save_mean/save_invstd receive
/// the running mean and 1/sqrt(running_var + eps) for the backward pass.
/// x: [N,C,HW] -> y: [N,C,HW].
template <class T>
void batch_norm_forward_eval(const T* x, const T* gamma, const T* beta, const T* running_mean,
                             const T* running_var, T* y, T* save_mean, T* save_invstd, const BatchNormDims& d) {
  const std::size_t N = d.N, C = d.C, HW = d.HW;
  for (std::size_t c = 0; c < C; ++c) {
    const double invstd = 1.0 / std::sqrt(static_cast<double>(running_var[c]) + d.eps);
    save_mean[c] = running_mean[c];
    save_invstd[c] = static_cast<T>(invstd);
    const T scale = static_cast<T>(invstd * gamma[c]);
    const T shift = static_cast<T>(beta[c] - running_mean[c] * invstd * gamma[c]);
    for (std::size_t i = 0; i < N; ++i) {
      const T* xc = x + (i * C + c) * HW;
      T* yc = y + (i * C + c) * HW;
      for (std::size_t p = 0; p < HW; ++p) yc[p] = xc[p] * scale + shift;
    }
  }
}

/// Backward of either forward. With xhat = (x - mean) * invstd:
///   dbeta += sum dy, dgamma += sum dy * xhat (accumulated);
///   dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))   when batch_stats,
///   dx = gamma * invstd * dy                                         otherwise (assigned).
/// x, dy: [N,C,HW]; mean, invstd: what the forward saved. dx, dgamma, dbeta may each be
/// null to skip that output (frozen parameters, no input gradient needed). dx may alias dy
/// (each channel's sums are complete before its dx is written). When relu_y is non-null the
/// forward applied a ReLU to its output in place (relu_y is that output), and dy is taken as
/// zero wherever relu_y <= 0.
template <class T>
void batch_norm_backward(const T* x, const T* dy, const T* gamma, const T* mean, const T* invstd, bool batch_stats,
                         std::type_identity_t<T>* dx, std::type_identity_t<T>* dgamma,
                         std::type_identity_t<T>* dbeta, const BatchNormDims& d,
                         const std::type_identity_t<T>* relu_y = nullptr) {
  if (relu_y) {
    // The effective dy, dy * (relu_y > 0), is formed per channel on the fly.
    const std::size_t N = d.N, C = d.C, HW = d.HW;
    const double n = static_cast<double>(N * HW);
    for (std::size_t c = 0; c < C; ++c) {
      const double m = mean[c], is = invstd[c];
      double sdy = 0, sdyx = 0;
      for (std::size_t i = 0; i < N; ++i) {
        const std::size_t o = (i * C + c) * HW;
        for (std::size_t p = 0; p < HW; ++p) {
          const T g = relu_y[o + p] > T(0) ? dy[o + p] : T(0);
          sdy += g;
          sdyx += g * (x[o + p] - m);
        }
      }
      sdyx *= is;
      if (dbeta) dbeta[c] += static_cast<T>(sdy);
      if (dgamma) dgamma[c] += static_cast<T>(sdyx);
      if (!dx) continue;
      const double k = gamma[c] * is;
      const T a = static_cast<T>(k);
      const T b = batch_stats ? static_cast<T>(-k * sdy / n + k * is * m * sdyx / n) : T(0);
      const T e = batch_stats ? static_cast<T>(-k * is * sdyx / n) : T(0);
      for (std::size_t i = 0; i < N; ++i) {
        const std::size_t o = (i * C + c) * HW;
        for (std::size_t p = 0; p < HW; ++p) {
          const T g = relu_y[o + p] > T(0) ? dy[o + p] : T(0);
          dx[o + p] = batch_stats ? a * g + e * x[o + p] + b : a * g;
        }
      }
    }
    return;
  }
  const std::size_t N = d.N, C = d.C, HW = d.HW;
  const double n = static_cast<double>(N * HW);
  for (std::size_t c = 0; c < C; ++c) {
    const double m = mean[c], is = invstd[c];
    double sdy = 0, sdyx = 0;
    if (dgamma || dbeta || (dx && batch_stats)) {
      for (std::size_t i = 0; i < N; ++i) {
        const T* xc = x + (i * C + c) * HW;
        const T* dyc = dy + (i * C + c) * HW;
        for (std::size_t p = 0; p < HW; ++p) {
          sdy += dyc[p];
          sdyx += dyc[p] * (xc[p] - m);
        }
      }
      sdyx *= is;  // sum dy * xhat
    }
    if (dbeta) dbeta[c] += static_cast<T>(sdy);
    if (dgamma) dgamma[c] += static_cast<T>(sdyx);
    if (!dx) continue;
    const double k = gamma[c] * is;
    if (batch_stats) {
      // dx = k*dy - k*mean(dy) - k*xhat*mean(dy*xhat), xhat = (x - m)*is
      const T a = static_cast<T>(k);
      const T b = static_cast<T>(-k * sdy / n + k * is * m * sdyx / n);
      const T e = static_cast<T>(-k * is * sdyx / n);
      for (std::size_t i = 0; i < N; ++i) {
        const T* xc = x + (i * C + c) * HW;
        const T* dyc = dy + (i * C + c) * HW;
        T* dxc = dx + (i * C + c) * HW;
        for (std::size_t p = 0; p < HW; ++p) dxc[p] = a * dyc[p] + e * xc[p] + b;
      }
    } else {
      const T a = static_cast<T>(k);
      for (std::size_t i = 0; i < N; ++i) {
        const T* dyc = dy + (i * C + c) * HW;
        T* dxc = dx + (i * C + c) * HW;
        for (std::size_t p = 0; p < HW; ++p) dxc[p] = a * dyc[p];
      }
    }
  }
}

}  // namespace sieve::kernels
