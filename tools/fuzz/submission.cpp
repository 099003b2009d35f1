// libFuzzer harness for sieve's submission and solution readers (sieve/io/submission.hpp): any
// bytes must give rows or a sieve::Error, never a crash, a sanitizer report or an abort.
// Each input is read strictly (SubmissionRules{}) and as Kaggle scores it
// (SubmissionRules::kaggle()). Invariants:
//  - the strict reader accepts exactly what the Kaggle reader accepts without a note, and
//    then both give the same rows;
//  - round trip: format_submission of what parsed (same rules) parses back to the same rows;
//  - expected ids: the rows' own ids are accepted; one id fewer or one more is refused;
//  - a solution that parses, written back as CSV, parses back equal.
// Run: tools/fuzz.sh submission 60
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sieve/io/submission.hpp"

namespace {

using sieve::io::SubmissionRow;
using sieve::io::SubmissionRules;

void require(bool ok) {
  if (!ok) __builtin_trap();
}

bool same_rows(const std::vector<SubmissionRow>& a, const std::vector<SubmissionRow>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].id != b[i].id || a[i].labels != b[i].labels) return false;
  return true;
}

std::optional<std::vector<SubmissionRow>> parse(std::string_view text, const SubmissionRules& rules,
                                                std::vector<std::string>* notes = nullptr,
                                                std::optional<std::span<const std::string>> expected = {}) {
  try {
    return sieve::io::parse_submission(text, "<fuzz>", expected, rules, notes);
  } catch (const sieve::Error&) {
    return std::nullopt;
  }
}

// Rows that parsed under `rules` are written under the same rules and read back equal.
void check_round_trip(const std::vector<SubmissionRow>& rows, const SubmissionRules& rules) {
  const std::string written = sieve::io::format_submission(rows, rules);
  const auto back = parse(written, rules);
  require(back && same_rows(*back, rows));
}

void check_expected_ids(std::string_view text, const std::vector<SubmissionRow>& rows, const SubmissionRules& rules) {
  std::vector<std::string> ids;
  for (const auto& r : rows) ids.push_back(r.id);
  const auto same = parse(text, rules, nullptr, std::span<const std::string>(ids));
  require(same && same_rows(*same, rows));
  ids.push_back("\x01 not an id");  // an expected id the text cannot hold: reported missing
  require(!parse(text, rules, nullptr, std::span<const std::string>(ids)));
  ids.pop_back();
  if (ids.empty()) return;
  ids.erase(ids.begin());  // the first row's id becomes unknown
  require(!parse(text, rules, nullptr, std::span<const std::string>(ids)));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace sieve::io;
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  const auto strict = parse(text, SubmissionRules{});
  std::vector<std::string> notes;
  const auto kaggle = parse(text, SubmissionRules::kaggle(), &notes);
  require(strict.has_value() == (kaggle.has_value() && notes.empty()));
  if (strict) require(same_rows(*strict, *kaggle));
  if (kaggle) {
    for (const auto& r : *kaggle) require(!r.id.empty());
    check_round_trip(*kaggle, SubmissionRules::kaggle());
    check_expected_ids(text, *kaggle, SubmissionRules::kaggle());
  }
  if (strict) {
    for (const auto& r : *strict) require(!r.labels.empty() && r.labels.size() <= SubmissionRules{}.max_labels);
    check_round_trip(*strict, SubmissionRules{});
  }

  std::vector<SolutionRow> sol;
  try {
    sol = parse_solution(text, "<fuzz>");
  } catch (const sieve::Error&) {
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& r : sol) {
    require(!r.id.empty() && label_problem(r.label).empty());
    rows.push_back({r.id, r.label});
  }
  const std::string header[] = {"id", "label"};
  const auto back = parse_solution(format_csv(header, rows), "<fuzz round trip>");
  require(back.size() == sol.size());
  for (std::size_t i = 0; i < sol.size(); ++i) require(back[i].id == sol[i].id && back[i].label == sol[i].label);
  return 0;
}
