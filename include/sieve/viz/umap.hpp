#pragma once
/// UMAP (McInnes, Healy & Melville 2018, arXiv:1802.03426), following umap-learn's algorithm
/// step by step, single-threaded and deterministic for a fixed seed (random numbers from
/// sieve::Rng, so they are not numpy's: outputs match umap-learn in kind, not bit for bit):
///   1. exact k-nearest-neighbour graph (self included as neighbour 0), euclidean or cosine,
///      found with blocked GEMM (sieve::kernels::gemm) and the k distances recomputed exactly;
///   2. smooth kNN distances: rho_i = distance to the nearest non-identical neighbour
///      (local_connectivity = 1), sigma_i by binary search so sum_j exp(-(d_ij - rho_i)/sigma_i)
///      = log2(k) (umap-learn's smooth_knn_dist, 64 iterations, tolerance 1e-5, the
///      MIN_K_DIST_SCALE floor);
///   3. fuzzy union P = A + A^T - A o A^T, edges below max/n_epochs dropped;
///   4. init: spectral (the eigenvectors of the normalised graph Laplacian after the trivial
///      one, by subspace iteration with Rayleigh-Ritz, tolerance 1e-4 like umap-learn's eigsh)
///      when the graph is connected, else random uniform in [-10, 10]^d from sieve::Rng
///      (umap-learn would lay out each component separately); then every column is rescaled to
///      [0, 10] as umap-learn does;
///   5. layout: SGD over edges sampled in proportion to their weight with negative sampling
///      (optimize_layout_euclidean: clipped gradients at 4, learning rate decaying linearly,
///      5 negatives per positive);
///   6. a, b of the low-dimensional kernel 1/(1 + a d^(2b)) fitted to min_dist/spread by
///      least squares on 300 points, as umap-learn's find_ab_params does with curve_fit.
/// Cost: O(N^2 D) for the exact graph (BLAS), O(n_epochs * |E| * negatives) for the layout;
/// a few thousand points take seconds.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/rng.hpp"
#include "sieve/core/xt.hpp"
#include "sieve/kernels/gemm.hpp"
#include "sieve/viz/pca.hpp"

