#pragma once
// ResNet backbone + Dropout + Linear head ("fc"), as the competition model is built, for the
// trainer tests: torchvision names, BN buffers, and a Dropout whose step the trainer re-keys.
#include <cstdint>
#include <vector>

#include "sieve/nn/activation.hpp"
#include "sieve/nn/linear.hpp"
#include "sieve/nn/resnet.hpp"

namespace sieve_test {

using namespace sieve;

template <class T>
struct SmallNet {
  using input_type = Tensor4<T>;
  using output_type = Tensor2<T>;

  nn::ResNet<T> backbone;
  nn::Dropout<T> drop;
  Rng init;
  nn::Linear<T> fc;

  SmallNet(nn::ResNetConfig cfg, std::size_t classes, std::uint64_t seed, double p_drop)
      : backbone(cfg, seed), drop(p_drop, seed), init(derive_seed(seed, 1001)), fc(cfg.embedding_dim(), classes, init) {}

  const Tensor2<T>& forward(const Tensor4<T>& x) { return fc.forward(drop.forward(backbone.forward(x))); }
  const Tensor4<T>& backward(const Tensor2<T>& dy) { return backbone.backward(drop.backward(fc.backward(dy))); }
  std::vector<ParamRef<T>> params() {
    auto p = backbone.params();
    append(p, fc.params());
    return p;
  }
  std::vector<BufferRef<T>> buffers() { return backbone.buffers(); }
  void zero_grad() {
    backbone.zero_grad();
    fc.zero_grad();
  }
  void set_training(bool t) {
    backbone.set_training(t);
    drop.set_training(t);
  }
  void set_random_step(std::uint64_t s) { drop.set_step(s); }

  std::vector<T> snapshot() {
    std::vector<T> out;
    for (const auto& p : params()) out.insert(out.end(), p.value.begin(), p.value.end());
    for (const auto& b : buffers()) {
      if (b.is_count()) out.push_back(static_cast<T>(*b.count));
      else out.insert(out.end(), b.value.begin(), b.value.end());
    }
    return out;
  }
};

}  // namespace sieve_test
