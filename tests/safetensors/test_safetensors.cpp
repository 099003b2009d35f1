#include <doctest/doctest.h>

#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "sieve/io/safetensors.hpp"

namespace fs = std::filesystem;
using sieve::io::DType;
using sieve::io::SafeTensors;
using sieve::io::SafeTensorsWriter;

namespace {

/// A file with a hand-written header (the length prefix computed from it) and `data_size`
/// bytes of data (value k at byte k).
std::vector<std::byte> raw_file(const std::string& header, std::size_t data_size) {
  std::vector<std::byte> out(8 + header.size() + data_size);
  sieve::io::detail::store_le(out.data(), static_cast<std::uint64_t>(header.size()));
  std::memcpy(out.data() + 8, header.data(), header.size());
  for (std::size_t k = 0; k < data_size; ++k) out[8 + header.size() + k] = static_cast<std::byte>(k & 0xff);
  return out;
}

SafeTensors parse_header(const std::string& header, std::size_t data_size) {
  return SafeTensors::parse(raw_file(header, data_size), "mem.safetensors");
}

// Parse must fail with a message containing every piece.
void check_rejects(const std::string& header, std::size_t data_size, const std::vector<std::string>& pieces) {
  CAPTURE(header);
  std::string msg;
  try {
    (void)parse_header(header, data_size);
  } catch (const sieve::Error& e) {
    msg = e.what();
  }
  CAPTURE(msg);
  REQUIRE_FALSE(msg.empty());
  CHECK(msg.find("mem.safetensors") != std::string::npos);
  for (const auto& p : pieces) {
    CAPTURE(p);
    CHECK(msg.find(p) != std::string::npos);
  }
}

std::uint32_t bits(float f) { return std::bit_cast<std::uint32_t>(f); }

}  // namespace

TEST_CASE("safetensors: round trip of every dtype, rank 0 and empty tensors, metadata, order") {
  const std::vector<float> f = {1.0f, -2.5f, 3.25e-3f, 65504.0f, 0.0f, -0.0f};
  const std::vector<double> d = {1.0 / 3.0, -1e300, 5e-324, 2.0};
  const std::vector<std::int64_t> i = {0, -1, std::numeric_limits<std::int64_t>::max(),
                                       std::numeric_limits<std::int64_t>::min()};
  const std::vector<std::int64_t> scalar = {42};
  SafeTensorsWriter w;
  w.add("z.f32", {2, 3}, std::span<const float>(f));
  w.add("a.f64", {4}, std::span<const double>(d));
  w.add("m.f16", {3, 2}, std::span<const float>(f), DType::F16);
  w.add("b.bf16", {6}, std::span<const float>(f), DType::BF16);
  w.add("c.i64", {2, 2}, std::span<const std::int64_t>(i));
  w.add("bn.num_batches_tracked", {}, std::span<const std::int64_t>(scalar));
  w.add("empty", {0, 5}, std::span<const float>());
  w.add("f32.from.double", {4}, std::span<const double>(d), DType::F32);
  w.set_metadata("format", "pt");
  w.set_metadata("note \"quoted\"\n", "caf\xc3\xa9");
  const auto bytes = w.to_bytes();
  // Header padded so the data buffer is 8-byte aligned.
  CHECK(sieve::io::detail::load_le<std::uint64_t>(bytes.data()) % 8 == 0);

  const auto st = SafeTensors::parse(bytes, "rt.safetensors");
  CHECK(st.names() == std::vector<std::string>{"z.f32", "a.f64", "m.f16", "b.bf16", "c.i64", "bn.num_batches_tracked",
                                                "empty", "f32.from.double"});
  CHECK(st.floats("z.f32") == f);
  CHECK(st.info("z.f32").shape == std::vector<std::size_t>{2, 3});
  CHECK(st.info("z.f32").dtype == DType::F32);
  CHECK(st.info("z.f32").begin == 0);
  CHECK(st.info("z.f32").end == 24);
  CHECK(st.doubles("a.f64") == d);
  CHECK(st.doubles("z.f32") == std::vector<double>(f.begin(), f.end()));
  // f is exactly representable in F16 and BF16 except 3.25e-3 and 65504 (in BF16).
  const auto h = st.floats("m.f16");
  CHECK(st.info("m.f16").dtype == DType::F16);
  CHECK(h[0] == 1.0f);
  CHECK(h[1] == -2.5f);
  CHECK(h[2] == doctest::Approx(3.25e-3f).epsilon(1e-3));
  CHECK(h[3] == 65504.0f);
  CHECK(bits(h[5]) == bits(-0.0f));
  const auto b = st.floats("b.bf16");
  CHECK(b[1] == -2.5f);
  CHECK(b[3] == 65536.0f);  // 65504 rounds to the nearest bf16
  CHECK(st.ints("c.i64") == i);
  CHECK(st.ints("bn.num_batches_tracked") == scalar);
  CHECK(st.info("bn.num_batches_tracked").shape.empty());
  CHECK(st.info("bn.num_batches_tracked").numel() == 1);
  CHECK(st.floats("empty").empty());
  CHECK(st.info("empty").begin == st.info("empty").end);
  CHECK(st.floats("f32.from.double")[0] == static_cast<float>(1.0 / 3.0));
  CHECK(std::isinf(st.floats("f32.from.double")[1]));
  CHECK(st.metadata().at("format") == "pt");
  CHECK(st.metadata().at("note \"quoted\"\n") == "caf\xc3\xa9");
  CHECK(st.contains("a.f64"));
  CHECK_FALSE(st.contains("nope"));

  // Wrong-type accessors and unknown names are errors naming the file and the tensor.
  CHECK_THROWS_WITH_AS(st.ints("z.f32"), doctest::Contains("rt.safetensors: tensor 'z.f32' is F32, not I64"),
                       sieve::Error);
  CHECK_THROWS_WITH_AS(st.floats("c.i64"), doctest::Contains("tensor 'c.i64' is I64, not a floating-point"),
                       sieve::Error);
  CHECK_THROWS_WITH_AS(st.info("nope"), doctest::Contains("rt.safetensors: no tensor named 'nope'"), sieve::Error);
}