namespace sieve::viz {

enum class UmapMetric { euclidean, cosine };

/// Initial layout: spectral (umap-learn's default) falls back to random when the graph is not
/// connected (umap-learn lays components out separately instead; sieve does not).
enum class UmapInit { spectral, random };

struct UmapOptions {
  std::size_t n_neighbors = 15;  ///< including the point itself, as in umap-learn
  std::size_t n_components = 2;
  double min_dist = 0.1;
  double spread = 1.0;
  std::size_t n_epochs = 0;  ///< 0: 500 for N <= 10000, else 200 (umap-learn's default)
  UmapMetric metric = UmapMetric::euclidean;
  double learning_rate = 1.0;
  double repulsion_strength = 1.0;
  std::size_t negative_sample_rate = 5;
  UmapInit init = UmapInit::spectral;
  /// > 0: first reduce x to this many principal components (pca_scores) when D is larger;
  /// cuts the O(N^2 D) neighbour search for wide embeddings (e.g. 50 for 2048-d features).
  std::size_t pca_components = 0;
  std::uint64_t seed = 42;
};

/// k nearest neighbours per point: indices and distances [N,k], row i starting with i itself.
struct KnnGraph {
  std::size_t N = 0, k = 0;
  std::vector<std::uint32_t> indices;
  std::vector<double> distances;
};

/// A sparse symmetric graph as a sorted edge list (both directions stored), like umap-learn's
/// graph.tocoo() after symmetrisation.
struct FuzzyGraph {
  std::size_t N = 0;
  std::vector<std::uint32_t> head, tail;
  std::vector<double> weight;
};

namespace detail {
inline double umap_distance(const double* a, const double* b, std::size_t D, UmapMetric m) {
  if (m == UmapMetric::euclidean) {
    double s = 0;
    for (std::size_t d = 0; d < D; ++d) s += (a[d] - b[d]) * (a[d] - b[d]);
    return std::sqrt(s);
  }
  double ab = 0, aa = 0, bb = 0;
  for (std::size_t d = 0; d < D; ++d) ab += a[d] * b[d], aa += a[d] * a[d], bb += b[d] * b[d];
  if (aa == 0 && bb == 0) return 0.0;
  if (aa == 0 || bb == 0) return 1.0;
  return std::max(0.0, 1.0 - ab / std::sqrt(aa * bb));
}
}  // namespace detail

/// Exact kNN graph by blocked GEMM: candidates ranked in float/double from
/// |x|^2 + |y|^2 - 2 x.y (or 1 - cos), then the k distances recomputed in double.
/// Requires: N >= 2, 2 <= k <= N. Ensures: indices[i*k] == i, distances ascending after it,
/// ties broken by smaller index.
template <class T>
KnnGraph exact_knn(const Tensor2<T>& x, std::size_t k, UmapMetric metric, std::size_t block = 512) {
  const std::size_t N = x.shape()[0], D = x.shape()[1];
  SIEVE_CHECK(N >= 2, "umap exact_knn: need at least 2 points, got N=", N);
  SIEVE_CHECK(k >= 2 && k <= N, "umap exact_knn: k=", k, " must be in [2, N=", N, "]");
  for (std::size_t i = 0; i < N * D; ++i)
    SIEVE_CHECK(std::isfinite(x.data()[i]), "umap exact_knn: x[", i / D, ",", i % D, "] is not finite");
  std::vector<double> sq(N);
  for (std::size_t i = 0; i < N; ++i) {
    double s = 0;
    for (std::size_t d = 0; d < D; ++d) s += static_cast<double>(x(i, d)) * x(i, d);
    sq[i] = s;
  }
  const std::size_t B = std::min(block, N);
  std::vector<T> dots(B * B);
  // Per query row: the best k-1 other points as a max-heap on (distance, index).
  std::vector<std::vector<std::pair<double, std::uint32_t>>> heaps(B);
  KnnGraph g;
  g.N = N;
  g.k = k;
  g.indices.resize(N * k);
  g.distances.resize(N * k);
  std::vector<double> xi(D), xj(D);
  for (std::size_t q0 = 0; q0 < N; q0 += B) {
    const std::size_t nq = std::min(B, N - q0);
    for (auto& h : heaps) h.clear();
    for (std::size_t c0 = 0; c0 < N; c0 += B) {
      const std::size_t nc = std::min(B, N - c0);
      kernels::gemm(kernels::Trans::no, kernels::Trans::yes, nq, nc, D, T(1), x.data() + q0 * D, x.data() + c0 * D,
                    T(0), dots.data());
      for (std::size_t a = 0; a < nq; ++a) {
        auto& h = heaps[a];
        const std::size_t i = q0 + a;
        for (std::size_t b = 0; b < nc; ++b) {
          const std::size_t j = c0 + b;
          if (j == i) continue;
          const double dot = static_cast<double>(dots[a * nc + b]);
          double d;
          if (metric == UmapMetric::euclidean) d = std::max(0.0, sq[i] + sq[j] - 2 * dot);
          else d = (sq[i] > 0 && sq[j] > 0) ? 1.0 - dot / std::sqrt(sq[i] * sq[j]) : 1.0;
          const std::pair<double, std::uint32_t> cand{d, static_cast<std::uint32_t>(j)};
          if (h.size() < k - 1) {
            h.push_back(cand);
            std::push_heap(h.begin(), h.end());
          } else if (cand < h.front()) {
            std::pop_heap(h.begin(), h.end());
            h.back() = cand;
            std::push_heap(h.begin(), h.end());
          }
        }
      }
    }
    for (std::size_t a = 0; a < nq; ++a) {
      const std::size_t i = q0 + a;
      auto& h = heaps[a];
      for (std::size_t d = 0; d < D; ++d) xi[d] = static_cast<double>(x(i, d));
      for (auto& [dist, j] : h) {
        for (std::size_t d = 0; d < D; ++d) xj[d] = static_cast<double>(x(j, d));
        dist = detail::umap_distance(xi.data(), xj.data(), D, metric);
      }
      std::sort(h.begin(), h.end());
      g.indices[i * k] = static_cast<std::uint32_t>(i);
      g.distances[i * k] = 0.0;
      for (std::size_t m = 0; m + 1 < k; ++m) {
        g.indices[i * k + m + 1] = h[m].second;
        g.distances[i * k + m + 1] = h[m].first;
      }
    }
  }
  return g;
}

/// umap-learn's smooth_knn_dist with local_connectivity = 1 and bandwidth = 1: per point rho
/// (nearest positive distance) and sigma (binary search on sum exp(-(d - rho)/sigma) = log2 k
/// over neighbours 1..k-1). Returns {sigma, rho}.
inline std::pair<std::vector<double>, std::vector<double>> smooth_knn_dist(const KnnGraph& g) {
  constexpr int kIterations = 64;
  constexpr double kTolerance = 1e-5, kMinKDistScale = 1e-3;
  const std::size_t N = g.N, k = g.k;
  const double target = std::log2(static_cast<double>(k));
  double mean_all = 0;
  for (double d : g.distances) mean_all += d;
  mean_all /= static_cast<double>(g.distances.size());
  std::vector<double> sigma(N), rho(N, 0.0);
  for (std::size_t i = 0; i < N; ++i) {
    const double* di = g.distances.data() + i * k;
    for (std::size_t j = 0; j < k; ++j)
      if (di[j] > 0) {  // distances are ascending: the first positive one is the nearest
        rho[i] = di[j];
        break;
      }
    double lo = 0, hi = std::numeric_limits<double>::infinity(), mid = 1;
    for (int it = 0; it < kIterations; ++it) {
      double psum = 0;
      for (std::size_t j = 1; j < k; ++j) {
        const double d = di[j] - rho[i];
        psum += d > 0 ? std::exp(-d / mid) : 1.0;
      }
      if (std::abs(psum - target) < kTolerance) break;
      if (psum > target) {
        hi = mid;
        mid = (lo + hi) / 2;
      } else {
        lo = mid;
        mid = std::isinf(hi) ? mid * 2 : (lo + hi) / 2;
      }
    }
    sigma[i] = mid;
    double mean_i = 0;
    for (std::size_t j = 0; j < k; ++j) mean_i += di[j];
    mean_i /= static_cast<double>(k);
    const double floor = kMinKDistScale * (rho[i] > 0 ? mean_i : mean_all);
    if (sigma[i] < floor) sigma[i] = floor;
  }
  return {std::move(sigma), std::move(rho)};
}

/// The fuzzy simplicial set: memberships exp(-(d - rho)/sigma) (1 within rho, 0 to itself),
/// symmetrised by the fuzzy union A + A^T - A o A^T; edges sorted by (head, tail).
inline FuzzyGraph fuzzy_simplicial_set(const KnnGraph& g) {
  const auto [sigma, rho] = smooth_knn_dist(g);
  const std::size_t N = g.N, k = g.k;
  struct Entry {
    std::uint32_t r, c;
    double v;
  };
  std::vector<Entry> e;
  e.reserve(2 * N * k);
  for (std::size_t i = 0; i < N; ++i)
    for (std::size_t j = 0; j < k; ++j) {
      const std::uint32_t c = g.indices[i * k + j];
      if (c == i) continue;
      const double d = g.distances[i * k + j] - rho[i];
      const double v = (d <= 0 || sigma[i] == 0) ? 1.0 : std::exp(-d / sigma[i]);
      e.push_back({static_cast<std::uint32_t>(i), c, v});
    }
  // A and A^T side by side, then combine equal (r, c) pairs: a + b - a*b.
  const std::size_t n_direct = e.size();
  for (std::size_t m = 0; m < n_direct; ++m) e.push_back({e[m].c, e[m].r, -e[m].v});  // negative marks transpose
  std::sort(e.begin(), e.end(), [](const Entry& a, const Entry& b) { return a.r != b.r ? a.r < b.r : a.c < b.c; });
  FuzzyGraph out;
  out.N = N;
  for (std::size_t m = 0; m < e.size();) {
    double a = 0, at = 0;
    std::size_t n = m;
    while (n < e.size() && e[n].r == e[m].r && e[n].c == e[m].c) {
      if (e[n].v >= 0) a = e[n].v;
      else at = -e[n].v;
      ++n;
    }
    const double v = a + at - a * at;
    if (v > 0) {
      out.head.push_back(e[m].r);
      out.tail.push_back(e[m].c);
      out.weight.push_back(v);
    }
    m = n;
  }
  return out;
}

/// a, b such that 1/(1 + a x^(2b)) fits 1 for x < min_dist and exp(-(x - min_dist)/spread)
/// beyond, least squares on 300 points of [0, 3 spread] (umap-learn's find_ab_params; here
/// Levenberg-Marquardt from a = b = 1, as scipy's curve_fit starts).
/// Requires: 0 <= min_dist < spread.
inline std::pair<double, double> find_ab_params(double spread, double min_dist) {
  SIEVE_CHECK(spread > 0 && min_dist >= 0 && min_dist < spread, "umap find_ab_params: need 0 <= min_dist=",
              min_dist, " < spread=", spread);
  constexpr std::size_t M = 300;
  std::vector<double> xv(M), yv(M);
  for (std::size_t i = 0; i < M; ++i) {
    xv[i] = spread * 3 * static_cast<double>(i) / static_cast<double>(M - 1);
    yv[i] = xv[i] < min_dist ? 1.0 : std::exp(-(xv[i] - min_dist) / spread);
  }
  const auto residuals = [&](double a, double b, std::vector<double>* ja, std::vector<double>* jb) {
    double ss = 0;
    for (std::size_t i = 0; i < M; ++i) {
      const double x = xv[i];
      const double p = x > 0 ? std::pow(x, 2 * b) : 0.0;
      const double f = 1.0 / (1.0 + a * p);
      const double r = f - yv[i];
      ss += r * r;
      if (ja) {
        (*ja)[i] = -p * f * f;                                      // df/da
        (*jb)[i] = x > 0 ? -a * p * 2 * std::log(x) * f * f : 0.0;  // df/db
      }
    }
    return ss;
  };
  double a = 1, b = 1, lambda = 1e-3;
  std::vector<double> ja(M), jb(M);
  double cost = residuals(a, b, &ja, &jb);
  for (int it = 0; it < 500; ++it) {
    double aa = 0, ab = 0, bb = 0, ga = 0, gb = 0;
    for (std::size_t i = 0; i < M; ++i) {
      const double x = xv[i];
      const double p = x > 0 ? std::pow(x, 2 * b) : 0.0;
      const double r = 1.0 / (1.0 + a * p) - yv[i];
      aa += ja[i] * ja[i], ab += ja[i] * jb[i], bb += jb[i] * jb[i];
      ga += ja[i] * r, gb += jb[i] * r;
    }
    bool improved = false;
    for (int tries = 0; tries < 30 && !improved; ++tries) {
      const double A = aa * (1 + lambda), Bm = bb * (1 + lambda), det = A * Bm - ab * ab;
      const double da = -(Bm * ga - ab * gb) / det, db = -(A * gb - ab * ga) / det;
      const double na = a + da, nb = b + db;
      const double nc = (na > 0 && nb > 0) ? residuals(na, nb, nullptr, nullptr) : INFINITY;
      if (nc < cost) {
        const bool converged = cost - nc < 1e-15 * std::max(1.0, cost);
        a = na, b = nb, cost = nc;
        lambda = std::max(lambda / 10, 1e-12);
        improved = true;
        if (converged) return {a, b};
      } else {
        lambda *= 10;
      }
    }
    if (!improved) break;
    residuals(a, b, &ja, &jb);
  }
  return {a, b};
}

/// umap-learn's make_epochs_per_sample: an edge of weight w is sampled every
/// max_w / w epochs; edges never sampled get -1.
inline std::vector<double> epochs_per_sample(const std::vector<double>& w, std::size_t n_epochs) {
  const double mx = w.empty() ? 1.0 : *std::max_element(w.begin(), w.end());
  std::vector<double> out(w.size(), -1.0);
  for (std::size_t i = 0; i < w.size(); ++i) {
    const double n_samples = static_cast<double>(n_epochs) * (w[i] / mx);
    if (n_samples > 0) out[i] = static_cast<double>(n_epochs) / n_samples;
  }
  return out;
}

namespace detail {

/// Number of connected components of the graph (union-find over its edges).
inline std::size_t count_components(const FuzzyGraph& g) {
  std::vector<std::uint32_t> parent(g.N);
  for (std::size_t i = 0; i < g.N; ++i) parent[i] = static_cast<std::uint32_t>(i);
  const auto find = [&](std::uint32_t x) {
    while (parent[x] != x) x = parent[x] = parent[parent[x]];
    return x;
  };
  std::size_t comps = g.N;
  for (std::size_t e = 0; e < g.head.size(); ++e) {
    const auto a = find(g.head[e]), b = find(g.tail[e]);
    if (a != b) parent[a] = b, --comps;
  }
  return comps;
}

}  // namespace detail

/// Spectral layout of a connected graph: the `dim` eigenvectors of the normalised Laplacian
/// L = I - D^-1/2 W D^-1/2 with the smallest eigenvalues after the trivial one, as [N, dim].
/// Found by subspace iteration on (I + D^-1/2 W D^-1/2)/2 (same eigenvectors, spectrum in
/// [0,1], the wanted ones largest) with dim + 4 vectors and Rayleigh-Ritz, until the residual
/// of every wanted vector is below `tol` or `max_iter` iterations (cost max_iter * |E| * (dim+4);
/// a slowly converging graph, like a long chain, then gets a smooth but inexact start, which
/// the SGD layout refines anyway). Returns an empty vector if the graph is not connected or
/// has fewer than dim + 2 points.
inline std::vector<double> spectral_layout(const FuzzyGraph& g, std::size_t dim, std::uint64_t seed,
                                           double tol = 1e-4, std::size_t max_iter = 5000) {
  const std::size_t N = g.N, p = std::min(dim + 4, N > 1 ? N - 1 : 1);
  if (N < dim + 2 || detail::count_components(g) != 1) return {};
  std::vector<double> deg(N, 0.0);
  for (std::size_t e = 0; e < g.weight.size(); ++e) deg[g.head[e]] += g.weight[e];
  std::vector<double> isd(N), u(N);
  double un = 0;
  for (std::size_t i = 0; i < N; ++i) {
    isd[i] = deg[i] > 0 ? 1 / std::sqrt(deg[i]) : 0.0;
    u[i] = std::sqrt(deg[i]);
    un += deg[i];
  }
  for (auto& v : u) v /= std::sqrt(un);  // the trivial eigenvector (eigenvalue 1 of A)
  const auto apply = [&](const std::vector<double>& y, std::vector<double>& out) {  // out = (y + A y) / 2
    out = y;
    for (auto& v : out) v *= 0.5;
    for (std::size_t e = 0; e < g.weight.size(); ++e) {
      const std::size_t i = g.head[e], j = g.tail[e];
      const double w = 0.5 * g.weight[e] * isd[i] * isd[j];
      for (std::size_t c = 0; c < p; ++c) out[i * p + c] += w * y[j * p + c];
    }
  };
  Rng rng(derive_seed(seed, RngPurpose::init), 1);
  std::vector<double> y(N * p), my, h(p * p), v;
  for (auto& x : y) x = rng.normal();
  detail::orthonormalise_columns(y, N, p, rng, &u);
  for (std::size_t it = 0; it < max_iter; ++it) {
    apply(y, my);
    const bool check = it % 10 == 9 || it + 1 == max_iter;
    if (check) {
      // Rayleigh-Ritz: rotate y to the eigenvectors of y^T M y, sorted by eigenvalue.
      for (std::size_t a = 0; a < p; ++a)
        for (std::size_t b = 0; b < p; ++b) {
          double s = 0;
          for (std::size_t i = 0; i < N; ++i) s += y[i * p + a] * my[i * p + b];
          h[a * p + b] = s;
        }
      for (std::size_t a = 0; a < p; ++a)
        for (std::size_t b = a + 1; b < p; ++b) h[a * p + b] = h[b * p + a] = 0.5 * (h[a * p + b] + h[b * p + a]);
      detail::symmetric_eigen(h, v, p);
      std::vector<std::size_t> order(p);
      for (std::size_t c = 0; c < p; ++c) order[c] = c;
      std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return h[a * p + a] > h[b * p + b]; });
      std::vector<double> ry(N * p, 0.0), rmy(N * p, 0.0);
      for (std::size_t i = 0; i < N; ++i)
        for (std::size_t c = 0; c < p; ++c)
          for (std::size_t q = 0; q < p; ++q) {
            ry[i * p + c] += y[i * p + q] * v[q * p + order[c]];
            rmy[i * p + c] += my[i * p + q] * v[q * p + order[c]];
          }
      double worst = 0;
      for (std::size_t c = 0; c < dim; ++c) {
        const double lambda = h[order[c] * p + order[c]];
        double r = 0;
        for (std::size_t i = 0; i < N; ++i) r += (rmy[i * p + c] - lambda * ry[i * p + c]) * (rmy[i * p + c] - lambda * ry[i * p + c]);
        worst = std::max(worst, std::sqrt(r));
      }
      y = std::move(ry);
      my = std::move(rmy);
      if (worst < tol) break;
    }
    y = my;
    detail::orthonormalise_columns(y, N, p, rng, &u);
  }
  std::vector<double> out(N * dim);
  for (std::size_t i = 0; i < N; ++i)
    for (std::size_t c = 0; c < dim; ++c) out[i * dim + c] = y[i * p + c];
  return out;
}

