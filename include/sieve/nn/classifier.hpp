#pragma once
/// The retrieval classifier: a backbone's pooled embedding, dropout, a linear head.
///
///   Classifier<T> = Backbone<T> | Dropout<T> | Linear<T>    (parameters: the backbone's
///                                                            torchvision names, then fc.*)
///
/// The embedding the retrieval methods compare is the backbone's output (embedding()); the head
/// gives K logits (BCE) or K + 1 (a softmax with an "other" class). Freezing (FreezeMode)
/// trains the head alone, or everything but the stem.

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/param.hpp"
#include "sieve/core/pipeline.hpp"
#include "sieve/core/rng.hpp"
#include "sieve/nn/activation.hpp"
#include "sieve/nn/backbone.hpp"
#include "sieve/nn/freeze.hpp"
#include "sieve/nn/linear.hpp"

namespace sieve::nn {

template <class T>
class Classifier {
 public:
  using Net = Pipeline<Backbone<T>, Dropout<T>, Linear<T>>;
  using input_type = Tensor4<T>;
  using output_type = Tensor2<T>;

  /// A head of `outputs` logits on `backbone`, initialised as torchvision's nn.Linear from
  /// (seed, init purpose, stream 1): the head's draws do not depend on the backbone's. Dropout
  /// p before the head, its masks keyed by `dropout_seed` (a data-parallel rank passes its own).
  /// Requires: outputs >= 1, 0 <= dropout < 1.
  Classifier(Backbone<T> backbone, std::size_t outputs, double dropout, std::uint64_t seed, std::uint64_t dropout_seed)
      : net_(make(std::move(backbone), outputs, dropout, seed, dropout_seed)) {}

  /// x [N,C,H,W] -> logits [N, num_classes()]; embedding() then holds the pooled [N,D] features.
  const Tensor2<T>& forward(const Tensor4<T>& x) { return net_.forward(x); }
  const Tensor4<T>& backward(const Tensor2<T>& dy) { return net_.backward(dy); }
  std::vector<ParamRef<T>> params() { return net_.params(); }
  std::vector<BufferRef<T>> buffers() { return net_.buffers(); }
  void zero_grad() { net_.zero_grad(); }
  void set_training(bool t) { net_.set_training(t), training_ = t; }
  /// The mode the last set_training chose (a new classifier trains).
  bool training() const { return training_; }
  void set_random_step(std::uint64_t s) { net_.set_random_step(s); }
  /// Inference mode of the backbone (batch norm folded; see ResNet::set_inference).
  void set_inference(bool on) { net_.set_inference(on); }
  bool inference() const { return net_.template get<0>().inference(); }

  /// Pooled backbone features of the last forward, [N, D] (not normalised).
  const Tensor2<T>& embedding() const { return net_.template get<0>().output(); }
  Backbone<T>& backbone() { return net_.template get<0>(); }
  Dropout<T>& dropout() { return net_.template get<1>(); }
  Linear<T>& head() { return net_.template get<2>(); }
  std::size_t embedding_dim() const { return net_.template get<0>().embedding_dim(); }
  /// The head's outputs (the K classes, plus "other" for a softmax-other head).
  std::size_t num_classes() const { return net_.template get<2>().out_features(); }
  Net& net() { return net_; }

 private:
  static Net make(Backbone<T> backbone, std::size_t outputs, double dropout, std::uint64_t seed,
                  std::uint64_t dropout_seed) {
    SIEVE_CHECK(outputs >= 1, "Classifier: the head needs at least 1 output");
    Rng rng(derive_seed(seed, RngPurpose::init), /*stream*/ 1);  // the head's own stream
    Linear<T> fc(backbone.embedding_dim(), outputs, rng, "fc");
    return pipeline(std::move(backbone), Dropout<T>(dropout, dropout_seed), std::move(fc));
  }
  Net net_;
  bool training_ = true;
};

/// Which parameters train.
enum class FreezeMode {
  none,      ///< all
  stem,      ///< all but the stem (conv1.*, bn1.*)
  backbone,  ///< the head (fc.*) alone: a linear probe of the embedding
};

/// "none", "stem" or "backbone"; throws naming the text otherwise.
inline FreezeMode parse_freeze_mode(const std::string& s) {
  if (s == "none") return FreezeMode::none;
  if (s == "stem") return FreezeMode::stem;
  if (s == "backbone") return FreezeMode::backbone;
  fail("freeze: '", s, "' must be none, stem or backbone");
}

/// Set every parameter's frozen flag for `mode` (unfreezing what the mode trains).
template <class T>
void apply_freeze(Classifier<T>& m, FreezeMode mode) {
  set_frozen_prefix(m, "", false);
  if (mode == FreezeMode::backbone) freeze_all_but(m, {"fc."});
  else if (mode == FreezeMode::stem) set_frozen_prefix(m, "conv1.", true), set_frozen_prefix(m, "bn1.", true);
}

}  // namespace sieve::nn
