#pragma once
/// The validation split of a competition folder: which labelled images train and which are held
/// out, and which outside (distractor) images join the validation set or train as negatives.
/// Seeded and stratified, so a run's validation set is a pure function of (folder, seed,
/// fractions) and `--resume` can check it is the same.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/rng.hpp"
#include "sieve/core/shuffle.hpp"
#include "sieve/io/data_folder.hpp"

namespace sieve::train {

struct SplitOptions {
  std::uint64_t seed = 0;
  double val_frac = 0.1;      ///< of each class's labelled images, held out for validation
  double outside_frac = 0.3;  ///< the share of outside images in the validation set
  bool negatives = false;     ///< outside images not validating train (as the "other" class or all-zero targets)
};

/// Which samples train and which validate: indices into the labelled and the outside images.
struct TrainSplit {
  std::vector<std::size_t> train;        ///< labelled images used for training
  std::vector<std::size_t> val;          ///< labelled images held out
  std::vector<std::size_t> val_outside;  ///< outside images in the validation set (label -1)
  std::vector<std::size_t> negatives;    ///< outside images that train (SplitOptions::negatives)
};

/// Seeded stratified split of labelled images with class ids `labels` (in [0, K)) and
/// `n_outside` outside images. Per class c (n_c images): floor(n_c * val_frac) held out, at
/// least 1 when n_c >= 2, always leaving one to train. Outside images:
/// round(n_val * outside_frac / (1 - outside_frac)) (capped by what exists) join validation, so
/// they make up outside_frac of it; the rest are negatives when asked. Each class is shuffled
/// with its own stream (class c: stream c; outside images: K + 1000) of derive_seed(seed, split).
/// Requires: labels in [0, K); val_frac in [0, 1); outside_frac in [0, 1).
/// Ensures: deterministic in (labels, K, n_outside, options); the four lists sorted, disjoint,
/// and together every index once (outside images left out when negatives is false).
inline TrainSplit make_split(std::span<const std::int32_t> labels, std::size_t K, std::size_t n_outside,
                             const SplitOptions& opt) {
  SIEVE_CHECK(opt.val_frac >= 0.0 && opt.val_frac < 1.0, "make_split: val_frac=", opt.val_frac, " outside [0, 1)");
  SIEVE_CHECK(opt.outside_frac >= 0.0 && opt.outside_frac < 1.0, "make_split: outside_frac=", opt.outside_frac,
              " outside [0, 1)");
  std::vector<std::vector<std::size_t>> by_class(K);
  for (std::size_t i = 0; i < labels.size(); ++i) {
    SIEVE_CHECK(labels[i] >= 0 && static_cast<std::size_t>(labels[i]) < K, "make_split: labels[", i, "]=", labels[i],
                " outside [0, ", K, ")");
    by_class[static_cast<std::size_t>(labels[i])].push_back(i);
  }
  const std::uint64_t key = derive_seed(opt.seed, RngPurpose::split);
  TrainSplit s;
  for (std::size_t c = 0; c < K; ++c) {
    auto& v = by_class[c];
    Rng rng(key, c);
    shuffle(std::span<std::size_t>(v), rng);
    auto n_val = static_cast<std::size_t>(std::floor(static_cast<double>(v.size()) * opt.val_frac));
    if (n_val == 0 && v.size() >= 2) n_val = 1;
    if (n_val >= v.size()) n_val = v.empty() ? 0 : v.size() - 1;
    s.val.insert(s.val.end(), v.begin(), v.begin() + static_cast<std::ptrdiff_t>(n_val));
    s.train.insert(s.train.end(), v.begin() + static_cast<std::ptrdiff_t>(n_val), v.end());
  }
  Rng rng(key, K + 1000);
  const std::vector<std::size_t> out = permutation(n_outside, rng);
  const auto want = static_cast<std::size_t>(
      std::llround(static_cast<double>(s.val.size()) * opt.outside_frac / (1.0 - opt.outside_frac)));
  const std::size_t n_out = std::min(want, out.size());
  s.val_outside.assign(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(n_out));
  if (opt.negatives) s.negatives.assign(out.begin() + static_cast<std::ptrdiff_t>(n_out), out.end());
  for (auto* v : {&s.train, &s.val, &s.val_outside, &s.negatives}) std::sort(v->begin(), v->end());
  return s;
}

/// The split of a data folder: its train/ images by class id, its outside/ images.
inline TrainSplit make_split(const io::DataFolder& df, const SplitOptions& opt) {
  std::vector<std::int32_t> labels(df.train.size());
  for (std::size_t i = 0; i < labels.size(); ++i) {
    SIEVE_CHECK(!df.train[i].labels.empty(), "make_split: train sample '", df.train[i].id, "' has no label");
    labels[i] = df.train[i].labels[0];
  }
  return make_split(labels, df.classes.size(), df.outside.size(), opt);
}

}  // namespace sieve::train
