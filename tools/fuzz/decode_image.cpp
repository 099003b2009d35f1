// libFuzzer harness for sieve's image decoder: any bytes must give an Image or a sieve::Error,
// never a crash, a sanitizer report or an abort. Run: tools/fuzz.sh decode_image 60
//
// A PNG-aware custom mutator keeps mutated PNGs past sieve's CRC-32 pre-check: after
// libFuzzer's own mutation, every complete chunk of a PNG gets its CRC recomputed, so the
// mutation reaches stb's decoder (inflate, filters, interlacing) instead of stopping at "CRC
// mismatch". One mutation in eight keeps its CRCs as they are, so the check itself stays fuzzed.
// Deterministic given libFuzzer's -seed (the only randomness is libFuzzer's).
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "sieve/io/image.hpp"

extern "C" std::size_t LLVMFuzzerMutate(std::uint8_t* data, std::size_t size, std::size_t max_size);

namespace {

std::uint32_t load_be32(const std::uint8_t* p) {
  return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | std::uint32_t{p[3]};
}

void store_be32(std::uint8_t* p, std::uint32_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 24);
  p[1] = static_cast<std::uint8_t>(v >> 16);
  p[2] = static_cast<std::uint8_t>(v >> 8);
  p[3] = static_cast<std::uint8_t>(v);
}

// Recompute the CRC-32 of every complete chunk (length, type, data, CRC) after the signature;
// stop at the first chunk that does not fit.
void fix_png_crcs(std::uint8_t* data, std::size_t size) {
  for (std::size_t pos = 8; pos + 12 <= size;) {
    const std::size_t len = load_be32(data + pos);
    if (len > size - pos - 12) break;
    const uLong crc = ::crc32(::crc32(0L, Z_NULL, 0), data + pos + 4, static_cast<uInt>(4 + len));
    store_be32(data + pos + 8 + len, static_cast<std::uint32_t>(crc));
    pos += 12 + len;
  }
}

}  // namespace

extern "C" std::size_t LLVMFuzzerCustomMutator(std::uint8_t* data, std::size_t size, std::size_t max_size,
                                               unsigned int seed) {
  size = LLVMFuzzerMutate(data, size, max_size);
  if (size >= 8 && std::memcmp(data, "\x89PNG\r\n\x1A\n", 8) == 0 && seed % 8 != 0) fix_png_crcs(data, size);
  return size;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // Smaller caps than the defaults keep each run fast and memory-bounded.
  sieve::io::DecodeLimits limits;
  limits.max_width = 2048;
  limits.max_height = 2048;
  limits.max_pixels = 1u << 20;
  try {
    const auto img = sieve::io::decode_image(std::as_bytes(std::span(data, size)), limits, "<fuzz>");
    if (img.pixels.size() != img.height * img.width * 3) __builtin_trap();
  } catch (const sieve::Error&) {
  }
  return 0;
}
