#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>

#include "sieve/io/file.hpp"

namespace fs = std::filesystem;

TEST_CASE("atomic write then read back; errors name the file") {
  const fs::path dir = fs::temp_directory_path() / ("sieve-test-file-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path p = dir / "a.bin";
  sieve::io::write_file_atomic(p, std::string_view("hello"));
  auto bytes = sieve::io::read_file(p);
  CHECK(std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()) == "hello");
  sieve::io::write_file_atomic(p, std::string_view("replaced"));
  CHECK(sieve::io::read_file(p).size() == 8);
  // No temporary files are left behind.
  int entries = 0;
  for ([[maybe_unused]] auto& e : fs::directory_iterator(dir)) ++entries;
  CHECK(entries == 1);

  CHECK_THROWS_WITH_AS(sieve::io::read_file(p, 4), doctest::Contains("a.bin: file is 8 bytes, over the limit of 4"),
                       sieve::Error);
  CHECK_THROWS_WITH_AS(sieve::io::read_file(dir / "missing"), doctest::Contains("missing: cannot open"), sieve::Error);
  CHECK_THROWS_WITH_AS(sieve::io::read_file(dir), doctest::Contains("not a regular file"), sieve::Error);
  CHECK_THROWS_WITH_AS(sieve::io::write_file_atomic(dir / "no" / "such" / "x", std::string_view("x")),
                       doctest::Contains("cannot create a temporary file"), sieve::Error);
  fs::remove_all(dir);
}

TEST_CASE("remove_stale_atomic_temps: only the atomic writer's leftovers go") {
  const auto dir = std::filesystem::temp_directory_path() / ("sieve_stale_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  for (const char* n : {".metrics.jsonl.tmp.hE3vT9", ".config.json.tmp.abc123", "metrics.jsonl", ".lock", "a.tmp.abcdef"})
    std::ofstream(dir / n) << "x";
  std::filesystem::create_directories(dir / ".last.tmp.zzzzzz");  // a checkpoint slot: not ours to remove
  CHECK(sieve::io::remove_stale_atomic_temps(dir) == 2);
  CHECK_FALSE(std::filesystem::exists(dir / ".metrics.jsonl.tmp.hE3vT9"));
  CHECK(std::filesystem::exists(dir / "metrics.jsonl"));
  CHECK(std::filesystem::exists(dir / ".lock"));
  CHECK(std::filesystem::exists(dir / "a.tmp.abcdef"));
  CHECK(std::filesystem::exists(dir / ".last.tmp.zzzzzz"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("a FIFO where a file is expected is refused at once, not waited on") {
  const fs::path dir = fs::temp_directory_path() / ("sieve-test-fifo-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path fifo = dir / "train.csv";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  auto reader = std::async(std::launch::async, [&] {
    try {
      (void)sieve::io::read_file(fifo);
    } catch (const sieve::Error& e) {
      return std::string(e.what());
    }
    return std::string("read");
  });
  const bool in_time = reader.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  if (!in_time) ::close(::open(fifo.c_str(), O_WRONLY | O_NONBLOCK));  // a writer that leaves: unblocks the reader
  CHECK(in_time);
  CHECK(reader.get() == fifo.string() + ": not a regular file (a FIFO)");
  fs::remove_all(dir);
}

TEST_CASE("check_can_write: a missing folder, a file as folder, a directory as target, a read-only folder") {
  const fs::path dir = fs::temp_directory_path() / ("sieve-test-canwrite-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  sieve::io::check_can_write(dir / "sub.csv", "--out");  // a writable folder: fine, and nothing left there
  CHECK(fs::is_empty(dir));
  const std::string missing = "--out " + (dir / "nope" / "sub.csv").string() + ": its folder " +
                              (dir / "nope").string() + " does not exist";
  CHECK_THROWS_WITH_AS(sieve::io::check_can_write(dir / "nope" / "sub.csv", "--out"),
                       doctest::Contains(missing.c_str()), sieve::Error);
  sieve::io::write_file_atomic(dir / "file", std::string_view("x"));
  const std::string not_dir = (dir / "file").string() + " is not a directory";
  CHECK_THROWS_WITH_AS(sieve::io::check_can_write(dir / "file" / "sub.csv", "--out"),
                       doctest::Contains(not_dir.c_str()), sieve::Error);
  CHECK_THROWS_WITH_AS(sieve::io::check_can_write(dir, "--out"), doctest::Contains("is a directory, not a file"),
                       sieve::Error);
  if (::geteuid() != 0) {  // root writes into a mode-0555 folder anyway
    fs::create_directories(dir / "ro");
    fs::permissions(dir / "ro", fs::perms::owner_read | fs::perms::owner_exec);
    const std::string denied = "cannot create a file in " + (dir / "ro").string();
    CHECK_THROWS_WITH_AS(sieve::io::check_can_write(dir / "ro" / "sub.csv", "--out"),
                         doctest::Contains(denied.c_str()), sieve::Error);
    fs::permissions(dir / "ro", fs::perms::owner_all);
  }
  fs::remove_all(dir);
}
