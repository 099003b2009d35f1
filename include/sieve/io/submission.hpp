#pragma once
/// Competition submissions (`id,predictions`: up to 5 distinct space-separated labels, best
/// first, `-1` for a distractor) and solutions (`id,label`): an atomic writer and validating
/// readers whose errors carry line numbers.

#include <algorithm>
#include <cstddef>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/io/csv.hpp"
#include "sieve/io/detail/text.hpp"
#include "sieve/io/file.hpp"

namespace sieve::io {

/// One submission row: an id and its ranked labels.
struct SubmissionRow {
  std::string id;
  std::vector<std::string> labels;
};

/// What a submission must satisfy beyond its syntax.
struct SubmissionRules {
  std::size_t max_labels = 5;
  bool allow_empty = false;       ///< accept rows with no label (they score 0)
  bool allow_repeated = false;    ///< accept a label repeated in a row (it counts at its first position)
  bool allow_extra = false;       ///< accept more than max_labels labels (those past it count for nothing)
  std::size_t max_reported = 20;  ///< problems listed in one error before "... and N more"

  /// What Kaggle's MAP@5 evaluator scores rather than refuses: an empty row (0), a repeated
  /// label (once, at its first position), labels past the fifth (ignored); metrics::map_at_k
  /// scores such rows the same way.
  static SubmissionRules kaggle() {
    SubmissionRules r;
    r.allow_empty = r.allow_repeated = r.allow_extra = true;
    return r;
  }
};

/// Why `id` cannot be a submission id, or empty when it can: an id is non-empty, valid UTF-8
/// and free of control characters (what the CSV writer can write and a reader gets back).
/// The reason completes "id '...' " (the caller names the id, escaped with detail::printable).
inline std::string submission_id_problem(std::string_view id) {
  if (id.empty()) return "is empty";
  if (const auto bad = detail::utf8_invalid_at(id)) return str("is not valid UTF-8 (byte ", *bad, ")");
  for (char ch : id)
    if (const auto c = static_cast<unsigned char>(ch); c < 0x20 || c == 0x7F) return "contains a control character";
  return {};
}

/// Why `label` cannot be a class label in a submission's predictions, or empty when it can:
/// a label is non-empty, valid UTF-8, without spaces (they separate a row's labels) and
/// without other whitespace or control characters. The one rule for labels: the data folder
/// applies it to train.csv before training, the submission writer and readers at the end.
/// The reason completes "label '...' " (the caller names the label).
inline std::string label_problem(std::string_view label) {
  if (label.empty()) return "is empty";
  if (const auto bad = detail::utf8_invalid_at(label)) return str("is not valid UTF-8 (byte ", *bad, ")");
  if (label.find(' ') != std::string_view::npos)
    return "contains a space (a submission separates labels by spaces)";
  for (char ch : label)
    if (const auto c = static_cast<unsigned char>(ch); c < 0x20 || c == 0x7F)
      return "contains a tab, line break or control character";
  return {};
}

namespace detail {

/// Collects problems so one error reports them all (a user fixes a file once, not N times).
class Problems {
 public:
  Problems(std::string_view source, std::size_t max) : source_(source), max_(max) {}
  template <class... Args>
  void add(Args&&... pieces) {
    if (count_++ < max_) text_ += str("\n  ", std::forward<Args>(pieces)...);
  }
  void throw_if_any() const {
    if (count_ == 0) return;
    std::string tail = count_ > max_ ? str("\n  ... and ", count_ - max_, " more") : "";
    fail(source_, ": ", count_, count_ == 1 ? " problem:" : " problems:", text_, tail);
  }

 private:
  std::string source_, text_;
  std::size_t max_, count_ = 0;
};

/// Split a predictions field on runs of spaces (leading/trailing spaces ignored).
inline std::vector<std::string> split_labels(std::string_view s) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && s[i] == ' ') ++i;
    const std::size_t j = std::min(s.find(' ', i), s.size());
    if (j > i) out.emplace_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

// Problems of one row's labels. What `rules` allows is not a problem: it goes to `notes` (when
// given) with the same wording, so a lenient reader can say what it accepted.
inline void check_labels(Problems& p, std::vector<std::string>* notes, std::string_view where,
                         const std::vector<std::string>& labels, const SubmissionRules& rules) {
  auto report = [&](bool allowed, auto&&... pieces) {
    if (!allowed) p.add(where, pieces...);
    else if (notes) notes->push_back(str(where, pieces...));
  };
  if (labels.empty()) report(rules.allow_empty, ": empty predictions (at least one label is required)");
  if (labels.size() > rules.max_labels)
    report(rules.allow_extra, ": ", labels.size(), " labels, at most ", rules.max_labels, " allowed");
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (const auto why = label_problem(labels[i]); !why.empty())
      p.add(where, ": label ", i + 1, " '", printable(labels[i]), "' ", why);
    for (std::size_t j = 0; j < i; ++j)
      if (labels[j] == labels[i]) {
        report(rules.allow_repeated, ": label '", labels[i], "' appears twice (positions ", j + 1, " and ", i + 1,
               ")");
        break;
      }
  }
}

