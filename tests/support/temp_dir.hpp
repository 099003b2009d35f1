#pragma once
// A scratch folder under the system temp directory, named after the test and the process,
// emptied when made and removed when the test ends.
#include <unistd.h>

#include <filesystem>
#include <string>

namespace sieve_test {

struct TempDir {
  std::filesystem::path path;
  /// Ensures: `path` does not exist, or (create) exists and is empty.
  explicit TempDir(const std::string& name, bool create = false)
      : path(std::filesystem::temp_directory_path() / ("sieve_test_" + name + "_" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(path);
    if (create) std::filesystem::create_directories(path);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() { std::filesystem::remove_all(path); }
};

}  // namespace sieve_test
