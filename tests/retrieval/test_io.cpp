// CSV reader/writer and submission/solution files.
#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "sieve/core/rng.hpp"
#include "sieve/io/csv.hpp"
#include "sieve/io/submission.hpp"
#include "sieve/metrics/summary.hpp"

namespace fs = std::filesystem;
using sieve::io::parse_csv;
using sieve::io::parse_submission;
using sieve::io::SubmissionRow;
using Strings = std::vector<std::string>;

namespace {
std::vector<Strings> fields_of(std::string_view text) {
  std::vector<Strings> out;
  for (auto& r : parse_csv(text, "t.csv")) out.push_back(r.fields);
  return out;
}

std::string csv_error(std::string_view text, const sieve::io::CsvLimits& lim = {}) {
  try {
    parse_csv(text, "t.csv", lim);
  } catch (const sieve::Error& e) {
    return e.what();
  }
  return "accepted";
}

// The error message parse_submission throws for `text`, or "accepted".
std::string sub_error(std::string_view text, const Strings* expected = nullptr) {
  try {
    if (expected) parse_submission(text, "s.csv", std::span<const std::string>(*expected));
    else parse_submission(text, "s.csv");
  } catch (const sieve::Error& e) {
    return e.what();
  }
  return "accepted";
}

fs::path temp_dir(const char* tag) {
  const fs::path dir = fs::temp_directory_path() / (std::string("sieve-") + tag + "-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir;
}
}  // namespace

TEST_CASE("csv: quoting, CRLF, BOM, line numbers") {
  CHECK(fields_of("a,b\n1,2\n") == std::vector<Strings>{{"a", "b"}, {"1", "2"}});
  CHECK(fields_of("a,b\r\n1,2") == std::vector<Strings>{{"a", "b"}, {"1", "2"}});
  CHECK(fields_of("\xEF\xBB\xBFid,x\n") == std::vector<Strings>{{"id", "x"}});
  CHECK(fields_of("\"a,b\",\"say \"\"hi\"\"\",\"two\r\nlines\",\"\"\n") ==
        std::vector<Strings>{{"a,b", "say \"hi\"", "two\r\nlines", ""}});
  CHECK(fields_of("a,,\n") == std::vector<Strings>{{"a", "", ""}});
  CHECK(fields_of("\"\"\n") == std::vector<Strings>{{""}});  // a quoted empty field is not an empty line
  CHECK(fields_of("").empty());
  CHECK(fields_of("\xEF\xBB\xBF").empty());
  CHECK(fields_of("caf\xC3\xA9,\xE2\x82\xAC\tx\n") == std::vector<Strings>{{"caf\xC3\xA9", "\xE2\x82\xAC\tx"}});
  // A first field starting with U+FEFF is written quoted, so a reader keeps it (fuzz_csv found
  // it dropped as a byte-order mark).
  const std::vector<std::string> bom_header{"\xEF\xBB\xBF" "a", "b"};
  const std::string bom_text = sieve::io::format_csv(bom_header, std::vector<std::vector<std::string>>{});
  CHECK(bom_text == "\"\xEF\xBB\xBF" "a\",b\n");
  CHECK(fields_of(bom_text) == std::vector<Strings>{bom_header});
  CHECK(fields_of("\xEF\xBB\xBF" + bom_text) == std::vector<Strings>{bom_header});
  // Records remember the line they start on, after multi-line quoted fields too.
  const auto recs = parse_csv("h\n\"x\ny\"\nz\n", "t.csv");
  REQUIRE(recs.size() == 3);
  CHECK(recs[1].line == 2);
  CHECK(recs[2].line == 4);
}

TEST_CASE("csv: every malformed input gives a located error") {
  CHECK(csv_error("a,b\n1,\"2\n") == "t.csv:2:3: quote opened on line 2 is never closed");
  CHECK(csv_error("a,b\nx\"y,2\n") ==
        "t.csv:2:2: quote inside an unquoted field (quote the whole field and double the quote)");
  CHECK(csv_error("a\n\"x\"y\n").rfind("t.csv:2:4: text after a closing quote", 0) == 0);
  CHECK(csv_error("a\rb\n") == "t.csv:1:2: bare CR (lines must end with LF or CRLF)");
  CHECK(csv_error("a\n\nb\n") == "t.csv:2:1: empty line");
  CHECK(csv_error("a\r\n\r\n") == "t.csv:2:1: empty line");
  CHECK(csv_error(std::string("a\nb\0c\n", 6)) == "t.csv:2:2: control byte 0x00 (binary data is not CSV)");
  CHECK(csv_error("ok\n\xFF\xFE") == "t.csv:2:1: invalid UTF-8");
  CHECK(csv_error("\xC0\xAF") == "t.csv:1:1: invalid UTF-8");       // overlong '/'
  CHECK(csv_error("\xED\xA0\x80") == "t.csv:1:1: invalid UTF-8");   // surrogate
  CHECK(csv_error("x\xE2\x82") == "t.csv:1:2: invalid UTF-8");      // truncated at end of input
  sieve::io::CsvLimits lim;
  lim.max_line_bytes = 8;
  lim.max_field_bytes = 4;
  lim.max_fields = 3;
  CHECK(csv_error("ok\n123456789\n", lim) == "t.csv:2:9: line longer than the limit of 8 bytes");
  CHECK(csv_error("12345,1\n", lim) == "t.csv:1:1: field longer than the limit of 4 bytes");
  CHECK(csv_error("\"12\n345\"\n", lim) == "t.csv:1:1: field longer than the limit of 4 bytes");
  CHECK(csv_error("a,b,c,d\n", lim) == "t.csv:1:7: more than 3 fields in one record");

  // Tables: ragged rows and empty files are named.
  CHECK_THROWS_WITH_AS(sieve::io::parse_csv_table("id,label\n1,a\n2\n", "train.csv"),
                       "train.csv:3: 1 field but the header has 2", sieve::Error);
  CHECK_THROWS_WITH_AS(sieve::io::parse_csv_table("", "train.csv"), "train.csv: empty file (expected a header line)",
                       sieve::Error);
  CHECK_THROWS_WITH_AS(sieve::io::read_csv_table("/nonexistent/x.csv"), doctest::Contains("x.csv: cannot open"),
                       sieve::Error);
}

TEST_CASE("csv: random bytes never crash; random fields round-trip through the writer") {
  sieve::Rng rng(4242, 1);
  const char alphabet[] = {'a', 'b', ',', '"', '\n', '\r', ' ', '\t', '\0', '\x7f', '\xC3', '\xA9', '\xFF', '1'};
  std::size_t accepted = 0, rejected = 0;
  for (int c = 0; c < 3000; ++c) {
    std::string s(rng.below(40), ' ');
    for (auto& ch : s) ch = c % 2 ? static_cast<char>(rng.next_u32()) : alphabet[rng.below(sizeof alphabet)];
    try {
      const auto recs = parse_csv(s, "fuzz");
      for (const auto& r : recs) REQUIRE(!r.fields.empty());
      ++accepted;
    } catch (const sieve::Error& e) {
      CHECK(std::string(e.what()).rfind("fuzz:", 0) == 0);  // every error is located
      ++rejected;
    }
  }
  CHECK(accepted > 100);  // the alphabet makes valid CSV often enough to exercise both paths
  CHECK(rejected > 100);

  const std::string pieces[] = {"a", "\"", ",", "\n", "\r\n", " ", "\t", "caf\xC3\xA9", "-1", "x y"};
  for (int c = 0; c < 500; ++c) {
    const std::size_t W = 1 + rng.below(4);
    Strings header(W);
    std::vector<Strings> rows(rng.below(5), Strings(W));
    for (auto& h : header) h = std::to_string(100 + rng.below(100));
    for (auto& r : rows)
      for (auto& f : r)
        for (std::size_t n = rng.below(5); n > 0; --n) f += pieces[rng.below(10)];
    const std::string text = sieve::io::format_csv(header, rows);
    const auto t = sieve::io::parse_csv_table(text, "roundtrip");
    REQUIRE(t.header == header);
    REQUIRE(t.rows.size() == rows.size());
    for (std::size_t i = 0; i < rows.size(); ++i) CHECK(t.rows[i].fields == rows[i]);
  }
  CHECK_THROWS_WITH_AS(sieve::io::format_csv(Strings{"a"}, std::vector<Strings>{{std::string("x\0", 2)}}),
                       doctest::Contains("control byte 0"), sieve::Error);
}

TEST_CASE("csv: a lenient read names every problem and keeps the sound records") {
  Strings problems;
  const auto t = sieve::io::parse_csv_table_lenient(
      "id,label\na,1\nb,2,3\nc,\xff\nd,\"x\"y\ne,5\n\nf,\"6\n", "t.csv", problems);
  REQUIRE(t.header == Strings{"id", "label"});
  REQUIRE(t.rows.size() == 2);
  CHECK(t.rows[0].fields == Strings{"a", "1"});
  CHECK(t.rows[1].fields == Strings{"e", "5"});
  CHECK(t.rows[1].line == 6);
  CHECK(problems == Strings{"t.csv:4:3: invalid UTF-8",
                            "t.csv:5:6: text after a closing quote (a quoted field must end at ',' or the line end)",
                            "t.csv:7:1: empty line", "t.csv:8:3: quote opened on line 8 is never closed",
                            "t.csv:3: 3 fields but the header has 2"});

  // A flood of bad lines stops at the cap, and says so.
  sieve::io::CsvLimits lim;
  lim.max_problems = 3;
  problems.clear();
  std::string flood = "id,label\n";
  for (int i = 0; i < 50; ++i) flood += "a,\x01\n";
  (void)sieve::io::parse_csv_table_lenient(flood, "f.csv", problems, lim);
  REQUIRE(problems.size() == 3);
  CHECK(problems[2] == "f.csv:4:3: control byte 0x01 (binary data is not CSV) (stopped reading: too many problems)");
  problems.clear();
  (void)sieve::io::parse_csv_table_lenient("", "e.csv", problems);
  CHECK(problems == Strings{"e.csv: empty file (expected a header line)"});

  // On random bytes: what the strict reader accepts, the lenient one returns unchanged and
  // silently; what it refuses, the lenient one reports (and never throws).
  sieve::Rng rng(99, 2);
  const char alphabet[] = {'a', ',', '"', '\n', '\r', '\0', '\xC3', '\xA9', '\xFF', '1'};
  for (int c = 0; c < 3000; ++c) {
    std::string text(rng.below(40), ' ');
    for (auto& ch : text) ch = alphabet[rng.below(sizeof alphabet)];
    Strings found;
    const auto lenient = sieve::io::parse_csv_lenient(text, "fuzz", found);
    try {
      const auto strict = parse_csv(text, "fuzz");
      REQUIRE(found.empty());
      REQUIRE(lenient.size() == strict.size());
      for (std::size_t i = 0; i < strict.size(); ++i) CHECK(lenient[i].fields == strict[i].fields);
    } catch (const sieve::Error& e) {
      REQUIRE_FALSE(found.empty());
      for (const auto& f : found) CHECK(f.rfind("fuzz:", 0) == 0);
    }
  }
}

TEST_CASE("submission: atomic write, read back, align and score") {
  const fs::path dir = temp_dir("sub");
  const std::vector<SubmissionRow> rows = {
      {"img_1", {"3", "-1", "cat"}}, {"img,2", {"-1"}}, {"img_3", {"a", "b", "c", "d", "e"}}};
  sieve::io::write_submission(dir / "s.csv", rows);
  const Strings ids = {"img_3", "img,2", "img_1"};
  const auto back = sieve::io::read_submission(dir / "s.csv", std::span<const std::string>(ids));
  REQUIRE(back.size() == 3);
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(back[i].id == rows[i].id);
    CHECK(back[i].labels == rows[i].labels);
  }
  const auto bytes = sieve::io::read_file(dir / "s.csv");
  CHECK(std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()) ==
        "id,predictions\nimg_1,3 -1 cat\n\"img,2\",-1\nimg_3,a b c d e\n");

  sieve::io::write_file_atomic(dir / "sol.csv", std::string_view("id,label\nimg_3,e\nimg,2,x\n"));
  CHECK_THROWS_WITH_AS(sieve::io::read_solution(dir / "sol.csv"), doctest::Contains("sol.csv:3: 3 fields"),
                       sieve::Error);
  sieve::io::write_file_atomic(dir / "sol.csv", std::string_view("id,label\nimg_3,e\n\"img,2\",-1\nimg_1,cat\n"));
  const auto sol = sieve::io::read_solution(dir / "sol.csv");
  REQUIRE(sol.size() == 3);
  const auto aligned = sieve::io::align_to_solution(back, sol);
  Strings truth;
  for (const auto& s : sol) truth.push_back(s.label);
  const auto score = sieve::metrics::score_summary(aligned, truth);
  CHECK(score.map == doctest::Approx((0.2 + 1.0 + 1.0 / 3) / 3));
  CHECK(score.distractor_recall == 1.0);
  CHECK(score.known_top1 == 0.0);

  // The writer refuses what the reader would refuse, and leaves the old file in place.
  CHECK_THROWS_WITH_AS(sieve::io::write_submission(dir / "s.csv", std::vector<SubmissionRow>{{"x", {"a", "a"}}}),
                       doctest::Contains("label 'a' appears twice"), sieve::Error);
  CHECK_THROWS_WITH_AS(
      sieve::io::write_submission(dir / "s.csv", std::vector<SubmissionRow>{{"x", {"a"}}, {"x", {"b"}}}),
      doctest::Contains("duplicate id"), sieve::Error);
  CHECK_THROWS_WITH_AS(sieve::io::write_submission(dir / "s.csv", std::vector<SubmissionRow>{{"x", {"a b"}}}),
                       doctest::Contains("row 0 (id 'x'): label 1 'a b' contains a space"), sieve::Error);
  CHECK(sieve::io::read_submission(dir / "s.csv").size() == 3);
  fs::remove_all(dir);
}

