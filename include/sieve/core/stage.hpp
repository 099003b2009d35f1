#pragma once
/// The Stage vocabulary: what every pipeline step provides, checked by C++20 concepts.
///
/// A Stage has `input_type`, `output_type` and a `forward`, either `forward(const In&)` or,
/// for stages that draw random numbers, `forward(const In&, Rng&)`. Forward returns an
/// `output_type` (by value, or `const&` to a buffer the stage owns, so a steady-state step
/// allocates nothing).
///
/// A TrainableStage also has `backward(const Out& dy)` returning `const In&` (the input
/// gradient, *assigned*) and `params()` returning a range of named ParamRefs whose gradients
/// *accumulate* until `zero_grad()`.

#include <concepts>
#include <ranges>
#include <type_traits>

#include "sieve/core/rng.hpp"

namespace sieve {

template <class S>
using input_t = typename std::remove_cvref_t<S>::input_type;
template <class S>
using output_t = typename std::remove_cvref_t<S>::output_type;

template <class S>
concept HasStageTypes = requires {
  typename std::remove_cvref_t<S>::input_type;
  typename std::remove_cvref_t<S>::output_type;
};

/// forward(x) is available and yields the output type.
template <class S>
concept PlainForward = HasStageTypes<S> && requires(S& s, const input_t<S>& x) {
  { s.forward(x) } -> std::convertible_to<const output_t<S>&>;
};

/// forward(x, rng) is available and yields the output type.
template <class S>
concept RandomForward = HasStageTypes<S> && requires(S& s, const input_t<S>& x, Rng& rng) {
  { s.forward(x, rng) } -> std::convertible_to<const output_t<S>&>;
};

template <class S>
concept Stage = PlainForward<S> || RandomForward<S>;

template <class S>
concept TrainableStage = Stage<S> && requires(S& s, const output_t<S>& dy) {
  { s.backward(dy) } -> std::convertible_to<const input_t<S>&>;
  { s.params() } -> std::ranges::range;
  s.zero_grad();
};

/// A's output feeds B's input.
template <class A, class B>
concept Chainable = Stage<A> && Stage<B> && std::same_as<output_t<A>, input_t<B>>;

/// Call a stage's forward, passing the Rng only to stages that take one.
template <Stage S>
decltype(auto) stage_forward(S& s, const input_t<S>& x, Rng& rng) {
  if constexpr (RandomForward<S>)
    return s.forward(x, rng);
  else
    return s.forward(x);
}

/// Switch train/eval mode on stages that have one (BN, dropout); others ignore it.
template <class S>
void stage_set_training(S& s, bool training) {
  if constexpr (requires { s.set_training(training); }) s.set_training(training);
}

/// Switch inference mode (no state kept for backward, see nn::ResNet::set_inference) on
/// stages that have one; others ignore it.
template <class S>
void stage_set_inference(S& s, bool on) {
  if constexpr (requires { s.set_inference(on); }) s.set_inference(on);
}

}  // namespace sieve
