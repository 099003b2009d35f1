#pragma once
/// Durable checkpoint directories: RUN/<slot>/ (slot = "last" or "best") holding named files
/// plus a MANIFEST of their sizes and CRC-32s, replaced as a whole so a crash (kill -9, power
/// loss) at any instant leaves the previous complete checkpoint or the new one, never a mix.
///
/// Save protocol (single writer per run directory):
///   1. remove stale RUN/.<slot>.tmp-* / .<slot>.old-* left by an earlier crash (never <slot>);
///   2. mkdtemp RUN/.<slot>.tmp-XXXXXX; write each file atomically (temp + fsync + rename);
///   3. write MANIFEST last, atomically; fsync the temp directory;
///   4. swap the temp directory with RUN/<slot> by renameat2(RENAME_EXCHANGE) — one atomic
///      step — or, on the first save, rename it into place; fsync RUN;
///   5. delete the old checkpoint (now under the temp name).
/// Crash before 4: <slot> untouched, the temp directory is garbage removed by step 1 next
/// time. Crash after 4: <slot> is the new, complete checkpoint. File systems without
/// RENAME_EXCHANGE use two renames (<slot> -> .<slot>.old-X, temp -> <slot>); a crash between
/// them leaves no <slot>, and recover_slot() (called by save and load) renames the verified
/// .old-X back. Loading verifies MANIFEST's own checksum, then every file's size and CRC-32.

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/io/detail/text.hpp"
#include "sieve/io/file.hpp"

namespace sieve::train {

/// CRC-32 (zlib's, polynomial 0xEDB88320) of a byte buffer, fed in chunks that fit uInt.
inline std::uint32_t crc32_of(std::span<const std::byte> data) {
  uLong crc = ::crc32(0L, Z_NULL, 0);
  const auto* p = reinterpret_cast<const Bytef*>(data.data());
  std::size_t left = data.size();
  while (left > 0) {
    const auto n = static_cast<uInt>(std::min<std::size_t>(left, 1u << 30));
    crc = ::crc32(crc, p, n);
    p += n;
    left -= n;
  }
  return static_cast<std::uint32_t>(crc);
}

inline std::uint32_t crc32_of(std::string_view text) {
  return crc32_of(std::as_bytes(std::span<const char>(text.data(), text.size())));
}

/// The files of one checkpoint, by name (e.g. "model.safetensors").
using CheckpointFiles = std::map<std::string, std::vector<std::byte>>;

namespace detail {

inline constexpr const char* kManifest = "MANIFEST";
inline constexpr const char* kManifestMagic = "sieve-checkpoint v1";

inline std::string hex32(std::uint32_t v) {
  char buf[12];
  std::snprintf(buf, sizeof buf, "%08x", v);
  return buf;
}

inline std::string manifest_text(const CheckpointFiles& files) {
  std::string body = std::string(kManifestMagic) + "\n";
  for (const auto& [name, bytes] : files) body += "file " + hex32(crc32_of(bytes)) + " " + std::to_string(bytes.size()) + " " + name + "\n";
  return body + "end " + hex32(crc32_of(body)) + "\n";
}

struct ManifestEntry {
  std::string name;
  std::uint32_t crc;
  std::uint64_t size;
};

inline std::vector<ManifestEntry> parse_manifest(const std::filesystem::path& dir) {
  const auto path = dir / kManifest;
  if (!std::filesystem::exists(path))
    fail("checkpoint ", dir.string(), ": ", kManifest, " is missing (incomplete or not a sieve checkpoint)");
  const auto bytes = io::read_file(path, 1u << 20);
  const std::string text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  const auto end_at = text.rfind("end ");
  if (text.rfind(kManifestMagic, 0) != 0 || end_at == std::string::npos || (end_at > 0 && text[end_at - 1] != '\n'))
    fail("checkpoint ", path.string(), ": truncated or malformed manifest (", bytes.size(), " bytes)");
  const std::string body = text.substr(0, end_at);
  if (text.substr(end_at) != "end " + hex32(crc32_of(body)) + "\n")
    fail("checkpoint ", path.string(), ": manifest checksum mismatch (corrupted)");
  std::vector<ManifestEntry> out;
  std::istringstream in(body);
  std::string line;
  std::getline(in, line);  // magic
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string tag, crc_hex, name;
    std::uint64_t size = 0;
    ls >> tag >> crc_hex >> size;
    std::getline(ls >> std::ws, name);
    std::uint32_t crc = 0;
    const auto [crc_end, crc_ec] = std::from_chars(crc_hex.data(), crc_hex.data() + crc_hex.size(), crc, 16);
    // A name is one plain file of the checkpoint directory: no '/', no NUL (which would cut
    // the path short), not "." or "..", within NAME_MAX.
    const bool plain_name = !name.empty() && name.size() <= 255 && name.find('/') == std::string::npos &&
                            name.find('\0') == std::string::npos && name != "." && name != ".." && name != kManifest;
    if (tag != "file" || crc_hex.size() != 8 || crc_ec != std::errc() ||
        crc_end != crc_hex.data() + crc_hex.size() || !plain_name)
      fail("checkpoint ", path.string(), ": malformed manifest line '", io::detail::printable(line), "'");
    out.push_back({name, crc, size});
  }
  return out;
}

/// Remove a directory tree we created (checkpoint directories hold only regular files).
inline void remove_tree(const std::filesystem::path& p) {
  std::error_code ec;
  std::filesystem::remove_all(p, ec);
}

inline bool is_stale_name(const std::string& name, const std::string& slot) {
  return name.rfind("." + slot + ".tmp-", 0) == 0 || name.rfind("." + slot + ".old-", 0) == 0;
}

}  // namespace detail

