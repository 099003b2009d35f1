#pragma once
/// Bilinear resize of 8-bit RGB images, matching torchvision 0.14's F.resize on uint8 tensors
/// (ATen upsample_bilinear2d / _upsample_bilinear2d_aa, align_corners=False; float math, then
/// round-half-to-even and clamp to [0, 255]).

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/pipeline.hpp"
#include "sieve/io/image.hpp"

namespace sieve::augment {

// Stages live in sieve::augment; this lets `a | b` find sieve's pipeline operator by ADL.
using ::sieve::operator|;

/// Per-axis interpolation taps: output index o reads inputs start[o] .. start[o]+taps-1 with
/// weights weight[o*taps + t] (zero-padded when an output needs fewer taps).
struct ResizeTaps {
  std::vector<std::size_t> start;
  std::vector<float> weight;
  std::size_t taps = 0;
};

/// Taps for one axis of size `in` resized to `out`.
/// Plain bilinear (ATen upsample_bilinear2d, align_corners=False): src = (o + 0.5) * in/out - 0.5,
/// clamped at 0; two taps. Antialiased (ATen _upsample_bilinear2d_aa): a triangle filter whose
/// support widens to `scale` input pixels when downsampling, weights normalised to sum 1.
/// Requires: in > 0, out > 0.
inline void resize_taps(std::size_t in, std::size_t out, bool antialias, ResizeTaps& t) {
  SIEVE_CHECK(in > 0 && out > 0, "resize_taps: sizes in=", in, " out=", out, " must be positive");
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  t.start.assign(out, 0);
  if (!antialias || scale <= 1.0f) {
    if (!antialias) {
      t.taps = 2;
      t.weight.assign(out * 2, 0.0f);
      for (std::size_t o = 0; o < out; ++o) {
        float src = scale * (static_cast<float>(o) + 0.5f) - 0.5f;
        if (src < 0.0f) src = 0.0f;
        auto i0 = static_cast<std::size_t>(src);
        if (i0 > in - 1) i0 = in - 1;
        const float l1 = src - static_cast<float>(i0);
        const std::size_t i1 = i0 + (i0 < in - 1 ? 1 : 0);
        t.start[o] = i0;
        t.weight[o * 2] = 1.0f - l1;
        // i1 == i0 at the right edge: fold both weights onto the single tap.
        if (i1 == i0)
          t.weight[o * 2] = 1.0f;
        else
          t.weight[o * 2 + 1] = l1;
      }
      return;
    }
  }
  // Antialiased triangle filter (also used for upsampling with antialias=true, where support=1).
  const double sc = static_cast<double>(scale);
  const double support = sc >= 1.0 ? sc : 1.0;
  const double invscale = sc >= 1.0 ? 1.0 / sc : 1.0;
  t.taps = static_cast<std::size_t>(std::ceil(support)) * 2 + 1;
  t.weight.assign(out * t.taps, 0.0f);
  for (std::size_t o = 0; o < out; ++o) {
    const double center = sc * (static_cast<double>(o) + 0.5);
    const auto lo = static_cast<std::int64_t>(center - support + 0.5);
    const std::int64_t xmin = std::max<std::int64_t>(lo, 0);
    const std::int64_t xmax = std::min<std::int64_t>(static_cast<std::int64_t>(center + support + 0.5),
                                                     static_cast<std::int64_t>(in));
    const std::int64_t xsize = std::clamp<std::int64_t>(xmax - xmin, 0, static_cast<std::int64_t>(t.taps));
    std::vector<double> w(t.taps);
    double total = 0.0;
    for (std::int64_t j = 0; j < xsize; ++j) {
      const double x = (static_cast<double>(j + xmin) - center + 0.5) * invscale;
      const double ax = std::abs(x);
      w[static_cast<std::size_t>(j)] = ax < 1.0 ? 1.0 - ax : 0.0;
      total += w[static_cast<std::size_t>(j)];
    }
    t.start[o] = static_cast<std::size_t>(xmin);
    for (std::int64_t j = 0; j < xsize; ++j)
      t.weight[o * t.taps + static_cast<std::size_t>(j)] = static_cast<float>(total != 0.0 ? w[static_cast<std::size_t>(j)] / total : 0.0);
  }
}

/// Separable resize: rows first (into float `tmp`), then columns, rounding half-to-even.
/// src: [H, W, 3] uint8 -> dst: [OH, OW, 3] uint8. tmp is resized to H*OW*3 floats.
inline void resize_rgb(const std::uint8_t* src, std::size_t H, std::size_t W, std::uint8_t* dst, std::size_t OH,
                       std::size_t OW, const ResizeTaps& tx, const ResizeTaps& ty, std::vector<float>& tmp) {
  tmp.resize(H * OW * 3);
  for (std::size_t y = 0; y < H; ++y) {
    const std::uint8_t* row = src + y * W * 3;
    float* out = tmp.data() + y * OW * 3;
    for (std::size_t o = 0; o < OW; ++o) {
      const std::size_t s = tx.start[o];
      const float* w = tx.weight.data() + o * tx.taps;
      const std::size_t n = std::min(tx.taps, W - s);
      float r = 0.f, g = 0.f, b = 0.f;
      for (std::size_t k = 0; k < n; ++k) {
        const std::uint8_t* p = row + (s + k) * 3;
        r += w[k] * static_cast<float>(p[0]);
        g += w[k] * static_cast<float>(p[1]);
        b += w[k] * static_cast<float>(p[2]);
      }
      out[o * 3] = r;
      out[o * 3 + 1] = g;
      out[o * 3 + 2] = b;
    }
  }
  auto to_u8 = [](float v) {
    v = std::nearbyint(v);
    return static_cast<std::uint8_t>(v < 0.f ? 0.f : (v > 255.f ? 255.f : v));
  };
  const std::size_t rowlen = OW * 3;
  for (std::size_t o = 0; o < OH; ++o) {
    const std::size_t s = ty.start[o];
    const float* w = ty.weight.data() + o * ty.taps;
    const std::size_t n = std::min(ty.taps, H - s);
    std::uint8_t* out = dst + o * rowlen;
    for (std::size_t i = 0; i < rowlen; ++i) {
      float acc = 0.f;
      for (std::size_t k = 0; k < n; ++k) acc += w[k] * tmp[(s + k) * rowlen + i];
      out[i] = to_u8(acc);
    }
  }
}

/// torchvision's output size for resize(size=int): the smaller edge becomes `size`, the other
/// int(size * long / short) (truncated). Returns {OH, OW}.
inline std::array<std::size_t, 2> resized_size(std::size_t H, std::size_t W, std::size_t smaller_edge) {
  if (W <= H) return {static_cast<std::size_t>(static_cast<double>(smaller_edge) * static_cast<double>(H) / static_cast<double>(W)), smaller_edge};
  return {smaller_edge, static_cast<std::size_t>(static_cast<double>(smaller_edge) * static_cast<double>(W) / static_cast<double>(H))};
}

/// Resize `src` to OH x OW into `dst` (bilinear; antialias as torchvision's flag).
inline void resize_image(const Image& src, std::size_t OH, std::size_t OW, bool antialias, Image& dst,
                         std::vector<float>& tmp) {
  SIEVE_CHECK(src.height > 0 && src.width > 0 && OH > 0 && OW > 0, "resize: from ", src.width, "x", src.height,
              " to ", OW, "x", OH, ": sizes must be positive");
  ResizeTaps tx, ty;
  resize_taps(src.width, OW, antialias, tx);
  resize_taps(src.height, OH, antialias, ty);
  dst.reshape(OH, OW);
  resize_rgb(src.data(), src.height, src.width, dst.data(), OH, OW, tx, ty, tmp);
}

/// Stage: bilinear resize to a fixed size, or so that the smaller edge equals `size`
/// (torchvision Resize(int)).
class Resize {
 public:
  using input_type = Image;
  using output_type = Image;

