// Decoding, encoding, limits and the bad-file corpus.
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "sieve/io/dataset.hpp"
#include "sieve/io/file.hpp"
#include "sieve/io/image.hpp"

namespace fs = std::filesystem;
using sieve::Image;
using namespace sieve::io;

namespace {
const fs::path data_dir = SIEVE_TEST_DATA;

std::string error_of(const fs::path& p, const DecodeLimits& lim = {}) {
  try {
    (void)read_image(p, lim);
  } catch (const sieve::Error& e) {
    return e.what();
  }
  return "";
}

Image noise_image(std::size_t h, std::size_t w, unsigned seed) {
  Image img(h, w);
  unsigned s = seed;
  for (auto& v : img.pixels) {
    s = s * 1664525u + 1013904223u;
    v = static_cast<std::uint8_t>(s >> 24);
  }
  return img;
}
}  // namespace

TEST_CASE("decode: PNG round trip is lossless, JPEG round trip is close") {
  const Image img = noise_image(13, 17, 1);
  const auto png = encode_png(img);
  CHECK(sniff_format(png) == ImageFormat::png);
  CHECK(decode_image(png) == img);

  Image smooth(32, 40);
  for (std::size_t y = 0; y < 32; ++y)
    for (std::size_t x = 0; x < 40; ++x)
      for (std::size_t c = 0; c < 3; ++c) smooth.at(y, x, c) = static_cast<std::uint8_t>(x * 5 + y * 2 + c * 20);
  const Image back = decode_image(encode_jpeg(smooth, 95));
  REQUIRE(back.height == 32);
  REQUIRE(back.width == 40);
  int worst = 0;
  double sum = 0;
  for (std::size_t i = 0; i < back.size(); ++i) {
    const int d = std::abs(int(back.pixels[i]) - int(smooth.pixels[i]));
    worst = std::max(worst, d);
    sum += d;
  }
  CHECK(sum / double(back.size()) < 2.0);
  CHECK(worst <= 24);
}

TEST_CASE("decode: files written atomically read back") {
  const fs::path dir = fs::temp_directory_path() / "sieve_test_images_decode";
  fs::create_directories(dir);
  const Image img = noise_image(5, 7, 2);
  write_png(dir / "a.png", img);
  CHECK(read_image(dir / "a.png") == img);
  write_jpeg(dir / "a.jpg", img, 90);
  const Image j = read_image(dir / "a.jpg");
  CHECK(j.height == 5);
  CHECK(j.width == 7);
  fs::remove_all(dir);
}

TEST_CASE("read_image_header: the limits' checks without decoding; a dataset's problems by sample") {
  const fs::path dir = fs::temp_directory_path() / "sieve_test_images_header";
  fs::create_directories(dir);
  write_png(dir / "ok.png", noise_image(5, 7, 2));
  write_png(dir / "wide.png", Image(1, 9000));
  { std::ofstream(dir / "text.png") << "not an image"; }
  const ImageHeader h = read_image_header(dir / "ok.png");
  CHECK(h.width == 7);
  CHECK(h.height == 5);
  CHECK(h.channels == 3);
  CHECK_THROWS_WITH_AS(read_image_header(dir / "wide.png"), doctest::Contains("wide.png: PNG is 9000x1 pixels, over the limit"),
                       sieve::Error);
  // The header alone passes what only decoding finds bad: pixel data cut short.
  auto bytes = sieve::io::read_file(dir / "ok.png");
  DecodeLimits lim;
  CHECK_NOTHROW((void)check_image_header(std::span(bytes), lim, "ok"));
  const FileDataset ds({{"a", dir / "ok.png", {0}}, {"b", dir / "wide.png", {0}}, {"c", dir / "text.png", {0}},
                        {"d", dir / "missing.png", {0}}});
  std::size_t calls = 0, last = 0;
  const auto problems = ds.header_problems([&](std::size_t k, std::size_t n) {
    ++calls, last = k;
    CHECK(n == 4);
  });
  REQUIRE(problems.size() == 3);
  CHECK(problems[0].rfind("sample 'b': ", 0) == 0);
  CHECK(problems[0].find("9000x1 pixels") != std::string::npos);
  CHECK(problems[1].rfind("sample 'c': ", 0) == 0);
  CHECK(problems[1].find("not a JPEG or PNG file") != std::string::npos);
  CHECK(problems[2].rfind("sample 'd': ", 0) == 0);
  CHECK((calls == 1 && last == 4));
  fs::remove_all(dir);
}

