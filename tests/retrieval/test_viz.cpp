// SVG plots, the HTML page assembler and UMAP.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "sieve/core/rng.hpp"
#include "sieve/io/file.hpp"
#include "sieve/viz/html.hpp"
#include "sieve/viz/svg.hpp"
#include "sieve/viz/umap.hpp"

namespace fs = std::filesystem;
using sieve::Rng;
using sieve::Shape;
using sieve::Tensor2;

namespace {
std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (auto p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

// Parses every file with python3's xml.etree (expat): 0 when all are well-formed XML.
int xml_parse_all(const std::vector<fs::path>& files, bool quiet = false) {
  const char* py = std::getenv("SIEVE_PYTHON");
  REQUIRE_MESSAGE(py, "SIEVE_PYTHON must be set (meson test sets it)");
  std::string cmd = std::string(py) + " -c 'import sys, xml.etree.ElementTree as ET\n"
                                      "for f in sys.argv[1:]: ET.parse(f)' ";
  for (const auto& f : files) cmd += " '" + f.string() + "'";
  if (quiet) cmd += " 2>/dev/null";
  return std::system(cmd.c_str());
}

// Fraction of points whose nearest other point (euclidean, in y) has the same class.
double nn_purity(const Tensor2<float>& y, const std::vector<int>& cls) {
  const std::size_t N = y.shape()[0], D = y.shape()[1];
  std::size_t same = 0;
  for (std::size_t i = 0; i < N; ++i) {
    double best = INFINITY;
    std::size_t bj = 0;
    for (std::size_t j = 0; j < N; ++j) {
      if (j == i) continue;
      double d = 0;
      for (std::size_t c = 0; c < D; ++c) d += double(y(i, c) - y(j, c)) * (y(i, c) - y(j, c));
      if (d < best) best = d, bj = j;
    }
    same += cls[i] == cls[bj];
  }
  return static_cast<double>(same) / static_cast<double>(N);
}

// Gaussian clusters in D dimensions: centres N(0, sep^2), points centre + N(0, 1).
Tensor2<float> clusters(std::size_t C, std::size_t per, std::size_t D, double sep, std::vector<int>& cls,
                        std::uint64_t seed) {
  Rng rng(seed, 9);
  std::vector<double> centre(C * D);
  for (auto& v : centre) v = sep * rng.normal();
  Tensor2<float> x(Shape<2>{C * per, D});
  cls.clear();
  for (std::size_t c = 0; c < C; ++c)
    for (std::size_t p = 0; p < per; ++p) {
      const std::size_t i = c * per + p;
      for (std::size_t d = 0; d < D; ++d) x(i, d) = static_cast<float>(centre[c * D + d] + rng.normal());
      cls.push_back(static_cast<int>(c));
    }
  return x;
}
}  // namespace

TEST_CASE("svg plots and the html page are well-formed, offline and contain what was asked") {
  const fs::path dir = fs::temp_directory_path() / ("sieve-viz-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string hostile = "a<b & \"c\" 'd' \x01 \xFF\xFE caf\xC3\xA9";

  sieve::viz::LineChart lc;
  lc.title = "Training " + hostile;
  lc.x_label = "epoch";
  lc.y_label = "loss";
  std::vector<double> ep, l1, l2, lr;
  for (int e = 0; e < 30; ++e) {
    ep.push_back(e);
    l1.push_back(1.0 / (1 + e));
    l2.push_back(e == 10 ? NAN : 1.2 / (1 + e));  // a gap breaks the line in two
    lr.push_back(1e-3 * std::cos(e / 30.0));
  }
  lc.series.push_back({"train loss", ep, l1, "", false, true});
  lc.series.push_back({"val loss " + hostile, ep, l2, "#ff0000", true, false});
  lc.markers.push_back({12, 0.08, "best " + hostile});
  const std::string line = sieve::viz::line_chart(lc);
  CHECK(count(line, "<polyline") == 3);
  CHECK(count(line, "stroke-dasharray=\"6 4\"") == 3);  // two line pieces + the legend entry
  CHECK(line.find("train loss") != std::string::npos);
  CHECK(line.find("a&lt;b &amp; &quot;c&quot;") != std::string::npos);

  sieve::viz::LineChart lrc;
  lrc.title = "learning rate";
  lrc.log_y = true;
  lrc.series.push_back({"lr", ep, lr, "", false, false});
  const std::string lrsvg = sieve::viz::line_chart(lrc);
  CHECK(lrsvg.find("log10 ") != std::string::npos);

  std::vector<double> th;
  for (int i = 0; i <= 100; ++i) th.push_back(i / 100.0);
  std::vector<double> m5;
  for (double t : th) m5.push_back(0.8 - (t - 0.6) * (t - 0.6));
  const std::string thr = sieve::viz::threshold_chart(th, m5, 0.6, 0.8);
  CHECK(thr.find("chosen t=0.6, MAP@5=0.8000") != std::string::npos);

  sieve::viz::BarChart bc;
  bc.title = "20 most predicted classes";
  bc.value_label = "test images";
  for (int i = 0; i < 20; ++i) {
    bc.labels.push_back(i == 3 ? hostile + hostile + hostile : "class " + std::to_string(i));
    bc.values.push_back(100.0 - i * 3);
  }
  const std::string bars = sieve::viz::bar_chart(bc);
  CHECK(count(bars, "<rect x=") == 20);
  CHECK(bars.find("class 19") != std::string::npos);
  sieve::viz::ScatterPlot sp;
  sp.title = "UMAP";
  Rng rng(3, 3);
  for (int i = 0; i < 500; ++i) {
    sp.x.push_back(rng.normal());
    sp.y.push_back(rng.normal());
    sp.cls.push_back(static_cast<std::int64_t>(rng.below(26)) - 1);
  }
  for (int c = 0; c < 25; ++c) sp.class_names.push_back("c" + std::to_string(c) + (c == 7 ? hostile : ""));
  const std::string sc = sieve::viz::scatter_plot(sp);
  CHECK(count(sc, "<circle") == 500 + 25);  // points + legend dots
  CHECK(sc.find("#b0b0b0") != std::string::npos);  // class -1 drawn grey

  sieve::viz::HtmlPage page("Report " + hostile);
  page.section("Curves").svg(line, "loss").svg(lrsvg).paragraph(hostile);
  page.section("Threshold").svg("<?xml version=\"1.0\"?>\n" + thr);
  page.section("Predictions").svg(bars).image("grids/top1.png", "grid " + hostile, "caption", 400);
  page.section("UMAP").svg(sc);
  const std::vector<std::string> header = {"method", "MAP@5"};
  const std::vector<std::vector<std::string>> rows = {{"head", "0.864"}, {hostile, "0.861"}};
  page.table(header, rows);
  page.write(dir / "index.html");
  const auto html = page.html();
  CHECK(count(html, "<svg") == 5);
  CHECK(count(html, "<figure>") == 6);
  CHECK(count(html, "<tr>") == 3);
  CHECK(html.find("<script") == std::string::npos);
  CHECK(html.find("src=\"http") == std::string::npos);
  CHECK(html.find("<?xml") == std::string::npos);
  CHECK_THROWS_WITH_AS(page.image("../x.png", ""), doctest::Contains("must be a relative path"), sieve::Error);
  CHECK_THROWS_AS(page.image("/etc/x.png", ""), sieve::Error);
  CHECK_THROWS_AS(page.image("http://x/y.png", ""), sieve::Error);
  CHECK_THROWS_AS(page.svg("<svg><script>alert(1)</script></svg>"), sieve::Error);
  CHECK_THROWS_WITH_AS(page.svg("<svg onload=\"alert(1)\"></svg>"), doctest::Contains("event handlers"), sieve::Error);
  CHECK_NOTHROW(page.svg("<svg><text>on=off, one=1</text></svg>"));
  CHECK_THROWS_AS(page.table(header, std::vector<std::vector<std::string>>{{"one"}}), sieve::Error);

  std::vector<fs::path> files = {dir / "index.html"};
  int n = 0;
  for (const auto* s : {&line, &lrsvg, &thr, &bars, &sc}) {
    files.push_back(dir / ("p" + std::to_string(n++) + ".svg"));
    sieve::io::write_file_atomic(files.back(), std::string_view(*s));
  }
  CHECK(xml_parse_all(files) == 0);
  // The checker can fail: an unescaped '<' is rejected.
  sieve::io::write_file_atomic(dir / "bad.svg", std::string_view("<svg xmlns=\"http://www.w3.org/2000/svg\"><text>a<b</text></svg>"));
  CHECK(xml_parse_all({dir / "bad.svg"}, true) != 0);
  fs::remove_all(dir);

  CHECK_THROWS_WITH_AS(sieve::viz::bar_chart({"t", "v", {"a"}, {1.0, 2.0}}), doctest::Contains("1 labels but 2 values"),
                       sieve::Error);
}

TEST_CASE("line chart ticks: nice steps, whole numbers only on an integer axis") {
  double lo = 1, hi = 3;
  const auto fine = sieve::viz::detail::nice_ticks(lo, hi, 8);  // steps of 0.2
  REQUIRE(fine.size() == 11);
  CHECK(fine[1] == doctest::Approx(1.2));
  lo = 1, hi = 3;
  CHECK(sieve::viz::detail::nice_ticks(lo, hi, 8, 1.0) == std::vector<double>{1, 2, 3});
  lo = 0, hi = 40;
  CHECK(sieve::viz::detail::nice_ticks(lo, hi, 8, 1.0) == std::vector<double>{0, 5, 10, 15, 20, 25, 30, 35, 40});
  sieve::viz::LineChart c;
  c.title = "loss";
  c.series.push_back({"train", {1, 2, 3}, {0.5, 0.4, 0.3}, "#000", false, false});
  CHECK(sieve::viz::line_chart(c).find(">1.2</text>") != std::string::npos);
  c.integer_x = true;
  CHECK(sieve::viz::line_chart(c).find(">1.2</text>") == std::string::npos);
  CHECK(sieve::viz::line_chart(c).find(">2</text>") != std::string::npos);
}

TEST_CASE("umap pieces: a/b fit, exact kNN, smooth kNN distances, fuzzy union") {
  // umap-learn's find_ab_params(1.0, 0.1): a = 1.576943460405378, b = 0.8950608781227859.
  const auto [a, b] = sieve::viz::find_ab_params(1.0, 0.1);
  CHECK(a == doctest::Approx(1.576943).epsilon(1e-5));
  CHECK(b == doctest::Approx(0.895061).epsilon(1e-5));
  const auto [a2, b2] = sieve::viz::find_ab_params(1.0, 0.5);  // larger min_dist: flatter kernel
  CHECK(a2 == doctest::Approx(0.583).epsilon(1e-3));
  CHECK(b2 == doctest::Approx(1.334).epsilon(1e-3));

  Rng rng(1, 1);
  const std::size_t N = 300, D = 7, k = 10;
  Tensor2<float> x(Shape<2>{N, D});
  for (auto& v : x) v = static_cast<float>(rng.normal());
  for (auto metric : {sieve::viz::UmapMetric::euclidean, sieve::viz::UmapMetric::cosine}) {
    const auto g = sieve::viz::exact_knn(x, k, metric, 64);  // blocks smaller than N
    for (std::size_t i = 0; i < N; i += 37) {
      std::vector<std::pair<double, std::size_t>> all;
      std::vector<double> xi(D), xj(D);
      for (std::size_t d = 0; d < D; ++d) xi[d] = x(i, d);
      for (std::size_t j = 0; j < N; ++j) {
        if (j == i) continue;
        for (std::size_t d = 0; d < D; ++d) xj[d] = x(j, d);
        all.push_back({sieve::viz::detail::umap_distance(xi.data(), xj.data(), D, metric), j});
      }
      std::sort(all.begin(), all.end());
      CHECK(g.indices[i * k] == i);
      for (std::size_t m = 1; m < k; ++m) {
        CHECK(g.indices[i * k + m] == all[m - 1].second);
        CHECK(g.distances[i * k + m] == doctest::Approx(all[m - 1].first).epsilon(1e-9));
      }
    }
    const auto [sigma, rho] = sieve::viz::smooth_knn_dist(g);
    for (std::size_t i = 0; i < N; ++i) {
      CHECK(rho[i] == g.distances[i * k + 1]);
      double psum = 0;
      for (std::size_t j = 1; j < k; ++j) psum += std::exp(-std::max(0.0, g.distances[i * k + j] - rho[i]) / sigma[i]);
      CHECK(psum == doctest::Approx(std::log2(double(k))).epsilon(1e-4));
    }
    const auto fg = sieve::viz::fuzzy_simplicial_set(g);
    // Symmetric with weights in (0,1]; every edge (i,j) has its (j,i).
    std::map<std::pair<std::uint32_t, std::uint32_t>, double> w;
    for (std::size_t e = 0; e < fg.weight.size(); ++e) {
      CHECK(fg.weight[e] > 0);
      CHECK(fg.weight[e] <= 1.0);
      CHECK(fg.head[e] != fg.tail[e]);
      w[{fg.head[e], fg.tail[e]}] = fg.weight[e];
    }
    for (const auto& [key, v] : w) CHECK(w.at({key.second, key.first}) == v);
    CHECK(w.size() >= N * (k - 1));
  }
  CHECK_THROWS_WITH_AS(sieve::viz::exact_knn(x, N + 1, sieve::viz::UmapMetric::euclidean),
                       doctest::Contains("k=301 must be in [2, N=300]"), sieve::Error);
}

TEST_CASE("umap: separated Gaussian clusters in 50-d stay separated in 2-d; deterministic") {
  std::vector<int> cls;
  const auto x = clusters(5, 120, 50, 4.0, cls, 17);
  double before = nn_purity(x, cls);
  REQUIRE(before > 0.99);  // the input really is clustered
  sieve::viz::UmapOptions o;
  o.seed = 7;
  o.n_epochs = 200;
  const auto t0 = std::chrono::steady_clock::now();
  const auto y = sieve::viz::umap(x, o);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE("umap of 600 x 50 points, 200 epochs: ", secs, " s");
  REQUIRE(y.shape()[0] == 600);
  REQUIRE(y.shape()[1] == 2);
  for (float v : y) REQUIRE(std::isfinite(v));
  CHECK(nn_purity(y, cls) > 0.95);
  // Clusters are compact: the mean within-cluster distance is well below the between-cluster one.
  double within = 0, between = 0;
  std::size_t nw = 0, nb = 0;
  for (std::size_t i = 0; i < 600; i += 3)
    for (std::size_t j = i + 1; j < 600; j += 7) {
      const double d = std::hypot(y(i, 0) - y(j, 0), y(i, 1) - y(j, 1));
      if (cls[i] == cls[j]) within += d, ++nw;
      else between += d, ++nb;
    }
  CHECK(within / nw * 3 < between / nb);

  const auto y2 = sieve::viz::umap(x, o);
  CHECK(std::equal(y.begin(), y.end(), y2.begin()));
  o.seed = 8;
  const auto y3 = sieve::viz::umap(x, o);
  CHECK(!std::equal(y.begin(), y.end(), y3.begin()));

  // Cosine metric on the same data also separates (directions differ between centres).
  o.metric = sieve::viz::UmapMetric::cosine;
  CHECK(nn_purity(sieve::viz::umap(x, o), cls) > 0.95);

  // Random points have no structure to keep: purity near chance (guards against a test that
  // passes whatever the embedding is).
  Rng rng(2, 2);
  Tensor2<float> noise(Shape<2>{600, 50});
  for (auto& v : noise) v = static_cast<float>(rng.normal());
  CHECK(nn_purity(sieve::viz::umap(noise, o), cls) < 0.5);
}

TEST_CASE("umap spectral init: Laplacian eigenvectors of a connected graph; random fallback otherwise") {
  // A noisy helix in 10-d: one connected curve whose first non-trivial Laplacian eigenvector
  // follows the curve parameter (a half cosine along it).
  const std::size_t N = 600, D = 10;
  Rng rng(3, 1);
  Tensor2<float> x(Shape<2>{N, D});
  std::vector<double> t(N);
  for (std::size_t i = 0; i < N; ++i) {
    t[i] = 6.0 * static_cast<double>(i) / N;
    for (std::size_t d = 0; d < D; ++d) x(i, d) = static_cast<float>(0.05 * rng.normal());
    x(i, 0) += static_cast<float>(3 * std::cos(2 * t[i]));
    x(i, 1) += static_cast<float>(3 * std::sin(2 * t[i]));
    x(i, 2) += static_cast<float>(2 * t[i]);
  }
  const auto g = sieve::viz::fuzzy_simplicial_set(sieve::viz::exact_knn(x, 15, sieve::viz::UmapMetric::euclidean));
  const auto s = sieve::viz::spectral_layout(g, 2, 1);
  REQUIRE(s.size() == N * 2);
  std::vector<double> deg(N, 0.0);
  for (std::size_t e = 0; e < g.weight.size(); ++e) deg[g.head[e]] += g.weight[e];
  double mean_t = 0, mean_v = 0;
  for (std::size_t i = 0; i < N; ++i) mean_t += t[i] / N, mean_v += s[i * 2] / N;
  for (std::size_t c = 0; c < 2; ++c) {
    // Unit norm, orthogonal to sqrt(degree), and an eigenvector of D^-1/2 W D^-1/2.
    std::vector<double> av(N, 0.0);
    for (std::size_t e = 0; e < g.weight.size(); ++e)
      av[g.head[e]] += g.weight[e] / std::sqrt(deg[g.head[e]] * deg[g.tail[e]]) * s[g.tail[e] * 2 + c];
    double lambda = 0, norm = 0, triv = 0, res = 0;
    for (std::size_t i = 0; i < N; ++i)
      lambda += s[i * 2 + c] * av[i], norm += s[i * 2 + c] * s[i * 2 + c], triv += s[i * 2 + c] * std::sqrt(deg[i]);
    for (std::size_t i = 0; i < N; ++i) res += (av[i] - lambda * s[i * 2 + c]) * (av[i] - lambda * s[i * 2 + c]);
    CHECK(norm == doctest::Approx(1.0).epsilon(1e-9));
    CHECK(std::abs(triv) < 1e-6);
    CHECK(std::sqrt(res) < 3e-4);
    CHECK(lambda > 0.99);  // the smoothest non-trivial modes
  }
  double ctv = 0, ctt = 0, cvv = 0;
  for (std::size_t i = 0; i < N; ++i) {
    ctv += (t[i] - mean_t) * (s[i * 2] - mean_v);
    ctt += (t[i] - mean_t) * (t[i] - mean_t);
    cvv += (s[i * 2] - mean_v) * (s[i * 2] - mean_v);
  }
  CHECK(std::abs(ctv / std::sqrt(ctt * cvv)) > 0.9);

  // The embedding keeps the curve's neighbourhoods: each point's nearest embedded neighbour
  // lies close along the curve.
  sieve::viz::UmapOptions o;
  o.n_epochs = 200;
  const auto y = sieve::viz::umap(x, o);
  std::size_t close = 0;
  for (std::size_t i = 0; i < N; ++i) {
    double best = INFINITY;
    std::size_t bj = 0;
    for (std::size_t j = 0; j < N; ++j) {
      const double d = std::hypot(y(i, 0) - y(j, 0), y(i, 1) - y(j, 1));
      if (j != i && d < best) best = d, bj = j;
    }
    close += std::abs(t[i] - t[bj]) < 0.1;
  }
  CHECK(static_cast<double>(close) / N > 0.95);

  // Separate clusters make a disconnected graph: no spectral layout, umap falls back to random.
  std::vector<int> cls;
  const auto xc = clusters(3, 40, 20, 10.0, cls, 5);
  CHECK(sieve::viz::spectral_layout(
            sieve::viz::fuzzy_simplicial_set(sieve::viz::exact_knn(xc, 15, sieve::viz::UmapMetric::euclidean)), 2, 1)
            .empty());
  sieve::viz::UmapOptions spectral, random;
  random.init = sieve::viz::UmapInit::random;
  spectral.n_epochs = random.n_epochs = 50;
  const auto ys = sieve::viz::umap(xc, spectral), yr = sieve::viz::umap(xc, random);
  CHECK(std::equal(ys.begin(), ys.end(), yr.begin()));
}

TEST_CASE("pca_scores: variances are the top covariance eigenvalues; umap accepts a PCA front end") {
  // Data with a known spectrum: variances 16, 9, 4, 1 along random orthonormal axes + 0.01 noise.
  const std::size_t N = 500, D = 30;
  Rng rng(8, 8);
  std::vector<double> axes(4 * D);
  for (auto& v : axes) v = rng.normal();
  sieve::viz::detail::orthonormalise_columns(axes, D, 4, rng);  // axes[d*4+a]: 4 orthonormal columns of length D
  Tensor2<double> x(Shape<2>{N, D});
  const double sd[] = {4, 3, 2, 1};
  for (std::size_t i = 0; i < N; ++i) {
    for (std::size_t d = 0; d < D; ++d) x(i, d) = 5.0 + 0.1 * rng.normal();  // offset: PCA must centre
    for (std::size_t a = 0; a < 4; ++a) {
      const double z = sd[a] * rng.normal();
      for (std::size_t d = 0; d < D; ++d) x(i, d) += z * axes[d * 4 + a];
    }
  }
  // Reference: eigenvalues of the exact covariance by the same Jacobi routine on [D,D].
  std::vector<double> mean(D, 0.0), cov(D * D, 0.0), v;
  for (std::size_t i = 0; i < N; ++i)
    for (std::size_t d = 0; d < D; ++d) mean[d] += x(i, d) / N;
  for (std::size_t i = 0; i < N; ++i)
    for (std::size_t a = 0; a < D; ++a)
      for (std::size_t b = 0; b < D; ++b) cov[a * D + b] += (x(i, a) - mean[a]) * (x(i, b) - mean[b]);
  sieve::viz::detail::symmetric_eigen(cov, v, D);
  std::vector<double> ev(D);
  for (std::size_t a = 0; a < D; ++a) ev[a] = cov[a * D + a];
  std::sort(ev.rbegin(), ev.rend());
  const auto s = sieve::viz::pca_scores(x, 3, 1);
  REQUIRE(s.shape()[1] == 3);
  for (std::size_t c = 0; c < 3; ++c) {
    double m = 0, var = 0;
    for (std::size_t i = 0; i < N; ++i) m += s(i, c) / N;
    for (std::size_t i = 0; i < N; ++i) var += (s(i, c) - m) * (s(i, c) - m);
    CHECK(std::abs(m) < 1e-3);
    CHECK(var == doctest::Approx(ev[c]).epsilon(1e-3));
    for (std::size_t c2 = 0; c2 < c; ++c2) {
      double cr = 0;
      for (std::size_t i = 0; i < N; ++i) cr += s(i, c) * s(i, c2);
      CHECK(std::abs(cr) < 1e-3 * var);
    }
  }
  CHECK(ev[0] / N == doctest::Approx(16).epsilon(0.2));
  CHECK_THROWS_WITH_AS(sieve::viz::pca_scores(x, 31), doctest::Contains("n=31 must be in [1, min(N=500, D=30)]"),
                       sieve::Error);

  std::vector<int> cls;
  const auto xc = clusters(4, 60, 200, 4.0, cls, 21);
  sieve::viz::UmapOptions o;
  o.n_epochs = 100;
  o.pca_components = 20;
  CHECK(nn_purity(sieve::viz::umap(xc, o), cls) > 0.95);
  o.metric = sieve::viz::UmapMetric::cosine;
  CHECK(nn_purity(sieve::viz::umap(xc, o), cls) > 0.95);
}
