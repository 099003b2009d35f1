#pragma once
/// Principal component scores by randomized SVD (Halko, Martinsson & Tropp 2011): a cheap
/// reduction of wide embeddings (e.g. 2048-d) before UMAP's O(N^2 D) exact neighbour search,
/// the usual PCA-then-UMAP practice. Every product goes through sieve::kernels::gemm.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/rng.hpp"
#include "sieve/core/xt.hpp"
#include "sieve/kernels/gemm.hpp"

namespace sieve::viz {

namespace detail {
/// Orthonormalise the columns of y [N,p] in place (modified Gram-Schmidt, in double), each
/// first deflated by the unit vector `deflate` when given (UMAP's spectral start removes the
/// graph Laplacian's trivial eigenvector); a column that vanishes is redrawn from rng.
inline void orthonormalise_columns(std::vector<double>& y, std::size_t N, std::size_t p, Rng& rng,
                                   const std::vector<double>* deflate = nullptr) {
  for (std::size_t c = 0; c < p; ++c) {
    for (int attempt = 0; attempt < 4; ++attempt) {
      if (deflate) {
        const std::vector<double>& u = *deflate;
        double du = 0;
        for (std::size_t i = 0; i < N; ++i) du += y[i * p + c] * u[i];
        for (std::size_t i = 0; i < N; ++i) y[i * p + c] -= du * u[i];
      }
      for (std::size_t q = 0; q < c; ++q) {
        double dq = 0;
        for (std::size_t i = 0; i < N; ++i) dq += y[i * p + c] * y[i * p + q];
        for (std::size_t i = 0; i < N; ++i) y[i * p + c] -= dq * y[i * p + q];
      }
      double nn = 0;
      for (std::size_t i = 0; i < N; ++i) nn += y[i * p + c] * y[i * p + c];
      if (nn > 1e-20) {
        const double inv = 1 / std::sqrt(nn);
        for (std::size_t i = 0; i < N; ++i) y[i * p + c] *= inv;
        break;
      }
      for (std::size_t i = 0; i < N; ++i) y[i * p + c] = rng.normal();
    }
  }
}

/// Cyclic Jacobi eigen-decomposition of a small symmetric h [p,p]: on return the diagonal of
/// h holds the eigenvalues and the columns of v the eigenvectors.
inline void symmetric_eigen(std::vector<double>& h, std::vector<double>& v, std::size_t p) {
  v.assign(p * p, 0.0);
  for (std::size_t i = 0; i < p; ++i) v[i * p + i] = 1.0;
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0, diag = 0;
    for (std::size_t i = 0; i < p; ++i) {
      diag += h[i * p + i] * h[i * p + i];
      for (std::size_t j = i + 1; j < p; ++j) off += h[i * p + j] * h[i * p + j];
    }
    if (off <= 1e-30 * std::max(diag, 1e-300)) return;
    for (std::size_t i = 0; i < p; ++i)
      for (std::size_t j = i + 1; j < p; ++j) {
        if (h[i * p + j] == 0.0) continue;
        const double theta = (h[j * p + j] - h[i * p + i]) / (2 * h[i * p + j]);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::abs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (std::size_t k = 0; k < p; ++k) {
          const double a = h[k * p + i], b = h[k * p + j];
          h[k * p + i] = c * a - s * b;
          h[k * p + j] = s * a + c * b;
        }
        for (std::size_t k = 0; k < p; ++k) {
          const double a = h[i * p + k], b = h[j * p + k];
          h[i * p + k] = c * a - s * b;
          h[j * p + k] = s * a + c * b;
        }
        for (std::size_t k = 0; k < p; ++k) {
          const double a = v[k * p + i], b = v[k * p + j];
          v[k * p + i] = c * a - s * b;
          v[k * p + j] = s * a + c * b;
        }
      }
  }
}
}  // namespace detail

