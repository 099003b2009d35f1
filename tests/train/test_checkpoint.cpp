// Durable checkpoints: manifest checksums, refusal of corrupted/truncated files, the swap
// protocol and its crash recovery, and kill -9 during saves.
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

#include "sieve/core/rng.hpp"
#include "sieve/train/checkpoint.hpp"
#include "sieve/train/detail/flat_json.hpp"
#include "support/child_process.hpp"
#include "support/temp_dir.hpp"

namespace fs = std::filesystem;
using sieve_test::TempDir;
using namespace sieve;
using namespace sieve::train;

namespace {
std::vector<std::byte> bytes_of(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), reinterpret_cast<const std::byte*>(s.data()) + s.size()};
}

// Files whose contents all carry `generation`, so a mix of two checkpoints is detectable.
CheckpointFiles generation_files(std::uint64_t generation, std::size_t payload) {
  CheckpointFiles f;
  Rng rng(generation, 99);
  std::string big(payload, '\0');
  for (auto& c : big) c = static_cast<char>(rng.next_u32());
  f["model.safetensors"] = bytes_of("gen=" + std::to_string(generation) + ";" + big);
  f["optimizer.safetensors"] = bytes_of("gen=" + std::to_string(generation) + ";" + big.substr(0, payload / 2));
  f["state.json"] = bytes_of("{\"gen\": " + std::to_string(generation) + "}\n");
  return f;
}

std::uint64_t generation_of(const CheckpointFiles& f) {
  std::uint64_t g = ~0ull;
  for (const auto& [name, bytes] : f) {
    const std::string s(reinterpret_cast<const char*>(bytes.data()), std::min<std::size_t>(bytes.size(), 40));
    const auto at = s.find_first_of("0123456789");
    REQUIRE(at != std::string::npos);
    const std::uint64_t v = std::stoull(s.substr(at));
    if (g == ~0ull) g = v;
    CHECK_MESSAGE(v == g, "checkpoint mixes generations: ", name, " has ", v, " but another file has ", g);
  }
  return g;
}

std::size_t count_entries(const fs::path& dir) {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
  return n;
}
}  // namespace

TEST_CASE("checkpoint: save, load, replace; nothing left behind") {
  TempDir run("ckpt_basic", true);
  save_checkpoint_files(run.path, "last", generation_files(1, 1000));
  CHECK(generation_of(load_checkpoint_files(run.path / "last")) == 1);
  save_checkpoint_files(run.path, "last", generation_files(2, 1000));
  const auto f = load_checkpoint_files(run.path / "last");
  CHECK(generation_of(f) == 2);
  CHECK(f == generation_files(2, 1000));
  CHECK(count_entries(run.path) == 1);               // only last/
  CHECK(count_entries(run.path / "last") == 4);      // 3 files + MANIFEST, no temporaries
  save_checkpoint_files(run.path, "best", generation_files(3, 10), {.force_two_renames = true});
  save_checkpoint_files(run.path, "best", generation_files(4, 10), {.force_two_renames = true});
  CHECK(generation_of(load_checkpoint_files(run.path / "best")) == 4);
  CHECK(count_entries(run.path) == 2);
  CHECK(crc32_of(std::string_view("123456789")) == 0xCBF43926u);  // the CRC-32 check value
}