TEST_CASE("safetensors: write() is atomic and load() reads it back") {
  const fs::path dir = fs::temp_directory_path() / ("sieve-st-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::vector<float> v = {1, 2, 3};
  SafeTensorsWriter w;
  w.add("x", {3}, std::span<const float>(v));
  w.write(dir / "a.safetensors");
  const auto st = SafeTensors::load(dir / "a.safetensors");
  CHECK(st.floats("x") == v);
  CHECK(st.source() == (dir / "a.safetensors").string());
  CHECK_THROWS_WITH_AS(SafeTensors::load(dir / "missing.safetensors"), doctest::Contains("missing.safetensors"),
                       sieve::Error);
  fs::remove_all(dir);
}

TEST_CASE("safetensors: writer rejects bad input") {
  const std::vector<float> v = {1, 2, 3};
  const std::vector<std::int64_t> iv = {1};
  SafeTensorsWriter w;
  w.add("x", {3}, std::span<const float>(v));
  CHECK_THROWS_WITH_AS(w.add("x", {3}, std::span<const float>(v)), doctest::Contains("duplicate tensor name 'x'"),
                       sieve::Error);
  CHECK_THROWS_WITH_AS(w.add("y", {2, 2}, std::span<const float>(v)),
                       doctest::Contains("tensor 'y' has shape [2, 2] (4 elements) but 3 values"), sieve::Error);
  CHECK_THROWS_WITH_AS(w.add("__metadata__", {3}, std::span<const float>(v)), doctest::Contains("reserved"),
                       sieve::Error);
  CHECK_THROWS_WITH_AS(w.add("bad\xff", {3}, std::span<const float>(v)), doctest::Contains("not valid UTF-8"),
                       sieve::Error);
  CHECK_THROWS_WITH_AS(w.add("f", {3}, std::span<const float>(v), DType::I64), doctest::Contains("as I64"),
                       sieve::Error);
  CHECK_THROWS_WITH_AS(w.add("i", {2}, std::span<const std::int64_t>(iv)), doctest::Contains("1 values"),
                       sieve::Error);
  CHECK(w.size() == 1);
}

TEST_CASE("safetensors: F16 and BF16 decode exactly and re-encode to the same bits (all 65536 patterns)") {
  using namespace sieve::io::detail;
  int nan16 = 0, nanbf = 0;
  for (std::uint32_t u = 0; u < 65536; ++u) {
    const auto h = static_cast<std::uint16_t>(u);
    const float fh = f16_to_float(h);
    const float fb = bf16_to_float(h);
    if (std::isnan(fh)) {
      ++nan16;
      CHECK(std::isnan(f16_to_float(double_to_f16(fh))));
    } else if (double_to_f16(fh) != h) {
      FAIL_CHECK("f16 pattern " << u << " -> " << fh << " -> " << double_to_f16(fh));
    }
    if (std::isnan(fb)) {
      ++nanbf;
      CHECK(std::isnan(bf16_to_float(double_to_bf16(fb))));
    } else if (double_to_bf16(fb) != h) {
      FAIL_CHECK("bf16 pattern " << u << " -> " << fb << " -> " << double_to_bf16(fb));
    }
  }
  CHECK(nan16 == 2 * 1023);
  CHECK(nanbf == 2 * 127);
  // Hand-checked values.
  CHECK(f16_to_float(0x3c00) == 1.0f);
  CHECK(f16_to_float(0xc000) == -2.0f);
  CHECK(f16_to_float(0x7bff) == 65504.0f);
  CHECK(f16_to_float(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
  CHECK(f16_to_float(0x03ff) == std::ldexp(1023.0f, -24));  // largest subnormal
  CHECK(f16_to_float(0x0400) == std::ldexp(1.0f, -14));  // smallest normal
  CHECK(std::isinf(f16_to_float(0x7c00)));
  CHECK(f16_to_float(0xfc00) < 0);
  CHECK(bf16_to_float(0x3f80) == 1.0f);
  CHECK(bf16_to_float(0x0001) == std::ldexp(1.0f, -133));  // bf16 subnormal
}

TEST_CASE("safetensors: F16/BF16 encoding rounds to nearest, ties to even, from double without double rounding") {
  using namespace sieve::io::detail;
  CHECK(double_to_f16(1.0 + std::ldexp(1.0, -11)) == 0x3c00);        // tie -> even (down)
  CHECK(double_to_f16(1.0 + 3 * std::ldexp(1.0, -11)) == 0x3c02);    // tie -> even (up)
  CHECK(double_to_f16(1.0 + std::ldexp(1.0, -11) + 1e-12) == 0x3c01);
  CHECK(double_to_f16(65504.0) == 0x7bff);
  CHECK(double_to_f16(65519.99) == 0x7bff);
  CHECK(double_to_f16(65520.0) == 0x7c00);  // tie at the top rounds to even = overflow
  CHECK(double_to_f16(-1e10) == 0xfc00);
  CHECK(double_to_f16(std::ldexp(1.0, -25)) == 0x0000);                 // tie -> 0
  CHECK(double_to_f16(std::ldexp(1.0, -25) * 1.0001) == 0x0001);
  CHECK(double_to_f16(std::ldexp(3.0, -25)) == 0x0002);                 // tie -> even 2
  CHECK(double_to_f16(std::ldexp(1023.5, -24)) == 0x0400);              // rounds up into the normals
  CHECK(double_to_f16(-0.0) == 0x8000);
  CHECK(double_to_f16(1e-300) == 0x0000);
  CHECK(double_to_f16(std::numeric_limits<double>::infinity()) == 0x7c00);
  CHECK((double_to_f16(std::nan("")) & 0x7c00) == 0x7c00);
  CHECK((double_to_f16(std::nan("")) & 0x03ff) != 0);
  // A double just above a float tie: rounding through float first would give the wrong bf16.
  const double x = 1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -40);
  CHECK(static_cast<float>(x) == 1.0f + std::ldexp(1.0f, -8));  // float rounds onto the tie
  CHECK(double_to_bf16(x) == 0x3f81);                               // direct rounding goes up
  CHECK(double_to_bf16(1.0 + std::ldexp(1.0, -8)) == 0x3f80);        // an exact tie goes to even
  CHECK(double_to_bf16(3.0e38 * 1.2) == 0x7f80);
}

TEST_CASE("safetensors: accepted header variants") {
  // Whitespace everywhere, escapes in names, fields in any order, padding after '}', metadata last.
  const auto st = parse_header(
      "{ \"a\\u00e9\\n\\\"\\/\\ud83d\\ude00\" : { \"shape\" : [ 2 ] , \"data_offsets\":[0,8],\"dtype\":\"F32\" } ,"
      "\"s\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[8,16]},"
      "\"__metadata__\":{\"k\":\"v\\t\"}}  \n\t ",
      16);
  CHECK(st.names() == std::vector<std::string>{"a\xc3\xa9\n\"/\xf0\x9f\x98\x80", "s"});
  CHECK(st.metadata().at("k") == "v\t");
  CHECK(st.ints("s").size() == 1);
  // Header order need not be data order: names() follows the data offsets.
  const auto st2 = parse_header(
      "{\"second\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[4,6]},"
      "\"first\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}",
      6);
  CHECK(st2.names() == std::vector<std::string>{"first", "second"});
  // No tensors at all.
  CHECK(parse_header("{}", 0).names().empty());
  CHECK(parse_header("{\"__metadata__\":{}}", 0).metadata().empty());
}

TEST_CASE("safetensors: each safety rule broken once is rejected, naming the file, tensor and rule") {
  const std::string ok = R"("dtype":"F32","shape":[2],"data_offsets":[0,8])";
  SUBCASE("file too short for the length") {
    std::string msg;
    try {
      (void)SafeTensors::parse(std::vector<std::byte>(5), "short.safetensors");
    } catch (const sieve::Error& e) {
      msg = e.what();
    }
    CHECK(msg.find("short.safetensors: file is 5 bytes") != std::string::npos);
  }
  SUBCASE("header length over 100 MB") {
    auto f = raw_file("{}", 0);
    sieve::io::detail::store_le(f.data(), std::uint64_t{100'000'001});
    CHECK_THROWS_WITH_AS(SafeTensors::parse(f, "big.safetensors"),
                         doctest::Contains("big.safetensors: header length 100000001 is over the limit"), sieve::Error);
    sieve::io::detail::store_le(f.data(), std::numeric_limits<std::uint64_t>::max());
    CHECK_THROWS_WITH_AS(SafeTensors::parse(f, "big.safetensors"), doctest::Contains("header length capped at 100 MB"),
                         sieve::Error);
  }
  SUBCASE("another kind of file is called so") {
    std::vector<std::byte> png(64, std::byte{0});
    const char magic[] = "\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    for (std::size_t i = 0; i + 1 < sizeof magic; ++i) png[i] = static_cast<std::byte>(magic[i]);
    CHECK_THROWS_WITH_AS(SafeTensors::parse(png, "model.png"),
                         doctest::Contains("not a safetensors file? its first bytes are '\\x89PNG\\x0d\\x0a\\x1a\\x0a'"),
                         sieve::Error);
    auto f = raw_file("{}", 0);  // a real header after an impossible length: no such guess
    sieve::io::detail::store_le(f.data(), std::uint64_t{100'000'001});
    std::string msg;
    try {
      (void)SafeTensors::parse(f, "big.safetensors");
    } catch (const sieve::Error& e) {
      msg = e.what();
    }
    CHECK(msg.find("not a safetensors file") == std::string::npos);
  }
  SUBCASE("header length past end of file") {
    auto f = raw_file("{}", 0);
    sieve::io::detail::store_le(f.data(), std::uint64_t{3});
    CHECK_THROWS_WITH_AS(SafeTensors::parse(f, "x"), doctest::Contains("header must fit in the file"), sieve::Error);
  }
  SUBCASE("header start") {
    check_rejects(" {}", 0, {"does not start with '{'"});
    check_rejects("", 0, {"does not start with '{'"});
    check_rejects("[]", 0, {"does not start with '{'"});
  }
  SUBCASE("utf-8") {
    check_rejects("{\"a\xff\":{" + ok + "}}", 8, {"not valid UTF-8 at header byte 3"});
    check_rejects("{\"a\xc0\xaf\":{" + ok + "}}", 8, {"not valid UTF-8"});          // overlong '/'
    check_rejects("{\"a\xed\xa0\x80\":{" + ok + "}}", 8, {"not valid UTF-8"});      // surrogate
    check_rejects("{\"a\xf4\x90\x80\x80\":{" + ok + "}}", 8, {"not valid UTF-8"});  // > U+10FFFF
    check_rejects("{\"a\xe2\x82\":{" + ok + "}}", 8, {"not valid UTF-8"});          // truncated
  }
  SUBCASE("json syntax") {
    for (const std::string& h : std::vector<std::string>{"{", "{\"a\"", "{\"a\":{" + ok + "}", "{\"a\":{" + ok + "},}",
                                "{\"a\":{" + ok + "}} x", "{\"a\":{" + ok + "}}}", "{'a':{" + ok + "}}",
                                "{\"a\":{" + ok + ",}}", "{\"a\\x\":{" + ok + "}}", "{\"a\\ud800\":{" + ok + "}}",
                                "{\"a\\udc00\":{" + ok + "}}", "{\"a\\u12g4\":{" + ok + "}}",
                                "{\"a\n\":{" + ok + "}}", "{\"a\":{\"dtype\":\"F32\",\"shape\":[02],\"data_offsets\":[0,8]}}",
                                "{\"a\":{\"dtype\":\"F32\",\"shape\":[2 3],\"data_offsets\":[0,8]}}",
                                "{\"a\" {" + ok + "}}"}) {
      check_rejects(h, 8, {"[rule: header must be valid JSON]"});
    }
  }
  SUBCASE("duplicate keys") {
    check_rejects("{\"a\":{" + ok + "},\"a\":{" + ok + "}}", 16, {"duplicate key 'a'", "[rule: no duplicate keys]"});
    // Duplicates are found after unescaping.
    check_rejects("{\"a\":{" + ok + "},\"\\u0061\":{" + ok + "}}", 16, {"duplicate key 'a'"});
    check_rejects("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                  {"duplicate key 'dtype' in tensor 'a'"});
    check_rejects("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, {"duplicate key 'k' in __metadata__"});
    check_rejects("{\"__metadata__\":{},\"__metadata__\":{}}", 0, {"duplicate key '__metadata__'"});
  }
  SUBCASE("tensor entry fields") {
    check_rejects("{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, {"tensor 'a': missing field 'dtype'"});
    check_rejects("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, {"tensor 'a': missing field 'shape'"});
    check_rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, {"tensor 'a': missing field 'data_offsets'"});
    check_rejects("{\"a\":{" + ok + ",\"extra\":1}}", 8, {"tensor 'a': unknown field 'extra'"});
    check_rejects("{\"a\":[1]}", 8, {"tensor 'a': entry is not an object"});
    check_rejects("{\"a\":", 8, {"tensor 'a': entry is not an object"});
  }
  SUBCASE("dtype") {
    check_rejects("{\"a\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                  {"tensor 'a': unsupported dtype 'I32'", "[rule: dtype must be one of F16, BF16, F32, F64, I64]"});
    check_rejects("{\"a\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, {"unsupported dtype 'f32'"});
    check_rejects("{\"a\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, {"dtype is not a string"});
  }
  SUBCASE("shape and offsets must be arrays of non-negative integers") {
    check_rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8,
                  {"tensor 'a': shape must hold non-negative integers"});
    check_rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8,
                  {"tensor 'a': shape holds a non-integer"});
    check_rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[2e0],\"data_offsets\":[0,8]}}", 8, {"non-integer"});
    check_rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8, {"shape is not an array"});
    check_rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,\"8\"]}}", 8,
                  {"data_offsets must hold non-negative integers"});
    check_rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[18446744073709551616],\"data_offsets\":[0,8]}}", 8,
                  {"shape value overflows 64 bits"});
    check_rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,9]}}", 8,
                  {"data_offsets has 3 values", "[rule: data_offsets must be [begin, end]]"});
  }
  SUBCASE("byte length vs element count x dtype size, with overflow checks") {
    check_rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
                  {"tensor 'a': data_offsets span 8 bytes but shape [3] of F32 needs 12",
                   "[rule: byte length must equal element count x dtype size]"});
    check_rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 8,
                  {"tensor 'a': element count of its shape overflows"});
    check_rejects("{\"a\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,8]}}", 8,
                  {"tensor 'a': byte size of 4611686018427387904 elements of F64 overflows"});
    check_rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8,
                  {"tensor 'a': data_offsets [8, 0] end before they begin"});
    // Rank 0 has one element.
    check_rejects("{\"a\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,0]}}", 0, {"needs 8"});
  }
  SUBCASE("offsets contiguous from 0, no gaps or overlaps") {
    check_rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
                  {"tensor 'a' begins at data offset 4 but the first tensor must begin at 0",
                   "[rule: offsets contiguous from 0, no gaps or overlaps]"});
    check_rejects("{\"a\":{" + ok + "},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}}", 16,
                  {"tensor 'b' begins at data offset 12 but 'a' ends at 8 (gap)"});
    check_rejects("{\"a\":{" + ok + "},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
                  {"tensor 'b' begins at data offset 4 but 'a' ends at 8 (overlap)"});
    check_rejects("{\"a\":{" + ok + "},\"b\":{" + ok + "}}", 8, {"(overlap)"});  // aliasing
  }
  SUBCASE("last tensor ends at end of file") {
    check_rejects("{\"a\":{" + ok + "}}", 9, {"last tensor 'a' ends at data offset 8 but the data buffer has 9 bytes",
                                                "[rule: last tensor ends at end of file]"});
    check_rejects("{\"a\":{" + ok + "}}", 7, {"[rule: last tensor ends at end of file]"});
    check_rejects("{}", 3, {"no tensors but 3 data bytes"});
  }
  SUBCASE("metadata is string to string") {
    check_rejects("{\"__metadata__\":{\"k\":1}}", 0,
                  {"__metadata__ value for 'k' is not a string", "[rule: __metadata__ must map strings to strings]"});
    check_rejects("{\"__metadata__\":{\"k\":{}}}", 0, {"__metadata__ value for 'k' is not a string"});
    check_rejects("{\"__metadata__\":[]}", 0, {"__metadata__ is not an object"});
    check_rejects("{\"__metadata__\":null}", 0, {"__metadata__ is not an object"});
  }
}

