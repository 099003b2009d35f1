#pragma once
/// safetensors reader and writer that enforce the format's safety rules.
///
/// Layout: 8-byte little-endian header length N, N bytes of UTF-8 JSON
/// (`{"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}, "__metadata__": {...}}`),
/// then the data buffer. Offsets are relative to the data buffer. Every rule broken is
/// reported as a sieve::Error naming the file, the tensor and the rule: a weights file is
/// untrusted input, so nothing here trusts a size or an offset before checking it.
///
/// The header parser is a small schema-directed JSON parser written for this header only
/// (no recursion, no dependency): the library must not depend on a JSON library.

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/io/detail/text.hpp"
#include "sieve/io/file.hpp"

namespace sieve::io {

/// Element types sieve reads and writes. F16/BF16 are converted exactly to float on load.
enum class DType { F16, BF16, F32, F64, I64 };

/// Bytes per element of `t`.
constexpr std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::I64: return 8;
  }
  return 0;
}

/// The dtype's name as written in safetensors headers ("F32", "BF16", ...).
constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::I64: return "I64";
  }
  return "?";
}

/// True for the floating-point dtypes.
constexpr bool dtype_is_float(DType t) { return t != DType::I64; }

/// Parse a header dtype name; nullopt for names sieve does not support.
inline std::optional<DType> dtype_from_name(std::string_view s) {
  for (DType t : {DType::F16, DType::BF16, DType::F32, DType::F64, DType::I64})
    if (dtype_name(t) == s) return t;
  return std::nullopt;
}

/// One tensor's entry in the header.
struct TensorInfo {
  DType dtype;
  std::vector<std::size_t> shape;  ///< empty for a rank-0 (scalar) tensor
  std::size_t begin, end;          ///< byte offsets into the data buffer, [begin, end)

  /// Number of elements (1 for rank 0). Overflow was ruled out when the header was parsed.
  std::size_t numel() const {
    std::size_t n = 1;
    for (std::size_t d : shape) n *= d;
    return n;
  }
};

/// Largest header the reader accepts (the reference implementation's cap).
inline constexpr std::uint64_t kSafeTensorsMaxHeader = 100'000'000;

// ---------------------------------------------------------------------------------------------
// Exact conversions between float/double and the 16-bit formats.
namespace detail {

/// Decode a binary16 bit pattern exactly (subnormals, inf, NaN included).
inline float f16_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  const std::uint32_t man = h & 0x3ffu;
  std::uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);  // inf, or NaN keeping its payload
  } else if (exp != 0) {
    bits = sign | ((exp - 15 + 127) << 23) | (man << 13);
  } else {
    // Subnormal or zero: man * 2^-24 is exactly representable as a float.
    const float v = std::ldexp(static_cast<float>(man), -24);
    return sign ? -v : v;
  }
  return std::bit_cast<float>(bits);
}

/// Decode a bfloat16 bit pattern: bfloat16 is the top half of a binary32.
inline float bf16_to_float(std::uint16_t b) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}

/// Round `x` to the nearest value (ties to even) of a binary format with `ebits` exponent
/// bits and `mbits` fraction bits, returning its bit pattern. Rounds straight from double,
/// so there is no double rounding through float. Overflow gives inf; NaN stays a quiet NaN.
inline std::uint32_t encode_small_float(double x, int ebits, int mbits) {
  const std::uint32_t sign = std::signbit(x) ? (1u << (ebits + mbits)) : 0u;
  const std::uint32_t exp_mask = ((1u << ebits) - 1u) << mbits;
  if (std::isnan(x)) return sign | exp_mask | (1u << (mbits - 1));
  const double a = std::fabs(x);
  if (std::isinf(a)) return sign | exp_mask;
  if (a == 0.0) return sign;
  const int bias = (1 << (ebits - 1)) - 1;
  const int emin = 1 - bias;
  int e2 = 0;
  (void)std::frexp(a, &e2);
  int E = e2 - 1;  // a = 1.f * 2^E
  const bool subnormal = E < emin;
  const int q = subnormal ? emin : E;  // value of the leading bit's exponent
  // m = a / 2^(q - mbits): scaling by a power of two is exact in double.
  const double m = std::ldexp(a, mbits - q);
  double r = std::floor(m);
  const double frac = m - r;  // exact: m and r share their exponent range
  if (frac > 0.5 || (frac == 0.5 && std::fmod(r, 2.0) != 0.0)) r += 1.0;
  auto ri = static_cast<std::uint64_t>(r);
  const std::uint64_t one = std::uint64_t{1} << mbits;
  if (subnormal) {
    // ri == one means it rounded up to the smallest normal, whose encoding is exactly `one`.
    return sign | static_cast<std::uint32_t>(ri);
  }
  if (ri == 2 * one) {
    ri = one;
    ++E;
  }
  if (E > bias) return sign | exp_mask;
  return sign | (static_cast<std::uint32_t>(E + bias) << mbits) | static_cast<std::uint32_t>(ri - one);
}

