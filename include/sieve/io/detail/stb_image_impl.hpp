#pragma once
/// Private: sieve's own copy of stb_image, compiled JPEG+PNG only, inside every translation
/// unit that decodes (STB_IMAGE_STATIC gives each TU its own internal copy, so there is no
/// ODR clash and no library to link). Debian's libstb.so is never linked: it enables every
/// decoder (GIF/PIC/PSD/HDR/TGA...), several with open CVEs.
///
/// Hardening on top of the upstream header (bookworm ships stb_image 2.27 + 2022 fixes):
///  - STBI_MALLOC zero-fills, so a JPEG scan that uses a Huffman table never defined reads
///    zeros instead of stale heap bytes (one path to CVE-2022-28042's wild symbol index);
///  - STBI_ASSERT never aborts: a failed assertion is recorded in a thread-local flag that
///    decode_image() turns into a sieve::Error (the result is discarded). The pre-check
///    (detail::jpeg_precheck in image.hpp) rejects, before stb runs, the malformed tables
///    that make the one data-dependent assertion (stbi__jpeg_huff_decode) reachable;
///  - JPEG segments are validated by sieve (image.hpp, detail::jpeg_precheck) before stb
///    sees them.
/// Known residual (memory-safe): crafted DC streams overflow `dc * dequant[0]` (signed int)
/// in stbi__jpeg_decode_block; the product is truncated to a short coefficient and nothing
/// is indexed by it. Upstream 2.28 rejects such files; no header pre-check can (it depends
/// on the entropy-coded data). tools/fuzz.sh suppresses exactly this UBSan report.

#include <cstddef>
#include <cstdlib>
#include <cstring>

#if defined(STBI_INCLUDE_STB_IMAGE_H) && !defined(SIEVE_STB_IMAGE_IMPL_INCLUDED)
#error "sieve: include sieve/io/image.hpp instead of <stb_image.h> (sieve compiles its own hardened JPEG+PNG-only copy)"
#endif
#define SIEVE_STB_IMAGE_IMPL_INCLUDED 1

namespace sieve::io::detail {
/// Text of the first stb assertion that failed on this thread since the last reset, or null.
inline thread_local const char* stbi_failed_assertion = nullptr;
inline void stbi_assert_failed(const char* what) noexcept {
  if (stbi_failed_assertion == nullptr) stbi_failed_assertion = what;
}
inline void* stbi_zero_malloc(std::size_t n) noexcept { return std::calloc(1, n == 0 ? 1 : n); }
}  // namespace sieve::io::detail

#define STBI_ASSERT(x) ((x) ? (void)0 : ::sieve::io::detail::stbi_assert_failed(#x))
#define STBI_MALLOC(sz) ::sieve::io::detail::stbi_zero_malloc(sz)
#define STBI_REALLOC(p, newsz) std::realloc(p, newsz)
#define STBI_FREE(p) std::free(p)
#define STB_IMAGE_STATIC
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_NO_STDIO
#define STBI_NO_LINEAR
#define STBI_NO_HDR
// 2^15 per side: far above DecodeLimits' defaults; sieve's own caps are checked first.
#define STBI_MAX_DIMENSIONS (1 << 15)
#define STB_IMAGE_IMPLEMENTATION

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wpedantic"
#pragma GCC diagnostic ignored "-Wcast-qual"
#pragma GCC diagnostic ignored "-Wold-style-cast"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuseless-cast"
#endif
#include <stb_image.h>
#pragma GCC diagnostic pop
#undef STB_IMAGE_IMPLEMENTATION