// ---- Interoperability with PyTorch (tools/safetensors_py.py, tools/gen_safetensors_fixtures.py) ----
namespace {

// Keep identical to VALUES and INTS in tools/gen_safetensors_fixtures.py.
const std::vector<double> kInteropValues = {
    0.0, -0.0, 1.0, -2.5, 0.1, 1.0 / 3.0, 3.141592653589793, 65504.0, 65520.0, 1e5, -7e-06, 1e-08,
    1e-40, 1e-45, 3e38, 1e300, INFINITY, -INFINITY, NAN,
    1.00048828125, 1.00390625, 1.0039072036743164, -123.456, 5.9604644775390625e-08, 8.940696716308594e-08, 0.5};
const std::vector<std::int64_t> kInteropInts = {0, 1, -1, std::int64_t{1} << 62, std::numeric_limits<std::int64_t>::min(),
                                                std::numeric_limits<std::int64_t>::max(), 123456789012345, -42};

std::vector<float> interop_floats() {
  std::vector<float> f;
  for (double d : kInteropValues) f.push_back(sieve::io::detail::double_to_float(d));
  return f;
}

template <class T>
bool same_or_both_nan(T a, T b) {
  using U = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  return (std::isnan(a) && std::isnan(b)) || std::bit_cast<U>(a) == std::bit_cast<U>(b);
}

/// Check a file holding the interop tensors, whoever wrote it: every value must be what
/// sieve's own conversions give, bit for bit (any NaN matches any NaN).
void check_interop(const SafeTensors& st, const std::string& producer) {
  using namespace sieve::io::detail;
  const std::vector<std::string> names = {"f64", "f32", "f16", "bf16", "i64", "bn.num_batches_tracked", "empty"};
  CHECK(st.names() == names);
  const auto f = interop_floats();
  const auto d64 = st.doubles("f64");
  const auto f32 = st.floats("f32");
  const auto f16 = st.floats("f16");
  const auto bf16 = st.floats("bf16");
  REQUIRE(d64.size() == kInteropValues.size());
  REQUIRE(f32.size() == f.size());
  REQUIRE(f16.size() == f.size());
  REQUIRE(bf16.size() == f.size());
  const auto raw16 = st.raw("f16");
  const auto rawbf = st.raw("bf16");
  for (std::size_t k = 0; k < f.size(); ++k) {
    CAPTURE(k);
    CAPTURE(kInteropValues[k]);
    CHECK(same_or_both_nan(d64[k], kInteropValues[k]));
    CHECK(same_or_both_nan(f32[k], f[k]));
    const auto h = load_le<std::uint16_t>(raw16.data() + 2 * k);
    const auto b = load_le<std::uint16_t>(rawbf.data() + 2 * k);
    if (std::isnan(f[k])) {
      CHECK(std::isnan(f16[k]));
      CHECK(std::isnan(bf16[k]));
    } else {
      CHECK(h == double_to_f16(f[k]));   // torch's rounding == ours
      CHECK(b == double_to_bf16(f[k]));
      CHECK(same_or_both_nan(f16[k], f16_to_float(h)));
      CHECK(same_or_both_nan(bf16[k], bf16_to_float(b)));
    }
  }
  CHECK(st.info("f16").shape == std::vector<std::size_t>{2, 13});
  CHECK(st.info("bf16").dtype == DType::BF16);
  CHECK(st.ints("i64") == kInteropInts);
  CHECK(st.info("i64").shape == std::vector<std::size_t>{2, 4});
  CHECK(st.ints("bn.num_batches_tracked") == std::vector<std::int64_t>{7});
  CHECK(st.info("bn.num_batches_tracked").shape.empty());
  CHECK(st.info("empty").shape == std::vector<std::size_t>{0, 3});
  CHECK(st.metadata().at("producer") == producer);
  CHECK(st.metadata().at("unicode") == "caf\xc3\xa9 \xe2\x9c\x93");
}

void write_interop(const fs::path& path) {
  const auto f = interop_floats();
  SafeTensorsWriter w;
  w.add("f64", {2, 13}, std::span<const double>(kInteropValues));
  w.add("f32", {2, 13}, std::span<const float>(f));
  w.add("f16", {2, 13}, std::span<const float>(f), DType::F16);
  w.add("bf16", {2, 13}, std::span<const float>(f), DType::BF16);
  w.add("i64", {2, 4}, std::span<const std::int64_t>(kInteropInts));
  const std::vector<std::int64_t> seven = {7};
  w.add("bn.num_batches_tracked", {}, std::span<const std::int64_t>(seven));
  w.add("empty", {0, 3}, std::span<const float>());
  w.set_metadata("producer", "sieve");
  w.set_metadata("unicode", "caf\xc3\xa9 \xe2\x9c\x93");
  w.write(path);
}

}  // namespace

