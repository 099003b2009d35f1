#pragma once
/// One writer per run folder: RUN/.lock held with flock(2) while a run trains. A second trainer
/// (a second `--resume RUN`, or a new run into the same folder) fails at once, naming the folder
/// and the holder's pid, instead of racing on checkpoint renames and metrics lines. The kernel
/// drops a flock when its holder dies, kill -9 included, so no stale lock survives a crash.
///
/// flock locks belong to an open file description: two RunLocks on one folder conflict even in
/// one process. The file itself stays (unlinking it would let a newcomer lock a fresh inode
/// while a holder still locks the old one); its text is the last holder's pid, for messages.

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <utility>

#include "sieve/core/check.hpp"
#include "sieve/io/file.hpp"

namespace sieve::train {

class RunLock {
 public:
  static constexpr const char* kFileName = ".lock";

  /// Lock the run folder `run`. Requires: `run` is an existing directory.
  /// Ensures: this process holds RUN/.lock until the RunLock is destroyed. Throws sieve::Error
  /// naming the folder and the holder's pid (when it wrote one) if another holder has it.
  explicit RunLock(const std::filesystem::path& run) : path_(run / kFileName) {
    SIEVE_CHECK(std::filesystem::is_directory(run), "run lock: ", run.string(), " is not a directory");
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd_ < 0) fail("run lock: cannot open ", path_.string(), ": ", std::strerror(errno));
    int rc;
    while ((rc = ::flock(fd_, LOCK_EX | LOCK_NB)) != 0 && errno == EINTR) {
    }
    if (rc != 0) {
      const int err = errno;
      const std::string holder = holder_pid();
      ::close(fd_);
      fd_ = -1;
      if (err == EWOULDBLOCK)
        fail("run folder ", run.string(), " is in use by another process (", holder.empty() ? "pid unknown" : "pid " + holder,
             ", holding ", path_.string(), "): wait for it to finish or stop it, then retry");
      fail("run lock: flock on ", path_.string(), " failed: ", std::strerror(err));
    }
    const std::string pid = std::to_string(::getpid()) + "\n";
    if (::ftruncate(fd_, 0) == 0) {
      try {
        io::detail::write_all(fd_, reinterpret_cast<const std::byte*>(pid.data()), pid.size(), path_);
      } catch (...) {  // the pid is only for messages; the lock holds without it
      }
    }
  }
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;
  RunLock(RunLock&& o) noexcept : path_(std::move(o.path_)), fd_(std::exchange(o.fd_, -1)) {}
  RunLock& operator=(RunLock&&) = delete;
  /// Releases the lock (closing the descriptor releases it).
  ~RunLock() {
    if (fd_ >= 0) ::close(fd_);
  }

  const std::filesystem::path& path() const { return path_; }

  /// True when `run` holds nothing but (possibly) its lock file: a folder a new run may use.
  static bool folder_is_empty(const std::filesystem::path& run) {
    for (const auto& e : std::filesystem::directory_iterator(run))
      if (e.path().filename() != kFileName) return false;
    return true;
  }

 private:
  /// The pid the holder wrote ("" when unreadable or not written yet), read through our own fd.
  std::string holder_pid() const {
    char buf[32] = {};
    const ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
    std::string s = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos ? s : std::string();
  }

  std::filesystem::path path_;
  int fd_ = -1;
};

}  // namespace sieve::train