TEST_CASE("submission: one rule for ids and labels, and the writer names the row and the value") {
  using sieve::io::label_problem;
  using sieve::io::submission_id_problem;
  CHECK(label_problem("golden_retriever").empty());
  CHECK(label_problem("-1").empty());
  CHECK(label_problem("\xC3\xA9t\xC3\xA9").empty());  // UTF-8 is fine
  CHECK(label_problem("") == "is empty");
  CHECK(label_problem("golden retriever").rfind("contains a space", 0) == 0);
  CHECK(label_problem("a\tb").rfind("contains a tab", 0) == 0);
  CHECK(label_problem("a\xff") == "is not valid UTF-8 (byte 1)");
  CHECK(submission_id_problem("img 1,\"x\"").empty());  // the CSV writer quotes these
  CHECK(submission_id_problem("") == "is empty");
  CHECK(submission_id_problem("t\xff.x") == "is not valid UTF-8 (byte 1)");
  CHECK(submission_id_problem("a\nb") == "contains a control character");
  // The writer reports the row, the id (escaped) and the label instead of a CSV-level error.
  const auto error_of = [](std::vector<SubmissionRow> rows) {
    try {
      (void)sieve::io::format_submission(rows);
    } catch (const sieve::Error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  CHECK(error_of({{"a", {"x"}}, {"t\xff", {"x"}}}) ==
        "submission writer: 1 problem:\n  row 1 (id 't\\xff'): id is not valid UTF-8 (byte 1)");
  CHECK(error_of({{"a", {"golden retriever"}}}).find("row 0 (id 'a'): label 1 'golden retriever' contains a space") !=
        std::string::npos);
  // Readers apply the same rule.
  CHECK(sub_error("id,predictions\na,x\xff\n").rfind("s.csv:2:", 0) == 0);  // the CSV layer refuses it first
  CHECK_THROWS_WITH_AS(sieve::io::parse_solution("id,label\na,\"b c\"\n", "sol.csv"),
                       doctest::Contains("line 2: label 'b c' contains a space"), sieve::Error);
  // An id the writer refuses is refused on read (fuzz_submission found a TAB id read, then not
  // writable); named escaped, with its line. Solutions too.
  CHECK(sub_error("id,predictions\n\"a\tb\",1\n") ==
        "s.csv: 1 problem:\n  line 2: id 'a\\x09b' contains a control character");
  CHECK_THROWS_WITH_AS(sieve::io::parse_solution("id,label\n\"a\rb\",1\n", "sol.csv"),
                       doctest::Contains("line 2: id 'a\\x0db' contains a control character"), sieve::Error);
}

TEST_CASE("submission: malformed files give line-numbered errors") {
  const Strings ids = {"a", "b", "c"};
  CHECK(sub_error("id,predictions\na,1\nb,2\nc,3\n", &ids) == "accepted");
  CHECK(sub_error("\xEF\xBB\xBFid,predictions\r\na,1 2\r\nb,\"2\"\r\nc,3\r\n", &ids) == "accepted");  // BOM, CRLF, quotes
  CHECK(sub_error("id,predictions\na,  1   2 \n") == "accepted");  // runs of spaces separate labels
  CHECK(sub_error("") == "s.csv: empty file (expected a header line)");
  CHECK(sub_error("ID,Predictions\na,1\n") == "s.csv:1: header is 'ID,Predictions', expected 'id,predictions'");
  CHECK(sub_error("id,predictions,extra\na,1,2\n").find("expected 'id,predictions'") != std::string::npos);
  CHECK(sub_error("id,predictions\na,1\nb\n") == "s.csv:3: 1 field but the header has 2");
  CHECK(sub_error("id,predictions\na,1,2\n") == "s.csv:2: 3 fields but the header has 2");
  CHECK(sub_error("id,predictions\na,1\nb,2\na,3\n") ==
        "s.csv: 1 problem:\n  line 4: duplicate id 'a' (first on line 2)");
  CHECK(sub_error("id,predictions\na,1 2 3 4 5 6\n") == "s.csv: 1 problem:\n  line 2: 6 labels, at most 5 allowed");
  CHECK(sub_error("id,predictions\na,1 2 1\n") ==
        "s.csv: 1 problem:\n  line 2: label '1' appears twice (positions 1 and 3)");
  CHECK(sub_error("id,predictions\na,\n") ==
        "s.csv: 1 problem:\n  line 2: empty predictions (at least one label is required)");
  CHECK(sub_error("id,predictions\n,1\n") == "s.csv: 1 problem:\n  line 2: empty id");
  CHECK(sub_error("id,predictions\na,\"1\t2\"\n").find("line 2: predictions hold a tab") != std::string::npos);
  CHECK(sub_error("id,predictions\na,1\nb,1\nc,1\nd,1\n", &ids) == "s.csv: 1 problem:\n  line 5: unknown id 'd'");
  CHECK(sub_error("id,predictions\nb,1\n", &ids) == "s.csv: 1 problem:\n  2 expected ids missing ('a', 'c')");
  // Several problems are reported together, each with its line.
  const std::string many = sub_error("id,predictions\na,1 1\nz,2\na,\n", &ids);
  CHECK(many.rfind("s.csv: 5 problems:", 0) == 0);
  CHECK(many.find("line 2: label '1' appears twice") != std::string::npos);
  CHECK(many.find("line 4: empty predictions") != std::string::npos);
  CHECK(many.find("line 4: duplicate id 'a' (first on line 2)") != std::string::npos);
  CHECK(many.find("line 3: unknown id 'z'") != std::string::npos);
  CHECK(many.find("2 expected ids missing ('b', 'c')") != std::string::npos);
  // Binary garbage is a CSV error, not a crash or a score.
  CHECK(sub_error(std::string("\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16)).rfind("s.csv:1:", 0) == 0);
  // allow_empty accepts rows without labels.
  sieve::io::SubmissionRules lax;
  lax.allow_empty = true;
  CHECK(parse_submission("id,predictions\na,\n", "s.csv", std::nullopt, lax)[0].labels.empty());
  // Kaggle's rules accept what its evaluator scores (an empty row, a repeated label, more than 5
  // labels), naming each such row in the notes; the default refuses the same rows.
  const std::string odd = "id,predictions\na,2 2 0\nb,\nc,1 2 3 4 5 6\n";
  Strings notes;
  const auto rows = parse_submission(odd, "s.csv", std::nullopt, sieve::io::SubmissionRules::kaggle(), &notes);
  REQUIRE(rows.size() == 3);
  CHECK(rows[0].labels == Strings{"2", "2", "0"});
  CHECK(notes == Strings{"line 2: label '2' appears twice (positions 1 and 2)",
                         "line 3: empty predictions (at least one label is required)",
                         "line 4: 6 labels, at most 5 allowed"});
  CHECK(sub_error(odd).rfind("s.csv: 3 problems:", 0) == 0);
  // Scored as Kaggle's apk does: the first 0 of "2 2 0" is at position 3, the empty row and
  // a true label in sixth place score 0.
  std::vector<Strings> labels;
  for (const auto& r : rows) labels.push_back(r.labels);
  const Strings truth{"0", "1", "6"};
  CHECK(sieve::metrics::map_at_5(labels, truth) == doctest::Approx((1.0 / 3) / 3));
}
