// MAP@5, score summaries, -1 insertion, threshold sweep, unknown rate, ranking methods.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "sieve/core/rng.hpp"
#include "sieve/metrics/map_at_k.hpp"
#include "sieve/metrics/summary.hpp"
#include "sieve/retrieval/scores.hpp"
#include "sieve/retrieval/threshold.hpp"

namespace fs = std::filesystem;
using sieve::Rng;
using sieve::Shape;
using sieve::Tensor2;
using I64 = std::int64_t;

namespace {

Tensor2<I64> mat(std::vector<std::vector<I64>> rows) {
  Tensor2<I64> t(Shape<2>{rows.size(), rows.empty() ? 0 : rows[0].size()});
  for (std::size_t i = 0; i < rows.size(); ++i)
    for (std::size_t j = 0; j < rows[i].size(); ++j) t(i, j) = rows[i][j];
  return t;
}

Tensor2<float> fmat(std::vector<std::vector<float>> rows) {
  Tensor2<float> t(Shape<2>{rows.size(), rows[0].size()});
  for (std::size_t i = 0; i < rows.size(); ++i)
    for (std::size_t j = 0; j < rows[i].size(); ++j) t(i, j) = rows[i][j];
  return t;
}

std::vector<std::vector<I64>> rows_of(const Tensor2<I64>& t) {
  std::vector<std::vector<I64>> r(t.shape()[0]);
  for (std::size_t i = 0; i < t.shape()[0]; ++i)
    for (std::size_t j = 0; j < t.shape()[1]; ++j) r[i].push_back(t(i, j));
  return r;
}

// Runs tools/map5_reference.py on a JSON request; the test is skipped (with a message) only
// when meson did not provide the interpreter.
nlohmann::json run_reference(const nlohmann::json& req) {
  const char* py = std::getenv("SIEVE_PYTHON");
  const char* tool = std::getenv("SIEVE_MAP5_REFERENCE");
  REQUIRE_MESSAGE((py && tool), "SIEVE_PYTHON and SIEVE_MAP5_REFERENCE must be set (meson test sets them)");
  const fs::path dir = fs::temp_directory_path() / ("sieve-map5-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  {
    std::ofstream(dir / "req.json") << req.dump();
  }
  const std::string cmd = std::string(py) + " " + tool + " " + (dir / "req.json").string() + " > " +
                          (dir / "out.json").string();
  REQUIRE(std::system(cmd.c_str()) == 0);
  std::ifstream in(dir / "out.json");
  nlohmann::json out = nlohmann::json::parse(in);
  fs::remove_all(dir);
  return out;
}

}  // namespace

TEST_CASE("MAP@5 hand-computed cases") {
  using sieve::metrics::average_precision_at_k;
  using sieve::metrics::map_at_5;
  const std::vector<I64> r = {3, 1, -1, 7, 2, 9};
  CHECK(average_precision_at_k<I64>(r, 3) == 1.0);
  CHECK(average_precision_at_k<I64>(r, 1) == 0.5);
  CHECK(average_precision_at_k<I64>(r, -1) == doctest::Approx(1.0 / 3));
  CHECK(average_precision_at_k<I64>(r, 2) == doctest::Approx(0.2));
  CHECK(average_precision_at_k<I64>(r, 9) == 0.0);  // sixth: outside the first 5
  CHECK(average_precision_at_k<I64>(r, 4) == 0.0);
  CHECK(average_precision_at_k<I64>({}, 4) == 0.0);
  // A duplicated truth earns credit once: [5,5,...] truth 5 scores 1, not 1 + 1/2.
  const std::vector<I64> dup = {5, 5, 5, 5, 5};
  CHECK(average_precision_at_k<I64>(dup, 5) == 1.0);
  // Positions count as given: a repeated wrong label still pushes the truth down.
  const std::vector<I64> dup2 = {0, 0, 4};
  CHECK(average_precision_at_k<I64>(dup2, 4) == doctest::Approx(1.0 / 3));

  // Three items: 1 + 1/2 + 0 over 3.
  const auto ranked = mat({{0, 1, 2, 3, 4}, {-1, 2, 0, 0, 0}, {1, 1, 1, 1, 1}});
  const std::vector<I64> truth = {0, 2, 3};
  CHECK(map_at_5(ranked, truth) == doctest::Approx(0.5));

  const std::vector<std::vector<std::string>> srows = {{"cat", "dog"}, {"-1"}, {}, {"a", "b", "c", "d", "e", "f"}};
  const std::vector<std::string> struth = {"dog", "-1", "cat", "f"};
  CHECK(map_at_5(srows, struth) == doctest::Approx((0.5 + 1.0) / 4));

  CHECK_THROWS_WITH_AS(map_at_5(ranked, std::vector<I64>{1, 2}), doctest::Contains("N=3 rows but truth has 2"),
                       sieve::Error);
  CHECK_THROWS_AS(map_at_5(Tensor2<I64>(Shape<2>{0, 5}), std::vector<I64>{}), sieve::Error);
}