  /// Smaller edge becomes `smaller_edge`, aspect ratio kept (torchvision rounding).
  explicit Resize(std::size_t smaller_edge, bool antialias = true) : edge_(smaller_edge), antialias_(antialias) {
    SIEVE_CHECK(smaller_edge > 0, "Resize: size must be positive");
  }
  /// Exact output size {height, width}.
  explicit Resize(std::array<std::size_t, 2> hw, bool antialias = true) : hw_(hw), antialias_(antialias) {
    SIEVE_CHECK(hw[0] > 0 && hw[1] > 0, "Resize: size ", hw[0], "x", hw[1], " must be positive");
  }

  const Image& forward(const Image& x) {
    std::array<std::size_t, 2> o = hw_;
    if (edge_ != 0) o = resized_size(x.height, x.width, edge_);
    if (o[0] == x.height && o[1] == x.width) {
      out_ = x;  // torchvision returns the input unchanged
      return out_;
    }
    if (x.width != in_w_ || o[1] != out_w_) {
      resize_taps(x.width, o[1], antialias_, tx_);
      in_w_ = x.width;
      out_w_ = o[1];
    }
    if (x.height != in_h_ || o[0] != out_h_) {
      resize_taps(x.height, o[0], antialias_, ty_);
      in_h_ = x.height;
      out_h_ = o[0];
    }
    out_.reshape(o[0], o[1]);
    resize_rgb(x.data(), x.height, x.width, out_.data(), o[0], o[1], tx_, ty_, tmp_);
    return out_;
  }

 private:
  std::size_t edge_ = 0;
  std::array<std::size_t, 2> hw_{};
  bool antialias_;
  ResizeTaps tx_, ty_;
  std::size_t in_w_ = 0, out_w_ = 0, in_h_ = 0, out_h_ = 0;
  std::vector<float> tmp_;
  Image out_;
};

}  // namespace sieve::augment
