// The ranking methods, their calibration on validation, and the embedding pass (retrieval/
// calibration.hpp, retrieval/embed.hpp): hand-computed cases.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "sieve/io/dataset.hpp"
#include "sieve/retrieval/calibration.hpp"
#include "sieve/retrieval/embed.hpp"

using sieve::Image;
using sieve::Tensor2f;
using sieve::Tensor4f;
using namespace sieve::retrieval;

namespace {

Tensor2f rows(std::vector<std::vector<float>> v) {
  Tensor2f t = Tensor2f::from_shape({v.size(), v[0].size()});
  for (std::size_t i = 0; i < v.size(); ++i)
    for (std::size_t j = 0; j < v[i].size(); ++j) t(i, j) = v[i][j];
  return t;
}

/// A stand-in classifier: the embedding of an image [N,1,H,W] is (its mean pixel, its pixel
/// (0,0)); the logits are (e0, e1, e0 + e1). It records the modes it was run in.
struct ProbeModel {
  Tensor2f emb, logits;
  bool training_ = true, inference_ = false;
  std::vector<std::size_t> batch_sizes;
  bool ran_in_eval_inference = true;

  const Tensor2f& forward(const Tensor4f& x) {
    const std::size_t N = x.shape()[0], P = x.shape()[1] * x.shape()[2] * x.shape()[3];
    emb = Tensor2f::from_shape({N, 2});
    logits = Tensor2f::from_shape({N, 3});
    for (std::size_t n = 0; n < N; ++n) {
      double s = 0.0;
      for (std::size_t p = 0; p < P; ++p) s += x.data()[n * P + p];
      emb(n, 0) = static_cast<float>(s / static_cast<double>(P));
      emb(n, 1) = x.data()[n * P];
      logits(n, 0) = emb(n, 0), logits(n, 1) = emb(n, 1), logits(n, 2) = emb(n, 0) + emb(n, 1);
    }
    batch_sizes.push_back(N);
    ran_in_eval_inference = ran_in_eval_inference && !training_ && inference_;
    return logits;
  }
  const Tensor2f& embedding() const { return emb; }
  std::size_t embedding_dim() const { return 2; }
  std::size_t num_classes() const { return 3; }
  bool training() const { return training_; }
  bool inference() const { return inference_; }
  void set_training(bool t) { training_ = t; }
  void set_inference(bool on) { inference_ = on; }
};
static_assert(EmbeddingModel<ProbeModel>);
static_assert(!EmbeddingModel<int>);

/// Gray 4x4 images whose pixel (y, x) is v(i, y, x); all three channels equal.
sieve::io::MemoryDataset probe_images(std::size_t n) {
  sieve::io::MemoryDataset ds;
  for (std::size_t i = 0; i < n; ++i) {
    Image img(4, 4);
    for (std::size_t y = 0; y < 4; ++y)
      for (std::size_t x = 0; x < 4; ++x)
        for (std::size_t c = 0; c < 3; ++c) img.at(y, x, c) = static_cast<std::uint8_t>(10 * i + 4 * y + x);
    const std::vector<std::int32_t> label = i == 3 ? std::vector<std::int32_t>{} : std::vector<std::int32_t>{int(i % 2)};
    ds.add("img" + std::to_string(i), img, label);
  }
  return ds;
}
float px(std::size_t i, long y, long x) {  // the probe image's pixel as ToTensor gives it, 0 outside
  return y < 0 || y > 3 || x < 0 || x > 3 ? 0.0f : static_cast<float>(10 * i + 4 * y + x) / 255.0f;
}

}  // namespace

TEST_CASE("methods: names, parsing, grids") {
  CHECK(method_names() == std::vector<std::string>{"head", "knn", "centroid", "fusion"});
  for (const auto& n : method_names()) CHECK(method_name(parse_method(n)) == n);
  CHECK_THROWS_WITH_AS(parse_method("cosine"), doctest::Contains("'cosine'"), sieve::Error);
  const auto other = threshold_grid(Method::head, HeadKind::softmax_other);
  REQUIRE(other.size() == 241);
  CHECK(other.front() == -12.0);
  CHECK(other[121] == doctest::Approx(0.1));
  CHECK(threshold_grid(Method::head, HeadKind::sigmoid).size() == 101);
  CHECK(threshold_grid(Method::knn, HeadKind::softmax_other).front() == -1.0);
}