/// Scores of x [N,D] on its top `n` principal axes (x centred per column): [N, n], column c
/// having variance lambda_c (the c-th largest covariance eigenvalue) up to the randomized
/// approximation (n + 10 probe vectors, `power_iters` power iterations). Signs are arbitrary
/// but deterministic for a seed.
/// Requires: 1 <= n <= min(N, D), finite x.
template <class T>
Tensor2<float> pca_scores(const Tensor2<T>& x, std::size_t n, std::uint64_t seed = 0, std::size_t power_iters = 4) {
  const std::size_t N = x.shape()[0], D = x.shape()[1];
  SIEVE_CHECK(n >= 1 && n <= std::min(N, D), "pca_scores: n=", n, " must be in [1, min(N=", N, ", D=", D, ")]");
  const std::size_t l = std::min(n + 10, std::min(N, D));
  // Centred copy in float for the GEMMs (x may be float or double).
  std::vector<double> mean(D, 0.0);
  for (std::size_t i = 0; i < N; ++i)
    for (std::size_t d = 0; d < D; ++d) mean[d] += static_cast<double>(x(i, d));
  for (auto& m : mean) m /= static_cast<double>(N);
  std::vector<float> xc(N * D);
  for (std::size_t i = 0; i < N; ++i)
    for (std::size_t d = 0; d < D; ++d) {
      const double v = static_cast<double>(x(i, d)) - mean[d];
      SIEVE_CHECK(std::isfinite(v), "pca_scores: x[", i, ",", d, "] is not finite");
      xc[i * D + d] = static_cast<float>(v);
    }
  Rng rng(derive_seed(seed, RngPurpose::init), 2);
  std::vector<float> omega(D * l), yf(N * l), zf(D * l);
  for (auto& v : omega) v = static_cast<float>(rng.normal());
  using kernels::Trans;
  kernels::gemm(Trans::no, Trans::no, N, l, D, 1.0f, xc.data(), omega.data(), 0.0f, yf.data());  // Y = X Omega
  std::vector<double> y(yf.begin(), yf.end()), z(D * l);
  detail::orthonormalise_columns(y, N, l, rng);
  for (std::size_t it = 0; it < power_iters; ++it) {  // Y = orth(X X^T Y): sharpens the spectrum's decay
    std::copy(y.begin(), y.end(), yf.begin());
    kernels::gemm(Trans::yes, Trans::no, D, l, N, 1.0f, xc.data(), yf.data(), 0.0f, zf.data());  // Z = X^T Y
    std::copy(zf.begin(), zf.end(), z.begin());
    detail::orthonormalise_columns(z, D, l, rng);
    std::copy(z.begin(), z.end(), zf.begin());
    kernels::gemm(Trans::no, Trans::no, N, l, D, 1.0f, xc.data(), zf.data(), 0.0f, yf.data());  // Y = X Z
    std::copy(yf.begin(), yf.end(), y.begin());
    detail::orthonormalise_columns(y, N, l, rng);
  }
  // B = Q^T X [l,D]; B B^T = U S^2 U^T; scores = X V = Q U S.
  std::copy(y.begin(), y.end(), yf.begin());
  std::vector<float> bf(l * D);
  kernels::gemm(Trans::yes, Trans::no, l, D, N, 1.0f, yf.data(), xc.data(), 0.0f, bf.data());
  std::vector<double> bbt(l * l, 0.0), u;
  for (std::size_t a = 0; a < l; ++a)
    for (std::size_t b = a; b < l; ++b) {
      double s = 0;
      for (std::size_t d = 0; d < D; ++d) s += static_cast<double>(bf[a * D + d]) * bf[b * D + d];
      bbt[a * l + b] = bbt[b * l + a] = s;
    }
  detail::symmetric_eigen(bbt, u, l);
  std::vector<std::size_t> order(l);
  for (std::size_t c = 0; c < l; ++c) order[c] = c;
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return bbt[a * l + a] > bbt[b * l + b]; });
  Tensor2<float> out(Shape<2>{N, n});
  for (std::size_t c = 0; c < n; ++c) {
    const std::size_t k = order[c];
    const double sigma = std::sqrt(std::max(0.0, bbt[k * l + k]));
    for (std::size_t i = 0; i < N; ++i) {
      double s = 0;
      for (std::size_t q = 0; q < l; ++q) s += y[i * l + q] * u[q * l + k];
      out(i, c) = static_cast<float>(s * sigma);
    }
  }
  return out;
}

}  // namespace sieve::viz
