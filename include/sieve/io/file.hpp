#pragma once
/// Whole-file reads with a size cap, and crash-safe atomic writes.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sieve/core/check.hpp"

namespace sieve::io {

namespace detail {
inline std::string errno_text() { return std::strerror(errno); }

inline void write_all(int fd, const std::byte* data, std::size_t size, const std::filesystem::path& path) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(path.string(), ": write failed: ", errno_text());
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
}

inline void fsync_dir(const std::filesystem::path& dir) {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail(dir.string(), ": cannot open directory to fsync: ", errno_text());
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) fail(dir.string(), ": fsync of directory failed: ", errno_text());
}
}  // namespace detail

/// What a file is when it is not a regular one ("a FIFO", "a directory", ...), for errors.
inline const char* file_type_name(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

/// Open `path` (symlinks followed) for reading only if it is a regular file, filling `st`.
/// A FIFO or device named where a file is expected would make a plain open() or read() wait
/// forever: the file is opened non-blocking, checked with fstat (no window between a check and
/// the open), and only then switched to blocking reads.
/// Ensures: a descriptor the caller closes. Throws sieve::Error naming the path and what it is.
inline int open_regular_file(const std::filesystem::path& path, struct ::stat& st) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) fail(path.string(), ": cannot open: ", detail::errno_text());
  if (::fstat(fd, &st) != 0) {
    const std::string why = detail::errno_text();
    ::close(fd);
    fail(path.string(), ": cannot stat: ", why);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path.string(), ": not a regular file (", file_type_name(st.st_mode), ")");
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    const std::string why = detail::errno_text();
    ::close(fd);
    fail(path.string(), ": cannot set blocking reads: ", why);
  }
  return fd;
}

/// Read a whole file. Throws sieve::Error naming the file when it cannot be opened or read,
/// when it is not a regular file (see open_regular_file), or when it is larger than `max_bytes`.
inline std::vector<std::byte> read_file(const std::filesystem::path& path,
                                        std::uint64_t max_bytes = std::uint64_t{1} << 34) {
  struct ::stat st {};
  const int fd = open_regular_file(path, st);
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size > max_bytes) {
    ::close(fd);
    fail(path.string(), ": file is ", size, " bytes, over the limit of ", max_bytes);
  }
  std::vector<std::byte> out(static_cast<std::size_t>(size));
  std::size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = ::read(fd, out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string why = n < 0 ? detail::errno_text() : "file shrank while reading";
      ::close(fd);
      fail(path.string(), ": read failed after ", got, " of ", size, " bytes: ", why);
    }
    got += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return out;
}

/// Remove the temporary files write_file_atomic leaves in `dir` when a process is killed
/// between its write and its rename (".NAME.tmp.XXXXXX"); returns how many. Only for a
/// directory whose one writer is the caller (a locked run folder): another writer's temporary
/// file would go too. Never throws.
inline std::size_t remove_stale_atomic_temps(const std::filesystem::path& dir) noexcept {
  std::error_code ec;
  std::vector<std::filesystem::path> stale;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string n = it->path().filename().string();
    if (n.size() > 12 && n[0] == '.' && n.compare(n.size() - 11, 5, ".tmp.") == 0 && it->is_regular_file(ec))
      stale.push_back(it->path());
  }
  std::size_t removed = 0;
  for (const auto& p : stale) removed += std::filesystem::remove(p, ec) ? 1 : 0;
  return removed;
}

/// Replace `path` with `data` atomically: write a temporary file in the same directory,
/// fsync it, rename it over `path`, fsync the directory. A crash at any moment leaves either
/// the old file or the new one, never a mix. Throws sieve::Error naming the file.
inline void write_file_atomic(const std::filesystem::path& path, std::span<const std::byte> data) {
  const auto dir = path.parent_path();
  std::string name = ".";
  name += path.filename().string();
  name += ".tmp.XXXXXX";
  std::string tmpl = (dir / name).string();
  const int fd = ::mkstemp(tmpl.data());
  if (fd < 0) fail(path.string(), ": cannot create a temporary file beside it: ", detail::errno_text());
  try {
    detail::write_all(fd, data.data(), data.size(), path);
    if (::fsync(fd) != 0) fail(path.string(), ": fsync failed: ", detail::errno_text());
    if (::fchmod(fd, 0644) != 0) fail(path.string(), ": fchmod failed: ", detail::errno_text());
  } catch (...) {
    ::close(fd);
    ::unlink(tmpl.c_str());
    throw;
  }
  ::close(fd);
  if (::rename(tmpl.c_str(), path.c_str()) != 0) {
    const std::string why = detail::errno_text();
    ::unlink(tmpl.c_str());
    fail(path.string(), ": rename into place failed: ", why);
  }
  detail::fsync_dir(dir);
}

/// Check, before slow work that ends by writing `path` with write_file_atomic, that it can be
/// written: its folder exists, is a directory and accepts a new file (a temporary file is
/// created there and removed; this also catches a read-only mount and root's EROFS), and `path`
/// is not a directory. Throws sieve::Error naming `what`, the path and the problem.
inline void check_can_write(const std::filesystem::path& path, std::string_view what) {
  const auto dir = path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path();
  struct ::stat st{};
  if (::stat(dir.c_str(), &st) != 0)
    fail(what, " ", path.string(), ": its folder ", dir.string(),
         errno == ENOENT ? std::string(" does not exist") : ": " + detail::errno_text());
  if (!S_ISDIR(st.st_mode)) fail(what, " ", path.string(), ": ", dir.string(), " is not a directory");
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
    fail(what, " ", path.string(), " is a directory, not a file");
  std::string tmpl = (dir / ".sieve-write-check.tmp.XXXXXX").string();
  const int fd = ::mkstemp(tmpl.data());
  if (fd < 0) fail(what, " ", path.string(), ": cannot create a file in ", dir.string(), ": ", detail::errno_text());
  ::close(fd);
  ::unlink(tmpl.c_str());
}

/// Write `data` to `path` (created or truncated) without fsync: for bulk output that is made
/// durable as a whole (written into a staging directory, synced once, then renamed).
inline void write_file(const std::filesystem::path& path, std::span<const std::byte> data) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(path.string(), ": cannot create: ", detail::errno_text());
  try {
    detail::write_all(fd, data.data(), data.size(), path);
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (::close(fd) != 0) fail(path.string(), ": close failed: ", detail::errno_text());
}

/// Append `text` to `path` (created if missing) and fsync it: for logs whose lines must be on
/// disk before a checkpoint that counts them. A crash mid-write can leave a torn last line;
/// readers of such logs skip a last line without its '\n'. Throws sieve::Error naming the file.
inline void append_file_durable(const std::filesystem::path& path, std::string_view text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) fail(path.string(), ": cannot open to append: ", detail::errno_text());
  try {
    detail::write_all(fd, reinterpret_cast<const std::byte*>(text.data()), text.size(), path);
    if (::fsync(fd) != 0) fail(path.string(), ": fsync failed: ", detail::errno_text());
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (::close(fd) != 0) fail(path.string(), ": close failed: ", detail::errno_text());
}

/// Flush every file of the filesystem holding `path` to stable storage (syncfs).
inline void sync_filesystem(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path.string(), ": cannot open to sync: ", detail::errno_text());
  const int rc = ::syncfs(fd);
  ::close(fd);
  if (rc != 0) fail(path.string(), ": syncfs failed: ", detail::errno_text());
}

inline void write_file_atomic(const std::filesystem::path& path, std::string_view text) {
  write_file_atomic(path, std::as_bytes(std::span<const char>(text.data(), text.size())));
}

}  // namespace sieve::io