TEST_CASE("score summary: top-1, distractor recall, per-class counts") {
  const auto ranked = mat({{0, 1}, {1, 0}, {-1, 0}, {0, -1}, {-1, 1}, {1, -1}});
  const std::vector<I64> truth = {0, 0, -1, -1, 1, 1};
  const auto s = sieve::metrics::score_summary(ranked, truth);
  CHECK(s.n == 6);
  CHECK(s.n_known == 4);
  CHECK(s.n_distractor == 2);
  CHECK(s.known_top1 == doctest::Approx(0.5));         // items 0 and 5
  CHECK(s.distractor_recall == doctest::Approx(0.5));  // item 2
  CHECK(s.map == doctest::Approx((1 + 0.5 + 1 + 0.5 + 0.5 + 1) / 6.0));
  REQUIRE(s.per_class.size() == 3);
  CHECK(s.per_class[0].label == -1);
  CHECK(s.per_class[0].n_true == 2);
  CHECK(s.per_class[0].n_first == 2);
  CHECK(s.per_class[0].n_correct == 1);
  CHECK(s.per_class[0].map() == doctest::Approx(0.75));
  CHECK(s.per_class[1].label == 0);
  CHECK(s.per_class[1].n_first == 2);
  CHECK(s.per_class[2].n_first == 2);
  const auto top = sieve::metrics::most_predicted(s, 2);
  REQUIRE(top.size() == 2);
  CHECK(top[0].label == -1);  // tie on n_first: label order kept

  // Closed-set top-1 from scores ignores -1 entirely (the reference's argmax definition).
  const auto sc = fmat({{0.9f, 0.1f}, {0.5f, 0.5f}, {0.2f, 0.3f}, {0.0f, 0.0f}});
  CHECK(sieve::metrics::known_top1_from_scores(sc, std::vector<I64>{0, 1, 1, -1}) == doctest::Approx(2.0 / 3));
  CHECK(sieve::metrics::known_top1_from_scores(sc, std::vector<I64>{-1, -1, -1, -1}) == 0.0);

  const std::vector<std::vector<std::string>> srows = {{"x", "y"}, {"y"}, {"y", "x"}, {}, {"-1"}};
  const std::vector<std::string> struth = {"x", "x", "y", "y", "-1"};
  const auto ss = sieve::metrics::score_summary(srows, struth);
  CHECK(ss.known_top1 == doctest::Approx(0.5));
  CHECK(ss.distractor_recall == 1.0);
  CHECK(ss.map == doctest::Approx(3.0 / 5));
  const auto tops = sieve::metrics::most_predicted(ss, 20);
  REQUIRE(tops.size() == 3);
  CHECK(tops[0].label == "y");
  CHECK(tops[0].n_first == 2);
}

