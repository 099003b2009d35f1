#pragma once
/// `sieve prepare fmnist --out DIR [--distractors 8,9] [--seed S]`: Debian's Fashion-MNIST as
/// an FMNIST-D data folder (train/, train.csv, test/, outside/, solution.csv, sample_submission.csv).

#include <CLI/CLI.hpp>

#include <iostream>
#include <string>
#include <vector>

#include "progress.hpp"
#include "sieve/io/fmnist_d.hpp"

namespace sieve::cli {

struct PrepareCommand {
  CLI::App* app = nullptr;
  CLI::App* fmnist = nullptr;
  std::string out, source = io::fashion_mnist_default_dir.string();
  std::vector<int> distractors{8, 9}, outside_classes;
  std::uint64_t seed = 0;
  bool force = false;

  void add_to(CLI::App& parent) {
    app = parent.add_subcommand("prepare", "Make a data folder from a known data set");
    app->require_subcommand(1, 1);
    fmnist = app->add_subcommand("fmnist", "FMNIST-D: Fashion-MNIST with some classes held out as distractors "
                                           "(Debian's dataset-fashion-mnist)");
    fmnist->add_option("--out", out, "the data folder to create")->required();
    fmnist->add_option("--distractors", distractors, "classes (0..9) held out as distractors")
        ->delimiter(',')
        ->capture_default_str();
    fmnist->add_option("--outside-classes", outside_classes, "distractor classes whose train images go to outside/ "
                                                             "(default: all); the others are seen only in test/")
        ->delimiter(',');
    fmnist->add_option("--seed", seed, "permutes the test ids")->capture_default_str();
    fmnist->add_option("--source", source, "folder with the IDX .gz files")->capture_default_str();
    fmnist->add_flag("--force", force, "replace a non-empty --out folder");
  }

  int run() {
    io::FmnistDOptions opt;
    opt.source = source;
    opt.distractors = distractors;
    opt.outside_classes = outside_classes;
    opt.seed = seed;
    opt.force = force;
    opt.progress = ProgressLine("prepare fmnist: writing images");
    const auto s = io::prepare_fmnist_d(out, opt);
    std::cout << "prepared FMNIST-D in " << out << ": " << s.train << " train, " << s.outside << " outside, "
              << s.test_known + s.test_distractor << " test (" << s.test_distractor
              << " distractors); answers in " << out << "/solution.csv\n";
    return 0;
  }
};

}  // namespace sieve::cli
