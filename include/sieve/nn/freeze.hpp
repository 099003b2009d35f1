#pragma once
/// Freezing by parameter-name prefix. A frozen parameter gets no gradient work and is skipped
/// by optimizers; freezing is per layer (a layer's weight and bias share one flag).

#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

namespace sieve::nn {

/// Freeze every parameter of `model` whose name starts with none of `trainable` (e.g.
/// {"layer4.", "fc."}), unfreeze the others. Returns the number of trainable parameters.
template <class Model>
std::size_t freeze_all_but(Model& model, const std::vector<std::string>& trainable) {
  std::size_t n = 0;
  for (auto& p : model.params()) {
    bool keep = false;
    for (const auto& pre : trainable) keep = keep || std::string_view(p.name).starts_with(pre);
    if (p.frozen) *p.frozen = !keep;
    n += keep ? 1 : 0;
  }
  return n;
}

/// Freeze (or unfreeze) every parameter whose name starts with `prefix` ("" = all).
template <class Model>
void set_frozen_prefix(Model& model, std::string_view prefix, bool frozen) {
  for (auto& p : model.params())
    if (p.frozen && std::string_view(p.name).starts_with(prefix)) *p.frozen = frozen;
}

}  // namespace sieve::nn