TEST_CASE("MAP@5 agrees with tools/map5_reference.py on random cases (int and string labels)") {
  Rng rng(20261127, 1);
  nlohmann::json req;
  std::vector<double> ours;
  const char* names[] = {"-1", "a", "b", "c", "d", "e", "f"};
  for (int c = 0; c < 60; ++c) {
    const std::size_t N = 1 + rng.below(40), W = rng.below(8);
    const bool strings = c % 2 == 1;
    Tensor2<I64> ranked(Shape<2>{N, W});
    std::vector<I64> truth(N);
    std::vector<std::vector<std::string>> srows(N);
    std::vector<std::string> struth(N);
    nlohmann::json rows = nlohmann::json::array(), tr = nlohmann::json::array();
    for (std::size_t i = 0; i < N; ++i) {
      nlohmann::json row = nlohmann::json::array();
      // string rows have their own random length 0..7, int rows the matrix width
      const std::size_t len = strings ? rng.below(8) : W;
      for (std::size_t j = 0; j < len; ++j) {
        const I64 v = static_cast<I64>(rng.below(7)) - 1;
        if (strings) {
          srows[i].push_back(names[v + 1]);
          row.push_back(names[v + 1]);
        } else {
          ranked(i, j) = v;
          row.push_back(v);
        }
      }
      truth[i] = static_cast<I64>(rng.below(7)) - 1;
      struth[i] = names[truth[i] + 1];
      rows.push_back(row);
      if (strings) tr.push_back(struth[i]);
      else tr.push_back(truth[i]);
    }
    req["map"].push_back({{"rows", rows}, {"truth", tr}, {"k", 5}});
    ours.push_back(strings ? sieve::metrics::map_at_5(srows, struth) : sieve::metrics::map_at_5(ranked, truth));
  }
  const auto out = run_reference(req);
  REQUIRE(out["map"].size() == ours.size());
  for (std::size_t c = 0; c < ours.size(); ++c) {
    CAPTURE(c);
    CHECK(ours[c] == doctest::Approx(out["map"][c].get<double>()).epsilon(1e-12));
  }
}

TEST_CASE("rank_with_threshold: -1 lands at every rank, ties as a stable argsort") {
  using sieve::retrieval::rank_with_threshold;
  // Scores descending 0.9 0.7 0.5 0.3 0.1 0.05 across shuffled class ids.
  const auto s = fmat({{0.5f, 0.9f, 0.1f, 0.7f, 0.3f, 0.05f}});
  const std::vector<I64> order = {1, 3, 0, 4, 2, 5};
  const double thresholds[] = {1.0, 0.8, 0.6, 0.4, 0.2, 0.07, 0.0};
  for (int pos = 0; pos < 7; ++pos) {
    CAPTURE(pos);
    const auto r = rank_with_threshold(s, thresholds[pos]);
    REQUIRE(r.shape()[1] == 5);
    std::vector<I64> expect;
    for (int j = 0; j < 6; ++j) {
      if (j == pos) expect.push_back(-1);
      expect.push_back(order[static_cast<std::size_t>(j)]);
    }
    if (pos == 6) expect.push_back(-1);
    expect.resize(5);
    CHECK(rows_of(r)[0] == expect);
  }
  // Ties: equal class scores keep index order; a class scoring exactly t goes before -1.
  const auto tie = fmat({{0.5f, 0.25f, 0.5f, 0.25f}});
  CHECK(rows_of(rank_with_threshold(tie, 0.5))[0] == std::vector<I64>{0, 2, -1, 1, 3});
  CHECK(rows_of(rank_with_threshold(tie, 0.25))[0] == std::vector<I64>{0, 2, 1, 3, -1});
  CHECK(rows_of(rank_with_threshold(tie, 0.3))[0] == std::vector<I64>{0, 2, -1, 1, 3});
  // Fewer than 5 classes: K+1 columns.
  const auto small = fmat({{0.2f, 0.8f}});
  CHECK(rows_of(rank_with_threshold(small, 0.5))[0] == std::vector<I64>{1, -1, 0});
  CHECK(rows_of(sieve::retrieval::rank_top_k(s, 3))[0] == std::vector<I64>{1, 3, 0});

  auto bad = fmat({{0.1f, NAN}});
  CHECK_THROWS_WITH_AS(rank_with_threshold(bad, 0.5), doctest::Contains("scores[0,1] is NaN"), sieve::Error);
}