/// double -> float, round to nearest even; out-of-range finite values follow IEEE (inf or
/// FLT_MAX) instead of the undefined behaviour of a plain cast.
inline float double_to_float(double x) {
  if (std::isfinite(x) && std::fabs(x) > static_cast<double>(std::numeric_limits<float>::max()))
    return std::bit_cast<float>(encode_small_float(x, 8, 23));
  return static_cast<float>(x);
}

inline std::uint16_t double_to_f16(double x) { return static_cast<std::uint16_t>(encode_small_float(x, 5, 10)); }
inline std::uint16_t double_to_bf16(double x) { return static_cast<std::uint16_t>(encode_small_float(x, 8, 7)); }

// Little-endian loads and stores, independent of the host's byte order and alignment.
template <class U>
U load_le(const std::byte* p) {
  U v = 0;
  for (std::size_t i = 0; i < sizeof(U); ++i) v |= static_cast<U>(static_cast<U>(p[i]) << (8 * i));
  return v;
}
template <class U>
void store_le(std::byte* p, U v) {
  for (std::size_t i = 0; i < sizeof(U); ++i) p[i] = static_cast<std::byte>((v >> (8 * i)) & 0xffu);
}

/// Checked a*b for sizes; false on overflow.
inline bool mul_ok(std::uint64_t a, std::uint64_t b, std::uint64_t& out) {
  if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a) return false;
  out = a * b;
  return true;
}

inline void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

/// JSON string literal for the writer (escapes quotes, backslashes and control characters).
inline void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (ch == '"') {
      out += "\\\"";
    } else if (ch == '\\') {
      out += "\\\\";
    } else if (c < 0x20) {
      static constexpr char hex[] = "0123456789abcdef";
      out += "\\u00";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += ch;
    }
  }
  out += '"';
}

/// Schema-directed parser for the safetensors header. Rule names in messages are stable:
/// tests and users grep for them.
class HeaderParser {
 public:
  struct Entry {
    std::string name;
    TensorInfo info;
  };

  HeaderParser(std::string_view text, const std::string& source) : s_(text), src_(source) {}

  void parse(std::vector<Entry>& entries, std::map<std::string, std::string>& metadata) {
    if (s_.empty() || s_[0] != '{')
      fail(src_, ": header does not start with '{' [rule: header must be a JSON object starting with '{']");
    if (auto bad = utf8_invalid_at(s_))
      fail(src_, ": header is not valid UTF-8 at header byte ", *bad, " [rule: header must be UTF-8]");
    pos_ = 1;
    std::set<std::string> seen;
    skip_ws();
    if (peek() == '}') {
      ++pos_;
    } else {
      for (;;) {
        skip_ws();
        std::string key = parse_string("a tensor name");
        check_unique(seen, key, "");
        skip_ws();
        expect(':', key);
        skip_ws();
        if (key == "__metadata__") {
          parse_metadata(metadata);
        } else {
          entries.push_back(Entry{key, parse_tensor(key)});
        }
        skip_ws();
        const char c = next("',' or '}' after a header entry");
        if (c == '}') break;
        if (c != ',') syntax("expected ',' or '}' after the entry for '" + printable(key) + "'");
      }
    }
    // The reference writer pads the header with spaces to align the data buffer.
    skip_ws();
    if (pos_ != s_.size())
      syntax("unexpected characters after the closing '}' of the header");
  }

 private:
  std::string_view s_;
  const std::string& src_;
  std::size_t pos_ = 0;

  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  bool at_end() const { return pos_ >= s_.size(); }