TEST_CASE("safetensors: a file written by PyTorch (committed fixture) reads bit-exactly") {
  const auto st = SafeTensors::load(fs::path(SIEVE_TEST_DATA) / "safetensors/good/torch_all_dtypes.safetensors");
  check_interop(st, "torch");
}

TEST_CASE("safetensors: sieve's own interop file round-trips through check_interop") {
  const fs::path p = fs::temp_directory_path() / ("sieve-st-interop-" + std::to_string(::getpid()) + ".safetensors");
  write_interop(p);
  check_interop(SafeTensors::load(p), "sieve");
  fs::remove(p);
}

// Driven by tests/safetensors/interop.py: it writes py.safetensors with torch, this reads it and
// writes sieve.safetensors, which the script then checks with torch.
TEST_CASE("safetensors interop with live PyTorch" * doctest::skip()) {
  const char* dir = std::getenv("SIEVE_ST_INTEROP_DIR");
  REQUIRE_MESSAGE(dir != nullptr, "set SIEVE_ST_INTEROP_DIR (run through tests/safetensors/interop.py)");
  check_interop(SafeTensors::load(fs::path(dir) / "py.safetensors"), "python");
  write_interop(fs::path(dir) / "sieve.safetensors");
}

TEST_CASE("safetensors: committed malformed corpus, one file per rule, each rejected with its rule") {
  const fs::path dir = fs::path(SIEVE_TEST_DATA) / "safetensors/bad";
  std::ifstream manifest(dir / "MANIFEST.tsv");
  REQUIRE(manifest.good());
  std::string line;
  std::vector<std::string> listed;
  while (std::getline(manifest, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto tab = line.find('\t');
    REQUIRE(tab != std::string::npos);
    const std::string file = line.substr(0, tab), expect = line.substr(tab + 1);
    listed.push_back(file);
    CAPTURE(file);
    std::string msg;
    try {
      (void)SafeTensors::load(dir / file);
    } catch (const sieve::Error& e) {
      msg = e.what();
    }
    CAPTURE(msg);
    CHECK(msg.find(file) != std::string::npos);
    CHECK(msg.find(expect) != std::string::npos);
  }
  CHECK(listed.size() >= 30);
  // Every file in the folder is listed (a new fixture cannot silently go unchecked).
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".safetensors") continue;
    CHECK_MESSAGE(std::find(listed.begin(), listed.end(), e.path().filename().string()) != listed.end(),
                  e.path().filename().string());
  }
}