TEST_CASE("rank_with_threshold and sweep agree with the numpy reference on tied random scores") {
  Rng rng(7, 2);
  nlohmann::json req;
  std::vector<Tensor2<float>> scores;
  std::vector<double> ts;
  std::vector<std::vector<I64>> truths;
  const auto grid = sieve::retrieval::linspace(-0.125, 1.125, 11);  // hits the 1/8 steps exactly
  for (int c = 0; c < 12; ++c) {
    const std::size_t N = 1 + rng.below(30), K = 1 + rng.below(9);
    Tensor2<float> s(Shape<2>{N, K});
    nlohmann::json js = nlohmann::json::array(), jt = nlohmann::json::array();
    std::vector<I64> truth(N);
    for (std::size_t i = 0; i < N; ++i) {
      nlohmann::json row = nlohmann::json::array();
      for (std::size_t j = 0; j < K; ++j) {
        s(i, j) = static_cast<float>(rng.below(9)) / 8.0f;  // coarse values: many ties
        row.push_back(s(i, j));
      }
      js.push_back(row);
      truth[i] = static_cast<I64>(rng.below(K + 1)) - 1;
      jt.push_back(truth[i]);
    }
    const double t = static_cast<double>(rng.below(9)) / 8.0;
    req["rank"].push_back({{"scores", js}, {"t", t}, {"k", 5}});
    req["sweep"].push_back({{"scores", js}, {"truth", jt}, {"grid", grid}});
    scores.push_back(s);
    ts.push_back(t);
    truths.push_back(truth);
  }
  const auto out = run_reference(req);
  for (std::size_t c = 0; c < scores.size(); ++c) {
    CAPTURE(c);
    const auto ours = rows_of(sieve::retrieval::rank_with_threshold(scores[c], ts[c]));
    CHECK(ours == out["rank"][c].get<std::vector<std::vector<I64>>>());
    const auto sw = sieve::retrieval::sweep_threshold(scores[c], truths[c], grid);
    const auto ref = out["sweep"][c];
    for (std::size_t g = 0; g < grid.size(); ++g)
      CHECK(sw.map5[g] == doctest::Approx(ref["map5"][g].get<double>()).epsilon(1e-12));
    CHECK(sw.best_threshold == ref["best_threshold"].get<double>());
  }
}

TEST_CASE("sweep equals brute force at every threshold, and picks the first maximum") {
  Rng rng(99, 3);
  const std::size_t N = 300, K = 9;
  Tensor2<float> s(Shape<2>{N, K});
  std::vector<I64> truth(N);
  for (std::size_t i = 0; i < N; ++i) {
    truth[i] = static_cast<I64>(rng.below(K + 1)) - 1;
    // Distractors score lower overall, so a threshold in the middle pays off.
    const float scale = truth[i] < 0 ? 0.6f : 1.0f;
    for (std::size_t j = 0; j < K; ++j)
      s(i, j) = scale * rng.uniform() * (static_cast<I64>(j) == truth[i] ? 1.5f : 1.0f);
  }
  const auto grid = sieve::retrieval::linspace(0.0, 1.0, 101);
  const auto sw = sieve::retrieval::sweep_threshold(s, truth, grid);
  REQUIRE(sw.map5.size() == 101);
  double best = -1;
  std::size_t bi = 0;
  for (std::size_t g = 0; g < grid.size(); ++g) {
    const double m = sieve::metrics::map_at_5(sieve::retrieval::rank_with_threshold(s, grid[g]), truth);
    CHECK(sw.map5[g] == doctest::Approx(m).epsilon(1e-12));
    if (m > best) best = m, bi = g;
  }
  CHECK(sw.best_index == bi);
  CHECK(sw.best_threshold == grid[bi]);
  CHECK(sw.best_map5 == doctest::Approx(best));
  // A middle threshold beats both extremes here (there are distractors and known items).
  CHECK(sw.best_map5 > sw.map5.front());
  CHECK(sw.best_map5 > sw.map5.back());
  CHECK_THROWS_WITH_AS(sieve::retrieval::sweep_threshold(s, std::vector<I64>(N, 9), grid),
                       doctest::Contains("truth[0]=9 outside [-1, 9)"), sieve::Error);
}