  [[noreturn]] void syntax(const std::string& what) const {
    fail(src_, ": header JSON syntax error at header byte ", pos_, ": ", what, " [rule: header must be valid JSON]");
  }

  char next(std::string_view what) {
    if (at_end()) syntax("header ended early, expected " + std::string(what));
    return s_[pos_++];
  }

  void expect(char c, std::string_view context) {
    if (at_end() || s_[pos_] != c)
      syntax(std::string("expected '") + c + "' after '" + printable(context) + "'");
    ++pos_;
  }

  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }

  // A set, not a sorted vector: a hostile header may hold millions of keys.
  void check_unique(std::set<std::string>& seen, const std::string& key, const std::string& where) const {
    if (!seen.insert(key).second)
      fail(src_, ": duplicate key '", printable(key), "'", where, " [rule: no duplicate keys]");
  }

  unsigned hex4() {
    unsigned v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = next("four hex digits after \\u");
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= static_cast<unsigned>(c - 'A' + 10);
      else syntax("bad hex digit in \\u escape");
    }
    return v;
  }

  std::string parse_string(const std::string& what) {
    if (at_end() || s_[pos_] != '"') syntax("expected a string (" + what + ")");
    ++pos_;
    std::string out;
    for (;;) {
      const char c = next("closing '\"' of a string");
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) syntax("unescaped control character in a string");
      if (c != '\\') {
        out += c;
        continue;
      }
      const char e = next("an escape character");
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          std::uint32_t cp = hex4();
          if (cp >= 0xdc00 && cp <= 0xdfff) syntax("lone low surrogate in \\u escape");
          if (cp >= 0xd800 && cp <= 0xdbff) {
            if (next("a low surrogate escape") != '\\' || next("a low surrogate escape") != 'u')
              syntax("high surrogate not followed by a \\u low surrogate");
            const std::uint32_t lo = hex4();
            if (lo < 0xdc00 || lo > 0xdfff) syntax("high surrogate not followed by a low surrogate");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          }
          append_utf8(out, cp);
          break;
        }
        default: syntax(std::string("invalid escape '\\") + e + "'");
      }
    }
  }

  /// A non-negative JSON integer without sign, fraction, exponent or leading zeros.
  std::uint64_t parse_uint(const std::string& tensor, const char* field) {
    if (at_end() || s_[pos_] < '0' || s_[pos_] > '9')
      fail(src_, ": tensor '", printable(tensor), "': ", field,
           " must hold non-negative integers, found '", printable(s_.substr(pos_, 12)),
           "' [rule: ", field, " must be an array of non-negative integers]");
    if (s_[pos_] == '0' && pos_ + 1 < s_.size() && s_[pos_ + 1] >= '0' && s_[pos_ + 1] <= '9')
      syntax("number with a leading zero");
    std::uint64_t v = 0;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
      const auto d = static_cast<std::uint64_t>(s_[pos_] - '0');
      if (v > (std::numeric_limits<std::uint64_t>::max() - d) / 10)
        fail(src_, ": tensor '", printable(tensor), "': ", field, " value overflows 64 bits [rule: ", field,
             " must be an array of non-negative integers]");
      v = v * 10 + d;
      ++pos_;
    }
    const char c = peek();
    if (c == '.' || c == 'e' || c == 'E')
      fail(src_, ": tensor '", printable(tensor), "': ", field, " holds a non-integer number [rule: ", field,
           " must be an array of non-negative integers]");
    return v;
  }

  std::vector<std::uint64_t> parse_uint_array(const std::string& tensor, const char* field) {
    if (at_end() || s_[pos_] != '[')
      fail(src_, ": tensor '", printable(tensor), "': ", field, " is not an array [rule: ", field,
           " must be an array of non-negative integers]");
    ++pos_;
    std::vector<std::uint64_t> out;
    skip_ws();
    if (peek() == ']') {
      ++pos_;
      return out;
    }
    for (;;) {
      skip_ws();
      out.push_back(parse_uint(tensor, field));
      skip_ws();
      const char c = next("',' or ']' in an array");
      if (c == ']') return out;
      if (c != ',') syntax("expected ',' or ']' in the array " + std::string(field) + " of '" + printable(tensor) + "'");
    }
  }

  void parse_metadata(std::map<std::string, std::string>& metadata) {
    if (at_end() || s_[pos_] != '{')
      fail(src_, ": __metadata__ is not an object [rule: __metadata__ must map strings to strings]");
    ++pos_;
    std::set<std::string> seen;
    skip_ws();
    if (peek() == '}') {
      ++pos_;
      return;
    }
    for (;;) {
      skip_ws();
      std::string key = parse_string("a __metadata__ key");
      check_unique(seen, key, " in __metadata__");
      skip_ws();
      expect(':', key);
      skip_ws();
      if (peek() != '"')
        fail(src_, ": __metadata__ value for '", printable(key),
             "' is not a string [rule: __metadata__ must map strings to strings]");
      metadata[key] = parse_string("a __metadata__ value");
      skip_ws();
      const char c = next("',' or '}' in __metadata__");
      if (c == '}') return;
      if (c != ',') syntax("expected ',' or '}' in __metadata__");
    }
  }

  TensorInfo parse_tensor(const std::string& name) {
    if (at_end() || s_[pos_] != '{')
      fail(src_, ": tensor '", printable(name), "': entry is not an object [rule: tensor entry must be an object]");
    ++pos_;
    std::set<std::string> seen;
    std::optional<DType> dtype;
    std::optional<std::vector<std::uint64_t>> shape, offsets;
    skip_ws();
    if (peek() != '}') {
      for (;;) {
        skip_ws();
        std::string key = parse_string("a field name of tensor '" + printable(name) + "'");
        check_unique(seen, key, " in tensor '" + printable(name) + "'");
        skip_ws();
        expect(':', key);
        skip_ws();
        if (key == "dtype") {
          if (peek() != '"')
            fail(src_, ": tensor '", printable(name), "': dtype is not a string [rule: dtype must be one of F16, BF16, F32, F64, I64]");
          const std::string d = parse_string("dtype");
          dtype = dtype_from_name(d);
          if (!dtype)
            fail(src_, ": tensor '", printable(name), "': unsupported dtype '", printable(d),
                 "' [rule: dtype must be one of F16, BF16, F32, F64, I64]");
        } else if (key == "shape") {
          shape = parse_uint_array(name, "shape");
        } else if (key == "data_offsets") {
          offsets = parse_uint_array(name, "data_offsets");
        } else {
          fail(src_, ": tensor '", printable(name), "': unknown field '", printable(key),
               "' [rule: tensor entry has exactly dtype, shape, data_offsets]");
        }
        skip_ws();
        const char c = next("',' or '}' in a tensor entry");
        if (c == '}') break;
        if (c != ',') syntax("expected ',' or '}' in the entry of tensor '" + printable(name) + "'");
      }
    } else {
      ++pos_;
    }
    const char* missing = !dtype ? "dtype" : !shape ? "shape" : !offsets ? "data_offsets" : nullptr;
    if (missing)
      fail(src_, ": tensor '", printable(name), "': missing field '", missing,
           "' [rule: tensor entry has exactly dtype, shape, data_offsets]");
    if (offsets->size() != 2)
      fail(src_, ": tensor '", printable(name), "': data_offsets has ", offsets->size(),
           " values [rule: data_offsets must be [begin, end]]");
    TensorInfo info{*dtype, {}, 0, 0};
    std::uint64_t count = 1;
    for (std::uint64_t d : *shape) {
      if (d > std::numeric_limits<std::size_t>::max() || !mul_ok(count, d, count))
        fail(src_, ": tensor '", printable(name), "': element count of its shape overflows 64 bits",
             " [rule: byte length must equal element count x dtype size]");
      info.shape.push_back(static_cast<std::size_t>(d));
    }
    std::uint64_t bytes = 0;
    if (!mul_ok(count, dtype_size(*dtype), bytes))
      fail(src_, ": tensor '", printable(name), "': byte size of ", count, " elements of ", dtype_name(*dtype),
           " overflows 64 bits [rule: byte length must equal element count x dtype size]");
    const std::uint64_t b = (*offsets)[0], e = (*offsets)[1];
    if (e < b)
      fail(src_, ": tensor '", printable(name), "': data_offsets [", b, ", ", e,
           "] end before they begin [rule: data_offsets must satisfy begin <= end]");
    if (e - b != bytes)
      fail(src_, ": tensor '", printable(name), "': data_offsets span ", e - b, " bytes but shape ",
           shape_text(info.shape), " of ", dtype_name(*dtype), " needs ", bytes,
           " [rule: byte length must equal element count x dtype size]");
    info.begin = static_cast<std::size_t>(b);
    info.end = static_cast<std::size_t>(e);
    return info;
  }

 public:
  static std::string shape_text(const std::vector<std::size_t>& shape) {
    std::string out = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) {
      if (i) out += ", ";
      out += std::to_string(shape[i]);
    }
    return out + "]";
  }
};