/// The UMAP embedding of x [N,D] -> [N, n_components].
/// Requires: N >= 2, finite x, n_neighbors >= 2, n_components >= 1.
/// Ensures: the same output for the same input, options and seed (single-threaded; the
/// BLAS used for neighbour candidates and libm's powf are the only outside influences).
template <class T>
Tensor2<float> umap(const Tensor2<T>& x, const UmapOptions& o = {}) {
  const std::size_t N = x.shape()[0], dim = o.n_components;
  SIEVE_CHECK(N >= 2, "umap: need at least 2 points, got N=", N);
  SIEVE_CHECK(o.n_neighbors >= 2, "umap: n_neighbors=", o.n_neighbors, " must be at least 2");
  SIEVE_CHECK(dim >= 1, "umap: n_components must be at least 1");
  const std::size_t k = std::min(o.n_neighbors, N);
  const std::size_t n_epochs = o.n_epochs ? o.n_epochs : (N <= 10000 ? 500 : 200);
  FuzzyGraph g;
  const std::size_t D = x.shape()[1];
  if (o.pca_components > 0 && o.pca_components < std::min(N, D)) {
    if (o.metric == UmapMetric::cosine) {
      // Cosine order = euclidean order of unit vectors, and PCA keeps euclidean geometry
      // (centring is a translation), so normalise, project, and measure euclidean.
      Tensor2<float> unit(Shape<2>{N, D});
      for (std::size_t i = 0; i < N; ++i) {
        double ss = 0;
        for (std::size_t d = 0; d < D; ++d) ss += static_cast<double>(x(i, d)) * x(i, d);
        const double inv = ss > 0 ? 1 / std::sqrt(ss) : 0.0;
        for (std::size_t d = 0; d < D; ++d) unit(i, d) = static_cast<float>(x(i, d) * inv);
      }
      g = fuzzy_simplicial_set(exact_knn(pca_scores(unit, o.pca_components, o.seed), k, UmapMetric::euclidean));
    } else {
      g = fuzzy_simplicial_set(exact_knn(pca_scores(x, o.pca_components, o.seed), k, o.metric));
    }
  } else {
    g = fuzzy_simplicial_set(exact_knn(x, k, o.metric));
  }
  {  // Drop edges too weak to be sampled even once (umap-learn does this before the layout).
    const double mx = g.weight.empty() ? 0.0 : *std::max_element(g.weight.begin(), g.weight.end());
    FuzzyGraph kept;
    kept.N = N;
    for (std::size_t e = 0; e < g.weight.size(); ++e)
      if (g.weight[e] >= mx / static_cast<double>(n_epochs > 10 ? n_epochs : (N <= 10000 ? 500 : 200))) {
        kept.head.push_back(g.head[e]);
        kept.tail.push_back(g.tail[e]);
        kept.weight.push_back(g.weight[e]);
      }
    g = std::move(kept);
  }
  const auto [a, b] = find_ab_params(o.spread, o.min_dist);

  // The layout runs in float, as umap-learn's float32 embedding does: powf is several times
  // cheaper than pow and dominates the cost.
  const auto af = static_cast<float>(a), bf = static_cast<float>(b);
  std::vector<double> start;
  Rng init(derive_seed(o.seed, RngPurpose::init));
  if (o.init == UmapInit::spectral) start = spectral_layout(g, dim, o.seed);
  if (!start.empty()) {
    // Scaled to max |v| = 10 plus a little noise to break ties, as umap-learn does.
    double mx = 0;
    for (double v : start) mx = std::max(mx, std::abs(v));
    for (auto& v : start) v = v * (mx > 0 ? 10.0 / mx : 1.0) + 1e-4 * init.normal();
  } else {
    start.resize(N * dim);
    for (auto& v : start) v = init.uniform(-10.0, 10.0);
  }
  std::vector<float> emb(N * dim);
  for (std::size_t c = 0; c < dim; ++c) {  // every column to [0, 10]
    double lo = INFINITY, hi = -INFINITY;
    for (std::size_t i = 0; i < N; ++i) lo = std::min(lo, start[i * dim + c]), hi = std::max(hi, start[i * dim + c]);
    const double scale = hi > lo ? 10.0 / (hi - lo) : 0.0;
    for (std::size_t i = 0; i < N; ++i) emb[i * dim + c] = static_cast<float>((start[i * dim + c] - lo) * scale);
  }

  const std::size_t E = g.weight.size();
  const auto eps = epochs_per_sample(g.weight, n_epochs);
  std::vector<double> eps_neg(E), next_neg(E), next(eps);
  for (std::size_t e = 0; e < E; ++e) eps_neg[e] = eps[e] / static_cast<double>(o.negative_sample_rate);
  next_neg = eps_neg;
  Rng neg(derive_seed(o.seed, RngPurpose::shuffle));
  const auto clip = [](float v) { return v > 4.0f ? 4.0f : (v < -4.0f ? -4.0f : v); };
  const auto gamma = static_cast<float>(o.repulsion_strength);
  float alpha = static_cast<float>(o.learning_rate);
  for (std::size_t n = 0; n < n_epochs; ++n) {
    const auto epoch = static_cast<double>(n);
    for (std::size_t e = 0; e < E; ++e) {
      if (eps[e] < 0 || next[e] > epoch) continue;
      float* cur = emb.data() + static_cast<std::size_t>(g.head[e]) * dim;
      float* oth = emb.data() + static_cast<std::size_t>(g.tail[e]) * dim;
      float d2 = 0;
      for (std::size_t d = 0; d < dim; ++d) d2 += (cur[d] - oth[d]) * (cur[d] - oth[d]);
      // Attraction: gradient of log(1/(1 + a d^2b)) with respect to the squared distance;
      // d^(2(b-1)) is taken as d^2b / d^2 to spend one pow.
      float ga = 0.0f;
      if (d2 > 0) {
        const float pb = std::pow(d2, bf);
        ga = (-2.0f * af * bf * pb / d2) / (af * pb + 1.0f);
      }
      for (std::size_t d = 0; d < dim; ++d) {
        const float gd = clip(ga * (cur[d] - oth[d]));
        cur[d] += gd * alpha;
        oth[d] -= gd * alpha;
      }
      next[e] += eps[e];
      // Negatives owed since the last visit (truncated toward zero like umap-learn's int()).
      const double owed = (epoch - next_neg[e]) / eps_neg[e];
      const std::size_t n_neg = owed > 0 ? static_cast<std::size_t>(owed) : 0;
      for (std::size_t p = 0; p < n_neg; ++p) {
        const auto kk = static_cast<std::size_t>(neg.below(N));
        const float* o2 = emb.data() + kk * dim;
        float r2 = 0;
        for (std::size_t d = 0; d < dim; ++d) r2 += (cur[d] - o2[d]) * (cur[d] - o2[d]);
        float gr;
        if (r2 > 0) gr = 2.0f * gamma * bf / ((0.001f + r2) * (af * std::pow(r2, bf) + 1.0f));
        else if (kk == g.head[e]) continue;
        else gr = 0.0f;
        for (std::size_t d = 0; d < dim; ++d) {
          // Coincident points get the maximal push, as umap-learn does.
          const float gd = gr > 0 ? clip(gr * (cur[d] - o2[d])) : 4.0f;
          cur[d] += gd * alpha;
        }
      }
      next_neg[e] += static_cast<double>(n_neg) * eps_neg[e];
    }
    alpha = static_cast<float>(o.learning_rate * (1.0 - epoch / static_cast<double>(n_epochs)));  // umap-learn's schedule
  }
  Tensor2<float> out(Shape<2>{N, dim});
  std::copy(emb.begin(), emb.end(), out.begin());
  return out;
}

}  // namespace sieve::viz