TEST_CASE("a distractor share reweights the sweep exactly as a resampled validation set would") {
  // 200 known items and 100 distractors (share 1/3). Share 1/2 must give the curve of the set
  // holding every distractor twice; share 1/3 the plain curve; the best threshold cannot fall
  // as the share rises (the distractors' curve rises with t, the known items' falls).
  Rng rng(17, 2);
  const std::size_t Nk = 200, Nd = 100, K = 6;
  Tensor2<float> s(Shape<2>{Nk + Nd, K}), twice(Shape<2>{Nk + 2 * Nd, K});
  std::vector<I64> truth(Nk + Nd), truth_twice(Nk + 2 * Nd);
  for (std::size_t i = 0; i < Nk + Nd; ++i) {
    truth[i] = i < Nk ? static_cast<I64>(rng.below(K)) : -1;
    for (std::size_t j = 0; j < K; ++j)
      s(i, j) = (i < Nk ? 1.0f : 0.7f) * rng.uniform() * (static_cast<I64>(j) == truth[i] ? 1.4f : 1.0f);
  }
  for (std::size_t r = 0; r < Nk + 2 * Nd; ++r) {
    const std::size_t i = r < Nk + Nd ? r : r - Nd;  // the distractors again
    truth_twice[r] = truth[i];
    for (std::size_t j = 0; j < K; ++j) twice(r, j) = s(i, j);
  }
  const auto grid = sieve::retrieval::linspace(0.0, 1.0, 51);
  const auto half = sieve::retrieval::sweep_threshold(s, truth, grid, 5, 0.5);
  const auto own = sieve::retrieval::sweep_threshold(s, truth, grid, 5, 1.0 / 3.0);
  const auto plain = sieve::retrieval::sweep_threshold(s, truth, grid);
  for (std::size_t g = 0; g < grid.size(); ++g) {
    CAPTURE(g);
    const double m = sieve::metrics::map_at_5(sieve::retrieval::rank_with_threshold(twice, grid[g]), truth_twice);
    CHECK(half.map5[g] == doctest::Approx(m).epsilon(1e-12));
    CHECK(own.map5[g] == doctest::Approx(plain.map5[g]).epsilon(1e-12));
    CHECK(plain.map5[g] == doctest::Approx((2.0 * plain.map5_known[g] + plain.map5_distractor[g]) / 3.0).epsilon(1e-12));
  }
  double last = -1.0;
  for (double p : {0.0, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0}) {
    const double t = sieve::retrieval::sweep_threshold(s, truth, grid, 5, p).best_threshold;
    CHECK(t >= last);
    last = t;
  }
  CHECK(sieve::retrieval::sweep_threshold(s, truth, grid, 5, 0.05).best_threshold <
        sieve::retrieval::sweep_threshold(s, truth, grid, 5, 0.95).best_threshold);
  CHECK_THROWS_WITH_AS(sieve::retrieval::sweep_threshold(s, truth, grid, 5, 1.5),
                       doctest::Contains("distractor_share=1.5 outside [0, 1]"), sieve::Error);
}

TEST_CASE("threshold_for_unknown_rate gives the requested fraction of -1-first rows") {
  using sieve::retrieval::rank_with_threshold;
  using sieve::retrieval::threshold_for_unknown_rate;
  Rng rng(5, 4);
  Tensor2<float> s(Shape<2>{200, 6});
  for (auto& v : s) v = rng.uniform();
  for (double rate : {0.0, 0.1, 0.25, 0.5, 0.93, 1.0}) {
    CAPTURE(rate);
    const auto u = threshold_for_unknown_rate(s, rate);
    const auto r = rank_with_threshold(s, u.threshold);
    std::size_t first = 0;
    for (std::size_t i = 0; i < 200; ++i) first += r(i, 0) == -1;
    CHECK(first == static_cast<std::size_t>(std::llround(rate * 200)));
    CHECK(u.achieved_rate == doctest::Approx(rate));
  }
  // All maxima tied: only 0 or 1 is achievable; 0.4 rounds to 0, 0.6 to 1.
  Tensor2<float> tied(Shape<2>{10, 2});
  for (std::size_t i = 0; i < 10; ++i) tied(i, 0) = 0.5f, tied(i, 1) = 0.1f;
  CHECK(threshold_for_unknown_rate(tied, 0.4).achieved_rate == 0.0);
  CHECK(threshold_for_unknown_rate(tied, 0.6).achieved_rate == 1.0);
  CHECK_THROWS_WITH_AS(threshold_for_unknown_rate(s, 1.5), doctest::Contains("rate=1.5 outside [0, 1]"),
                       sieve::Error);
}

