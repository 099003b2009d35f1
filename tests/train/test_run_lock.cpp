// The run lock: one holder per run folder, a clear error naming the folder and the holder's
// pid, released on destruction and when the holder is killed with SIGKILL.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "sieve/train/run_lock.hpp"
#include "support/child_process.hpp"
#include "support/temp_dir.hpp"

namespace fs = std::filesystem;
using sieve_test::TempDir;
using namespace sieve;

TEST_CASE("run lock: a second lock on the folder fails naming it and the holder's pid; released on destruction") {
  TempDir d("run_lock", true);
  const std::string me = "pid " + std::to_string(::getpid());
  {
    train::RunLock first(d.path);
    // A second open file description conflicts even in the same process.
    CHECK_THROWS_WITH_AS(train::RunLock{d.path},
                         doctest::Contains(("run folder " + d.path.string() + " is in use by another process (" + me).c_str()),
                         Error);
    train::RunLock moved(std::move(first));  // the lock travels with the descriptor
    CHECK_THROWS_AS(train::RunLock{d.path}, Error);
    CHECK(train::RunLock::folder_is_empty(d.path));  // the lock file alone does not make a run
  }
  train::RunLock again(d.path);  // released
  CHECK(again.path() == d.path / ".lock");
  std::ofstream(d.path / "config.json") << "{}";
  CHECK_FALSE(train::RunLock::folder_is_empty(d.path));
  CHECK_THROWS_WITH_AS(train::RunLock{d.path / "missing"}, doctest::Contains("missing is not a directory"), Error);
}

// Child half of the kill -9 test: re-executed as a separate process, locks and waits.
TEST_CASE("run lock holder child (does nothing unless SIEVE_LOCK_CHILD_DIR is set)") {
  const char* dir = std::getenv("SIEVE_LOCK_CHILD_DIR");
  if (!dir) return;
  train::RunLock lock(dir);
  std::ofstream(fs::path(dir).parent_path() / "locked") << "1\n";
  for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
}

TEST_CASE("run lock: kill -9 of the holder leaves no stale lock") {
  TempDir tmp("run_lock_kill", true);
  const fs::path run = tmp.path / "run";
  fs::create_directories(run);
  const pid_t pid = sieve_test::spawn_test_case("run lock holder child*", {{"SIEVE_LOCK_CHILD_DIR", run.string()}});
  REQUIRE(pid >= 0);
  const bool locked = sieve_test::wait_for_file(tmp.path / "locked");
  if (locked)
    CHECK_THROWS_WITH_AS(train::RunLock{run}, doctest::Contains(("pid " + std::to_string(pid) + ",").c_str()), Error);
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  REQUIRE_MESSAGE(locked, "lock holder child did not lock within 60 s");
  CHECK(WIFSIGNALED(status));
  train::RunLock after(run);  // the kernel released the dead holder's lock
  CHECK(after.path() == run / ".lock");
}
