#pragma once
/// The network's input, from a decoded image: what a model was trained on (InputSpec) and the
/// one transform type that makes it, for training (random crop + flip) and for inference (the
/// image itself or one test-time view, tta.hpp):
///
///   FitImage | RandomCrop | RandomHorizontalFlip | ToTensor | Normalize
///
/// Inference uses a fixed crop window (RandomCrop::fixed: padding 0 is the identity) and flip
/// probability 0 or 1, so one type serves both and a loader holds either.

#include <array>
#include <cstddef>
#include <string>

#include "sieve/augment/crop.hpp"
#include "sieve/augment/fit.hpp"
#include "sieve/augment/flip.hpp"
#include "sieve/augment/tensor.hpp"
#include "sieve/augment/tta.hpp"
#include "sieve/core/check.hpp"
#include "sieve/core/pipeline.hpp"

namespace sieve::augment {

/// What the network sees: size x size pixels reached by `fit`, `channels` (1 gray or 3 RGB),
/// normalised by mean/std per channel (a 1-channel input uses mean[0], std[0]).
struct InputSpec {
  std::size_t size = 224;
  FitMode fit = FitMode::resize;
  std::size_t channels = 3;
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f};
  std::array<float, 3> std{0.229f, 0.224f, 0.225f};
};

using InputTransform = Pipeline<FitImage, RandomCrop, RandomHorizontalFlip, ToTensor, Normalize>;

/// Training input: a random size x size window of the fitted image zero-padded by
/// `crop_padding` (0: the image itself), mirrored with probability `flip_p`.
/// Requires: spec.size > 0, channels 1 or 3, std > 0, flip_p in [0, 1].
inline InputTransform train_input_transform(const InputSpec& spec, std::size_t crop_padding, double flip_p) {
  return InputTransform(FitImage(spec.size, spec.fit), RandomCrop(spec.size, crop_padding),
                        RandomHorizontalFlip(flip_p), ToTensor(spec.channels), Normalize(spec.mean, spec.std));
}

/// Inference input (deterministic, draws decide nothing): the fitted image moved by the view's
/// (dy, dx) and mirrored if the view says so; the default view is the image itself.
inline InputTransform eval_input_transform(const InputSpec& spec, const TtaView& view = {}) {
  const std::size_t pad = tta_padding(view);
  return InputTransform(FitImage(spec.size, spec.fit),
                        RandomCrop::fixed(spec.size, pad, static_cast<std::size_t>(static_cast<int>(pad) - view.dy),
                                          static_cast<std::size_t>(static_cast<int>(pad) - view.dx)),
                        RandomHorizontalFlip(view.mirrored ? 1.0 : 0.0), ToTensor(spec.channels),
                        Normalize(spec.mean, spec.std));
}

/// Text naming the inference input, e.g. "fit_pad(28)|to_tensor(gray)|normalize(0.286,...)":
/// a key for embedding caches (equal text, equal transform) and for reports.
inline std::string input_text(const InputSpec& spec) {
  return str("fit_", fit_mode_name(spec.fit), "(", spec.size, ")|to_tensor", spec.channels == 1 ? "(gray)" : "",
             "|normalize(", spec.mean[0], ",", spec.mean[1], ",", spec.mean[2], ";", spec.std[0], ",", spec.std[1], ",",
             spec.std[2], ")");
}

}  // namespace sieve::augment