namespace {
// Naive float64 references: every pairwise cosine, max per class; mean-of-normalised centroids.
std::vector<double> naive_knn(const Tensor2<float>& q, const Tensor2<float>& db, const std::vector<I64>& lab,
                              std::size_t K) {
  const std::size_t N = q.shape()[0], M = db.shape()[0], D = q.shape()[1];
  std::vector<double> out(N * K, -1.0);
  for (std::size_t i = 0; i < N; ++i)
    for (std::size_t j = 0; j < M; ++j) {
      if (lab[j] < 0) continue;
      double dot = 0, nq = 0, nd = 0;
      for (std::size_t d = 0; d < D; ++d) {
        dot += double(q(i, d)) * db(j, d);
        nq += double(q(i, d)) * q(i, d);
        nd += double(db(j, d)) * db(j, d);
      }
      const double c = dot / std::sqrt(nq * nd);
      auto& o = out[i * K + static_cast<std::size_t>(lab[j])];
      o = std::max(o, c);
    }
  return out;
}
}  // namespace

TEST_CASE("knn and centroid scores match naive float64 references") {
  Rng rng(11, 5);
  const std::size_t N = 37, M = 101, D = 13, K = 5;
  Tensor2<float> q(Shape<2>{N, D}), db(Shape<2>{M, D});
  for (auto& v : q) v = static_cast<float>(rng.normal());
  for (auto& v : db) v = static_cast<float>(rng.normal()) * 3.0f;  // not normalised on purpose
  std::vector<I64> lab(M);
  for (auto& l : lab) l = static_cast<I64>(rng.below(K)) - 1;  // includes -1 rows; class 4 empty
  const auto ref = naive_knn(q, db, lab, K);
  // Tiny blocks exercise every block edge; default blocks take one pass.
  for (auto blocks : {sieve::retrieval::KnnBlocks{4, 7}, sieve::retrieval::KnnBlocks{}}) {
    const auto s = sieve::retrieval::knn_scores(q, db, lab, K, blocks);
    REQUIRE(s.shape()[0] == N);
    REQUIRE(s.shape()[1] == K);
    double worst = 0;
    for (std::size_t i = 0; i < N * K; ++i) worst = std::max(worst, std::abs(s.data()[i] - ref[i]));
    CHECK(worst < 1e-5);
    for (std::size_t i = 0; i < N; ++i) CHECK(s(i, 4) == -1.0f);
  }

  const auto C = sieve::retrieval::class_centroids(db, lab, K);
  const auto cs = sieve::retrieval::centroid_scores(q, C);
  for (std::size_t c = 0; c < K; ++c) {
    std::vector<double> mean(D, 0.0);
    std::size_t n = 0;
    for (std::size_t j = 0; j < M; ++j) {
      if (lab[j] != static_cast<I64>(c)) continue;
      double nn = 0;
      for (std::size_t d = 0; d < D; ++d) nn += double(db(j, d)) * db(j, d);
      for (std::size_t d = 0; d < D; ++d) mean[d] += db(j, d) / std::sqrt(nn);
      ++n;
    }
    for (std::size_t i = 0; i < N; ++i) {
      double dot = 0, nq = 0, nm = 0;
      for (std::size_t d = 0; d < D; ++d) {
        dot += q(i, d) * mean[d];
        nq += double(q(i, d)) * q(i, d);
        nm += mean[d] * mean[d];
      }
      const double expect = n ? dot / std::sqrt(nq * nm) : -1.0;
      CHECK(cs(i, c) == doctest::Approx(expect).epsilon(1e-5));
    }
  }
  CHECK_THROWS_WITH_AS(sieve::retrieval::knn_scores(q, Tensor2<float>(Shape<2>{3, 4}), std::vector<I64>(3, 0), K),
                       doctest::Contains("queries have D=13 but db has D=4"), sieve::Error);
}