TEST_CASE("method_scores: head log-ratios, knn best cosine, centroid, fusion") {
  Embedded q;
  q.logits = rows({{2.0f, 0.0f, 1.0f}});   // two classes + other
  q.embeddings = rows({{1.0f, 0.0f}});
  const Tensor2f gallery = rows({{0.0f, 2.0f}, {1.0f, 1.0f}, {3.0f, 0.0f}, {1.0f, 0.0f}});
  const std::vector<std::int64_t> label{0, 0, 1, -1};  // the -1 row is skipped
  const GalleryRef g{gallery, label};
  const Tensor2f head = method_scores(Method::head, q, g, 2, HeadKind::softmax_other);
  CHECK(head(0, 0) == doctest::Approx(1.0));  // log(p0 / p_other) = 2 - 1
  CHECK(head(0, 1) == doctest::Approx(-1.0));
  const Tensor2f knn = method_scores(Method::knn, q, g, 2, HeadKind::softmax_other);
  CHECK(knn(0, 0) == doctest::Approx(std::sqrt(0.5)));  // best of cos 0 and cos 45 degrees
  CHECK(knn(0, 1) == doctest::Approx(1.0));
  const Tensor2f cen = method_scores(Method::centroid, q, g, 2, HeadKind::softmax_other);
  // class 0's centroid: mean of (0,1) and (0.707,0.707), normalised: angle 67.5 degrees
  CHECK(cen(0, 0) == doctest::Approx(std::cos(67.5 * M_PI / 180.0)));
  CHECK(cen(0, 1) == doctest::Approx(1.0));
  const Tensor2f fus = method_scores(Method::fusion, q, g, 2, HeadKind::softmax_other, 0.25);
  const double z = std::exp(2.0) + 1.0 + std::exp(1.0);
  CHECK(fus(0, 0) == doctest::Approx(0.25 * std::exp(2.0) / z + 0.75 * std::sqrt(0.5)));
  CHECK(fus(0, 1) == doctest::Approx(0.25 * 1.0 / z + 0.75));
  const Tensor2f sig = method_scores(Method::head, q, g, 3, HeadKind::sigmoid);
  CHECK(sig(0, 0) == doctest::Approx(1.0 / (1.0 + std::exp(-2.0))));
}

TEST_CASE("calibrate: the first maximum of validation MAP@5 over the grid, reweighted by a share") {
  // Head scores log(p_c / p_other) (the other logit is 0): item A of class 0 scores (3, 0),
  // item B of class 1 scores (0.5, 1), distractor C scores (0.4, -2). -1 goes after every class
  // scoring >= t, so for t = 0.4 (C's 0.4f is just above the grid's 0.4) C ranks class 0, -1:
  // AP 1/2; from t = 0.5 on C has -1 first (AP 1) while A and B still have their class first:
  // MAP 1, the first maximum; from t = 1.1 B has -1 before its class (AP 1/2).
  Embedded val;
  val.logits = rows({{3.0f, 0.0f, 0.0f}, {0.5f, 1.0f, 0.0f}, {0.4f, -2.0f, 0.0f}});
  val.embeddings = rows({{1.0f, 0.0f}, {0.0f, 1.0f}, {1.0f, 1.0f}});
  val.labels = {0, 1, -1};
  const Tensor2f none = Tensor2f::from_shape({0, 2});
  const MethodCalibration c = calibrate(Method::head, val, {none, {}}, 2, HeadKind::softmax_other);
  CHECK(c.threshold == doctest::Approx(0.5));
  CHECK(c.val_map5 == doctest::Approx(1.0));
  REQUIRE(c.sweep.size() == 241);
  const auto at = [&](double t) {
    for (const auto& [g, m] : c.sweep)
      if (std::abs(g - t) < 1e-9) return m;
    FAIL("no grid point ", t);
    return 0.0;
  };
  CHECK(at(0.4) == doctest::Approx((1.0 + 1.0 + 0.5) / 3.0));  // distractor after class 0: AP 1/2
  CHECK(at(2.0) == doctest::Approx((1.0 + 0.5 + 1.0) / 3.0));
  CHECK(at(-12.0) == doctest::Approx((1.0 + 1.0 + 1.0 / 3.0) / 3.0));  // -1 last of three
  CHECK_FALSE(c.weight.has_value());
  // With a share of distractors given, MAP@5 is (1 - p) * known mean + p * distractor mean.
  const MethodCalibration s = calibrate(Method::head, val, {none, {}}, 2, HeadKind::softmax_other, 0.5);
  CHECK(s.sweep[124][1] == doctest::Approx(0.5 * 1.0 + 0.5 * 0.5));  // t = 0.4
  // Fusion tunes the head's weight too: 11 weights, each with its best MAP@5.
  const Tensor2f gallery = rows({{1.0f, 0.0f}, {0.0f, 1.0f}});
  const std::vector<std::int64_t> glabel{0, 1};
  const MethodCalibration f = calibrate(Method::fusion, val, {gallery, glabel}, 2, HeadKind::softmax_other);
  REQUIRE(f.weight.has_value());
  REQUIRE(f.weight_sweep.size() == 11);
  CHECK(f.val_map5 == doctest::Approx(1.0));
  CHECK(*f.weight == f.weight_sweep[0][0]);  // every weight reaches 1.0 here: the first wins
}