/// Duplicate, unknown and missing ids against an optional expected set.
template <class Row, class IdOf, class LineOf>
void check_ids(Problems& p, const std::vector<Row>& rows, IdOf id_of, LineOf line_of,
               std::optional<std::span<const std::string>> expected) {
  std::unordered_map<std::string_view, std::size_t> first_line;
  for (const auto& r : rows) {
    const std::string& id = id_of(r);
    // The writer's rule on read too: what is read here can be written back (format_submission).
    if (id.empty()) {
      p.add("line ", line_of(r), ": empty id");
      continue;
    }
    if (const auto why = submission_id_problem(id); !why.empty()) {
      p.add("line ", line_of(r), ": id '", printable(id), "' ", why);
      continue;
    }
    auto [it, fresh] = first_line.emplace(id, line_of(r));
    if (!fresh) p.add("line ", line_of(r), ": duplicate id '", id, "' (first on line ", it->second, ")");
  }
  if (!expected) return;
  std::unordered_set<std::string_view> want(expected->begin(), expected->end());
  for (const auto& r : rows)
    if (!id_of(r).empty() && !want.count(id_of(r))) p.add("line ", line_of(r), ": unknown id '", id_of(r), "'");
  std::size_t missing = 0;
  std::string first;
  for (const auto& id : *expected)
    if (!first_line.count(id)) {
      if (missing < 5) first += str(missing ? ", '" : "'", id, "'");
      ++missing;
    }
  if (missing) p.add(missing, " expected id", missing == 1 ? "" : "s", " missing (", first, missing > 5 ? ", ..." : "", ")");
}

}  // namespace detail

/// Format rows as submission text: header `id,predictions`, labels joined by single spaces.
/// Requires: ids non-empty and distinct; per row at most rules.max_labels distinct labels
/// without whitespace (and at least one unless rules.allow_empty). Throws listing every
/// problem by row index.
inline std::string format_submission(std::span<const SubmissionRow> rows, const SubmissionRules& rules = {}) {
  detail::Problems p("submission writer", rules.max_reported);
  std::unordered_map<std::string_view, std::size_t> seen;
  std::string out = "id,predictions\n";
  for (std::size_t r = 0; r < rows.size(); ++r) {
    const std::string where = str("row ", r, " (id '", detail::printable(rows[r].id), "')");
    if (const auto why = submission_id_problem(rows[r].id); !why.empty()) p.add(where, ": id ", why);
    auto [it, fresh] = seen.emplace(rows[r].id, r);
    if (!fresh) p.add(where, ": duplicate id (first at row ", it->second, ")");
    detail::check_labels(p, nullptr, where, rows[r].labels, rules);
  }
  p.throw_if_any();
  for (const auto& row : rows) {
    std::string joined;
    for (std::size_t i = 0; i < row.labels.size(); ++i) {
      if (i) joined += ' ';
      joined += row.labels[i];
    }
    const std::string fields[2] = {row.id, joined};
    append_csv_row(out, fields);
  }
  return out;
}

/// Write a submission atomically (temp file, fsync, rename): readers never see half a file.
/// Requires: as format_submission. Ensures: the file parses back with read_submission.
inline void write_submission(const std::filesystem::path& path, std::span<const SubmissionRow> rows,
                             const SubmissionRules& rules = {}) {
  write_file_atomic(path, std::string_view(format_submission(rows, rules)));
}