TEST_CASE("head scores, fusion tuning, label strings") {
  const auto h = sieve::retrieval::head_scores(fmat({{0.0f, 1000.0f, -1000.0f, 2.0f}}));
  CHECK(h(0, 0) == 0.5f);
  CHECK(h(0, 1) == 1.0f);
  CHECK(h(0, 2) == 0.0f);
  CHECK(h(0, 3) == doctest::Approx(1.0 / (1.0 + std::exp(-2.0))));

  // Method a knows classes 0/1 apart, method b knows known from distractor: the blend wins.
  const auto a = fmat({{0.6f, 0.4f}, {0.4f, 0.6f}, {0.9f, 0.1f}, {0.1f, 0.9f}});
  const auto b = fmat({{0.9f, 0.9f}, {0.9f, 0.9f}, {0.0f, 0.0f}, {0.0f, 0.0f}});
  const std::vector<I64> truth = {0, 1, -1, -1};
  const auto w = sieve::retrieval::linspace(0, 1, 11);
  const auto g = sieve::retrieval::linspace(-1, 1, 201);
  const auto f = sieve::retrieval::tune_fusion(a, b, truth, w, g);
  CHECK(f.weight > 0.0);
  CHECK(f.weight < 0.75);  // above 0.75 a's confident distractors outrank the known items
  CHECK(f.best_map5.size() == 11);
  CHECK(f.best_map5.front() < 1.0);  // b alone cannot order 0 vs 1
  CHECK(f.best_map5.back() < 1.0);   // a alone cannot separate distractors
  CHECK(f.sweep.best_map5 == doctest::Approx(1.0));

  const std::vector<std::string> names = {"shirt", "boot"};
  const auto strs = sieve::retrieval::ranked_label_strings(mat({{1, -1, 0}}), names);
  CHECK(strs[0] == std::vector<std::string>{"boot", "-1", "shirt"});
  CHECK_THROWS_AS(sieve::retrieval::ranked_label_strings(mat({{2}}), names), sieve::Error);
}

TEST_CASE("other_class_scores: log(p_class / p_other) = logit difference; known_class_probabilities: the softmax's K columns") {
  sieve::Tensor2<double> z(sieve::Shape<2>{2, 3});
  z(0, 0) = 2.0, z(0, 1) = -1.0, z(0, 2) = 0.5;  // column 2 = other
  z(1, 0) = 1000.0, z(1, 1) = 999.0, z(1, 2) = 1001.0;  // large logits: no overflow
  const auto s = sieve::retrieval::other_class_scores(z);
  REQUIRE(s.shape()[1] == 2);
  CHECK(s(0, 0) == 1.5);
  CHECK(s(0, 1) == -1.5);
  CHECK(s(1, 0) == -1.0);
  const auto p = sieve::retrieval::known_class_probabilities(z);
  const double zs = std::exp(2.0) + std::exp(-1.0) + std::exp(0.5);
  CHECK(p(0, 0) == doctest::Approx(std::exp(2.0) / zs).epsilon(1e-14));
  CHECK(p(0, 1) == doctest::Approx(std::exp(-1.0) / zs).epsilon(1e-14));
  const double zl = std::exp(-1.0) + std::exp(-2.0) + 1.0;
  CHECK(p(1, 0) == doctest::Approx(std::exp(-1.0) / zl).epsilon(1e-14));
  // log(p_c / p_other) from the probabilities equals the score.
  CHECK(std::log(p(0, 0) / (std::exp(0.5) / zs)) == doctest::Approx(s(0, 0)).epsilon(1e-12));
  // -1 inserted at threshold t: after every class with log(p_c / p_other) >= t.
  const auto r = sieve::retrieval::rank_with_threshold(s, 0.0, 5);
  CHECK(r(0, 0) == 0);
  CHECK(r(0, 1) == -1);
  CHECK(r(1, 0) == -1);
  CHECK_THROWS_AS(sieve::retrieval::other_class_scores(sieve::Tensor2<double>(sieve::Shape<2>{2, 1})), sieve::Error);
  CHECK_THROWS_AS(sieve::retrieval::known_class_probabilities(sieve::Tensor2<double>(sieve::Shape<2>{2, 1})), sieve::Error);
}
