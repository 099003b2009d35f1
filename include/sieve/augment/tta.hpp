#pragma once
/// Test-time augmentation: the views an image is also seen in at inference, and the weight of
/// each in the average of the network's outputs. A view is a translation by (dy, dx) pixels
/// (zero fill; RandomCrop::fixed) followed by an optional mirror (RandomHorizontalFlip(1)).
///
///   none            the image itself
///   flip            the image and its mirror, 1/2 each
///   flip-translate  the flip pair (1/2 in all), and the flip pairs of the image moved by
///                   (+1, +1) and by (-1, -1) pixels (1/4 each pair): six views, the multi-view
///                   TTA of the "airbench" CIFAR-10 recipes (Jordan, 2024). Measured on FMNIST-D
///                   (benchmarks/README.md): known-class top-1 +0.14 to +0.25 points over flip.
///
/// The outputs averaged must be linear in what is compared (embeddings, logits): the head is
/// linear, so averaged logits are the head of the averaged embedding.

#include <algorithm>
#include <array>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "sieve/core/check.hpp"

namespace sieve::augment {

/// One test-time view: move the content down by dy and right by dx pixels, then mirror.
struct TtaView {
  int dy = 0;
  int dx = 0;
  bool mirrored = false;
  double weight = 1.0;  ///< the views of a mode sum to 1
};

/// The mode names tta_views accepts, in order of cost.
inline constexpr std::array<std::string_view, 3> tta_modes{"none", "flip", "flip-translate"};

/// The views of `mode` (one of tta_modes). Throws naming the mode and the valid ones.
inline std::vector<TtaView> tta_views(std::string_view mode) {
  if (mode == "none") return {{0, 0, false, 1.0}};
  if (mode == "flip") return {{0, 0, false, 0.5}, {0, 0, true, 0.5}};
  if (mode == "flip-translate")
    return {{0, 0, false, 0.25},   {0, 0, true, 0.25},   {1, 1, false, 0.125},
            {1, 1, true, 0.125},   {-1, -1, false, 0.125}, {-1, -1, true, 0.125}};
  fail("test-time augmentation '", std::string(mode), "' is not one of none, flip, flip-translate");
}

/// The zero padding a view's translation needs (RandomCrop::fixed's padding).
inline std::size_t tta_padding(const TtaView& v) {
  return static_cast<std::size_t>(std::max(v.dy < 0 ? -v.dy : v.dy, v.dx < 0 ? -v.dx : v.dx));
}

}  // namespace sieve::augment
