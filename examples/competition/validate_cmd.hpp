#pragma once
/// `sieve validate --data DIR`: check a data folder before anyone trains on it; every problem
/// is printed with its file (and line); exit status 0 only when the folder is clean.

#include <CLI/CLI.hpp>

#include <iostream>
#include <string>

#include "progress.hpp"
#include "sieve/io/data_folder.hpp"

namespace sieve::cli {

struct ValidateCommand {
  CLI::App* app = nullptr;
  std::string data;
  std::size_t max_side = 8192;
  std::size_t max_listed = 200;

  void add_to(CLI::App& parent) {
    app = parent.add_subcommand("validate", "Check a data folder: CSV syntax, unsafe ids, missing or unlisted "
                                            "files, duplicates, undecodable or oversized images, label counts");
    app->add_option("--data", data, "the data folder")->required();
    app->add_option("--max-side", max_side, "largest image width or height accepted")->capture_default_str();
    app->add_option("--max-listed", max_listed, "problems printed before '... and N more'")->capture_default_str();
  }

  int run() {
    io::DecodeLimits limits;
    limits.max_width = limits.max_height = max_side;
    const auto r = io::validate_data_folder(data, limits, ProgressLine("validate: decoding images"));
    const auto& f = r.folder;
    std::cout << data << ": " << f.train.size() << " train images in " << f.classes.size() << " classes, "
              << f.test.size() << " test, " << f.outside.size() << " outside\n";
    if (!r.label_counts.empty()) {
      std::cout << "label counts:";
      for (const auto& [label, n] : r.label_counts) std::cout << " " << label << "=" << n;
      std::cout << "\n";
    }
    for (const auto& w : r.warnings) std::cout << "warning: " << w << "\n";
    for (std::size_t i = 0; i < r.errors.size() && i < max_listed; ++i) std::cout << "error: " << r.errors[i] << "\n";
    if (r.errors.size() > max_listed) std::cout << "... and " << r.errors.size() - max_listed << " more errors\n";
    std::cout << (r.ok() ? "ok: the data folder is clean\n" : str(r.errors.size(), " problem(s) found\n"));
    return r.ok() ? 0 : 1;
  }
};

}  // namespace sieve::cli