/// Verify and read the checkpoint in `dir`. Throws sieve::Error naming the checkpoint and the
/// file when the manifest is missing, a file is missing, truncated (size differs) or corrupted
/// (CRC-32 differs). Ensures: every returned file matches the manifest byte for byte.
inline CheckpointFiles load_checkpoint_files(const std::filesystem::path& dir) {
  CheckpointFiles out;
  for (const auto& e : detail::parse_manifest(dir)) {
    const auto path = dir / e.name;
    if (!std::filesystem::exists(path)) fail("checkpoint ", dir.string(), ": file ", e.name, " listed in the manifest is missing");
    auto bytes = io::read_file(path, e.size + 1);
    if (bytes.size() != e.size)
      fail("checkpoint ", dir.string(), ": file ", e.name, " is truncated or resized: ", bytes.size(),
           " bytes but the manifest says ", e.size);
    if (crc32_of(bytes) != e.crc)
      fail("checkpoint ", dir.string(), ": file ", e.name, " is corrupted: CRC-32 ", detail::hex32(crc32_of(bytes)),
           " but the manifest says ", detail::hex32(e.crc));
    out.emplace(e.name, std::move(bytes));
  }
  return out;
}

/// True when `dir` holds a checkpoint whose manifest and files all verify.
inline bool checkpoint_is_valid(const std::filesystem::path& dir) {
  try {
    (void)load_checkpoint_files(dir);
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

/// If RUN/<slot> is missing because a two-rename swap was interrupted, rename the newest
/// verified RUN/.<slot>.old-* (or a verified .tmp-*) back to RUN/<slot>. Returns true when it did.
inline bool recover_slot(const std::filesystem::path& run, const std::string& slot) {
  namespace fs = std::filesystem;
  if (fs::exists(run / slot) || !fs::is_directory(run)) return false;
  fs::path best;
  fs::file_time_type best_time{};
  for (const auto& d : fs::directory_iterator(run)) {
    const std::string name = d.path().filename().string();
    if (!d.is_directory() || !detail::is_stale_name(name, slot) || !checkpoint_is_valid(d.path())) continue;
    const auto t = fs::last_write_time(d.path() / detail::kManifest);
    if (best.empty() || t > best_time) best = d.path(), best_time = t;
  }
  if (best.empty()) return false;
  if (::rename(best.c_str(), (run / slot).c_str()) != 0)
    fail("checkpoint ", (run / slot).string(), ": recovery rename from ", best.string(), " failed: ", std::strerror(errno));
  io::detail::fsync_dir(run);
  return true;
}

/// Remove the folder of a new run that failed before it saved a checkpoint: nothing in it can be
/// resumed, and a half-made folder makes the same command refuse it as not empty. Keeps the
/// folder (returns false) when it holds any directory (a checkpoint slot, complete or
/// half-renamed) or cannot be listed; else removes its files and, when `remove_folder`, the
/// folder itself, and returns true. Never throws (it runs while an error is on its way out).
inline bool remove_unfinished_run(const std::filesystem::path& run, bool remove_folder) noexcept {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<fs::path> files;
  for (fs::directory_iterator it(run, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_directory(ec) || ec) return false;
    files.push_back(it->path());
  }
  if (ec) return false;
  for (const auto& f : files) fs::remove(f, ec);
  if (remove_folder) fs::remove(run, ec);
  return true;
}

struct SaveOptions {
  /// Test hook: skip RENAME_EXCHANGE and use the two-rename fallback.
  bool force_two_renames = false;
};

/// Write `files` as checkpoint RUN/<slot> following the protocol above.
/// Requires: file names are plain (no '/'), not "MANIFEST"; one writer per run directory.
/// Ensures: on return RUN/<slot> is the new checkpoint, durable (fsynced); on a throw or a crash
/// RUN/<slot> is the previous complete checkpoint (or, if there was none, absent).
inline void save_checkpoint_files(const std::filesystem::path& run, const std::string& slot, const CheckpointFiles& files,
                                  SaveOptions options = {}) {
  namespace fs = std::filesystem;
  SIEVE_CHECK(!slot.empty() && slot.find('/') == std::string::npos && slot[0] != '.', "save_checkpoint: bad slot name '",
              slot, "'");
  fs::create_directories(run);
  recover_slot(run, slot);
  for (const auto& d : fs::directory_iterator(run))
    if (detail::is_stale_name(d.path().filename().string(), slot)) detail::remove_tree(d.path());

  std::string tmpl = (run / ("." + slot + ".tmp-XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr)
    fail("checkpoint ", (run / slot).string(), ": cannot create a temporary directory in ", run.string(), ": ",
         std::strerror(errno));
  const fs::path tmp = tmpl;
  try {
    for (const auto& [name, bytes] : files) {
      SIEVE_CHECK(!name.empty() && name.find('/') == std::string::npos && name != detail::kManifest,
                  "save_checkpoint: bad file name '", name, "'");
      io::write_file_atomic(tmp / name, bytes);
    }
    io::write_file_atomic(tmp / detail::kManifest, detail::manifest_text(files));
    io::detail::fsync_dir(tmp);
    ::chmod(tmp.c_str(), 0755);
    const fs::path target = run / slot;
    if (!fs::exists(target)) {
      if (::rename(tmp.c_str(), target.c_str()) != 0)
        fail("checkpoint ", target.string(), ": rename into place failed: ", std::strerror(errno));
      io::detail::fsync_dir(run);
      return;
    }
    bool exchanged = false;
    if (!options.force_two_renames) {
      if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) == 0)
        exchanged = true;
      else if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
        fail("checkpoint ", target.string(), ": atomic exchange with ", tmp.string(), " failed: ", std::strerror(errno));
    }
    if (!exchanged) {
      std::string old = (run / ("." + slot + ".old-XXXXXX")).string();
      const int fd = ::mkstemp(old.data());  // reserve a unique name, then free it for the rename
      if (fd >= 0) ::close(fd), ::unlink(old.c_str());
      if (::rename(target.c_str(), old.c_str()) != 0)
        fail("checkpoint ", target.string(), ": moving the previous checkpoint aside failed: ", std::strerror(errno));
      if (::rename(tmp.c_str(), target.c_str()) != 0) {
        const std::string why = std::strerror(errno);
        ::rename(old.c_str(), target.c_str());
        fail("checkpoint ", target.string(), ": rename into place failed: ", why);
      }
      io::detail::fsync_dir(run);
      detail::remove_tree(old);
      return;
    }
    io::detail::fsync_dir(run);
    detail::remove_tree(tmp);  // now holds the previous checkpoint
  } catch (...) {
    if (fs::exists(run / slot)) detail::remove_tree(tmp);
    throw;
  }
}

}  // namespace sieve::train
