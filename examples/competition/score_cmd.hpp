#pragma once
/// `sieve score --submission S.csv --solution L.csv`: MAP@5 of a submission against the
/// answers, plus known-class top-1 and distractor recall. Rows Kaggle's evaluator scores (an
/// empty row, a repeated label, more than 5 labels) are scored the same way, with a warning
/// naming their lines; `--strict` refuses them. A malformed submission (bad header, bad
/// labels, unknown, duplicate or missing ids) is an error listing every problem with its line
/// number, never a score.

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "sieve/io/data_folder.hpp"
#include "sieve/io/file.hpp"
#include "sieve/io/submission.hpp"
#include "sieve/metrics/summary.hpp"

namespace sieve::cli {

/// The numbers of one scored submission, as `sieve score --json` writes them.
/// Requires: s.n >= 1.
inline nlohmann::ordered_json score_json(const metrics::ScoreSummary<std::string>& s) {
  nlohmann::ordered_json j;
  j["map5"] = s.map;
  j["known_top1"] = s.known_top1;
  j["distractor_recall"] = s.distractor_recall;
  j["n"] = s.n;
  j["n_known"] = s.n_known;
  j["n_distractor"] = s.n_distractor;
  j["k"] = s.k;
  auto& per = j["per_class"] = nlohmann::ordered_json::array();
  for (const auto& c : s.per_class)
    per.push_back({{"label", c.label},
                   {"n_true", c.n_true},
                   {"n_first", c.n_first},
                   {"n_correct", c.n_correct},
                   {"map5", c.map()}});
  return j;
}

struct ScoreCommand {
  CLI::App* app = nullptr;
  std::string submission, solution, json_out;
  bool per_class = false, strict = false;

  void add_to(CLI::App& parent) {
    app = parent.add_subcommand("score", "Score a submission against the answers: MAP@5, known-class top-1, "
                                         "distractor recall (malformed submissions give line-numbered errors)");
    app->add_option("--submission", submission, "submission CSV: id,predictions (up to 5 distinct "
                                                "space-separated labels, best first; -1 = distractor)")
        ->required();
    app->add_flag("--strict", strict, "refuse rows Kaggle's evaluator would score: empty predictions (0), a "
                                      "repeated label (counted once, at its first position), more than 5 labels "
                                      "(the rest ignored); without it they are scored so and named in a warning");
    app->add_option("--solution", solution, "answers CSV: id,label (-1 for a distractor), e.g. DATA/solution.csv")
        ->required();
    app->add_flag("--per-class", per_class, "also print a table per true label: count, first-choice hits, MAP@5");
    app->add_option("--json", json_out, "also write the numbers (and the per-class table) to this JSON file");
  }

  int run() {
    const auto sol = io::read_solution(solution);
    SIEVE_CHECK(!sol.empty(), solution, ": no rows (a solution needs at least one id,label line)");
    std::vector<std::string> ids, truth;
    ids.reserve(sol.size());
    truth.reserve(sol.size());
    for (const auto& r : sol) {
      ids.push_back(r.id);
      truth.push_back(r.label);
    }
    // Validating against the solution's ids reports unknown, duplicate and missing ids together
    // with the row problems, each with its line, before any number is computed.
    std::vector<std::string> notes;
    const auto sub = io::read_submission(submission, std::span<const std::string>(ids),
                                         strict ? io::SubmissionRules{} : io::SubmissionRules::kaggle(), &notes);
    if (!notes.empty()) {
      std::cerr << "sieve score: warning: " << submission << ": " << notes.size()
                << " row problem(s) scored as Kaggle's evaluator does (--strict refuses them):\n";
      const std::size_t shown = std::min<std::size_t>(notes.size(), 10);
      for (std::size_t i = 0; i < shown; ++i) std::cerr << "  " << notes[i] << "\n";
      if (notes.size() > shown) std::cerr << "  ... and " << notes.size() - shown << " more\n";
    }
    const auto rows = io::align_to_solution(sub, sol);
    const auto s = metrics::score_summary(rows, truth, std::string(io::distractor_label), 5);

    char buf[160];
    std::snprintf(buf, sizeof buf, "MAP@5              %.4f   (%zu items)\n", s.map, s.n);
    std::cout << buf;
    std::snprintf(buf, sizeof buf, "known-class top-1  %.4f   (%zu known items: first prediction is the true class)\n",
                  s.known_top1, s.n_known);
    std::cout << buf;
    std::snprintf(buf, sizeof buf, "distractor recall  %.4f   (%zu distractor items: first prediction is -1)\n",
                  s.distractor_recall, s.n_distractor);
    std::cout << buf;
    if (per_class) {
      std::cout << "\nlabel                      true  predicted-first  correct-first   MAP@5\n";
      for (const auto& c : s.per_class) {
        std::snprintf(buf, sizeof buf, "%-24.24s %6zu  %15zu  %13zu  %6.4f\n", c.label.c_str(), c.n_true, c.n_first,
                      c.n_correct, c.map());
        std::cout << buf;
      }
    }
    if (!json_out.empty()) {
      auto j = score_json(s);
      j["submission"] = submission;
      j["solution"] = solution;
      io::write_file_atomic(json_out, std::string_view(j.dump(1) + "\n"));
    }
    return 0;
  }
};

}  // namespace sieve::cli
