#pragma once
/// Safe JPEG/PNG decoding into 8-bit RGB, and PNG/JPEG encoding.
///
/// Decoding runs three gates before stb_image touches pixel data: a size cap on the encoded
/// bytes, a structural pre-check written for sieve (JPEG: every marker segment, Huffman and
/// quantisation tables, scan headers, the EOI marker; PNG: every chunk's length and CRC,
/// IHDR, IEND) that also reads the declared size, channels and bit depth, checked against
/// DecodeLimits (sides, pixels, decoded bytes), then stbi_info_from_memory against the same.
/// The pre-check is the guard for CVE-2022-28041/28042 (stb_image 2.27 JPEG Huffman
/// out-of-bounds / assert abort): a DHT whose code counts sum past 256, or that over-subscribes
/// the code space, or a DC table with symbols > 15, or a scan that uses a table never defined,
/// is rejected here.

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/io/detail/stb_image_impl.hpp"
#include "sieve/io/detail/stb_image_write_impl.hpp"
#include "sieve/io/file.hpp"

namespace sieve {

/// An 8-bit RGB image, rows top to bottom, pixels interleaved (HWC, 3 channels).
struct Image {
  std::size_t height = 0;
  std::size_t width = 0;
  std::vector<std::uint8_t> pixels;  ///< height * width * 3 bytes

  Image() = default;
  /// Ensures: pixels has height*width*3 bytes, all `fill`.
  Image(std::size_t h, std::size_t w, std::uint8_t fill = 0) : height(h), width(w), pixels(h * w * 3, fill) {}

  std::size_t size() const { return pixels.size(); }
  std::uint8_t* data() { return pixels.data(); }
  const std::uint8_t* data() const { return pixels.data(); }
  std::uint8_t& at(std::size_t y, std::size_t x, std::size_t c) { return pixels[(y * width + x) * 3 + c]; }
  std::uint8_t at(std::size_t y, std::size_t x, std::size_t c) const { return pixels[(y * width + x) * 3 + c]; }
  /// Resize only when the dimensions change (steady-state stages reuse their buffer).
  void reshape(std::size_t h, std::size_t w) {
    height = h;
    width = w;
    pixels.resize(h * w * 3);
  }
  bool operator==(const Image&) const = default;
};

namespace io {

/// Caps applied before any pixel is decoded, from the file's own header (sieve's pre-check, then
/// stb's). The one home of sieve's image limits: loaders, datasets and `sieve validate` take
/// these defaults. Defaults fit a 224-px training pipeline with room for camera photos.
struct DecodeLimits {
  std::size_t max_width = 8192;
  std::size_t max_height = 8192;
  std::uint64_t max_pixels = std::uint64_t{8192} * 8192;
  /// Decoded size: width x height x max(channels in the file, 3) x (2 for 16-bit samples, else
  /// 1), the buffer the decoder fills before conversion to 8-bit RGB (about half its peak use).
  /// 128 MiB admits a 44-megapixel 8-bit photo and refuses an 8192x8192 JPEG (192 MiB) or a
  /// 16-bit 8192x8192 PNG (384-512 MiB) that a file of under 1 MB can declare.
  std::uint64_t max_decoded_bytes = std::uint64_t{128} << 20;
  std::uint64_t max_bytes = std::uint64_t{64} << 20;  ///< 64 MiB of encoded data