TEST_CASE("checkpoint: corrupted, truncated, incomplete checkpoints are refused naming the file") {
  TempDir run("ckpt_bad", true);
  save_checkpoint_files(run.path, "last", generation_files(5, 5000));
  const fs::path model = run.path / "last" / "model.safetensors";
  const auto good = load_checkpoint_files(run.path / "last");
  auto write_raw = [](const fs::path& p, const std::vector<std::byte>& b) {
    std::ofstream o(p, std::ios::binary | std::ios::trunc);
    o.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  };
  SUBCASE("one flipped bit") {
    auto b = good.at("model.safetensors");
    b[2500] ^= std::byte{0x10};
    write_raw(model, b);
    CHECK_THROWS_WITH_AS(load_checkpoint_files(run.path / "last"), doctest::Contains("file model.safetensors is corrupted"),
                         Error);
  }
  SUBCASE("truncated") {
    auto b = good.at("model.safetensors");
    b.resize(b.size() / 2);
    write_raw(model, b);
    CHECK_THROWS_WITH_AS(load_checkpoint_files(run.path / "last"), doctest::Contains("file model.safetensors is truncated"),
                         Error);
  }
  SUBCASE("a file missing") {
    fs::remove(run.path / "last" / "state.json");
    CHECK_THROWS_WITH_AS(load_checkpoint_files(run.path / "last"), doctest::Contains("file state.json listed in the manifest is missing"),
                         Error);
  }
  SUBCASE("manifest missing, truncated or edited") {
    const fs::path man = run.path / "last" / "MANIFEST";
    const auto text = io::read_file(man);
    SUBCASE("missing") {
      fs::remove(man);
      CHECK_THROWS_WITH_AS(load_checkpoint_files(run.path / "last"), doctest::Contains("MANIFEST is missing"), Error);
    }
    SUBCASE("truncated") {
      write_raw(man, std::vector<std::byte>(text.begin(), text.begin() + static_cast<long>(text.size() - 12)));
      CHECK_THROWS_WITH_AS(load_checkpoint_files(run.path / "last"), doctest::Contains("MANIFEST"), Error);
    }
    SUBCASE("malformed lines with a valid checksum: non-hex CRC, a name too long, a NUL, '..'") {
      // fuzz_checkpoint found the first two escaping as std::invalid_argument and
      // std::filesystem::filesystem_error instead of sieve::Error.
      const std::vector<std::string> lines{"file g0000000 1 a", "file 0000000x 1 a",
                                           "file 00000000 0 " + std::string(300, 'a'),
                                           std::string("file 00000000 0 a\0b", 19), "file 00000000 0 .."};
      for (const std::string& line : lines) {
        const std::string body = std::string(sieve::train::detail::kManifestMagic) + "\n" + line + "\n";
        write_raw(man, bytes_of(body + "end " + sieve::train::detail::hex32(crc32_of(body)) + "\n"));
        CHECK_THROWS_WITH_AS(load_checkpoint_files(run.path / "last"), doctest::Contains("malformed manifest line"),
                             Error);
      }
    }
    SUBCASE("edited size") {
      std::string s(reinterpret_cast<const char*>(text.data()), text.size());
      const auto at = s.find(" 5");
      REQUIRE(at != std::string::npos);
      s[at + 1] = '6';
      write_raw(man, bytes_of(s));
      CHECK_THROWS_WITH_AS(load_checkpoint_files(run.path / "last"), doctest::Contains("manifest checksum mismatch"), Error);
    }
  }
  CHECK_FALSE(checkpoint_is_valid(run.path / "last"));
  // A new save over a damaged checkpoint still succeeds and verifies.
  save_checkpoint_files(run.path, "last", generation_files(6, 100));
  CHECK(generation_of(load_checkpoint_files(run.path / "last")) == 6);
}

TEST_CASE("remove_unfinished_run: files only go (and the folder when asked); a checkpoint keeps it all") {
  TempDir tmp("ckpt_unfinished", true);
  const fs::path run = tmp.path / "run";
  auto make = [&] {
    fs::create_directories(run);
    std::ofstream(run / "config.json") << "{}";
    std::ofstream(run / ".lock") << "1";
  };
  make();
  CHECK(remove_unfinished_run(run, true));
  CHECK_FALSE(fs::exists(run));
  make();
  CHECK(remove_unfinished_run(run, false));  // the user's empty folder stays, emptied
  CHECK(fs::is_directory(run));
  CHECK(fs::is_empty(run));
  make();
  save_checkpoint_files(run, "last", generation_files(1, 10));
  CHECK_FALSE(remove_unfinished_run(run, true));
  CHECK(fs::exists(run / "config.json"));
  CHECK(checkpoint_is_valid(run / "last"));
  CHECK_FALSE(remove_unfinished_run(tmp.path / "absent", true));
}

TEST_CASE("checkpoint: every crash point of the two-rename fallback recovers a complete last/") {
  TempDir run("ckpt_recover", true);
  save_checkpoint_files(run.path, "last", generation_files(1, 100));
  SUBCASE("crash between 'last -> .last.old-X' and 'tmp -> last'") {
    fs::rename(run.path / "last", run.path / ".last.old-abc123");
    CHECK(recover_slot(run.path, "last"));
    CHECK(generation_of(load_checkpoint_files(run.path / "last")) == 1);
  }
  SUBCASE("crash after the new manifest, before any rename: old last kept, temp removed by the next save") {
    fs::create_directories(run.path / ".last.tmp-zzz");
    for (const auto& [n, b] : generation_files(2, 100)) io::write_file_atomic(run.path / ".last.tmp-zzz" / n, b);
    CHECK_FALSE(recover_slot(run.path, "last"));  // last exists: nothing to do
    CHECK(generation_of(load_checkpoint_files(run.path / "last")) == 1);
    save_checkpoint_files(run.path, "last", generation_files(3, 100));
    CHECK(!fs::exists(run.path / ".last.tmp-zzz"));
    CHECK(generation_of(load_checkpoint_files(run.path / "last")) == 3);
  }
  SUBCASE("crash mid-write of the temp directory with last missing: an incomplete temp is never promoted") {
    fs::rename(run.path / "last", run.path / ".last.old-aaa");
    fs::create_directories(run.path / ".last.tmp-bbb");
    io::write_file_atomic(run.path / ".last.tmp-bbb" / "model.safetensors", std::string_view("partial"));
    CHECK(recover_slot(run.path, "last"));
    CHECK(generation_of(load_checkpoint_files(run.path / "last")) == 1);
  }
}

