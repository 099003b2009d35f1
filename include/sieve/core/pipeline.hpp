#pragma once
/// Pipeline<Ss...>: a flat, compile-time chain of stages. Every link is checked when the
/// type is instantiated; a broken link fails with an instantiation of
/// `PipelineLink<stage_index<I>, PreviousOutput, StageInput>`, naming the stage index and both
/// types. A Pipeline is itself a Stage, so pipelines nest (data -> model -> loss).
///
///   auto p = pipeline(DecodeRgb{}, Resize{36}, CenterCrop{32}, ToTensor{});   // or
///   auto p = DecodeRgb{} | Resize{36} | CenterCrop{32} | ToTensor{};          // flat

#include <cstddef>
#include <cstdint>
#include <ranges>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "sieve/core/param.hpp"
#include "sieve/core/stage.hpp"

namespace sieve {

/// Marks a stage position in compiler messages: `stage_index<2>` is the third stage.
template <std::size_t I>
struct stage_index {
  static constexpr std::size_t value = I;
};

/// Instantiated once per stage: fails when the type at `Index` is not a Stage.
template <class Index, class S>
struct PipelineStageCheck {
  static_assert(Stage<S>,
                "sieve::Pipeline: this element is not a Stage (it needs input_type, output_type and "
                "forward(x) or forward(x, rng)); PipelineStageCheck<stage_index<I>, S> names it");
  static constexpr bool value = true;
};

/// Instantiated once per link: fails when stage I's input_type is not stage I-1's output_type.
template <class Index, class PreviousOutput, class StageInput>
struct PipelineLink {
  static_assert(std::is_same_v<PreviousOutput, StageInput>,
                "sieve::Pipeline: broken link; PipelineLink<stage_index<I>, PreviousOutput, StageInput> "
                "names the stage I whose input_type differs from stage I-1's output_type");
  static constexpr bool value = std::is_same_v<PreviousOutput, StageInput>;
};

namespace detail {
template <class... Ss, std::size_t... I>
constexpr bool pipeline_stages_ok(std::index_sequence<I...>) {
  return (PipelineStageCheck<stage_index<I>, Ss>::value && ...);
}
template <class Tuple, std::size_t... I>
constexpr bool pipeline_links_ok(std::index_sequence<I...>) {
  return (PipelineLink<stage_index<I + 1>, output_t<std::tuple_element_t<I, Tuple>>,
                       input_t<std::tuple_element_t<I + 1, Tuple>>>::value &&
          ...);
}
}  // namespace detail

template <class... Ss>
class Pipeline {
  static_assert(sizeof...(Ss) > 0, "sieve::Pipeline needs at least one stage");
  static_assert(detail::pipeline_stages_ok<Ss...>(std::index_sequence_for<Ss...>{}));
  using Tuple = std::tuple<Ss...>;
  static constexpr std::size_t N = sizeof...(Ss);
  static_assert(detail::pipeline_links_ok<Tuple>(std::make_index_sequence<N - 1>{}));

 public:
  using input_type = input_t<std::tuple_element_t<0, Tuple>>;
  using output_type = output_t<std::tuple_element_t<N - 1, Tuple>>;
  static constexpr std::size_t size = N;

  Pipeline() = default;
  explicit Pipeline(Ss... stages) : stages_(std::move(stages)...) {}
  explicit Pipeline(Tuple stages) : stages_(std::move(stages)) {}

  /// Run every stage in order. Available when no stage needs random numbers.
  decltype(auto) forward(const input_type& x)
    requires(PlainForward<Ss> && ...)
  {
    return run<0>(x, nullptr);
  }

  /// Run every stage in order; stages that draw random numbers draw them from `rng`, in
  /// stage order.
  decltype(auto) forward(const input_type& x, Rng& rng) { return run<0>(x, &rng); }

  /// Back-propagate dy through every stage in reverse; returns the input gradient.
  decltype(auto) backward(const output_type& dy)
    requires(TrainableStage<Ss> && ...)
  {
    return back<N - 1>(dy);
  }

  /// Parameters of every stage, in stage order.
  auto params()
    requires(TrainableStage<Ss> && ...)
  {
    using Ref = std::ranges::range_value_t<decltype(std::get<0>(stages_).params())>;
    std::vector<Ref> out;
    std::apply([&](auto&... s) { (append_range(out, s.params()), ...); }, stages_);
    return out;
  }