TEST_CASE("decode: gray, gray+alpha and RGBA become RGB") {
  // RGBA (libpng's pngtest.png) and gray (Fashion-MNIST) against PIL's convert("RGB").
  CHECK(read_image(data_dir / "images" / "pngtest_rgba.png") ==
        read_image(data_dir / "images" / "decoded_pngtest_rgba.png"));
  const Image gray = read_image(data_dir / "images" / "fmnist_t10k_0.png");
  CHECK(gray == read_image(data_dir / "images" / "decoded_fmnist_t10k_0.png"));
  for (std::size_t i = 0; i < gray.height * gray.width; ++i) {
    CHECK(gray.pixels[i * 3] == gray.pixels[i * 3 + 1]);
    CHECK(gray.pixels[i * 3] == gray.pixels[i * 3 + 2]);
  }
}

TEST_CASE("decode: every decode fixture agrees with PIL (PNG exactly, JPEG within IDCT differences)") {
  std::ifstream in(data_dir / "images" / "fixtures.json");
  REQUIRE(in.good());
  const auto m = nlohmann::json::parse(in);
  std::size_t n = 0;
  for (const auto& c : m["cases"]) {
    if (c["op"] != "decode") continue;
    const std::string input = c["input"];
    CAPTURE(input);
    ++n;
    const Image a = read_image(data_dir / "images" / input);
    const Image b = read_image(data_dir / "images" / c["expected"].get<std::string>());
    REQUIRE(a.height == b.height);
    REQUIRE(a.width == b.width);
    if (c["exact"].get<bool>()) {
      CHECK(a == b);
      continue;
    }
    double sum = 0;
    int worst = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      const int d = std::abs(int(a.pixels[i]) - int(b.pixels[i]));
      sum += d;
      worst = std::max(worst, d);
    }
    MESSAGE("stb vs PIL on ", input, ": mean |diff| ", sum / double(a.size()), ", max ", worst);
    CHECK(sum / double(a.size()) < 0.5);
    CHECK(worst <= 8);
  }
  CHECK(n == 7);
}

TEST_CASE("decode: limits are enforced before decoding") {
  const Image img = noise_image(40, 30, 3);
  const auto png = encode_png(img);
  DecodeLimits lim;
  lim.max_width = 29;
  CHECK_THROWS_WITH_AS(decode_image(png, lim, "x.png"), doctest::Contains("x.png: PNG is 30x40 pixels, over the limit"),
                       sieve::Error);
  lim = {};
  lim.max_pixels = 1199;
  CHECK_THROWS_AS(decode_image(png, lim), sieve::Error);
  lim = {};
  lim.max_bytes = png.size() - 1;
  CHECK_THROWS_WITH_AS(decode_image(png, lim), doctest::Contains("<memory>: encoded image is"), sieve::Error);
  lim.max_bytes = png.size();
  CHECK(decode_image(png, lim) == img);
}

