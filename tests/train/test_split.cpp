// The validation split (train/split.hpp): stratification, outside share, negatives, determinism.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <set>
#include <vector>

#include "sieve/train/split.hpp"

using namespace sieve::train;

namespace {
std::vector<std::int32_t> labels_with_counts(const std::vector<std::size_t>& counts) {
  std::vector<std::int32_t> y;  // classes interleaved, as a real train.csv might hold them
  const std::size_t most = *std::max_element(counts.begin(), counts.end());
  for (std::size_t i = 0; i < most; ++i)
    for (std::size_t k = 0; k < counts.size(); ++k)
      if (i < counts[k]) y.push_back(static_cast<std::int32_t>(k));
  return y;
}
}  // namespace

TEST_CASE("make_split: per class floor(n * val_frac), at least one held out and one kept; outside share") {
  // classes of 50, 7, 2, 1 images: 5, max(0,1)=1, 1 (floor 0.2 -> 1), 0 (a single image trains)
  const auto y = labels_with_counts({50, 7, 2, 1});
  const TrainSplit s = make_split(y, 4, 100, {.seed = 3, .val_frac = 0.1, .outside_frac = 0.3, .negatives = true});
  std::vector<std::size_t> held(4, 0), kept(4, 0);
  for (auto i : s.val) ++held[static_cast<std::size_t>(y[i])];
  for (auto i : s.train) ++kept[static_cast<std::size_t>(y[i])];
  CHECK(held == std::vector<std::size_t>{5, 1, 1, 0});
  CHECK(kept == std::vector<std::size_t>{45, 6, 1, 1});
  // 7 held out at 30% outside: round(7 * 0.3 / 0.7) = 3 outside images validate, 97 are negatives.
  CHECK(s.val_outside.size() == 3);
  CHECK(s.negatives.size() == 97);
  // sorted, disjoint, and together every index once
  for (const auto* v : {&s.train, &s.val, &s.val_outside, &s.negatives}) CHECK(std::is_sorted(v->begin(), v->end()));
  std::set<std::size_t> labelled(s.train.begin(), s.train.end());
  labelled.insert(s.val.begin(), s.val.end());
  CHECK(labelled.size() == y.size());
  std::set<std::size_t> outside(s.val_outside.begin(), s.val_outside.end());
  outside.insert(s.negatives.begin(), s.negatives.end());
  CHECK(outside.size() == 100);
  // Without negatives the rest of outside/ is left out; with few outside images all validate.
  const TrainSplit no_neg = make_split(y, 4, 100, {.seed = 3, .val_frac = 0.1, .outside_frac = 0.3});
  CHECK(no_neg.val_outside == s.val_outside);
  CHECK(no_neg.negatives.empty());
  CHECK(make_split(y, 4, 2, {.seed = 3}).val_outside == std::vector<std::size_t>{0, 1});
}

TEST_CASE("make_split: a pure function of its inputs; another seed holds out other images") {
  const auto y = labels_with_counts({40, 40, 40});
  const SplitOptions a{.seed = 1}, b{.seed = 2};
  const TrainSplit s1 = make_split(y, 3, 30, a), s2 = make_split(y, 3, 30, a), s3 = make_split(y, 3, 30, b);
  CHECK(s1.val == s2.val);
  CHECK(s1.val_outside == s2.val_outside);
  CHECK(s1.val != s3.val);
  CHECK(s1.val.size() == s3.val.size());
  // Class c is shuffled on its own stream: adding images of another class leaves its choice alone.
  auto y2 = y;
  y2.push_back(2);
  const TrainSplit s4 = make_split(y2, 3, 30, a);
  std::vector<std::size_t> c0_before, c0_after;
  for (auto i : s1.val) if (y[i] == 0) c0_before.push_back(i);
  for (auto i : s4.val) if (y2[i] == 0) c0_after.push_back(i);
  CHECK(c0_before == c0_after);
}

TEST_CASE("make_split: bad labels and fractions are named") {
  const std::vector<std::int32_t> y{0, 1, 5};
  CHECK_THROWS_WITH_AS(make_split(y, 2, 0, {}), doctest::Contains("labels[2]=5"), sieve::Error);
  const std::vector<std::int32_t> ok{0, 1};
  CHECK_THROWS_WITH_AS(make_split(ok, 2, 0, {.val_frac = 1.0}), doctest::Contains("val_frac=1"), sieve::Error);
  CHECK_THROWS_WITH_AS(make_split(ok, 2, 0, {.outside_frac = -0.1}), doctest::Contains("outside_frac"), sieve::Error);
}
