#pragma once
/// RUN/metrics.jsonl: one flat JSON object per line, appended by the Trainer at every epoch end
/// ({"epoch": E, "step": S, ...}, E = epochs completed, 1-based). The rules, written once:
///   - A line is complete when it ends with '\n'. A crash (kill -9, power loss) can leave a torn
///     last line without one: readers skip it with a warning. A complete line that is not a
///     JSON object is corruption and an error naming file:line.
///   - On resume the log is cut back to the checkpoint: the longest prefix of complete lines
///     whose "epoch" is at most the checkpoint's completed epochs is kept (lines without an
///     "epoch" stay when they come before); the rest was logged after that checkpoint was saved
///     and the resumed run logs it again. The epoch, not the step, decides: a checkpoint saved
///     at the last step of an epoch, before that epoch's line, has the line's step but has not
///     completed the epoch (resume runs the epoch end, and its line, again).

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/io/file.hpp"
#include "sieve/train/detail/flat_json.hpp"

namespace sieve::train {

/// metrics.jsonl split into its complete lines and a torn tail.
struct MetricsLogText {
  std::vector<std::string_view> lines;  ///< complete lines, without their '\n' (views into the text)
  std::string_view torn;                ///< bytes after the last '\n' (empty when the file ends cleanly)
};

/// Split the text of a metrics log. Ensures: lines joined with '\n' after each, then torn, is `text`.
inline MetricsLogText split_metrics_log(std::string_view text) {
  MetricsLogText out;
  std::size_t pos = 0;
  for (std::size_t nl; (nl = text.find('\n', pos)) != std::string_view::npos; pos = nl + 1)
    out.lines.push_back(text.substr(pos, nl - pos));
  out.torn = text.substr(pos);
  return out;
}

/// The warning readers print for a torn last line of `path`.
inline std::string torn_line_warning(const std::filesystem::path& path, std::string_view torn) {
  return str(path.string(), ": the last line (", torn.size(),
             " bytes) has no newline: a write cut short by an interrupted run; skipped");
}

/// What truncate_metrics_log did.
struct MetricsTruncation {
  std::size_t kept = 0;     ///< complete lines kept
  std::size_t dropped = 0;  ///< complete lines dropped (logged after the checkpoint)
  bool torn = false;        ///< a torn last line was dropped
  bool changed() const { return dropped > 0 || torn; }
};

/// Cut `path` back to the lines of a checkpoint that has completed `completed_epochs` epochs (the
/// rule above), rewriting it atomically when anything is dropped; a missing file is left missing.
/// Throws sieve::Error naming path:line when a complete line is not a flat JSON object or its
/// "epoch" is not an integer.
inline MetricsTruncation truncate_metrics_log(const std::filesystem::path& path, std::int64_t completed_epochs) {
  MetricsTruncation r;
  if (!std::filesystem::exists(path)) return r;
  const auto bytes = io::read_file(path, std::uint64_t{1} << 30);
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  const MetricsLogText log = split_metrics_log(text);
  std::size_t keep_bytes = 0;
  for (std::size_t i = 0; i < log.lines.size(); ++i) {
    const std::string_view line = log.lines[i];
    if (line.find_first_not_of(" \t\r") != std::string_view::npos) {
      const auto j = detail::FlatJson::parse(line, str(path.string(), ":", i + 1));
      if (j.has("epoch") && j.get_i64("epoch") > completed_epochs) {
        r.dropped = log.lines.size() - i;
        break;
      }
    }
    ++r.kept;
    keep_bytes += line.size() + 1;
  }
  r.torn = !log.torn.empty();
  if (r.changed()) io::write_file_atomic(path, text.substr(0, keep_bytes));
  return r;
}

}  // namespace sieve::train