/// Up to the first 8 bytes of a file for an error message: printable ASCII as is, the rest as
/// \xNN ("PK\x03\x04..." is a zip, "\x89PNG..." an image).
inline std::string printable_prefix(const std::vector<std::byte>& bytes) {
  std::string out = "'";
  for (std::size_t i = 0; i < std::min<std::size_t>(8, bytes.size()); ++i) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out += static_cast<char>(c);
    } else {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out + "'";
}
}  // namespace detail

/// Text form of a shape, "[2, 3]" ("[]" for rank 0), for messages.
inline std::string shape_text(const std::vector<std::size_t>& shape) { return detail::HeaderParser::shape_text(shape); }

// ---------------------------------------------------------------------------------------------

/// A validated safetensors file held in memory.
class SafeTensors {
 public:
  /// Read and validate a file.
  /// Requires: `path` names a regular file.
  /// Ensures: every safety rule holds, else sieve::Error naming the file, tensor and rule.
  static SafeTensors load(const std::filesystem::path& path) {
    return parse(read_file(path), path.string());
  }

  /// Validate `bytes` as a safetensors file; `source_name_for_errors` prefixes every message.
  /// Ensures: tensors are contiguous from 0 to the end of the buffer, sizes match shapes.
  static SafeTensors parse(std::vector<std::byte> bytes, std::string source_name_for_errors) {
    SafeTensors st;
    st.source_ = std::move(source_name_for_errors);
    const std::string& src = st.source_;
    if (bytes.size() < 8)
      fail(src, ": file is ", bytes.size(), " bytes, too short for the 8-byte header length [rule: header length]");
    const std::uint64_t n = detail::load_le<std::uint64_t>(bytes.data());
    // A safetensors header is a JSON object: it starts with '{' right after the length. When
    // the length is impossible and no '{' follows, the file is most likely something else (a
    // PyTorch .pt zip, an ONNX model, an image): say so before the number read from it.
    const std::string other = bytes.size() > 8 && static_cast<char>(bytes[8]) != '{'
                                  ? str(" (not a safetensors file? its first bytes are ", detail::printable_prefix(bytes),
                                        ", not a header length and a JSON header)")
                                  : std::string();
    if (n > kSafeTensorsMaxHeader)
      fail(src, ": header length ", n, " is over the limit of ", kSafeTensorsMaxHeader, " bytes", other,
           " [rule: header length capped at 100 MB]");
    if (n > bytes.size() - 8)
      fail(src, ": header length ", n, " runs past the end of the ", bytes.size(), "-byte file", other,
           " [rule: header must fit in the file]");
    const std::string_view header(reinterpret_cast<const char*>(bytes.data() + 8), static_cast<std::size_t>(n));
    std::vector<detail::HeaderParser::Entry> entries;
    detail::HeaderParser(header, src).parse(entries, st.metadata_);

    st.data_begin_ = 8 + static_cast<std::size_t>(n);
    const std::size_t data_size = bytes.size() - st.data_begin_;
    // Data-offset order; ties (zero-size tensors) keep header order.
    std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
      return a.info.begin != b.info.begin ? a.info.begin < b.info.begin : a.info.end < b.info.end;
    });
    std::size_t expect = 0;
    std::string prev;
    for (const auto& e : entries) {
      if (e.info.begin != expect) {
        if (prev.empty())
          fail(src, ": tensor '", detail::printable(e.name), "' begins at data offset ", e.info.begin,
               " but the first tensor must begin at 0 [rule: offsets contiguous from 0, no gaps or overlaps]");
        fail(src, ": tensor '", detail::printable(e.name), "' begins at data offset ", e.info.begin, " but '",
             detail::printable(prev), "' ends at ", expect, e.info.begin > expect ? " (gap)" : " (overlap)",
             " [rule: offsets contiguous from 0, no gaps or overlaps]");
      }
      expect = e.info.end;
      prev = e.name;
    }
    if (expect != data_size) {
      if (prev.empty())
        fail(src, ": no tensors but ", data_size, " data bytes follow the header [rule: last tensor ends at end of file]");
      fail(src, ": last tensor '", detail::printable(prev), "' ends at data offset ", expect, " but the data buffer has ",
           data_size, " bytes [rule: last tensor ends at end of file]");
    }
    st.entries_.reserve(entries.size());
    for (auto& e : entries) {
      st.index_.emplace(e.name, st.entries_.size());
      st.entries_.push_back(std::move(e));
    }
    st.bytes_ = std::move(bytes);
    return st;
  }

  /// Tensor names in data-offset order (the order they were written).
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(entries_.size());
    for (const auto& e : entries_) out.push_back(e.name);
    return out;
  }

  /// Number of tensors.
  std::size_t size() const { return entries_.size(); }

  bool contains(const std::string& name) const { return index_.count(name) != 0; }

  /// Requires: contains(name), else sieve::Error naming the file and the tensor.
  const TensorInfo& info(const std::string& name) const { return entry(name).info; }

  /// The file name (or source string) used in messages.
  const std::string& source() const { return source_; }

  /// Raw little-endian bytes of a tensor.
  std::span<const std::byte> raw(const std::string& name) const {
    const auto& i = info(name);
    return {bytes_.data() + data_begin_ + i.begin, i.end - i.begin};
  }

  /// Values as float. F16/BF16/F32 are exact; F64 is rounded to nearest.
  /// Requires: a floating dtype, else sieve::Error naming the tensor.
  std::vector<float> floats(const std::string& name) const { return convert<float>(name); }

  /// Values as double (exact for every floating dtype).
  std::vector<double> doubles(const std::string& name) const { return convert<double>(name); }

  /// Weights must be finite: "" when every value of tensor `name` is (or it is not floating),
  /// else what is wrong, e.g. "2 of 6 values non-finite, the first inf at index 3".
  std::string nonfinite_text(const std::string& name) const {
    if (!dtype_is_float(info(name).dtype)) return "";
    const auto v = doubles(name);
    std::size_t n = 0, first = 0;
    for (std::size_t k = v.size(); k-- > 0;)
      if (!std::isfinite(v[k])) ++n, first = k;
    if (n == 0) return "";
    return str(n, " of ", v.size(), " values non-finite, the first ", v[first], " at index ", first);
  }

  /// Values of an I64 tensor.
  /// Requires: dtype I64, else sieve::Error naming the tensor.
  std::vector<std::int64_t> ints(const std::string& name) const {
    const auto& i = info(name);
    if (i.dtype != DType::I64)
      fail(source_, ": tensor '", detail::printable(name), "' is ", dtype_name(i.dtype), ", not I64");
    const auto r = raw(name);
    std::vector<std::int64_t> out(i.numel());
    for (std::size_t k = 0; k < out.size(); ++k)
      out[k] = static_cast<std::int64_t>(detail::load_le<std::uint64_t>(r.data() + 8 * k));
    return out;
  }

  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::string source_;
  std::vector<std::byte> bytes_;
  std::size_t data_begin_ = 0;
  std::vector<detail::HeaderParser::Entry> entries_;
  std::map<std::string, std::size_t> index_;
  std::map<std::string, std::string> metadata_;

  const detail::HeaderParser::Entry& entry(const std::string& name) const {
    auto it = index_.find(name);
    if (it == index_.end()) fail(source_, ": no tensor named '", detail::printable(name), "'");
    return entries_[it->second];
  }

  template <class T>
  static T to(double x) {
    if constexpr (std::is_same_v<T, float>) return detail::double_to_float(x);
    else return x;
  }

  template <class T>
  std::vector<T> convert(const std::string& name) const {
    const auto& i = info(name);
    if (!dtype_is_float(i.dtype))
      fail(source_, ": tensor '", detail::printable(name), "' is ", dtype_name(i.dtype),
           ", not a floating-point dtype");
    const auto r = raw(name);
    const std::byte* p = r.data();
    std::vector<T> out(i.numel());
    switch (i.dtype) {
      case DType::F16:
        for (std::size_t k = 0; k < out.size(); ++k)
          out[k] = static_cast<T>(detail::f16_to_float(detail::load_le<std::uint16_t>(p + 2 * k)));
        break;
      case DType::BF16:
        for (std::size_t k = 0; k < out.size(); ++k)
          out[k] = static_cast<T>(detail::bf16_to_float(detail::load_le<std::uint16_t>(p + 2 * k)));
        break;
      case DType::F32:
        if constexpr (std::is_same_v<T, float> && std::endian::native == std::endian::little) {
          if (!out.empty()) std::memcpy(out.data(), p, r.size());
        } else {
          for (std::size_t k = 0; k < out.size(); ++k)
            out[k] = static_cast<T>(std::bit_cast<float>(detail::load_le<std::uint32_t>(p + 4 * k)));
        }
        break;
      case DType::F64:
        if constexpr (std::is_same_v<T, double> && std::endian::native == std::endian::little) {
          if (!out.empty()) std::memcpy(out.data(), p, r.size());
        } else {
          for (std::size_t k = 0; k < out.size(); ++k)
            out[k] = to<T>(std::bit_cast<double>(detail::load_le<std::uint64_t>(p + 8 * k)));
        }
        break;
      case DType::I64: break;  // excluded above
    }
    return out;
  }
};

