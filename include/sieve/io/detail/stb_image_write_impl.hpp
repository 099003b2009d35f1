#pragma once
/// Private: sieve's own copy of stb_image_write (PNG and JPEG to memory), compiled inside each
/// translation unit (STB_IMAGE_WRITE_STATIC), never linked from Debian's libstb.so.

#include <cstddef>
#include <cstdlib>
#include <cstring>

#if defined(INCLUDE_STB_IMAGE_WRITE_H) && !defined(SIEVE_STB_IMAGE_WRITE_IMPL_INCLUDED)
#error "sieve: include sieve/io/image.hpp instead of <stb_image_write.h>"
#endif
#define SIEVE_STB_IMAGE_WRITE_IMPL_INCLUDED 1

namespace sieve::io::detail {
inline thread_local const char* stbiw_failed_assertion = nullptr;
inline void stbiw_assert_failed(const char* what) noexcept {
  if (stbiw_failed_assertion == nullptr) stbiw_failed_assertion = what;
}
}  // namespace sieve::io::detail

#define STBIW_ASSERT(x) ((x) ? (void)0 : ::sieve::io::detail::stbiw_assert_failed(#x))
#define STB_IMAGE_WRITE_STATIC
#define STBI_WRITE_NO_STDIO
#define STB_IMAGE_WRITE_IMPLEMENTATION

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
#include <stb_image_write.h>
#pragma GCC diagnostic pop
#undef STB_IMAGE_WRITE_IMPLEMENTATION
