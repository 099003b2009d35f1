#pragma once
// Naive float64 references for the nn kernels: direct loops, no tricks, easy to audit.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

namespace sieve::test {

// y[n,k,oh,ow] = sum_{c,i,j} w[k,c,i,j] * x[n,c,oh*sh-ph+i, ow*sw-pw+j] (zero padding).
inline std::vector<double> naive_conv2d(const std::vector<double>& x, const std::vector<double>& w, std::size_t N,
                                        std::size_t C, std::size_t H, std::size_t W, std::size_t K, std::size_t KH,
                                        std::size_t KW, std::size_t SH, std::size_t SW, std::size_t PH,
                                        std::size_t PW) {
  const std::size_t OH = (H + 2 * PH - KH) / SH + 1, OW = (W + 2 * PW - KW) / SW + 1;
  std::vector<double> y(N * K * OH * OW, 0.0);
  for (std::size_t n = 0; n < N; ++n)
    for (std::size_t k = 0; k < K; ++k)
      for (std::size_t oh = 0; oh < OH; ++oh)
        for (std::size_t ow = 0; ow < OW; ++ow) {
          double s = 0;
          for (std::size_t c = 0; c < C; ++c)
            for (std::size_t i = 0; i < KH; ++i)
              for (std::size_t j = 0; j < KW; ++j) {
                const long ih = static_cast<long>(oh * SH + i) - static_cast<long>(PH);
                const long iw = static_cast<long>(ow * SW + j) - static_cast<long>(PW);
                if (ih < 0 || iw < 0 || ih >= static_cast<long>(H) || iw >= static_cast<long>(W)) continue;
                s += w[((k * C + c) * KH + i) * KW + j] * x[((n * C + c) * H + ih) * W + iw];
              }
          y[((n * K + k) * OH + oh) * OW + ow] = s;
        }
  return y;
}

// Training-mode batch norm over [N,C,HW]; also returns batch mean and biased variance.
inline std::vector<double> naive_batch_norm_train(const std::vector<double>& x, const std::vector<double>& gamma,
                                                  const std::vector<double>& beta, std::size_t N, std::size_t C,
                                                  std::size_t HW, double eps, std::vector<double>& mean,
                                                  std::vector<double>& var) {
  mean.assign(C, 0.0);
  var.assign(C, 0.0);
  const double n = static_cast<double>(N * HW);
  for (std::size_t c = 0; c < C; ++c) {
    for (std::size_t i = 0; i < N; ++i)
      for (std::size_t p = 0; p < HW; ++p) mean[c] += x[(i * C + c) * HW + p] / n;
    for (std::size_t i = 0; i < N; ++i)
      for (std::size_t p = 0; p < HW; ++p) var[c] += std::pow(x[(i * C + c) * HW + p] - mean[c], 2) / n;
  }
  std::vector<double> y(x.size());
  for (std::size_t i = 0; i < N; ++i)
    for (std::size_t c = 0; c < C; ++c)
      for (std::size_t p = 0; p < HW; ++p) {
        const std::size_t at = (i * C + c) * HW + p;
        y[at] = (x[at] - mean[c]) / std::sqrt(var[c] + eps) * gamma[c] + beta[c];
      }
  return y;
}

// Max pool with -inf padding, floor mode.
inline std::vector<double> naive_max_pool(const std::vector<double>& x, std::size_t NC, std::size_t H,
                                          std::size_t W, std::size_t k, std::size_t s, std::size_t p) {
  const std::size_t OH = (H + 2 * p - k) / s + 1, OW = (W + 2 * p - k) / s + 1;
  std::vector<double> y(NC * OH * OW, -std::numeric_limits<double>::infinity());
  for (std::size_t nc = 0; nc < NC; ++nc)
    for (std::size_t oh = 0; oh < OH; ++oh)
      for (std::size_t ow = 0; ow < OW; ++ow)
        for (std::size_t i = 0; i < k; ++i)
          for (std::size_t j = 0; j < k; ++j) {
            const long ih = static_cast<long>(oh * s + i) - static_cast<long>(p);
            const long iw = static_cast<long>(ow * s + j) - static_cast<long>(p);
            if (ih < 0 || iw < 0 || ih >= static_cast<long>(H) || iw >= static_cast<long>(W)) continue;
            double& o = y[(nc * OH + oh) * OW + ow];
            o = std::max(o, x[(nc * H + ih) * W + iw]);
          }
  return y;
}

// y = x w^T + b. x: [N,In] w: [Out,In].
inline std::vector<double> naive_linear(const std::vector<double>& x, const std::vector<double>& w,
                                        const std::vector<double>& b, std::size_t N, std::size_t In,
                                        std::size_t Out) {
  std::vector<double> y(N * Out);
  for (std::size_t n = 0; n < N; ++n)
    for (std::size_t o = 0; o < Out; ++o) {
      double s = b.empty() ? 0.0 : b[o];
      for (std::size_t i = 0; i < In; ++i) s += x[n * In + i] * w[o * In + i];
      y[n * Out + o] = s;
    }
  return y;
}

// BCE with logits, mean over all elements (PyTorch's default reduction), in a numerically
// stable form: max(z,0) - z*t + log(1 + exp(-|z|)). grad (if non-null) = (sigmoid(z) - t) / n.
inline double naive_bce_with_logits(const double* z, const double* t, std::size_t n, double* grad) {
  double s = 0;
  for (std::size_t i = 0; i < n; ++i) {
    s += std::max(z[i], 0.0) - z[i] * t[i] + std::log1p(std::exp(-std::abs(z[i])));
    if (grad) grad[i] = (1.0 / (1.0 + std::exp(-z[i])) - t[i]) / static_cast<double>(n);
  }
  return s / static_cast<double>(n);
}

}  // namespace sieve::test
