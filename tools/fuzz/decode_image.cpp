// libFuzzer harness for sieve's image decoder: any bytes must give an Image or a sieve::Error,
// never a crash, a sanitizer report or an abort. Run: tools/fuzz.sh decode_image 60
#include <cstddef>
#include <cstdint>
#include <span>

#include "sieve/io/image.hpp"

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
