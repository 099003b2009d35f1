#pragma once
/// Backbone: one stage type for the networks a classifier may be built on (ResNet, PoolNet),
/// chosen at run time (a run's config names it), so `Backbone | Dropout | Linear` stays one
/// compile-time Pipeline whatever the network. Each call dispatches once per batch.

#include <cstddef>
#include <variant>
#include <vector>

#include "sieve/core/param.hpp"
#include "sieve/core/xt.hpp"
#include "sieve/nn/pool_net.hpp"
#include "sieve/nn/resnet.hpp"

namespace sieve::nn {

template <class T>
class Backbone {
 public:
  using input_type = Tensor4<T>;
  using output_type = Tensor2<T>;

  explicit Backbone(ResNet<T> net) : net_(std::move(net)) {}
  explicit Backbone(PoolNet<T> net) : net_(std::move(net)) {}

  /// x: [N,C,H,W] -> pooled embedding [N, embedding_dim()] (see the network's forward).
  const Tensor2<T>& forward(const Tensor4<T>& x) {
    return std::visit([&](auto& n) -> const Tensor2<T>& { return n.forward(x); }, net_);
  }
  const Tensor4<T>& backward(const Tensor2<T>& dy) {
    return std::visit([&](auto& n) -> const Tensor4<T>& { return n.backward(dy); }, net_);
  }
  std::vector<ParamRef<T>> params() {
    return std::visit([](auto& n) { return n.params(); }, net_);
  }
  std::vector<BufferRef<T>> buffers() {
    return std::visit([](auto& n) { return n.buffers(); }, net_);
  }
  void zero_grad() {
    std::visit([](auto& n) { n.zero_grad(); }, net_);
  }
  void set_training(bool t) {
    std::visit([&](auto& n) { n.set_training(t); }, net_);
  }
  void set_inference(bool on) {
    std::visit([&](auto& n) { n.set_inference(on); }, net_);
  }
  bool inference() const {
    return std::visit([](const auto& n) { return n.inference(); }, net_);
  }
  void set_layout(kernels::Layout l) {
    std::visit([&](auto& n) { n.set_layout(l); }, net_);
  }
  void set_input_grad(bool on) {
    std::visit([&](auto& n) { n.set_input_grad(on); }, net_);
  }
  /// The embedding computed by the last forward.
  const Tensor2<T>& output() const {
    return std::visit([](const auto& n) -> const Tensor2<T>& { return n.output(); }, net_);
  }
  std::size_t embedding_dim() const {
    return std::visit([](const auto& n) { return n.embedding_dim(); }, net_);
  }

  /// The network, when it is of that kind (else null).
  ResNet<T>* resnet() { return std::get_if<ResNet<T>>(&net_); }
  PoolNet<T>* pool_net() { return std::get_if<PoolNet<T>>(&net_); }

 private:
  std::variant<ResNet<T>, PoolNet<T>> net_;
};

}  // namespace sieve::nn
