// libFuzzer harness for what `sieve train` resumes from (sieve/train/checkpoint.hpp and
// train/detail/flat_json.hpp): a checkpoint's MANIFEST and its state.json. Any bytes must give
// a result or a sieve::Error, never a crash, a sanitizer report, an abort or another exception.
//
// The first byte says what the rest is:
//   'S'        state.json text, for FlatJson::parse (also the reader of metrics.jsonl lines);
//   'B'        a MANIFEST body: the harness appends the "end <crc>" line it needs, so the line
//              parser behind the checksum is reached (a mutated MANIFEST almost never has one);
//   otherwise  a whole MANIFEST, checksum line included (the seeds use 'M').
// A MANIFEST is read from a file (load_checkpoint_files takes a directory): one directory per
// process under $TMPDIR, removed at exit, holding MANIFEST and one listed file kData.
// Invariants: a loaded checkpoint's files match their manifest lines (size, CRC-32), and the
// manifest the writer makes of them loads back the same files; a parsed state.json dumps and
// parses back to the same keys and values, and its typed getters give a value or an Error.
// Run: tools/fuzz.sh checkpoint 60
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "sieve/train/checkpoint.hpp"
#include "sieve/train/detail/flat_json.hpp"

namespace {

namespace fs = std::filesystem;
using sieve::train::CheckpointFiles;

void require(bool ok) {
  if (!ok) __builtin_trap();
}

// A file the checkpoint directory always holds, so manifests naming it can verify.
constexpr const char* kDataName = "model.safetensors";
constexpr std::string_view kData = "not really safetensors\n";

void write_text(const fs::path& path, std::string_view text) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(text.data(), 1, text.size(), f) != text.size() || std::fclose(f) != 0) {
    std::perror(path.c_str());
    std::abort();  // the harness's own failure, not the library's
  }
}

// The per-process checkpoint directory, created on first use and removed at exit.
struct CheckpointDir {
  fs::path path;
  CheckpointDir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/sieve-fuzz-checkpoint.XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) {
      std::perror("mkdtemp");
      std::abort();
    }
    path = tmpl;
    write_text(path / kDataName, kData);
  }
  ~CheckpointDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

const fs::path& checkpoint_dir() {
  static CheckpointDir dir;
  return dir.path;
}

void fuzz_manifest(std::string_view manifest) {
  const fs::path& dir = checkpoint_dir();
  write_text(dir / "MANIFEST", manifest);
  std::optional<CheckpointFiles> files;
  try {
    files = sieve::train::load_checkpoint_files(dir);
  } catch (const sieve::Error&) {
    return;
  }
  // What loaded matches the manifest line by line (a name listed twice loads once).
  const auto entries = sieve::train::detail::parse_manifest(dir);
  for (const auto& e : entries) {
    require(!e.name.empty() && e.name.find('/') == std::string::npos && e.name != "MANIFEST");
    const auto it = files->find(e.name);
    require(it != files->end() && it->second.size() == e.size && sieve::train::crc32_of(it->second) == e.crc);
  }
  require(files->size() <= entries.size());
  // The writer's manifest of these files loads back the same files.
  write_text(dir / "MANIFEST", sieve::train::detail::manifest_text(*files));
  require(sieve::train::load_checkpoint_files(dir) == *files);
}

void fuzz_state_json(std::string_view text) {
  using sieve::train::detail::FlatJson;
  std::optional<FlatJson> j;
  try {
    j = FlatJson::parse(text, "<fuzz>");
  } catch (const sieve::Error&) {
    return;
  }
  // What resume() does with it: typed reads, each a value or an Error.
  for (const auto& [key, value] : j->items()) {
    require(j->has(key));
    try { (void)j->get_i64(key); } catch (const sieve::Error&) {}
    try { (void)j->get_u64(key); } catch (const sieve::Error&) {}
    try { (void)j->get_double(key); } catch (const sieve::Error&) {}
    try { (void)j->get_bool(key); } catch (const sieve::Error&) {}
    try {
      // A string value survives set_string / get_string unchanged.
      const std::string s = j->get_string(key);
      FlatJson k;
      k.set_string("k", s);
      require(k.get_string("k") == s);
    } catch (const sieve::Error&) {
    }
  }
  const FlatJson back = FlatJson::parse(j->dump(), "<fuzz round trip>");
  require(back.items() == j->items());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0]) {
    case 'S':
      fuzz_state_json(rest);
      break;
    case 'B': {
      std::string manifest(rest);
      manifest += "end " + sieve::train::detail::hex32(sieve::train::crc32_of(rest)) + "\n";
      fuzz_manifest(manifest);
      break;
    }
    default:
      fuzz_manifest(rest);
  }
  return 0;
}
