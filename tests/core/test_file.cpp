#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
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
