#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <string>

#include "sieve/io/data_folder.hpp"
#include "sieve/io/file.hpp"
#include "sieve/io/image.hpp"

namespace fs = std::filesystem;
using sieve::io::open_data_folder;
using sieve::io::validate_data_folder;

namespace {

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path = fs::temp_directory_path() / ("sieve-df-" + tag + "-" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path / "train");
    fs::create_directories(path / "test");
  }
  ~TempDir() { fs::remove_all(path); }
  void text(const std::string& rel, const std::string& content) const {
    sieve::io::write_file_atomic(path / rel, std::string_view(content));
  }
  void png(const std::string& rel, std::uint8_t v = 100) const { sieve::io::write_png(path / rel, sieve::Image(4, 5, v)); }
};

bool mentions(const std::vector<std::string>& v, const std::string& needle) {
  for (const auto& s : v)
    if (s.find(needle) != std::string::npos) return true;
  return false;
}

}  // namespace

TEST_CASE("a clean data folder opens with classes, train, test and outside samples") {
  TempDir d("clean");
  d.text("train.csv", "id,label\na,10\nb,2\nc,10\n");
  for (auto id : {"a", "b", "c"}) d.png(std::string("train/") + id + ".png");
  for (auto id : {"t2", "t1"}) d.png(std::string("test/") + id + ".png");
  fs::create_directories(d.path / "outside");
  d.png("outside/o1.png");

  auto f = open_data_folder(d.path);
  REQUIRE(f.classes.size() == 2);
  CHECK(f.classes[0] == "2");  // integers sort numerically, not as text ("10" < "2")
  CHECK(f.classes[1] == "10");
  REQUIRE(f.train.size() == 3);
  CHECK(f.train[0].id == "a");
  CHECK(f.train[0].labels == std::vector<std::int32_t>{1});
  CHECK(f.train[1].labels == std::vector<std::int32_t>{0});
  REQUIRE(f.test.size() == 2);
  CHECK(f.test[0].id == "t1");  // sorted without a sample submission
  REQUIRE(f.outside.size() == 1);
  CHECK(f.outside[0].labels == std::vector<std::int32_t>{-1});
  CHECK(f.outside_share() == doctest::Approx(0.25));  // 1 outside of 3 + 1 images
  CHECK(sieve::io::DataFolder{}.outside_share() == 0.0);
  CHECK(f.class_id("10") == 1);
  CHECK(f.class_id("-1") == -1);

  // A sample submission fixes the test order.
  d.text("sample_submission.csv", "id,predictions\nt2,-1\nt1,-1\n");
  f = open_data_folder(d.path);
  CHECK(f.test[0].id == "t2");

  auto r = validate_data_folder(d.path);
  CHECK(r.ok());
  CHECK(r.label_counts.at("10") == 2);
}

TEST_CASE("every structural problem is reported with its file and line") {
  TempDir d("bad");
  d.text("train.csv", "id,label\na,cat\na,dog\n../x,cat\nb,-1\nmissing,cat\nc,\n");
  d.png("train/a.png");
  d.png("train/b.png");
  d.png("train/orphan.jpg");
  d.png("test/t1.png");
  d.text("test/t2.png", "not a png");

  const auto r = validate_data_folder(d.path);
  CHECK_FALSE(r.ok());
  CHECK(mentions(r.errors, "train.csv:3: duplicate id 'a' (first on line 2)"));
  CHECK(mentions(r.errors, "train.csv:4: id contains a path separator"));
  CHECK(mentions(r.errors, "train.csv:5: label -1 is reserved"));
  CHECK(mentions(r.errors, "train.csv:6: no image file train/missing"));
  CHECK(mentions(r.errors, "train.csv:7: label '' is empty"));
  CHECK(mentions(r.errors, "orphan.jpg: image file has no row in train.csv"));
  CHECK(mentions(r.errors, "t2.png"));  // undecodable, named
  CHECK(mentions(r.warnings, "single class"));

  CHECK_THROWS_WITH_AS(open_data_folder(d.path), doctest::Contains("problems in the data folder"), sieve::Error);
}

TEST_CASE("missing pieces and hostile CSVs give errors, not crashes") {
  TempDir d("hostile");
  CHECK_THROWS_WITH_AS(open_data_folder(d.path), doctest::Contains("train.csv"), sieve::Error);
  d.text("train.csv", std::string("id,label\n\"unterminated,x\n"));
  CHECK_FALSE(validate_data_folder(d.path).ok());
  d.text("train.csv", std::string("\x00\xff\xfe garbage", 12));
  CHECK_FALSE(validate_data_folder(d.path).ok());
  d.text("train.csv", "name,class\na,b\n");
  CHECK(mentions(validate_data_folder(d.path).errors, "header must be 'id,label'"));
  CHECK_THROWS_WITH_AS(open_data_folder(d.path / "nope"), doctest::Contains("not a directory"), sieve::Error);
  d.text("train.csv", "id,label\na,x\n");
  d.png("train/a.png");
  d.text("sample_submission.csv", "id,predictions\nghost,-1\n");
  CHECK(mentions(validate_data_folder(d.path).errors, "sample_submission.csv:2: no image file test/ghost"));
}