/// Builds a safetensors file; tensors are laid out in the order they were added.
class SafeTensorsWriter {
 public:
  /// Add a float tensor, stored as `as` (F32 default; F16/BF16 round to nearest even; F64 exact).
  /// Requires: product(shape) == values.size(); `name` new, valid UTF-8, not "__metadata__".
  void add(std::string name, std::vector<std::size_t> shape, std::span<const float> values, DType as = DType::F32) {
    check_new(name, shape, values.size(), as, "float");
    std::vector<std::byte> b(values.size() * dtype_size(as));
    if (as == DType::F32 && std::endian::native == std::endian::little) {
      if (!values.empty()) std::memcpy(b.data(), values.data(), b.size());
    } else {
      encode(values, as, b);
    }
    entries_.push_back(Entry{std::move(name), as, std::move(shape), std::move(b)});
  }

  /// Add a double tensor, stored as `as` (F64 default; narrower dtypes round to nearest even).
  void add(std::string name, std::vector<std::size_t> shape, std::span<const double> values, DType as = DType::F64) {
    check_new(name, shape, values.size(), as, "double");
    std::vector<std::byte> b(values.size() * dtype_size(as));
    encode(values, as, b);
    entries_.push_back(Entry{std::move(name), as, std::move(shape), std::move(b)});
  }

