#pragma once
/// FMNIST-D: Debian's Fashion-MNIST turned into a retrieval-with-distractors data folder
/// (the protocol of shared/FMNIST-D.md). Known classes' train images go to train/ with
/// train.csv; the distractor classes' train images to outside/; the whole test split to test/
/// under ids that do not reveal the class; the answers to solution.csv, and each test image's
/// Fashion-MNIST class (0..9, distractors included) to test_classes.csv, for scoring known and
/// distractor classes apart.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/rng.hpp"
#include "sieve/core/shuffle.hpp"
#include "sieve/io/csv.hpp"
#include "sieve/io/fashion_mnist.hpp"
#include "sieve/io/file.hpp"
#include "sieve/io/image.hpp"

namespace sieve::io {

/// Where Debian's dataset-fashion-mnist puts the IDX files.
inline const std::filesystem::path fashion_mnist_default_dir = "/usr/share/datasets/fashion-mnist";

struct FmnistDOptions {
  std::filesystem::path source = fashion_mnist_default_dir;
  std::vector<int> distractors{8, 9};  ///< Fashion-MNIST classes held out as distractors
  /// The distractor classes whose train images go to outside/ (empty = all of them). The others
  /// appear only in test/: distractors nobody has seen, as in real competitions.
  std::vector<int> outside_classes{};
  std::uint64_t seed = 0;              ///< permutes the test ids, so their order says nothing
  bool force = false;                  ///< replace an existing output folder
  /// Called as files are written: (done, total).
  std::function<void(std::size_t, std::size_t)> progress{};
};

/// What prepare_fmnist_d wrote.
struct FmnistDSummary {
  std::size_t train = 0, outside = 0, test_known = 0, test_distractor = 0;
};

/// Build the FMNIST-D folder at `out`. Everything is written into a staging folder beside
/// `out`, synced once and renamed into place, so an interrupted run leaves no half folder.
/// Requires: distractors are distinct classes in 0..9, at least one known class remains;
/// `out` does not exist, is empty, or `force` is set. Throws sieve::Error naming the problem.
inline FmnistDSummary prepare_fmnist_d(const std::filesystem::path& out_arg, const FmnistDOptions& opt = {}) {
  namespace fs = std::filesystem;
  fs::path out = fs::absolute(out_arg).lexically_normal();
  if (out.filename().empty()) out = out.parent_path();  // "data/" -> "data"
  std::set<int> dset(opt.distractors.begin(), opt.distractors.end());
  SIEVE_CHECK(dset.size() == opt.distractors.size(), "prepare fmnist: distractor classes repeat");
  for (int d : dset) SIEVE_CHECK(d >= 0 && d <= 9, "prepare fmnist: distractor class ", d, " is not in 0..9");
  SIEVE_CHECK(dset.size() < 10, "prepare fmnist: every class is a distractor; at least one must stay known");
  std::set<int> oset(opt.outside_classes.begin(), opt.outside_classes.end());
  for (int o : oset)
    SIEVE_CHECK(dset.count(o), "prepare fmnist: outside class ", o, " is not one of the distractor classes");
  if (oset.empty()) oset = dset;

  std::error_code ec;
  if (fs::exists(out, ec) && !fs::is_empty(out, ec) && !opt.force)
    fail(out.string(), ": exists and is not empty (use --force to replace it)");

  const FashionMnist train(opt.source, "train");
  const FashionMnist test(opt.source, "t10k");

  const fs::path parent = out.parent_path();
  fs::create_directories(parent);
  const fs::path stage = parent / ("." + out.filename().string() + ".staging");
  fs::remove_all(stage);
  for (const char* d : {"train", "test", "outside"}) fs::create_directories(stage / d);

  FmnistDSummary sum;
  const std::size_t total = train.size() + test.size();
  std::size_t done = 0;
  Image img;
  auto write_png_to = [&](const fs::path& p, const FashionMnist& ds, std::size_t i) {
    ds.load(i, img);
    write_file(p, encode_png(img));
    if (opt.progress && (++done % 2000 == 0 || done == total)) opt.progress(done, total);
  };
  auto pad = [](std::size_t i) {
    std::string s = std::to_string(i);
    return std::string(s.size() < 5 ? 5 - s.size() : 0, '0') + s;
  };

  // train/ + train.csv, outside/
  std::string train_csv = "id,label\n";
  for (std::size_t i = 0; i < train.size(); ++i) {
    const int y = train.label(i);
    if (dset.count(y)) {
      if (oset.count(y)) {
        write_png_to(stage / "outside" / ("out_" + pad(i) + ".png"), train, i);
        ++sum.outside;
      } else if (opt.progress && (++done % 2000 == 0 || done == total)) {
        opt.progress(done, total);
      }
    } else {
      const std::string id = "train_" + pad(i);
      write_png_to(stage / "train" / (id + ".png"), train, i);
      train_csv += id + "," + std::to_string(y) + "\n";
      ++sum.train;
    }
  }

  // test/ under permuted ids, solution.csv and sample_submission.csv in id order.
  Rng rng(derive_seed(opt.seed, RngPurpose::split), /*stream*/ 0x464d4e49);  // "FMNI"
  const std::vector<std::size_t> perm = permutation(test.size(), rng);
  std::vector<std::string> solution(test.size()), test_class(test.size());
  for (std::size_t k = 0; k < perm.size(); ++k) {
    const std::size_t i = perm[k];  // test image i gets id test_<k>
    const int y = test.label(i);
    write_png_to(stage / "test" / ("test_" + pad(k) + ".png"), test, i);
    solution[k] = dset.count(y) ? "-1" : std::to_string(y);
    test_class[k] = std::to_string(y);
    (dset.count(y) ? sum.test_distractor : sum.test_known)++;
  }
  std::string sol = "id,label\n", sample = "id,predictions\n", classes = "id,class\n";
  for (std::size_t k = 0; k < solution.size(); ++k) {
    sol += "test_" + pad(k) + "," + solution[k] + "\n";
    classes += "test_" + pad(k) + "," + test_class[k] + "\n";
    sample += "test_" + pad(k) + ",-1\n";
  }
  auto text = [](const std::string& s) { return std::as_bytes(std::span<const char>(s.data(), s.size())); };
  write_file(stage / "train.csv", text(train_csv));
  write_file(stage / "solution.csv", text(sol));
  write_file(stage / "test_classes.csv", text(classes));
  write_file(stage / "sample_submission.csv", text(sample));
  std::string readme = "FMNIST-D, made by `sieve prepare fmnist` from " + opt.source.string() + "\ndistractor classes:";
  for (int d : dset) readme += " " + std::to_string(d);
  readme += "\nclasses in outside/:";
  for (int d : oset) readme += " " + std::to_string(d);
  readme += "\nclass names: ";
  for (int c = 0; c < 10; ++c) readme += std::to_string(c) + "=" + FashionMnist::class_names[c] + (c < 9 ? ", " : "\n");
  write_file(stage / "README.txt", text(readme));

  sync_filesystem(stage);
  if (fs::exists(out, ec)) fs::remove_all(out);
  fs::rename(stage, out);
  detail::fsync_dir(parent);
  return sum;
}

}  // namespace sieve::io