TEST_CASE("flat state JSON round-trips integers, 64-bit seeds, doubles, non-finite values and strings") {
  train::detail::FlatJson j;
  j.set("epoch", std::int64_t{-3});
  j.set_u64("seed", 18446744073709551615ull);
  j.set("best", 0.1 + 0.2);
  j.set("nan", std::nan(""));
  j.set("ok", true);
  j.set_string("config.name", "a \"quoted\"\\ path\n");
  const auto k = train::detail::FlatJson::parse(j.dump(), "state.json");
  CHECK(k.get_i64("epoch") == -3);
  CHECK(k.get_u64("seed") == 18446744073709551615ull);
  CHECK(k.get_double("best") == 0.1 + 0.2);
  CHECK(std::isnan(k.get_double("nan")));
  CHECK(k.get_bool("ok"));
  CHECK(k.get_string("config.name") == "a \"quoted\"\\ path\n");
  CHECK_THROWS_WITH_AS(k.get_i64("missing"), doctest::Contains("state.json: missing key 'missing'"), Error);
  CHECK_THROWS_AS(train::detail::FlatJson::parse("{\"a\": 1,", "x"), Error);
  CHECK_THROWS_WITH_AS(train::detail::FlatJson::parse("{\"a\": 1, \"a\": 2}", "x"), doctest::Contains("duplicate key 'a'"), Error);
}

// Child half of the kill -9 test: re-executed as a separate process, saves forever.
TEST_CASE("checkpoint writer child (does nothing unless SIEVE_CKPT_CHILD_DIR is set)") {
  const char* dir = std::getenv("SIEVE_CKPT_CHILD_DIR");
  if (!dir) return;
  const std::uint64_t first = std::strtoull(std::getenv("SIEVE_CKPT_CHILD_GEN"), nullptr, 10);
  for (std::uint64_t g = first;; ++g) {
    save_checkpoint_files(dir, "last", generation_files(g, 300000), {.force_two_renames = (g % 2) == 1});
    std::ofstream(fs::path(dir).parent_path() / "saved_gen", std::ios::trunc) << g << "\n";
  }
}

TEST_CASE("checkpoint: kill -9 at random moments during saves always leaves a loadable last/") {
  TempDir tmp("ckpt_kill", true);
  const fs::path run = tmp.path / "run";
  save_checkpoint_files(run, "last", generation_files(1, 300000));
  Rng rng(2026, 11);
  std::uint64_t next_gen = 2, last_seen = 1;
  int kills = 0, progressed = 0;
  for (int round = 0; round < 12; ++round) {
    const pid_t pid = sieve_test::spawn_test_case(
        "checkpoint writer child*", {{"SIEVE_CKPT_CHILD_DIR", run.string()}, {"SIEVE_CKPT_CHILD_GEN", std::to_string(next_gen)}});
    REQUIRE(pid >= 0);
    // Wait until the child has completed one save in this round, then kill it at a random
    // moment of the following saves.
    const fs::path marker = tmp.path / "saved_gen";
    const bool saved_once = sieve_test::wait_for_file(marker);
    std::this_thread::sleep_for(std::chrono::microseconds(rng.below(40000)));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    REQUIRE_MESSAGE(WIFSIGNALED(status), "writer child exited on its own with status ", status);
    REQUIRE_MESSAGE(saved_once, "writer child completed no save within 60 s");
    fs::remove(marker);
    ++kills;
    // What a restarted trainer does: recover, then load.
    recover_slot(run, "last");
    const auto files = load_checkpoint_files(run / "last");
    const std::uint64_t g = generation_of(files);
    CHECK(files == generation_files(g, 300000));
    CHECK(g >= last_seen);
    if (g > last_seen) ++progressed;
    last_seen = g;
    next_gen = g + 1000;  // generations stay distinct across rounds
  }
  MESSAGE("kill -9 rounds: ", kills, ", rounds in which a newer checkpoint had landed: ", progressed);
  CHECK(kills == 12);
  CHECK(progressed == kills);  // each round the child completed at least one save before the kill
}