TEST_CASE("embed_dataset: rows in dataset order, views averaged with their weights, modes restored") {
  const auto ds = probe_images(5);
  sieve::augment::InputSpec spec;
  spec.size = 4;
  spec.fit = sieve::augment::FitMode::pad;
  spec.channels = 1;
  spec.mean = {0.0f, 0.0f, 0.0f};
  spec.std = {1.0f, 1.0f, 1.0f};
  ProbeModel m;
  m.set_training(true);
  m.set_inference(false);
  std::vector<std::size_t> seen;
  const auto views = sieve::augment::tta_views("flip-translate");
  const Embedded e = embed_dataset(m, ds, spec, views, {2, 2, 0},
                                   [&](std::size_t v, std::size_t n, std::size_t done, std::size_t total) {
                                     CHECK(n == 6);
                                     CHECK(total == 5);
                                     seen.push_back(v * 10 + done);
                                   });
  CHECK(m.training());  // restored
  CHECK_FALSE(m.inference());
  CHECK(m.ran_in_eval_inference);
  CHECK(m.batch_sizes.size() == 18);  // 3 batches (2, 2, 1) per view
  CHECK(seen.front() == 2);
  CHECK(seen.back() == 55);
  REQUIRE(e.ids.size() == 5);
  for (std::size_t i = 0; i < 5; ++i) {
    CHECK(e.ids[i] == "img" + std::to_string(i));
    CHECK(e.labels[i] == (i == 3 ? -1 : std::int64_t(i % 2)));
    // pixel (0,0) of each view: itself, its mirror (0,3); moved by (+1,+1): black, mirrored:
    // row -1: black; moved by (-1,-1): (1,1), mirrored: column 4: black.
    const float want = 0.25f * px(i, 0, 0) + 0.25f * px(i, 0, 3) + 0.125f * px(i, 1, 1);
    CHECK(e.embeddings(i, 1) == doctest::Approx(want));
    CHECK(e.logits(i, 2) == doctest::Approx(e.embeddings(i, 0) + e.embeddings(i, 1)));
  }
  // One view, decoded on the calling thread: the embedding is the image's own.
  ProbeModel m1;
  const auto none = sieve::augment::tta_views("none");
  const Embedded one = embed_dataset(m1, ds, spec, none, {4, 0, 0});
  for (std::size_t i = 0; i < 5; ++i) CHECK(one.embeddings(i, 1) == doctest::Approx(px(i, 0, 0)));
  CHECK_THROWS_AS(embed_dataset(m1, sieve::io::MemoryDataset{}, spec, none), sieve::Error);
  CHECK_THROWS_AS(embed_dataset(m1, ds, spec, std::span<const sieve::augment::TtaView>{}), sieve::Error);
}

