#pragma once
/// Training the head alone on cached embeddings (a frozen backbone, e.g. pretrained weights):
/// the backbone runs once per image (train::EmbeddingCache), every epoch after that costs only
/// dropout + the linear head.

#include <cstdint>
#include <vector>

#include "sieve/core/param.hpp"
#include "sieve/core/xt.hpp"
#include "sieve/nn/classifier.hpp"

namespace sieve::train {

/// The head of a classifier as a stage on its embeddings: forward = fc(dropout(embedding)).
/// Its params() and buffers() are the whole classifier's (the backbone's frozen), so the
/// trainer's checkpoints hold the complete model, loadable like any other run.
/// Requires: the classifier outlives this view; its backbone frozen (nn::FreezeMode::backbone).
template <class T>
class CachedHead {
 public:
  using input_type = Tensor2<T>;
  using output_type = Tensor2<T>;
  explicit CachedHead(nn::Classifier<T>& m) : m_(m) {}
  /// embedding [N,D] -> logits [N, num_classes].
  const Tensor2<T>& forward(const Tensor2<T>& x) { return m_.head().forward(m_.dropout().forward(x)); }
  /// dlogits -> dembedding; the head's parameter gradients accumulate.
  const Tensor2<T>& backward(const Tensor2<T>& dy) { return m_.dropout().backward(m_.head().backward(dy)); }
  std::vector<ParamRef<T>> params() { return m_.params(); }
  std::vector<BufferRef<T>> buffers() { return m_.buffers(); }
  void zero_grad() { m_.head().zero_grad(); }
  void set_training(bool t) { m_.dropout().set_training(t); }
  void set_random_step(std::uint64_t s) { m_.dropout().set_step(s); }

 private:
  nn::Classifier<T>& m_;
};

}  // namespace sieve::train
