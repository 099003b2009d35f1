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
/// either records or a sieve::Error.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
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

  // Line and column of a byte offset, computed only when an error is reported.
  [[noreturn]] void error_at(std::size_t pos, std::string_view what) const {
    std::size_t line = 1, col = 1;
    for (std::size_t i = 0; i < pos && i < text.size(); ++i) {
      if (text[i] == '\n') line++, col = 1;
      else col++;
    }
    fail(source, ":", line, ":", col, ": ", what);
  }
};

/// Check encoding, control bytes and line lengths in one pass.
inline void csv_prescan(const CsvCursor& cur, std::size_t start, const CsvLimits& lim) {
  const std::string_view t = cur.text;
  std::size_t line_start = start;
  for (std::size_t i = start; i < t.size();) {
    const auto c = static_cast<unsigned char>(t[i]);
    if (c == '\n') {
      line_start = i + 1;
      ++i;
      continue;
    }
    if (i - line_start >= lim.max_line_bytes)
      cur.error_at(i, str("line longer than the limit of ", lim.max_line_bytes, " bytes"));
    if (c < 0x20 && c != '\t' && c != '\r')
      cur.error_at(i, str("control byte 0x", "0123456789abcdef"[c >> 4], "0123456789abcdef"[c & 15],
                          " (binary data is not CSV)"));
    if (c == 0x7F) cur.error_at(i, "control byte 0x7f (binary data is not CSV)");
    const std::size_t n = utf8_sequence_length(t, i);
    if (n == 0) cur.error_at(i, "invalid UTF-8");
    i += n;
  }
}

}  // namespace detail

/// Parse CSV text into records. `source` names the input in errors.
/// Requires: nothing (any bytes). Ensures: records in order, each with >= 1 field and its
/// starting line; an empty input (or only a BOM) gives no records. Throws sieve::Error
/// "source:line:column: problem" on the first problem.
inline std::vector<CsvRecord> parse_csv(std::string_view text, std::string_view source, const CsvLimits& lim = {}) {
  const detail::CsvCursor cur{text, source};
  std::size_t pos = text.substr(0, 3) == "\xEF\xBB\xBF" ? 3 : 0;
  detail::csv_prescan(cur, pos, lim);
  std::vector<CsvRecord> records;
  std::size_t line = 1;
  const std::size_t end = text.size();
  while (pos < end) {
    CsvRecord rec;
    rec.line = line;
    const std::size_t record_start = pos;
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
    if (rec.fields.size() == 1 && rec.fields[0].empty() && text[record_start] != '"')
      cur.error_at(record_start, "empty line");
    if (records.size() >= lim.max_records) cur.error_at(record_start, str("more than ", lim.max_records, " records"));
    records.push_back(std::move(rec));
  }
  return records;
}

/// Parse CSV text whose first record is a header; every row must have the header's width.
/// Requires: nothing. Ensures: header non-empty. Throws "source: empty file ..." when there
/// is no header, and "source:line: N fields but the header has M" on a ragged row.
inline CsvTable parse_csv_table(std::string_view text, std::string_view source, const CsvLimits& lim = {}) {
  auto records = parse_csv(text, source, lim);
  if (records.empty()) fail(source, ": empty file (expected a header line)");
  CsvTable t;
  t.source = std::string(source);
  t.header = std::move(records[0].fields);
  for (std::size_t r = 1; r < records.size(); ++r) {
    if (records[r].fields.size() != t.header.size())
      fail(source, ":", records[r].line, ": ", records[r].fields.size(), " field",
           records[r].fields.size() == 1 ? "" : "s", " but the header has ", t.header.size());
    t.rows.push_back(std::move(records[r]));
  }
  return t;
}

/// Read and parse a CSV file with a header (see parse_csv_table); errors name the file.
inline CsvTable read_csv_table(const std::filesystem::path& path, const CsvLimits& lim = {}) {
  const auto bytes = read_file(path, lim.max_file_bytes);
  return parse_csv_table(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
                         path.string(), lim);
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
  const bool quote = field.find_first_of(",\"\r\n") != std::string_view::npos || (only_field && field.empty());
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