TEST_CASE("distractor share: the sweep's per-group curves, the threshold for a share, the estimated share") {
  // Four known items (class 0) with best scores 0.9, 0.8, 0.6, 0.2 and two distractors with
  // 0.5, 0.1 (one class plus "other": log-ratio scores are the logits here, other logit 0).
  Embedded val;
  val.logits = rows({{0.9f, 0.0f}, {0.8f, 0.0f}, {0.6f, 0.0f}, {0.2f, 0.0f}, {0.5f, 0.0f}, {0.1f, 0.0f}});
  val.embeddings = rows({{1.0f}, {1.0f}, {1.0f}, {1.0f}, {1.0f}, {1.0f}});
  val.labels = {0, 0, 0, 0, -1, -1};
  const Tensor2f none = Tensor2f::from_shape({0, 1});
  const MethodCalibration c = calibrate(Method::head, val, {none, {}}, 1, HeadKind::softmax_other);
  const std::size_t g03 = 123, g07 = 127;  // grid points 0.3 and 0.7
  REQUIRE(c.sweep[g03][0] == doctest::Approx(0.3));
  // At t = 0.3: known 0.2 gets -1 first (AP 1/2), the others AP 1; distractor 0.1 first (AP 1),
  // distractor 0.5 second (AP 1/2).
  CHECK(c.map5_known[g03] == doctest::Approx(3.5 / 4.0));
  CHECK(c.map5_distractor[g03] == doctest::Approx(0.75));
  CHECK(c.first_known[g03] == doctest::Approx(0.25));
  CHECK(c.first_distractor[g03] == doctest::Approx(0.5));
  // At t = 0.7: known 0.6 and 0.2 -1 first (AP 1/2 each), both distractors first.
  CHECK(c.map5_known[g07] == doctest::Approx(3.0 / 4.0));
  CHECK(c.map5_distractor[g07] == doctest::Approx(1.0));
  // The validation's own share (1/3): MAP@5 5.5/6 for t in (0.1, 0.2] (distractor 0.1 first,
  // the known 0.2 ties to its class) and in (0.5, 0.6]; the first maximum is t = 0.2.
  CHECK(c.threshold == doctest::Approx(0.2));
  CHECK(c.val_map5 == doctest::Approx(5.5 / 6.0));
  // With few distractors the known items decide: the lowest thresholds keep every class first.
  const ShareThreshold low = threshold_for_share(c, 0.0);
  CHECK(low.threshold == doctest::Approx(-12.0));
  CHECK(low.val_map5 == doctest::Approx(1.0));
  const ShareThreshold high = threshold_for_share(c, 1.0);  // only distractors: both -1 first
  CHECK(high.threshold == doctest::Approx(0.6));
  CHECK(high.val_map5 == doctest::Approx(1.0));
  // The estimate, for a test whose rows' best scores are 0.9, 0.7, 0.3, 0.05, 0.0. Validation
  // separates best at t = 0.6 (-1 first for 1/4 of known items, every distractor: gap 0.75;
  // at 0.2 the gap is 0.5). 3 of 5 test rows have -1 first there: p = (0.6 - 0.25) / 0.75,
  // and for that share 0.6 is the best threshold.
  const Tensor2f test = rows({{0.9f}, {0.7f}, {0.3f}, {0.05f}, {0.0f}});
  const ShareThreshold est = threshold_for_estimated_share(c, test);
  CHECK(est.share == doctest::Approx((0.6 - 0.25) / 0.75));
  CHECK(est.threshold == doctest::Approx(0.6));
  CHECK(est.test_first == doctest::Approx(0.6));
  CHECK(est.estimated_at == doctest::Approx(0.6));
  CHECK(est.val_map5 == doctest::Approx((1.0 - est.share) * 0.875 + est.share * 1.0));
  CHECK(estimate_distractor_share(0.1, 0.9, 0.05) == 0.0);  // clipped
  CHECK(estimate_distractor_share(0.1, 0.9, 0.95) == 1.0);
  CHECK_THROWS_WITH_AS(estimate_distractor_share(0.5, 0.5, 0.5), doctest::Contains("cannot be estimated"),
                       sieve::Error);
  CHECK(share_estimate_index(c) == std::optional<std::size_t>(g07 - 1));  // 0.6
  MethodCalibration blind = c;  // a validation that never tells the groups apart
  blind.first_distractor = blind.first_known;
  CHECK_FALSE(share_estimate_index(blind).has_value());
  CHECK_THROWS_WITH_AS(threshold_for_estimated_share(blind, test), doctest::Contains("cannot be estimated"),
                       sieve::Error);
  MethodCalibration old = c;  // written before the curves existed
  old.map5_known.clear();
  CHECK_THROWS_WITH_AS(threshold_for_share(old, 0.2), doctest::Contains("recalibrate"), sieve::Error);
}