  /// Add an I64 tensor (e.g. BN's num_batches_tracked, rank 0).
  void add(std::string name, std::vector<std::size_t> shape, std::span<const std::int64_t> values) {
    check_new(name, shape, values.size(), DType::I64, "int64");
    std::vector<std::byte> b(values.size() * 8);
    for (std::size_t k = 0; k < values.size(); ++k)
      detail::store_le(b.data() + 8 * k, static_cast<std::uint64_t>(values[k]));
    entries_.push_back(Entry{std::move(name), DType::I64, std::move(shape), std::move(b)});
  }

  /// Set (or replace) a `__metadata__` entry.
  /// Requires: key and value valid UTF-8.
  void set_metadata(std::string key, std::string value) {
    SIEVE_CHECK(!detail::utf8_invalid_at(key) && !detail::utf8_invalid_at(value),
                "SafeTensorsWriter::set_metadata: key '", detail::printable(key), "' or its value is not valid UTF-8");
    metadata_[std::move(key)] = std::move(value);
  }

  /// Number of tensors added.
  std::size_t size() const { return entries_.size(); }

  /// The complete file. The header is padded with spaces so the data buffer starts 8-aligned.
  std::vector<std::byte> to_bytes() const {
    std::string h = "{";
    bool first = true;
    if (!metadata_.empty()) {
      h += "\"__metadata__\":{";
      for (const auto& [k, v] : metadata_) {
        if (!first) h += ',';
        first = false;
        detail::append_json_string(h, k);
        h += ':';
        detail::append_json_string(h, v);
      }
      h += '}';
      first = false;
    }
    std::size_t offset = 0;
    for (const auto& e : entries_) {
      if (!first) h += ',';
      first = false;
      detail::append_json_string(h, e.name);
      h += ":{\"dtype\":\"";
      h += dtype_name(e.dtype);
      h += "\",\"shape\":[";
      for (std::size_t i = 0; i < e.shape.size(); ++i) {
        if (i) h += ',';
        h += std::to_string(e.shape[i]);
      }
      h += "],\"data_offsets\":[";
      h += std::to_string(offset);
      h += ',';
      offset += e.bytes.size();
      h += std::to_string(offset);
      h += "]}";
    }
    h += '}';
    while ((8 + h.size()) % 8 != 0) h += ' ';
    SIEVE_CHECK(h.size() <= kSafeTensorsMaxHeader, "SafeTensorsWriter: header of ", h.size(),
                " bytes is over the 100 MB limit");
    std::vector<std::byte> out(8 + h.size() + offset);
    detail::store_le(out.data(), static_cast<std::uint64_t>(h.size()));
    std::memcpy(out.data() + 8, h.data(), h.size());
    std::byte* p = out.data() + 8 + h.size();
    for (const auto& e : entries_) {
      if (!e.bytes.empty()) std::memcpy(p, e.bytes.data(), e.bytes.size());
      p += e.bytes.size();
    }
    return out;
  }