  /// Buffers (BN running statistics, step counters) of every stage that has them, in stage
  /// order, so checkpoints of a Pipeline model keep them.
  auto buffers()
    requires(TrainableStage<Ss> && ...)
  {
    using Param = std::ranges::range_value_t<decltype(std::get<0>(stages_).params())>;
    using Ref = BufferRef<std::remove_cvref_t<decltype(*std::declval<Param>().value.data())>>;
    std::vector<Ref> out;
    std::apply(
        [&](auto&... s) {
          (
              [&] {
                if constexpr (requires { s.buffers(); }) append_range(out, s.buffers());
              }(),
              ...);
        },
        stages_);
    return out;
  }

  /// Re-key the random stages (dropout) for step `step`; the trainer calls this before each
  /// forward so a resumed run draws the same numbers as an uninterrupted one.
  void set_random_step(std::uint64_t step) {
    std::apply(
        [&](auto&... s) {
          (
              [&] {
                if constexpr (requires { s.set_random_step(step); }) s.set_random_step(step);
              }(),
              ...);
        },
        stages_);
  }

  void zero_grad()
    requires(TrainableStage<Ss> && ...)
  {
    std::apply([](auto&... s) { (s.zero_grad(), ...); }, stages_);
  }

  /// Train or eval mode, forwarded to every stage that has one.
  void set_training(bool training) {
    std::apply([&](auto&... s) { (stage_set_training(s, training), ...); }, stages_);
  }

  /// Inference mode, forwarded to every stage that has one.
  void set_inference(bool on) {
    std::apply([&](auto&... s) { (stage_set_inference(s, on), ...); }, stages_);
  }

  template <std::size_t I>
  auto& get() { return std::get<I>(stages_); }
  template <std::size_t I>
  const auto& get() const { return std::get<I>(stages_); }

  Tuple& stages() & { return stages_; }
  Tuple&& stages() && { return std::move(stages_); }

 private:
  template <class Out, class R>
  static void append_range(std::vector<Out>& out, R&& r) {
    for (auto&& v : r) out.push_back(std::forward<decltype(v)>(v));
  }

  template <std::size_t I, class X>
  decltype(auto) run(const X& x, Rng* rng) {
    auto& s = std::get<I>(stages_);
    if constexpr (I + 1 == N)
      return call(s, x, rng);
    else
      return run<I + 1>(call(s, x, rng), rng);
  }

  template <class S, class X>
  static decltype(auto) call(S& s, const X& x, Rng* rng) {
    if constexpr (RandomForward<S>) {
      SIEVE_CHECK(rng != nullptr, "Pipeline::forward: a stage draws random numbers; call forward(x, rng)");
      return s.forward(x, *rng);
    } else {
      return s.forward(x);
    }
  }

  template <std::size_t I, class Dy>
  decltype(auto) back(const Dy& dy) {
    const auto& dx = std::get<I>(stages_).backward(dy);
    if constexpr (I == 0)
      return dx;
    else
      return back<I - 1>(dx);
  }

  Tuple stages_;
};

template <class T>
struct is_pipeline : std::false_type {};
template <class... Ss>
struct is_pipeline<Pipeline<Ss...>> : std::true_type {};

/// Chain stages into one Pipeline; a Pipeline argument stays one (nested) stage.
template <class... Ss>
auto pipeline(Ss&&... stages) {
  return Pipeline<std::remove_cvref_t<Ss>...>(std::forward<Ss>(stages)...);
}

namespace detail {
template <class S>
auto as_tuple(S&& s) {
  if constexpr (is_pipeline<std::remove_cvref_t<S>>::value)
    return std::forward<S>(s).stages();
  else
    return std::tuple<std::remove_cvref_t<S>>(std::forward<S>(s));
}
template <class... Ss>
auto from_tuple(std::tuple<Ss...>&& t) {
  return Pipeline<Ss...>(std::move(t));
}
}  // namespace detail

/// `a | b | c` builds one flat Pipeline<A, B, C> (pipelines on either side are spliced in).
template <class A, class B>
  requires(HasStageTypes<A> && HasStageTypes<B>)
auto operator|(A&& a, B&& b) {
  auto lhs = detail::as_tuple(std::forward<A>(a));
  auto rhs = detail::as_tuple(std::forward<B>(b));
  return detail::from_tuple(std::tuple_cat(std::move(lhs), std::move(rhs)));
}

}  // namespace sieve