  /// The most memory one read-and-decode under these limits holds at once: the encoded file,
  /// the decoder's buffer and the 8-bit RGB image it converts into (each at most
  /// max_decoded_bytes). 320 MiB with the defaults; loaders bound their workers by it.
  std::uint64_t peak_bytes() const { return max_bytes + 2 * max_decoded_bytes; }
};

enum class ImageFormat { jpeg, png, gif, bmp, psd, hdr, tiff, webp, pnm, tga_or_unknown };

inline const char* format_name(ImageFormat f) {
  switch (f) {
    case ImageFormat::jpeg: return "JPEG";
    case ImageFormat::png: return "PNG";
    case ImageFormat::gif: return "GIF";
    case ImageFormat::bmp: return "BMP";
    case ImageFormat::psd: return "PSD";
    case ImageFormat::hdr: return "Radiance HDR";
    case ImageFormat::tiff: return "TIFF";
    case ImageFormat::webp: return "WebP";
    case ImageFormat::pnm: return "PNM";
    default: return "unknown";
  }
}

/// Identify a format by its magic bytes (never by file name).
inline ImageFormat sniff_format(std::span<const std::byte> b) {
  auto is = [&](std::string_view magic) {
    if (b.size() < magic.size()) return false;
    for (std::size_t i = 0; i < magic.size(); ++i)
      if (static_cast<unsigned char>(b[i]) != static_cast<unsigned char>(magic[i])) return false;
    return true;
  };
  if (is("\xFF\xD8\xFF")) return ImageFormat::jpeg;
  if (is("\x89PNG\r\n\x1A\n")) return ImageFormat::png;
  if (is("GIF87a") || is("GIF89a")) return ImageFormat::gif;
  if (is("BM")) return ImageFormat::bmp;
  if (is("8BPS")) return ImageFormat::psd;
  if (is("#?RADIANCE") || is("#?RGBE")) return ImageFormat::hdr;
  if (is("II*") || is("MM\0*")) return ImageFormat::tiff;
  if (is("RIFF") && b.size() >= 12 && static_cast<char>(b[8]) == 'W' && static_cast<char>(b[9]) == 'E')
    return ImageFormat::webp;
  if (b.size() >= 2 && static_cast<char>(b[0]) == 'P' && static_cast<char>(b[1]) >= '1' &&
      static_cast<char>(b[1]) <= '7')
    return ImageFormat::pnm;
  return ImageFormat::tga_or_unknown;
}

/// What a JPEG or PNG header declares, read before any pixel is decoded.
struct ImageHeader {
  std::size_t width = 0, height = 0;
  unsigned channels = 0;  ///< in the file: 1 gray, 2 gray+alpha, 3 RGB or YCbCr, 4 RGBA or CMYK
  unsigned bits = 8;      ///< per sample (PNG 1-16; JPEG 8)

