// libFuzzer harness for sieve's CSV reader and writer (sieve/io/csv.hpp): any bytes must give
// records or a sieve::Error, never a crash, a sanitizer report or an abort. Invariants:
//  - a table's rows all have the header's width;
//  - strict and lenient readers agree: the strict one succeeds exactly when the lenient one
//    reports no problem, and then both give the same records;
//  - every record the lenient reader keeps is one a strict read accepts on its own;
//  - round trip: what parses, written by format_csv / append_csv_row, parses back equal.
// Tight limits, so the limit checks are reached with small inputs. Run: tools/fuzz.sh csv 60
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sieve/io/csv.hpp"

namespace {

void require(bool ok) {
  if (!ok) __builtin_trap();
}

sieve::io::CsvLimits limits() {
  sieve::io::CsvLimits lim;
  lim.max_line_bytes = 4096;
  lim.max_field_bytes = 512;
  lim.max_fields = 64;
  lim.max_records = 2048;
  lim.max_problems = 64;
  return lim;
}

bool same_fields(const std::vector<sieve::io::CsvRecord>& a, const std::vector<sieve::io::CsvRecord>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].fields != b[i].fields) return false;
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace sieve::io;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const CsvLimits lim = limits();

  std::optional<std::vector<CsvRecord>> strict;
  try {
    strict = parse_csv(text, "<fuzz>", lim);
  } catch (const sieve::Error&) {
  }
  std::vector<std::string> problems;
  std::vector<CsvRecord> lenient;
  try {
    lenient = parse_csv_lenient(text, "<fuzz>", problems, lim);
  } catch (const sieve::Error&) {
    // Only the record limit throws in a lenient read, and then a strict read threw too.
    require(!strict);
    return 0;
  }
  require(problems.size() <= lim.max_problems);
  require(strict.has_value() == problems.empty());
  if (strict) require(same_fields(*strict, lenient));
  for (std::size_t i = 0; i < lenient.size(); ++i) {
    require(!lenient[i].fields.empty() && lenient[i].fields.size() <= lim.max_fields);
    require(i == 0 || lenient[i].line > lenient[i - 1].line);
    // Kept records are sound on their own: written after a plain first record (a first field
    // that starts with U+FEFF is the table round trip's case), they read back equal.
    std::string two = "x\n";
    append_csv_row(two, lenient[i].fields);
    const auto back = parse_csv(two, "<fuzz record>", lim);
    require(back.size() == 2 && back[1].fields == lenient[i].fields);
  }

  // The table layer: every row has the header's width; lenient drops exactly the ragged rows.
  std::optional<CsvTable> table;
  try {
    table = parse_csv_table(text, "<fuzz>", lim);
  } catch (const sieve::Error&) {
  }
  std::vector<std::string> table_problems;
  const CsvTable lenient_table = parse_csv_table_lenient(text, "<fuzz>", table_problems, lim);
  require(table.has_value() == table_problems.empty());
  for (const auto& row : lenient_table.rows) require(row.fields.size() == lenient_table.header.size());
  if (!table) return 0;
  require(!table->header.empty());
  require(table->header == lenient_table.header && same_fields(table->rows, lenient_table.rows));
  for (const auto& row : table->rows) require(row.fields.size() == table->header.size());

  // Round trip through the writer.
  std::vector<std::vector<std::string>> rows;
  for (const auto& r : table->rows) rows.push_back(r.fields);
  const std::string written = format_csv(table->header, rows);
  const CsvTable back = parse_csv_table(written, "<fuzz round trip>", lim);
  require(back.header == table->header && same_fields(back.rows, table->rows));
  return 0;
}
