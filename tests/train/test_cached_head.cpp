// train::CachedHead: the classifier's head as a stage on embeddings (train/cached_head.hpp).
#include <doctest/doctest.h>

#include <cstddef>

#include "sieve/nn/classifier.hpp"
#include "sieve/train/cached_head.hpp"

using namespace sieve;

TEST_CASE("CachedHead: fc(dropout(embedding)) of the classifier, its gradients, the whole model's parameters") {
  nn::Classifier<float> m(nn::Backbone<float>(nn::PoolNet<float>({4, 2, 1, false}, 3)), 3, 0.0, 3, 3);
  train::CachedHead<float> head(m);
  head.set_training(false);
  Tensor2f e = Tensor2f::from_shape({2, 16});
  for (std::size_t i = 0; i < e.size(); ++i) e.data()[i] = 0.1f * static_cast<float>(i % 7) - 0.3f;
  const Tensor2f y = head.forward(e);
  auto& W = m.head().weight();
  auto& b = m.head().bias();
  for (std::size_t n = 0; n < 2; ++n)
    for (std::size_t k = 0; k < 3; ++k) {
      double want = b(k);
      for (std::size_t d = 0; d < 16; ++d) want += double(W(k, d)) * e(n, d);
      CHECK(y(n, k) == doctest::Approx(want).epsilon(1e-5));
    }
  Tensor2f dy = Tensor2f::from_shape({2, 3});
  for (std::size_t i = 0; i < dy.size(); ++i) dy.data()[i] = static_cast<float>(i) - 2.0f;
  head.zero_grad();
  const Tensor2f dx = head.backward(dy);  // dembedding = dy W
  for (std::size_t n = 0; n < 2; ++n)
    for (std::size_t d = 0; d < 16; ++d) {
      double want = 0.0;
      for (std::size_t k = 0; k < 3; ++k) want += double(dy(n, k)) * W(k, d);
      CHECK(dx(n, d) == doctest::Approx(want).epsilon(1e-5));
    }
  CHECK(head.params().size() == m.params().size());  // checkpoints hold the whole classifier
  CHECK(head.buffers().size() == m.buffers().size());
}