  /// Bytes of the decoder's pixel buffer (see DecodeLimits::max_decoded_bytes).
  std::uint64_t decoded_bytes() const {
    return std::uint64_t{width} * height * std::max(channels, 3u) * (bits > 8 ? 2u : 1u);
  }
};

namespace detail {

inline unsigned u8(std::span<const std::byte> b, std::size_t i) { return static_cast<unsigned>(b[i]); }
inline unsigned be16(std::span<const std::byte> b, std::size_t i) { return (u8(b, i) << 8) | u8(b, i + 1); }
inline std::uint32_t be32(std::span<const std::byte> b, std::size_t i) {
  return (std::uint32_t{u8(b, i)} << 24) | (std::uint32_t{u8(b, i + 1)} << 16) | (std::uint32_t{u8(b, i + 2)} << 8) |
         std::uint32_t{u8(b, i + 3)};
}

/// Walk a JPEG's marker segments and validate what stb_image 2.27 trusts. Throws sieve::Error
/// naming `name`, the marker and its offset.
inline ImageHeader jpeg_precheck(std::span<const std::byte> b, std::string_view name) {
  const std::size_t n = b.size();
  auto bad = [&](std::size_t at, auto&&... why) {
    fail(name, ": corrupt JPEG at byte ", at, ": ", std::forward<decltype(why)>(why)...);
  };
  bool dc_defined[4] = {false, false, false, false};
  bool ac_defined[4] = {false, false, false, false};
  bool sof_seen = false, progressive = false, eoi_seen = false;
  std::array<unsigned, 4> comp_ids{};
  unsigned ncomp = 0;
  ImageHeader head;  // from SOF
  std::size_t pos = 2;  // after SOI
  while (pos < n && !eoi_seen) {
    if (u8(b, pos) != 0xFF) bad(pos, "expected a marker (0xFF), found 0x", std::hex, u8(b, pos));
    while (pos < n && u8(b, pos) == 0xFF) ++pos;  // fill bytes
    if (pos >= n) break;
    const unsigned m = u8(b, pos);
    const std::size_t mpos = pos - 1;
    ++pos;
    if (m == 0xD9) {
      eoi_seen = true;
      break;
    }
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;  // TEM, stray RSTn: no payload
    if (m == 0xD8 || m == 0x00) bad(mpos, "unexpected marker 0x", std::hex, m);
    if (pos + 2 > n) fail(name, ": truncated JPEG: file ends inside marker 0x", std::hex, m, std::dec, " at byte ", mpos);
    const std::size_t len = be16(b, pos);
    if (len < 2) bad(mpos, "segment length ", len, " < 2");
    if (pos + len > n)
      fail(name, ": truncated JPEG: segment 0x", std::hex, m, std::dec, " at byte ", mpos, " claims ", len,
           " bytes but only ", n - pos, " remain");
    const std::size_t seg = pos + 2, end = pos + len;
    pos = end;
    if (m == 0xC0 || m == 0xC1 || m == 0xC2) {
      if (sof_seen) bad(mpos, "second SOF marker");
      if (len < 8) bad(mpos, "SOF segment too short (", len, " bytes)");
      const unsigned precision = u8(b, seg), height = be16(b, seg + 1), width = be16(b, seg + 3);
      ncomp = u8(b, seg + 5);
      if (precision != 8) fail(name, ": unsupported JPEG: ", precision, "-bit samples (only 8-bit)");
      if (height == 0 || width == 0) bad(mpos, "SOF declares ", width, "x", height, " pixels");
      head = {width, height, ncomp, precision};
      if (!(ncomp == 1 || ncomp == 3 || ncomp == 4)) bad(mpos, "SOF declares ", ncomp, " components");
      if (len != 8 + 3 * ncomp) bad(mpos, "SOF length ", len, " does not match ", ncomp, " components");
      for (unsigned c = 0; c < ncomp; ++c) {
        const unsigned hv = u8(b, seg + 7 + 3 * c), tq = u8(b, seg + 8 + 3 * c);
        comp_ids[c] = u8(b, seg + 6 + 3 * c);
        if ((hv >> 4) < 1 || (hv >> 4) > 4 || (hv & 15) < 1 || (hv & 15) > 4)
          bad(mpos, "component ", c, " has sampling factors ", (hv >> 4), "x", (hv & 15));
        if (tq > 3) bad(mpos, "component ", c, " uses quantisation table ", tq);
      }
      sof_seen = true;
      progressive = m == 0xC2;
    } else if ((m >= 0xC3 && m <= 0xCF) && m != 0xC4 && m != 0xC8 && m != 0xCC) {
      fail(name, ": unsupported JPEG: SOF marker 0x", std::hex, m,
           " (lossless, hierarchical or arithmetic coding; only baseline and progressive Huffman)");
    } else if (m == 0xC4) {  // DHT
      std::size_t p = seg;
      while (p < end) {
        if (p + 17 > end) bad(p, "DHT table header runs past its segment");
        const unsigned tc = u8(b, p) >> 4, th = u8(b, p) & 15;
        if (tc > 1 || th > 3) bad(p, "DHT class ", tc, " id ", th);
        std::size_t total = 0;
        std::uint32_t code = 0;  // Kraft: the canonical code of each length must fit its bits
        for (unsigned l = 1; l <= 16; ++l) {
          const unsigned count = u8(b, p + l);
          total += count;
          code += count;
          if (code > (1u << l)) bad(p, "DHT code lengths over-subscribe the code space at length ", l);
          code <<= 1;
        }
        if (total > 256) bad(p, "DHT declares ", total, " codes (at most 256)");
        if (p + 17 + total > end) bad(p, "DHT symbols run past the segment");
        if (tc == 0)
          for (std::size_t s = 0; s < total; ++s)
            if (u8(b, p + 17 + s) > 15) bad(p, "DC table symbol ", u8(b, p + 17 + s), " > 15");
        (tc == 0 ? dc_defined : ac_defined)[th] = true;
        p += 17 + total;
      }
    } else if (m == 0xDB) {  // DQT
      std::size_t p = seg;
      while (p < end) {
        const unsigned pq = u8(b, p) >> 4, tq = u8(b, p) & 15;
        if (pq > 1 || tq > 3) bad(p, "DQT precision ", pq, " id ", tq);
        p += 1 + 64 * (pq + 1);
        if (p > end) bad(seg, "DQT table runs past its segment");
      }
    } else if (m == 0xDD) {
      if (len != 4) bad(mpos, "DRI length ", len, " (must be 4)");
    } else if (m == 0xDA) {  // SOS, then entropy-coded data
      if (!sof_seen) bad(mpos, "scan before any SOF marker");
      if (len < 6) bad(mpos, "SOS segment too short");
      const unsigned ns = u8(b, seg);
      if (ns < 1 || ns > 4 || len != 6 + 2 * ns) bad(mpos, "SOS with ", ns, " components and length ", len);
      const std::size_t tail = seg + 1 + 2 * ns;
      const unsigned ss = u8(b, tail), se = u8(b, tail + 1), ah = u8(b, tail + 2) >> 4, al = u8(b, tail + 2) & 15;
      if (progressive) {
        if (ss > 63 || se > 63 || ss > se || ah > 13 || al > 13) bad(mpos, "progressive scan parameters out of range");
      } else if (ss != 0 || se != 63 || ah != 0 || al != 0) {
        bad(mpos, "baseline scan with Ss=", ss, " Se=", se, " Ah=", ah, " Al=", al);
      }
      for (unsigned c = 0; c < ns; ++c) {
        const unsigned cs = u8(b, seg + 1 + 2 * c), td = u8(b, seg + 2 + 2 * c) >> 4, ta = u8(b, seg + 2 + 2 * c) & 15;
        bool known = false;
        for (unsigned k = 0; k < ncomp; ++k) known = known || comp_ids[k] == cs;
        if (!known) bad(mpos, "scan references component ", cs, " not declared in SOF");
        if (td > 3 || ta > 3) bad(mpos, "scan uses Huffman tables ", td, "/", ta);
        const bool need_dc = !progressive || (ss == 0 && ah == 0);
        const bool need_ac = !progressive || ss > 0;
        if (need_dc && !dc_defined[td]) bad(mpos, "scan uses DC Huffman table ", td, " which was never defined");
        if (need_ac && !ac_defined[ta]) bad(mpos, "scan uses AC Huffman table ", ta, " which was never defined");
      }
      // Skip entropy-coded data: it ends at a marker other than a stuffed 0xFF00 or RSTn.
      std::size_t p = end;
      for (;;) {
        while (p < n && u8(b, p) != 0xFF) ++p;
        if (p + 1 >= n) fail(name, ": truncated JPEG: file ends inside scan data (", n, " bytes, no EOI marker)");
        std::size_t q = p + 1;
        while (q < n && u8(b, q) == 0xFF) ++q;
        if (q >= n) fail(name, ": truncated JPEG: file ends inside scan data (", n, " bytes, no EOI marker)");
        const unsigned next = u8(b, q);
        if (next == 0x00 || (next >= 0xD0 && next <= 0xD7)) {
          p = q + 1;
          continue;
        }
        pos = q - 1;  // points at 0xFF before the marker
        break;
      }
    }
    // APPn, COM, DNL and other segments: skipped by length.
  }
  if (!sof_seen) fail(name, ": corrupt JPEG: no SOF (frame header) marker");
  if (!eoi_seen) fail(name, ": truncated JPEG: no EOI marker (", n, " bytes)");
  return head;
}

/// Walk a PNG's chunks: lengths, CRC-32 of every chunk, IHDR first and sane, IEND present.
inline ImageHeader png_precheck(std::span<const std::byte> b, std::string_view name) {
  const std::size_t n = b.size();
  ImageHeader head;  // from IHDR
  std::size_t pos = 8;
  bool first = true, iend = false;
  while (!iend) {
    if (pos + 12 > n) fail(name, ": truncated PNG: file ends after ", n, " bytes without an IEND chunk");
    const std::uint32_t len = be32(b, pos);
    if (len > 0x7FFFFFFFu) fail(name, ": corrupt PNG: chunk at byte ", pos, " claims ", len, " bytes");
    const std::string type{static_cast<char>(b[pos + 4]), static_cast<char>(b[pos + 5]), static_cast<char>(b[pos + 6]),
                           static_cast<char>(b[pos + 7])};
    // Chunk types are ASCII letters in valid files; show anything else as \xNN so error
    // messages stay printable text (they reach terminals, logs and JSON).
    std::string shown;
    for (char c : type) {
      const auto u = static_cast<unsigned char>(c);
      if (u >= 0x20 && u < 0x7f && c != '\\') {
        shown += c;
      } else {
        const char* hex = "0123456789abcdef";
        shown += {'\\', 'x', hex[u >> 4], hex[u & 15]};
      }
    }
    if (pos + 12 + std::size_t{len} > n)
      fail(name, ": truncated PNG: chunk '", shown, "' at byte ", pos, " claims ", len, " bytes but only ",
           n - pos - 12, " remain");
    const auto* data = reinterpret_cast<const Bytef*>(b.data() + pos + 4);
    const std::uint32_t crc = static_cast<std::uint32_t>(::crc32(::crc32(0L, Z_NULL, 0), data, 4 + len));
    const std::uint32_t stored = be32(b, pos + 8 + len);
    if (crc != stored)
      fail(name, ": corrupt PNG: CRC mismatch in chunk '", shown, "' at byte ", pos, " (stored 0x", std::hex, stored,
           ", computed 0x", crc, ")");
    if (first) {
      if (type != "IHDR" || len != 13) fail(name, ": corrupt PNG: first chunk is '", shown, "', not a 13-byte IHDR");
      const std::uint32_t w = be32(b, pos + 8), h = be32(b, pos + 12);
      if (w == 0 || h == 0) fail(name, ": corrupt PNG: IHDR declares ", w, "x", h, " pixels");
      const unsigned depth = u8(b, pos + 16), colour = u8(b, pos + 17);
      // Colour types 0 gray, 2 RGB, 3 palette (expanded to RGB), 4 gray+alpha, 6 RGBA; stb
      // refuses any other, after this check.
      const unsigned channels = colour == 4 ? 2 : colour == 6 ? 4 : colour == 0 ? 1 : 3;
      head = {w, h, channels, colour == 3 ? 8u : depth};
      first = false;
    }
    iend = type == "IEND";
    pos += 12 + std::size_t{len};
  }
  return head;
}

struct StbFree {
  void operator()(unsigned char* p) const noexcept { stbi_image_free(p); }
};

inline const char* stbi_reason() {
  const char* r = stbi_failure_reason();
  return r != nullptr ? r : "no reason given";
}

}  // namespace detail

namespace detail {
inline void check_image_dims(ImageFormat fmt, std::size_t W, std::size_t H, const DecodeLimits& limits,
                             std::string_view name) {
  if (W > limits.max_width || H > limits.max_height || std::uint64_t{W} * H > limits.max_pixels)
    fail(name, ": ", format_name(fmt), " is ", W, "x", H, " pixels, over the limit of ", limits.max_width, "x",
         limits.max_height, " (", limits.max_pixels, " pixels)");
}
}  // namespace detail

/// Check what the bytes' JPEG or PNG header declares against `limits` without decoding a pixel:
/// the format, sieve's structural pre-check, the sides, the pixel count and the decoded size.
/// Requires: nothing (any bytes are safe). Ensures: the header, or a sieve::Error naming `name`
/// (the first half of decode_image_into: what passes may still fail in the pixel data).
inline ImageHeader check_image_header(std::span<const std::byte> bytes, const DecodeLimits& limits = {},
                                      std::string_view name = "<memory>") {
  if (bytes.empty()) fail(name, ": empty file (0 bytes), not an image");
  if (bytes.size() > limits.max_bytes)
    fail(name, ": encoded image is ", bytes.size(), " bytes, over the limit of ", limits.max_bytes);
  if (bytes.size() > 0x7FFFFFFFu) fail(name, ": encoded image is ", bytes.size(), " bytes, over stb's 2 GiB limit");
  const ImageFormat fmt = sniff_format(bytes);
  ImageHeader head;
  if (fmt == ImageFormat::jpeg)
    head = detail::jpeg_precheck(bytes, name);
  else if (fmt == ImageFormat::png)
    head = detail::png_precheck(bytes, name);
  else if (fmt == ImageFormat::tga_or_unknown)
    fail(name, ": not a JPEG or PNG file (unrecognised signature, ", bytes.size(), " bytes)");
  else
    fail(name, ": unsupported image format ", format_name(fmt), " (sieve decodes only JPEG and PNG)");
  detail::check_image_dims(fmt, head.width, head.height, limits, name);  // before stb reads anything
  if (head.decoded_bytes() > limits.max_decoded_bytes)
    fail(name, ": ", format_name(fmt), " is ", head.width, "x", head.height, " with ", head.channels, " channel",
         head.channels == 1 ? "" : "s", " of ", head.bits, " bits: ", head.decoded_bytes() >> 20,
         " MiB decoded, over the limit of ", limits.max_decoded_bytes >> 20, " MiB");
  return head;
}

/// Decode a JPEG or PNG held in memory into RGB (gray, gray+alpha and RGBA become RGB; alpha
/// is dropped, as PIL's convert("RGB") does). `name` appears in every error ("<memory>" if
/// the bytes have no file).
/// Requires: nothing (any bytes are safe). Ensures: a valid Image within `limits`, or a
/// sieve::Error naming `name` and the reason (stb's reason included when stb refused).
/// This overload decodes into `out`, reusing its pixel buffer (no page faults for a fresh
/// allocation in steady state); on error `out` is left unspecified.
inline void decode_image_into(std::span<const std::byte> bytes, Image& out, const DecodeLimits& limits = {},
                              std::string_view name = "<memory>") {
  const ImageHeader head = check_image_header(bytes, limits, name);
  const ImageFormat fmt = sniff_format(bytes);
  auto check_dims = [&](std::size_t W, std::size_t H) { detail::check_image_dims(fmt, W, H, limits, name); };

  const auto* data = reinterpret_cast<const stbi_uc*>(bytes.data());
  const int size = static_cast<int>(bytes.size());
  int w = 0, h = 0, comp = 0;
  if (stbi_info_from_memory(data, size, &w, &h, &comp) == 0)
    fail(name, ": cannot read ", format_name(fmt), " header: ", detail::stbi_reason());
  if (w <= 0 || h <= 0) fail(name, ": ", format_name(fmt), " declares ", w, "x", h, " pixels");
  const auto W = static_cast<std::size_t>(w), H = static_cast<std::size_t>(h);
  check_dims(W, H);
  if (W != head.width || H != head.height)
    fail(name, ": ", format_name(fmt), " header parsed as ", head.width, "x", head.height, " but stb reads ", W, "x",
         H);

  detail::stbi_failed_assertion = nullptr;
  int w2 = 0, h2 = 0, comp2 = 0;
  std::unique_ptr<unsigned char, detail::StbFree> px(stbi_load_from_memory(data, size, &w2, &h2, &comp2, 3));
  if (detail::stbi_failed_assertion != nullptr) {
    const char* what = detail::stbi_failed_assertion;
    detail::stbi_failed_assertion = nullptr;
    fail(name, ": corrupt ", format_name(fmt), ": decoder consistency check failed (", what, ")");
  }
  if (!px) fail(name, ": cannot decode ", format_name(fmt), ": ", detail::stbi_reason());
  if (w2 != w || h2 != h) fail(name, ": ", format_name(fmt), " header said ", w, "x", h, " but decoded ", w2, "x", h2);
  out.reshape(H, W);
  std::memcpy(out.pixels.data(), px.get(), H * W * 3);
}

/// Decode a JPEG or PNG held in memory into a new Image (see decode_image_into).
inline Image decode_image(std::span<const std::byte> bytes, const DecodeLimits& limits = {},
                          std::string_view name = "<memory>") {
  Image img;
  decode_image_into(bytes, img, limits, name);
  return img;
}

/// Read and decode an image file. Errors name the file.
inline Image read_image(const std::filesystem::path& path, const DecodeLimits& limits = {}) {
  const auto bytes = read_file(path, limits.max_bytes);
  return decode_image(bytes, limits, path.string());
}

/// Read and decode an image file into `out`, reusing its buffer. Errors name the file.
inline void read_image_into(const std::filesystem::path& path, Image& out, const DecodeLimits& limits = {}) {
  const auto bytes = read_file(path, limits.max_bytes);
  decode_image_into(bytes, out, limits, path.string());
}

/// check_image_header on a file (a regular file within limits.max_bytes, see read_file): what
/// a command checks of every image before it starts work that a bad one would end midway.
inline ImageHeader read_image_header(const std::filesystem::path& path, const DecodeLimits& limits = {}) {
  const auto bytes = read_file(path, limits.max_bytes);
  return check_image_header(bytes, limits, path.string());
}

namespace detail {
inline void stbiw_append(void* ctx, void* data, int size) {
  auto* out = static_cast<std::vector<std::byte>*>(ctx);
  const auto* p = static_cast<const std::byte*>(data);
  out->insert(out->end(), p, p + size);
}
inline void check_encodable(const Image& img, const char* what) {
  SIEVE_CHECK(img.height > 0 && img.width > 0 && img.pixels.size() == img.height * img.width * 3, what,
              ": image is ", img.width, "x", img.height, " with ", img.pixels.size(), " bytes (need w*h*3 > 0)");
  SIEVE_CHECK(img.width <= 65535 && img.height <= 65535, what, ": ", img.width, "x", img.height,
              " is over the 65535 per side the encoder handles");
}
}  // namespace detail

/// Encode as PNG (lossless). Requires: a non-empty RGB image, sides <= 65535.
inline std::vector<std::byte> encode_png(const Image& img) {
  detail::check_encodable(img, "encode_png");
  std::vector<std::byte> out;
  const int w = static_cast<int>(img.width), h = static_cast<int>(img.height);
  if (stbi_write_png_to_func(detail::stbiw_append, &out, w, h, 3, img.data(), w * 3) == 0)
    fail("encode_png: stb_image_write failed for a ", w, "x", h, " image");
  return out;
}

/// Encode as baseline JPEG. Requires: quality in [1, 100].
inline std::vector<std::byte> encode_jpeg(const Image& img, int quality = 95) {
  detail::check_encodable(img, "encode_jpeg");
  SIEVE_CHECK(quality >= 1 && quality <= 100, "encode_jpeg: quality ", quality, " not in [1, 100]");
  std::vector<std::byte> out;
  const int w = static_cast<int>(img.width), h = static_cast<int>(img.height);
  if (stbi_write_jpg_to_func(detail::stbiw_append, &out, w, h, 3, img.data(), quality) == 0)
    fail("encode_jpeg: stb_image_write failed for a ", w, "x", h, " image");
  return out;
}

/// Write a PNG file atomically (temp file + rename).
inline void write_png(const std::filesystem::path& path, const Image& img) {
  write_file_atomic(path, encode_png(img));
}

/// Write a JPEG file atomically (temp file + rename).
inline void write_jpeg(const std::filesystem::path& path, const Image& img, int quality = 95) {
  write_file_atomic(path, encode_jpeg(img, quality));
}

}  // namespace io
}  // namespace sieve