TEST_CASE("labels and ids a submission cannot hold are refused when the folder is read, naming file and row") {
  TempDir d("rules");
  d.text("train.csv", "id,label\na,golden retriever\nb,cat\nc,\"x\ty\"\n");
  for (auto id : {"a", "b", "c"}) d.png(std::string("train/") + id + ".png");
  d.png("test/t1.png");
  sieve::io::write_png(d.path / "test" / "t\xff.png", sieve::Image(4, 5, 7));  // not UTF-8: no submission id

  const auto r = validate_data_folder(d.path);
  CHECK(mentions(r.errors, "train.csv:2: label 'golden retriever' contains a space"));
  CHECK(mentions(r.errors, "train.csv:4: label 'x\\x09y' contains a tab"));
  CHECK(mentions(r.errors, "t\\xff.png: id is not valid UTF-8 (byte 1)"));
  CHECK(r.errors.size() == 3);
  // train and predict open the folder the same way: refused before any work.
  CHECK_THROWS_WITH_AS(open_data_folder(d.path), doctest::Contains("train.csv:2: label 'golden retriever'"),
                       sieve::Error);
}

TEST_CASE("near-duplicate labels are named with a line of each") {
  using sieve::io::detail::label_fold_key;
  CHECK(label_fold_key("Cat") == "cat");
  CHECK(label_fold_key("007") == "7");
  CHECK(label_fold_key("-007") == "-7");
  CHECK(label_fold_key("0") == "0");
  CHECK(label_fold_key("000") == "0");
  CHECK(label_fold_key("007a") == "007a");                     // not an integer: zeros kept
  CHECK(label_fold_key("caf\xC3\xA9") == "cafe");              // NFC e-acute
  CHECK(label_fold_key("cafe\xCC\x81") == "cafe");             // NFD e + combining acute
  CHECK(label_fold_key("\xC3\x97") == "\xC3\x97");             // the multiplication sign is no letter

  TempDir d("near");
  d.text("train.csv", "id,label\na,cat\nb,1\nc,Cat\nd,01\ne,dog\n");
  for (auto id : {"a", "b", "c", "d", "e"}) d.png(std::string("train/") + id + ".png");
  d.png("test/t1.png");
  const auto r = validate_data_folder(d.path);
  CHECK(r.ok());  // a warning, not an error: they may really be two classes
  CHECK(mentions(r.warnings, "train.csv: labels 'Cat' (line 4) and 'cat' (line 2) differ only in case"));
  CHECK(mentions(r.warnings, "labels '01' (line 5) and '1' (line 3)"));
  CHECK(r.warnings.size() == 2);
}

TEST_CASE("one pass names every problem: CSV syntax, rows, files and images together") {
  TempDir d("onepass");
  // Line 3 is ragged, line 4 holds invalid UTF-8, line 5 a stray quote; the rest still count.
  d.text("train.csv", "id,label\na,cat\nb,dog,extra\nc,\xff\nd,x\"y\na,cat\nghost,dog\ne,dog\n");
  for (auto id : {"a", "b", "c", "d", "e"}) d.png(std::string("train/") + id + ".png");
  d.text("test/t1.png", "not a png");
  d.png("train/orphan.png");

  const auto r = validate_data_folder(d.path);
  CHECK(mentions(r.errors, "train.csv:3: 3 fields but the header has 2"));
  CHECK(mentions(r.errors, "train.csv:4:3: invalid UTF-8"));
  CHECK(mentions(r.errors, "train.csv:5:4: quote inside an unquoted field"));
  CHECK(mentions(r.errors, "train.csv:6: duplicate id 'a' (first on line 2)"));
  CHECK(mentions(r.errors, "train.csv:7: no image file train/ghost"));
  CHECK(mentions(r.errors, "orphan.png: image file has no row in train.csv"));
  CHECK(mentions(r.errors, "t1.png"));
  REQUIRE(r.error_kinds.size() == r.errors.size());
  using sieve::io::ProblemKind;
  CHECK(std::count(r.error_kinds.begin(), r.error_kinds.end(), ProblemKind::csv) == 3);
  CHECK(std::count(r.error_kinds.begin(), r.error_kinds.end(), ProblemKind::image) == 1);
  // b, c and d have image files but lost their rows to the syntax problems: named as well.
  CHECK(r.errors.size() == 3 + 1 + 1 + 4 + 1);
  CHECK(r.folder.train.size() == 2);  // a and e
}

TEST_CASE("a symbolic link leaving the data folder is refused and named; links inside it are fine") {
  TempDir d("links");
  TempDir elsewhere("links-elsewhere");
  elsewhere.png("train/secret.png");
  d.text("train.csv", "id,label\na,cat\nb,dog\nc,dog\n");
  d.png("train/a.png");
  fs::create_directories(d.path / "outside");
  d.png("outside/o1.png");
  fs::create_symlink(elsewhere.path / "train" / "secret.png", d.path / "train" / "b.png");  // leaves: refused
  fs::create_symlink(d.path / "outside" / "o1.png", d.path / "train" / "c.png");            // stays inside: fine
  fs::create_symlink(elsewhere.path / "train" / "secret.png", d.path / "test" / "t1.png");
  d.png("test/t2.png");

  const auto r = validate_data_folder(d.path.string() + "/");  // a trailing slash changes nothing
  const std::string want = (d.path / "train" / "b.png").string() + ": symbolic link to " +
                           (elsewhere.path / "train" / "secret.png").string() + ", outside the data folder";
  CHECK(mentions(r.errors, want));
  CHECK(mentions(r.errors, "t1.png: symbolic link to"));
  CHECK(r.errors.size() == 2);  // b's row is not reported again as missing its file
  REQUIRE(r.folder.train.size() == 2);
  CHECK(r.folder.train[1].id == "c");
  CHECK_THROWS_WITH_AS(open_data_folder(d.path), doctest::Contains("outside the data folder"), sieve::Error);
}
