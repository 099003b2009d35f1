#pragma once
/// A strict, bounded CSV reader and a matching writer (RFC 4180).
///
/// Accepted: an optional UTF-8 byte-order mark; records ended by LF or CRLF (the last one may
/// lack it); fields separated by ','; a field is either unquoted (no '"', CR or LF inside) or
/// wholly quoted, with '""' for a quote and CR/LF allowed inside. Rejected, with
/// "source:line:column: problem": invalid UTF-8, control bytes other than TAB (and CR/LF inside
/// quotes), a bare CR, a quote inside an unquoted field, text after a closing quote, an
/// unterminated quote (naming the line where it opened), empty lines, and anything over the
/// limits. The reader never reads past its input and never recurses, so any byte string gives
/// either records or a sieve::Error. The lenient variants (parse_csv_lenient, *_table_lenient)
/// report every problem instead of the first and keep the records that are sound.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/io/detail/text.hpp"
#include "sieve/io/file.hpp"

namespace sieve::io {

/// Bounds that keep a hostile file from exhausting memory or time.
struct CsvLimits {
  std::size_t max_line_bytes = std::size_t{1} << 20;   ///< one physical line
  std::size_t max_field_bytes = std::size_t{1} << 16;  ///< one field (quoted fields may span lines)
  std::size_t max_fields = 1024;                       ///< fields in one record
  std::size_t max_records = 100'000'000;
  std::uint64_t max_file_bytes = std::uint64_t{1} << 32;
  std::size_t max_problems = 1000;  ///< a lenient read stops after this many problems
};

/// One record and the 1-based line it starts on.
struct CsvRecord {
  std::size_t line = 0;
  std::vector<std::string> fields;
};

/// A header record plus rows that all have the header's field count.
struct CsvTable {
  std::string source;
  std::vector<std::string> header;
  std::vector<CsvRecord> rows;
};

namespace detail {

struct CsvCursor {
  std::string_view text;
  std::string_view source;
  // Line and column of the last position reported: errors come in file order within a pass,
  // so a lenient read that reports many of them still scans the text about once per pass.
  mutable std::size_t at_pos = 0, at_line = 1, at_col = 1;