/// Parse and validate submission text: header exactly `id,predictions`, two fields per row,
/// no empty or duplicate ids, labels as SubmissionRules says, and, when `expected_ids` is
/// given, no unknown and no missing ids. Rows are returned in file order; what the rules allow
/// but a strict reading would refuse is described in `notes` (when given), one line each.
/// Throws sieve::Error listing every problem with its line number.
inline std::vector<SubmissionRow> parse_submission(std::string_view text, std::string_view source,
                                                   std::optional<std::span<const std::string>> expected_ids = {},
                                                   const SubmissionRules& rules = {},
                                                   std::vector<std::string>* notes = nullptr) {
  const CsvTable t = parse_csv_table(text, source);
  if (t.header != std::vector<std::string>{"id", "predictions"}) {
    std::string got;
    for (std::size_t i = 0; i < t.header.size(); ++i) got += (i ? "," : "") + t.header[i];
    fail(source, ":1: header is '", got.substr(0, 200), "', expected 'id,predictions'");
  }
  detail::Problems p(source, rules.max_reported);
  std::vector<SubmissionRow> rows;
  std::vector<std::size_t> lines;
  for (const auto& rec : t.rows) {
    rows.push_back({rec.fields[0], detail::split_labels(rec.fields[1])});
    lines.push_back(rec.line);
    if (rec.fields[1].find_first_of("\t\r\n") != std::string::npos)
      p.add("line ", rec.line, ": predictions hold a tab or line break (labels are separated by spaces)");
    detail::check_labels(p, notes, str("line ", rec.line), rows.back().labels, rules);
  }
  std::vector<std::size_t> idx(rows.size());
  for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  detail::check_ids(
      p, idx, [&](std::size_t i) -> const std::string& { return rows[i].id; },
      [&](std::size_t i) { return lines[i]; }, expected_ids);
  p.throw_if_any();
  return rows;
}

/// Read and validate a submission file (see parse_submission); errors name the file.
inline std::vector<SubmissionRow> read_submission(const std::filesystem::path& path,
                                                  std::optional<std::span<const std::string>> expected_ids = {},
                                                  const SubmissionRules& rules = {},
                                                  std::vector<std::string>* notes = nullptr) {
  const auto bytes = read_file(path, CsvLimits{}.max_file_bytes);
  return parse_submission(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
                          path.string(), expected_ids, rules, notes);
}

/// One solution row: an id and its true label (`-1` for a distractor).
struct SolutionRow {
  std::string id;
  std::string label;
};

/// Parse a solution (`id,label`): header exact, ids non-empty and distinct, labels non-empty
/// without whitespace. Throws listing every problem with its line number.
inline std::vector<SolutionRow> parse_solution(std::string_view text, std::string_view source) {
  const CsvTable t = parse_csv_table(text, source);
  if (t.header != std::vector<std::string>{"id", "label"}) {
    std::string got;
    for (std::size_t i = 0; i < t.header.size(); ++i) got += (i ? "," : "") + t.header[i];
    fail(source, ":1: header is '", got.substr(0, 200), "', expected 'id,label'");
  }
  detail::Problems p(source, SubmissionRules{}.max_reported);
  std::vector<SolutionRow> rows;
  for (const auto& rec : t.rows) {
    if (const auto why = label_problem(rec.fields[1]); !why.empty())
      p.add("line ", rec.line, ": label '", detail::printable(rec.fields[1]), "' ", why);
    rows.push_back({rec.fields[0], rec.fields[1]});
  }
  detail::check_ids(
      p, t.rows, [](const CsvRecord& r) -> const std::string& { return r.fields[0]; },
      [](const CsvRecord& r) { return r.line; }, std::nullopt);
  p.throw_if_any();
  return rows;
}

/// Read a solution file (see parse_solution); errors name the file.
inline std::vector<SolutionRow> read_solution(const std::filesystem::path& path) {
  const auto bytes = read_file(path, CsvLimits{}.max_file_bytes);
  return parse_solution(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), path.string());
}

/// Align a validated submission with a solution: prediction rows in the solution's order.
/// Requires: the submission holds exactly the solution's ids (parse it with those as expected).
inline std::vector<std::vector<std::string>> align_to_solution(const std::vector<SubmissionRow>& sub,
                                                               const std::vector<SolutionRow>& sol) {
  std::unordered_map<std::string_view, const SubmissionRow*> by_id;
  for (const auto& r : sub) by_id.emplace(r.id, &r);
  std::vector<std::vector<std::string>> out;
  out.reserve(sol.size());
  for (const auto& s : sol) {
    const auto it = by_id.find(s.id);
    SIEVE_CHECK(it != by_id.end(), "align_to_solution: solution id '", s.id, "' has no submission row");
    out.push_back(it->second->labels);
  }
  return out;
}

}  // namespace sieve::io
