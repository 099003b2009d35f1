#pragma once
// Crash tests: this test binary re-executed as a child that runs one test case (which does
// nothing unless its environment variables are set), and a wait for the file it writes.
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace sieve_test {

/// Fork and exec /proc/self/exe running only the test cases named by `test_case` (a doctest
/// filter), with `env` set. Returns the child's pid (-1 when fork fails).
inline pid_t spawn_test_case(const char* test_case, const std::vector<std::pair<std::string, std::string>>& env) {
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  for (const auto& [name, value] : env) ::setenv(name.c_str(), value.c_str(), 1);
  const std::string filter = std::string("--test-case=") + test_case;
  ::execl("/proc/self/exe", "test_train", filter.c_str(), "--no-intro", "--no-version", static_cast<char*>(nullptr));
  ::_exit(127);
}

/// Wait until `path` exists, at most `seconds` (slow under sanitizers and load). True when it does.
inline bool wait_for_file(const std::filesystem::path& path, int seconds = 60) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (!std::filesystem::exists(path) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  return std::filesystem::exists(path);
}

}  // namespace sieve_test