  /// Write atomically (temporary file, fsync, rename).
  void write(const std::filesystem::path& path) const {
    const auto bytes = to_bytes();
    write_file_atomic(path, std::span<const std::byte>(bytes));
  }

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<std::size_t> shape;
    std::vector<std::byte> bytes;
  };
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;

  void check_new(const std::string& name, const std::vector<std::size_t>& shape, std::size_t count, DType as,
                 const char* kind) const {
    SIEVE_CHECK(name != "__metadata__", "SafeTensorsWriter::add: '__metadata__' is reserved, not a tensor name");
    SIEVE_CHECK(!detail::utf8_invalid_at(name), "SafeTensorsWriter::add: tensor name '", detail::printable(name),
                "' is not valid UTF-8");
    for (const auto& e : entries_)
      SIEVE_CHECK(e.name != name, "SafeTensorsWriter::add: duplicate tensor name '", detail::printable(name), "'");
    std::uint64_t n = 1;
    for (std::size_t d : shape)
      SIEVE_CHECK(detail::mul_ok(n, d, n), "SafeTensorsWriter::add: tensor '", detail::printable(name), "' shape ",
                  shape_text(shape), " overflows");
    SIEVE_CHECK(n == count, "SafeTensorsWriter::add: tensor '", detail::printable(name), "' has shape ",
                shape_text(shape), " (", n, " elements) but ", count, " values were given");
    const bool ok = std::string_view(kind) == "int64" ? as == DType::I64 : dtype_is_float(as);
    SIEVE_CHECK(ok, "SafeTensorsWriter::add: tensor '", detail::printable(name), "': cannot store ", kind,
                " values as ", dtype_name(as));
  }

  template <class T>
  static void encode(std::span<const T> v, DType as, std::vector<std::byte>& b) {
    std::byte* p = b.data();
    switch (as) {
      case DType::F16:
        for (std::size_t k = 0; k < v.size(); ++k)
          detail::store_le(p + 2 * k, detail::double_to_f16(static_cast<double>(v[k])));
        break;
      case DType::BF16:
        for (std::size_t k = 0; k < v.size(); ++k)
          detail::store_le(p + 2 * k, detail::double_to_bf16(static_cast<double>(v[k])));
        break;
      case DType::F32:
        for (std::size_t k = 0; k < v.size(); ++k)
          detail::store_le(p + 4 * k, std::bit_cast<std::uint32_t>(detail::double_to_float(static_cast<double>(v[k]))));
        break;
      case DType::F64:
        for (std::size_t k = 0; k < v.size(); ++k)
          detail::store_le(p + 8 * k, std::bit_cast<std::uint64_t>(static_cast<double>(v[k])));
        break;
      case DType::I64: break;  // rejected by check_new
    }
  }
};

}  // namespace sieve::io
