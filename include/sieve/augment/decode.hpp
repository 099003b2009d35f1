#pragma once
/// DecodeRgb: the first stage of a data pipeline, from an image source to RGB pixels.

#include <cstddef>
#include <filesystem>
#include <string>
#include <vector>

#include "sieve/core/pipeline.hpp"
#include "sieve/io/image.hpp"

namespace sieve::augment {

// Stages live in sieve::augment; this lets `a | b` find sieve's pipeline operator by ADL.
using ::sieve::operator|;

/// Where a sample's image comes from: encoded bytes in memory if `bytes` is non-empty,
/// otherwise the file at `path`. `id` names the sample in errors.
struct ImageSource {
  std::string id;
  std::filesystem::path path;
  std::vector<std::byte> bytes;
};

/// Stage: decode a JPEG/PNG source into RGB. Errors name the sample id and file.
class DecodeRgb {
 public:
  using input_type = ImageSource;
  using output_type = Image;
  explicit DecodeRgb(io::DecodeLimits limits = {}) : limits_(limits) {}
  const Image& forward(const ImageSource& src) {
    try {
      if (!src.bytes.empty())
        io::decode_image_into(src.bytes, out_, limits_, src.path.empty() ? std::string("<memory>") : src.path.string());
      else
        io::read_image_into(src.path, out_, limits_);
    } catch (const Error& e) {
      fail("sample '", src.id, "': ", e.what());
    }
    return out_;
  }

 private:
  io::DecodeLimits limits_;
  Image out_;
};

}  // namespace sieve::augment
