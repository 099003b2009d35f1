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