  // Line and column of a byte offset, computed only when an error is reported.
  [[noreturn]] void error_at(std::size_t pos, std::string_view what) const {
    if (pos < at_pos) at_pos = 0, at_line = 1, at_col = 1;
    for (; at_pos < pos && at_pos < text.size(); ++at_pos) {
      if (text[at_pos] == '\n') at_line++, at_col = 1;
      else at_col++;
    }
    fail(source, ":", at_line, ":", at_col, ": ", what);
  }
};

/// Where a lenient read puts its problems; a strict read (no sink) throws the first one.
struct CsvSink {
  std::vector<std::string>* problems = nullptr;
  std::size_t max = 0;
  bool full() const { return problems->size() >= max; }
  void add(std::string what) const {
    if (full()) return;
    problems->push_back(std::move(what));
    if (full()) problems->back() += " (stopped reading: too many problems)";
  }
};

/// Check encoding, control bytes and line lengths in one pass. Strict: throws the first
/// problem. Lenient: reports the first problem of each bad line and returns the byte ranges
/// [begin, end) of those lines, whose records the parser then drops.
inline std::vector<std::pair<std::size_t, std::size_t>> csv_prescan(const CsvCursor& cur, std::size_t start,
                                                                    const CsvLimits& lim, const CsvSink* sink) {
  const std::string_view t = cur.text;
  std::vector<std::pair<std::size_t, std::size_t>> bad;
  std::size_t line_start = start;
  for (std::size_t i = start; i < t.size();) {
    const auto c = static_cast<unsigned char>(t[i]);
    if (c == '\n') {
      line_start = i + 1;
      ++i;
      continue;
    }
    std::size_t n = 1;
    try {
      if (i - line_start >= lim.max_line_bytes)
        cur.error_at(i, str("line longer than the limit of ", lim.max_line_bytes, " bytes"));
      if (c < 0x20 && c != '\t' && c != '\r')
        cur.error_at(i, str("control byte 0x", "0123456789abcdef"[c >> 4], "0123456789abcdef"[c & 15],
                            " (binary data is not CSV)"));
      if (c == 0x7F) cur.error_at(i, "control byte 0x7f (binary data is not CSV)");
      n = utf8_sequence_length(t, i);
      if (n == 0) cur.error_at(i, "invalid UTF-8");
    } catch (const Error& e) {
      if (sink == nullptr) throw;
      sink->add(e.what());
      const std::size_t eol = std::min(t.find('\n', i), t.size());
      bad.emplace_back(line_start, eol);
      if (sink->full()) {
        bad.emplace_back(eol, t.size());  // nothing after this is read
        return bad;
      }
      i = eol;
      continue;
    }
    i += n;
  }
  return bad;
}

/// Parser shared by the strict and the lenient reader (see parse_csv).
inline std::vector<CsvRecord> parse_csv_records(std::string_view text, std::string_view source, const CsvLimits& lim,
                                                const CsvSink* sink) {
  const detail::CsvCursor cur{text, source};
  std::size_t pos = text.substr(0, 3) == "\xEF\xBB\xBF" ? 3 : 0;
  const auto bad = detail::csv_prescan(cur, pos, lim, sink);
  std::size_t next_bad = 0;  // bad lines are in order, and so are records
  // Does [from, to) touch a line the prescan refused (and so has reported already)?
  const auto touches_bad = [&](std::size_t from, std::size_t to) {
    while (next_bad < bad.size() && bad[next_bad].second < from) ++next_bad;
    return next_bad < bad.size() && bad[next_bad].first < to;
  };
  std::vector<CsvRecord> records;
  std::size_t line = 1;
  const std::size_t end = text.size();
  while (pos < end) {
    if (sink && sink->full()) break;
    CsvRecord rec;
    rec.line = line;
    const std::size_t record_start = pos;
    try {
      bool record_done = false;
      while (!record_done) {
        std::string field;
        const std::size_t field_start = pos;
        if (pos < end && text[pos] == '"') {
          const std::size_t open_line = line;
          ++pos;
          for (;;) {
            if (pos >= end)
              cur.error_at(field_start, str("quote opened on line ", open_line, " is never closed"));
            const char c = text[pos];
            if (c == '"') {
              if (pos + 1 < end && text[pos + 1] == '"') {
                field += '"';
                pos += 2;
                continue;
              }
              ++pos;
              break;
            }
            if (c == '\n') ++line;
            field += c;
            ++pos;
            if (field.size() > lim.max_field_bytes)
              cur.error_at(field_start, str("field longer than the limit of ", lim.max_field_bytes, " bytes"));
          }
          if (pos < end && text[pos] != ',' && text[pos] != '\n' && text[pos] != '\r')
            cur.error_at(pos, "text after a closing quote (a quoted field must end at ',' or the line end)");
        } else {
          while (pos < end && text[pos] != ',' && text[pos] != '\n' && text[pos] != '\r') {
            if (text[pos] == '"')
              cur.error_at(pos, "quote inside an unquoted field (quote the whole field and double the quote)");
            ++pos;
          }
          if (pos - field_start > lim.max_field_bytes)
            cur.error_at(field_start, str("field longer than the limit of ", lim.max_field_bytes, " bytes"));
          field.assign(text.substr(field_start, pos - field_start));
        }
        rec.fields.push_back(std::move(field));
        if (rec.fields.size() > lim.max_fields)
          cur.error_at(field_start, str("more than ", lim.max_fields, " fields in one record"));
        if (pos >= end) {
          record_done = true;
        } else if (text[pos] == ',') {
          ++pos;
        } else if (text[pos] == '\r') {
          if (pos + 1 >= end || text[pos + 1] != '\n') cur.error_at(pos, "bare CR (lines must end with LF or CRLF)");
          pos += 2;
          ++line;
          record_done = true;
        } else {  // '\n'
          ++pos;
          ++line;
          record_done = true;
        }
      }
    } catch (const Error& e) {
      if (sink == nullptr) throw;
      // Lenient: report, drop the record, resume after the line the problem is on.
      if (pos < end && text[pos] != '\n') pos = std::min(text.find('\n', pos), end);
      if (!touches_bad(record_start, pos + 1)) sink->add(e.what());
      if (pos < end) ++pos, ++line;
      continue;
    }
    if (rec.fields.size() == 1 && rec.fields[0].empty() && text[record_start] != '"') {
      if (sink == nullptr) cur.error_at(record_start, "empty line");
      try {
        cur.error_at(record_start, "empty line");
      } catch (const Error& e) {
        sink->add(e.what());
      }
      continue;
    }
    if (touches_bad(record_start, pos)) continue;  // reported by the prescan: dropped
    if (records.size() >= lim.max_records) cur.error_at(record_start, str("more than ", lim.max_records, " records"));
    records.push_back(std::move(rec));
  }
  return records;
}

/// The rows of `records` (after the header) with the header's width; a ragged row is thrown
/// (strict) or reported and dropped (lenient).
inline CsvTable csv_table_of(std::vector<CsvRecord> records, std::string_view source, const CsvSink* sink) {
  CsvTable t;
  t.source = std::string(source);
  if (records.empty()) {
    if (sink == nullptr) fail(source, ": empty file (expected a header line)");
    sink->add(str(source, ": empty file (expected a header line)"));
    return t;
  }
  t.header = std::move(records[0].fields);
  for (std::size_t r = 1; r < records.size(); ++r) {
    if (records[r].fields.size() != t.header.size()) {
      std::string what = str(source, ":", records[r].line, ": ", records[r].fields.size(), " field",
                             records[r].fields.size() == 1 ? "" : "s", " but the header has ", t.header.size());
      if (sink == nullptr) fail(what);
      sink->add(std::move(what));
      continue;
    }
    t.rows.push_back(std::move(records[r]));
  }
  return t;
}

}  // namespace detail

/// Parse CSV text into records. `source` names the input in errors.
/// Requires: nothing (any bytes). Ensures: records in order, each with >= 1 field and its
/// starting line; an empty input (or only a BOM) gives no records. Throws sieve::Error
/// "source:line:column: problem" on the first problem.
inline std::vector<CsvRecord> parse_csv(std::string_view text, std::string_view source, const CsvLimits& lim = {}) {
  return detail::parse_csv_records(text, source, lim, nullptr);
}

/// Parse CSV text, collecting problems instead of stopping at the first: each problem
/// ("source:line:column: problem") is appended to `problems`, the record holding it is
/// dropped, and reading resumes on the next line; after lim.max_problems problems reading
/// stops (the last one says so). Records over lim.max_records still throw.
/// Ensures: the records returned are exactly those a strict parse would accept on their own.
inline std::vector<CsvRecord> parse_csv_lenient(std::string_view text, std::string_view source,
                                                std::vector<std::string>& problems, const CsvLimits& lim = {}) {
  const detail::CsvSink sink{&problems, problems.size() + lim.max_problems};
  return detail::parse_csv_records(text, source, lim, &sink);
}

/// Parse CSV text whose first record is a header; every row must have the header's width.
/// Requires: nothing. Ensures: header non-empty. Throws "source: empty file ..." when there
/// is no header, and "source:line: N fields but the header has M" on a ragged row.
inline CsvTable parse_csv_table(std::string_view text, std::string_view source, const CsvLimits& lim = {}) {
  return detail::csv_table_of(parse_csv(text, source, lim), source, nullptr);
}

/// parse_csv_table that collects problems (see parse_csv_lenient): ragged rows are reported
/// and dropped; without a header the table is empty (header.empty()) and the problem said.
inline CsvTable parse_csv_table_lenient(std::string_view text, std::string_view source,
                                        std::vector<std::string>& problems, const CsvLimits& lim = {}) {
  const detail::CsvSink sink{&problems, problems.size() + lim.max_problems};
  return detail::csv_table_of(detail::parse_csv_records(text, source, lim, &sink), source, &sink);
}

/// Read and parse a CSV file with a header (see parse_csv_table); errors name the file.
inline CsvTable read_csv_table(const std::filesystem::path& path, const CsvLimits& lim = {}) {
  const auto bytes = read_file(path, lim.max_file_bytes);
  return parse_csv_table(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
                         path.string(), lim);
}

/// Read a CSV file with a header, collecting its syntax problems (parse_csv_table_lenient).
/// A file that cannot be read at all still throws, naming it.
inline CsvTable read_csv_table_lenient(const std::filesystem::path& path, std::vector<std::string>& problems,
                                       const CsvLimits& lim = {}) {
  const auto bytes = read_file(path, lim.max_file_bytes);
  return parse_csv_table_lenient(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
                                 path.string(), problems, lim);
}

/// Append one field, quoted only when it must be (',', '"', CR, LF) or when it is the only,
/// empty field of its record (an unquoted one would be an empty line).
/// Requires: valid UTF-8 without control bytes other than TAB, CR, LF (what the reader
/// accepts); otherwise throws naming the field.
inline void append_csv_field(std::string& out, std::string_view field, bool only_field = false) {
  for (std::size_t i = 0; i < field.size();) {
    const auto c = static_cast<unsigned char>(field[i]);
    // The field itself is not echoed: its control bytes would garble the message.
    SIEVE_CHECK(!((c < 0x20 && c != '\t' && c != '\r' && c != '\n') || c == 0x7F), "csv writer: a field of ",
                field.size(), " bytes holds control byte ", static_cast<int>(c), " at offset ", i);
    const std::size_t n = detail::utf8_sequence_length(field, i);
    SIEVE_CHECK(n > 0, "csv writer: field holds invalid UTF-8 at offset ", i);
    i += n;
  }
  // A field starting with U+FEFF is quoted: unquoted at the start of a file, a reader (ours
  // included) would take those bytes for a byte-order mark and drop them.
  const bool quote = field.find_first_of(",\"\r\n") != std::string_view::npos || (only_field && field.empty()) ||
                     field.starts_with("\xEF\xBB\xBF");
  if (!quote) {
    out.append(field);
    return;
  }
  out += '"';
  for (char c : field) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
}

/// Append one record ending in LF. Requires: at least one field.
inline void append_csv_row(std::string& out, std::span<const std::string> fields) {
  SIEVE_CHECK(!fields.empty(), "csv writer: a record needs at least one field");
  for (std::size_t i = 0; i < fields.size(); ++i) {
    if (i) out += ',';
    append_csv_field(out, fields[i], fields.size() == 1);
  }
  out += '\n';
}

/// Format a header and rows as CSV text (LF line ends).
/// Requires: every row has header.size() fields.
inline std::string format_csv(std::span<const std::string> header, std::span<const std::vector<std::string>> rows) {
  std::string out;
  append_csv_row(out, header);
  for (std::size_t r = 0; r < rows.size(); ++r) {
    SIEVE_CHECK(rows[r].size() == header.size(), "csv writer: row ", r, " has ", rows[r].size(),
                " fields but the header has ", header.size());
    append_csv_row(out, rows[r]);
  }
  return out;
}

/// Write a CSV file atomically (see write_file_atomic).
inline void write_csv(const std::filesystem::path& path, std::span<const std::string> header,
                      std::span<const std::vector<std::string>> rows) {
  write_file_atomic(path, std::string_view(format_csv(header, rows)));
}

}  // namespace sieve::io
