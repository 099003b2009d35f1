#pragma once
/// `sieve validate --data DIR`: check a data folder before anyone trains on it; every problem
/// is printed with its file (and line); exit status 0 only when the folder is clean.

#include <CLI/CLI.hpp>

#include <iostream>
#include <map>
#include <string>

#include "progress.hpp"
#include "sieve/io/data_folder.hpp"

namespace sieve::cli {

struct ValidateCommand {
  CLI::App* app = nullptr;
  std::string data;
  std::size_t max_side = io::DecodeLimits{}.max_width;  // the library's limits, not a copy
  std::size_t max_listed = 50;

  void add_to(CLI::App& parent) {
    app = parent.add_subcommand("validate", "Check a data folder: CSV syntax, unsafe ids, missing or unlisted "
                                            "files, duplicates, undecodable or oversized images, label counts");
    app->add_option("--data", data, "the data folder")->required();
    app->add_option("--max-side", max_side, "largest image width or height accepted")->capture_default_str();
    app->add_option("--max-listed", max_listed, "problems of each kind (CSV, id and label, file, image) printed "
                                                "before '... and N more'")
        ->capture_default_str();
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
    // Every kind gets its first max_listed lines, so a flood of one kind hides no other.
    std::map<io::ProblemKind, std::size_t> per_kind;
    for (std::size_t i = 0; i < r.errors.size(); ++i)
      if (per_kind[r.error_kinds[i]]++ < max_listed) std::cout << "error: " << r.errors[i] << "\n";
    std::string counts;
    for (const auto& [kind, n] : per_kind) {
      if (n > max_listed) std::cout << "... and " << n - max_listed << " more " << io::problem_kind_name(kind) << " problems\n";
      counts += str(counts.empty() ? "" : ", ", n, " ", io::problem_kind_name(kind));
    }
    std::cout << (r.ok() ? "ok: the data folder is clean\n" : str(r.errors.size(), " problem(s) found (", counts, ")\n"));
    return r.ok() ? 0 : 1;
  }
};

}  // namespace sieve::cli