namespace {
// A valid PNG of W x H zero samples (colour type 0 gray, 2 RGB, 4 gray+alpha, 6 RGBA), deflated
// row by row: a 16-bit 8192x8192 image fits in about 130 KB.
std::vector<std::byte> zero_png(std::uint32_t W, std::uint32_t H, unsigned colour, unsigned depth) {
  const unsigned channels = colour == 2 ? 3 : colour == 4 ? 2 : colour == 6 ? 4 : 1;
  std::vector<unsigned char> row(1 + std::size_t{W} * channels * depth / 8, 0), idat(1 << 20);
  std::vector<std::byte> out;
  auto put32 = [&](std::uint32_t v) {
    for (int i = 3; i >= 0; --i) out.push_back(std::byte((v >> (8 * i)) & 255));
  };
  auto chunk = [&](const char* type, const unsigned char* data, std::size_t n) {
    put32(static_cast<std::uint32_t>(n));
    const std::size_t start = out.size();
    for (int i = 0; i < 4; ++i) out.push_back(std::byte(type[i]));
    for (std::size_t i = 0; i < n; ++i) out.push_back(std::byte(data[i]));
    put32(static_cast<std::uint32_t>(
        ::crc32(::crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(out.data() + start), static_cast<uInt>(n + 4))));
  };
  for (char c : std::string_view("\x89PNG\r\n\x1A\n", 8)) out.push_back(static_cast<std::byte>(c));
  const unsigned char ihdr[13] = {static_cast<unsigned char>(W >> 24), static_cast<unsigned char>(W >> 16),
                                  static_cast<unsigned char>(W >> 8),  static_cast<unsigned char>(W),
                                  static_cast<unsigned char>(H >> 24), static_cast<unsigned char>(H >> 16),
                                  static_cast<unsigned char>(H >> 8),  static_cast<unsigned char>(H),
                                  static_cast<unsigned char>(depth),   static_cast<unsigned char>(colour),
                                  0, 0, 0};
  chunk("IHDR", ihdr, 13);
  z_stream z{};
  REQUIRE(deflateInit(&z, 6) == Z_OK);
  std::vector<unsigned char> deflated;
  for (std::uint32_t y = 0; y <= H; ++y) {
    z.next_in = row.data();
    z.avail_in = y < H ? static_cast<uInt>(row.size()) : 0;
    int rc;
    do {
      z.next_out = idat.data();
      z.avail_out = static_cast<uInt>(idat.size());
      rc = deflate(&z, y < H ? Z_NO_FLUSH : Z_FINISH);
      deflated.insert(deflated.end(), idat.data(), idat.data() + (idat.size() - z.avail_out));
    } while (z.avail_out == 0 || (y == H && rc != Z_STREAM_END));
  }
  deflateEnd(&z);
  chunk("IDAT", deflated.data(), deflated.size());
  chunk("IEND", nullptr, 0);
  return out;
}

std::string decode_error(std::span<const std::byte> bytes, std::string_view name, const DecodeLimits& lim = {}) {
  try {
    (void)decode_image(bytes, lim, name);
  } catch (const sieve::Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("decode: the decoded size is capped from the header, before any pixel is decoded") {
  // The files: a 16-bit 8192x8192 PNG of 130 KB (1 GB to decode) and a JPEG of a few
  // hundred bytes whose frame header claims 8192x8192 (stb decodes it "cleanly": 393 MB).
  const auto png16 = zero_png(8192, 8192, 0, 16);
  CHECK(png16.size() < (std::size_t{1} << 20));
  CHECK(decode_error(png16, "big.png") ==
        "big.png: PNG is 8192x8192 with 1 channel of 16 bits: 384 MiB decoded, over the limit of 128 MiB");
  auto jpg = encode_jpeg(noise_image(8, 8, 5));
  std::size_t sof = 2;
  while (!(jpg[sof] == std::byte{0xFF} && jpg[sof + 1] == std::byte{0xC0})) ++sof;
  for (std::size_t k : {5, 6, 7, 8}) jpg[sof + k] = static_cast<std::byte>(k % 2 ? 0x20 : 0x00);  // height, width = 0x2000
  CHECK(decode_error(jpg, "big.jpg") ==
        "big.jpg: JPEG is 8192x8192 with 3 channels of 8 bits: 192 MiB decoded, over the limit of 128 MiB");
  // The cap is exact, and counts 16-bit samples twice and gray as RGB (what the decoder fills).
  const auto small16 = zero_png(64, 32, 4, 16);  // gray+alpha: 3 channels of 2 bytes
  DecodeLimits lim;
  lim.max_decoded_bytes = 64 * 32 * 3 * 2;
  const Image black = decode_image(small16, lim);
  CHECK(black == Image(32, 64, 0));
  lim.max_decoded_bytes -= 1;
  CHECK(decode_error(small16, "s.png", lim).find("s.png: PNG is 64x32 with 2 channels of 16 bits") == 0);
}

TEST_CASE("decode: a huge but valid file over the default 64 MiB cap is refused by size") {
  // A valid PNG padded with a 65 MiB ancillary chunk: generated here, never committed.
  const Image img = noise_image(4, 4, 4);
  auto png = encode_png(img);
  const std::size_t pad = (std::size_t{65} << 20);
  std::vector<std::byte> chunk(12 + pad, std::byte{0});
  chunk[0] = std::byte(pad >> 24);
  chunk[1] = std::byte((pad >> 16) & 255);
  chunk[2] = std::byte((pad >> 8) & 255);
  chunk[3] = std::byte(pad & 255);
  const char type[4] = {'z', 'Z', 'z', 'Z'};
  for (int i = 0; i < 4; ++i) chunk[4 + i] = std::byte(type[i]);
  const auto crc = static_cast<std::uint32_t>(
      ::crc32(::crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(chunk.data() + 4), static_cast<uInt>(4 + pad)));
  for (int i = 0; i < 4; ++i) chunk[8 + pad + i] = std::byte((crc >> (24 - 8 * i)) & 255);
  png.insert(png.begin() + 33, chunk.begin(), chunk.end());  // after the 8-byte signature + 25-byte IHDR
  // Valid: a raised cap decodes it.
  DecodeLimits big;
  big.max_bytes = std::uint64_t{128} << 20;
  CHECK(decode_image(png, big) == img);
  const fs::path p = fs::temp_directory_path() / "sieve_test_huge_valid.png";
  write_file_atomic(p, png);
  const std::string err = error_of(p);
  fs::remove(p);
  CHECK(err.find("sieve_test_huge_valid.png") != std::string::npos);
  CHECK(err.find("over the limit of 67108864") != std::string::npos);
}

TEST_CASE("decode: every file of the bad corpus gives a clear error naming the file") {
  struct Case {
    const char* file;
    const char* reason;
  };
  const Case cases[] = {
      {"truncated.jpg", "truncated JPEG"},
      {"truncated_header.jpg", "truncated JPEG"},
      {"truncated.png", "truncated PNG"},
      {"bad_crc.png", "CRC mismatch in chunk 'IDAT'"},
      {"empty.jpg", "empty file (0 bytes)"},
      {"random.jpg", "not a JPEG or PNG file"},
      {"random_after_soi.jpg", "JPEG"},
      {"huge_dims.png", "100000x100000 pixels, over the limit"},
      {"huge_dims.jpg", "65000x65000 pixels, over the limit"},
      {"corrupt_huffman.jpg", "over-subscribe the code space"},
      {"cve_2022_28042_dht_overflow.jpg", "DHT"},
      {"cve_2022_28041_dc_symbol.jpg", "DC table symbol 200 > 15"},
      {"cve_2022_28041_undefined_table.jpg", "never defined"},
      {"gif_renamed.jpg", "unsupported image format GIF"},
      {"bmp_renamed.jpg", "unsupported image format BMP"},
      {"psd_renamed.jpg", "unsupported image format PSD"},
      {"hdr_renamed.jpg", "unsupported image format Radiance HDR"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.file);
    const std::string err = error_of(data_dir / "bad" / c.file);
    CHECK(err.find(c.file) != std::string::npos);
    CHECK_MESSAGE(err.find(c.reason) != std::string::npos, err);
  }
  // Nothing else hides in the folder untested.
  std::size_t n = 0;
  for (const auto& e : fs::directory_iterator(data_dir / "bad")) n += e.is_regular_file();
  CHECK(n == std::size(cases));
}

TEST_CASE("decode: the CVE-2022-28042 file is rejected by sieve's DHT check, not by luck") {
  // The counts {0,0,3,0,...,99,99,99,99,255} sum to 654: without the pre-check stb writes
  // past stbi__huffman::size[257] (UBSan: index 654 out of bounds).
  const std::string err = error_of(data_dir / "bad" / "cve_2022_28042_dht_overflow.jpg");
  CHECK(err.find("DHT declares 654 codes (at most 256)") != std::string::npos);
}

TEST_CASE("decode: bit flips and truncations of valid files never crash") {
  // Deterministic mini-fuzz: every outcome must be an Image or a sieve::Error.
  const Image img = noise_image(16, 16, 5);
  for (const auto& base : {encode_png(img), encode_jpeg(img, 80)}) {
    std::size_t ok = 0, errors = 0;
    for (std::size_t i = 0; i < base.size(); i += 3) {
      auto b = base;
      b[i] ^= std::byte{0x5A};
      try {
        (void)decode_image(b);
        ++ok;
      } catch (const sieve::Error& e) {
        ++errors;
        CHECK(std::string(e.what()).find("<memory>") == 0);
      }
      try {
        (void)decode_image(std::span(base).first(i));
        ++ok;
      } catch (const sieve::Error&) {
        ++errors;
      }
    }
    CHECK(errors > 0);
  }
}

TEST_CASE("encode: invalid images are refused") {
  Image empty;
  CHECK_THROWS_AS((void)encode_png(empty), sieve::Error);
  Image bad(2, 2);
  bad.pixels.pop_back();
  CHECK_THROWS_AS((void)encode_jpeg(bad), sieve::Error);
  CHECK_THROWS_AS((void)encode_jpeg(Image(2, 2), 0), sieve::Error);
}

TEST_CASE("decode: decode_image_into reuses the buffer and reshapes") {
  const Image a = noise_image(9, 11, 6), b = noise_image(3, 4, 7);
  Image out = noise_image(20, 20, 8);
  decode_image_into(encode_png(a), out);
  CHECK(out == a);
  decode_image_into(encode_png(b), out);
  CHECK(out == b);
  CHECK_THROWS_AS(decode_image_into(std::vector<std::byte>(10, std::byte{0}), out), sieve::Error);
}

TEST_CASE("decode: stb assertions are recorded, never abort") {
  // stbi__convert_format asserts 1 <= req_comp <= 4; with the default assert() a violation
  // aborts the process. sieve's hook records it instead (decode_image turns a recorded
  // assertion into a sieve::Error), and stb's own error path frees and returns null.
  detail::stbi_failed_assertion = nullptr;
  auto* data = static_cast<unsigned char*>(STBI_MALLOC(4 * 4 * 3));
  unsigned char* out = stbi__convert_format(data, 3, 5, 4, 4);
  CHECK(out == nullptr);
  REQUIRE(detail::stbi_failed_assertion != nullptr);
  CHECK(std::string(detail::stbi_failed_assertion).find("req_comp") != std::string::npos);
  detail::stbi_failed_assertion = nullptr;
  CHECK(decode_image(encode_png(noise_image(4, 4, 9))).width == 4);
}

TEST_CASE("decode: PNG errors show binary chunk types as printable escapes") {
  auto png = encode_png(noise_image(2, 2, 10));
  png[8 + 25 + 4] = std::byte{0xC3};  // signature, 25-byte IHDR chunk, length: the IDAT type
  std::string err;
  try {
    (void)decode_image(png, {}, "bin.png");
  } catch (const sieve::Error& e) {
    err = e.what();
  }
  CHECK(err.find("bin.png: corrupt PNG: CRC mismatch in chunk '\\xc3DAT'") != std::string::npos);
  for (unsigned char ch : err) CHECK((ch >= 0x20 && ch < 0x7f));
}
