#pragma once
/// Bottleneck residual block, torchvision's ResNet v1.5 (the stride sits on the 3x3 conv):
///   out = relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x))))))) + shortcut(x))
/// with shortcut = bn(conv1x1/stride(x)) ("downsample.0/1") when the shape changes, else x.

#include <array>
#include <cstddef>
#include <memory>
#include <optional>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/parallel.hpp"
#include "sieve/core/param.hpp"
#include "sieve/core/rng.hpp"
#include "sieve/core/xt.hpp"
#include "sieve/nn/activation.hpp"
#include "sieve/nn/batch_norm.hpp"
#include "sieve/nn/conv2d.hpp"

namespace sieve::nn {

/// Gradient buffers a Bottleneck needs only during its own backward; blocks of one stage
/// with identical shapes share one set (only one block runs backward at a time).
template <class T>
struct BottleneckScratch {
  Tensor4<T> dsum, g4, p1, p2;  // backward
  Tensor4<T> b3, id;            // forward: bn3 and downsample outputs, dead after the residual sum
  /// Input gradient of the identity-shortcut blocks sharing this scratch: block i reads its dy
  /// (block i+1's input gradient, this same buffer) only to form dsum, before conv1's backward
  /// overwrites it, so one buffer serves the whole run of blocks.
  Tensor4<T> dx;
};

template <class T>
class Bottleneck {
 public:
  using input_type = Tensor4<T>;
  using output_type = Tensor4<T>;
  static constexpr std::size_t expansion = 4;

  /// in: input channels; planes: the 1x1/3x3 width (output = planes * 4); stride on conv2.
  /// A downsample branch is built when stride != 1 or in != planes * 4 (as torchvision).
  Bottleneck(std::size_t in, std::size_t planes, std::size_t stride, Rng& rng)
      : conv1_(in, planes, 1, 1, 0, rng), bn1_(planes), conv2_(planes, planes, 3, stride, 1, rng), bn2_(planes),
        conv3_(planes, planes * expansion, 1, 1, 0, rng), bn3_(planes * expansion),
        scratch_(std::make_shared<BottleneckScratch<T>>()) {
    // The ReLUs after bn1 and bn2 run in place on the BN outputs (as torchvision's inplace ReLU).
    bn1_.set_fused_relu(true);
    bn2_.set_fused_relu(true);
    if (stride != 1 || in != planes * expansion) {
      ds_conv_.emplace(in, planes * expansion, 1, stride, 0, rng);
      ds_bn_.emplace(planes * expansion);
    }
  }

  /// x: [N,in,H,W] -> [N,planes*4,OH,OW].
  const Tensor4<T>& forward(const Tensor4<T>& x) {
    const auto& a1 = bn1_.forward(conv1_.forward(x));
    const auto& a2 = bn2_.forward(conv2_.forward(a1));
    BottleneckScratch<T>& sc = *scratch_;
    const auto& b3 = bn3_.forward_into(conv3_.forward(a2), sc.b3);
    const Tensor4<T>& id = ds_conv_ ? ds_bn_->forward_into(ds_conv_->forward(x), sc.id) : x;
    SIEVE_CHECK(id.shape() == b3.shape(), "Bottleneck.forward: shortcut [", id.shape()[1], ",", id.shape()[2], ",",
                id.shape()[3], "] and main path [", b3.shape()[1], ",", b3.shape()[2], ",", b3.shape()[3],
                "] differ");
    ensure_shape(y_, b3.shape());
    const T* pb = b3.data();
    const T* pi = id.data();
    T* py = y_.data();
    parallel_for(y_.size(), parallel_grain_elements, [=](std::size_t lo, std::size_t hi) {
      for (std::size_t i = lo; i < hi; ++i) {
        const T v = pb[i] + pi[i];
        py[i] = v > T(0) ? v : T(0);
      }
    });
    return y_;
  }

  /// Parameter gradients of unfrozen layers accumulate; the input gradient is computed only
  /// when need_dx. Layers are visited only while something at or below them needs a gradient,
  /// so a frozen block under no trainable layer costs nothing.
  const Tensor4<T>& backward(const Tensor4<T>& dy, bool need_dx) {
    SIEVE_CHECK(dy.shape() == y_.shape(), "Bottleneck.backward: dy [", dy.shape()[0], ",", dy.shape()[1], ",",
                dy.shape()[2], ",", dy.shape()[3], "] differs from the output [", y_.shape()[0], ",",
                y_.shape()[1], ",", y_.shape()[2], ",", y_.shape()[3], "]");
    BottleneckScratch<T>& sc = *scratch_;
    // Identity shortcut: input and output shapes agree, the gradient goes to the shared buffer
    // (which may be dy itself; dy is dead once dsum is formed). A downsampling block keeps its own.
    Tensor4<T>& dx = ds_conv_ ? dx_ : sc.dx;
    ensure_shape(sc.dsum, y_.shape());
    {
      const T* py = y_.data();
      const T* pd = dy.data();
      T* ps = sc.dsum.data();
      parallel_for(y_.size(), parallel_grain_elements, [=](std::size_t lo, std::size_t hi) {
        for (std::size_t i = lo; i < hi; ++i) ps[i] = py[i] > T(0) ? pd[i] : T(0);
      });
    }
    // Main path, top down: layer i runs while it or something below it needs a gradient.
    // Gradients flow dsum -> g4 -> p1 (in place through bn2) -> p2 (in place through bn1) -> dx.
    const std::array<bool, 6> t{!conv1_.frozen(), !bn1_.frozen(), !conv2_.frozen(),
                                !bn2_.frozen(),   !conv3_.frozen(), !bn3_.frozen()};
    auto below = [&](std::size_t i) {  // is a gradient needed at layer i's input?
      bool b = need_dx;
      for (std::size_t j = 0; j < i; ++j) b = b || t[j];
      return b;
    };
    bool main_dx = false;
    for (std::size_t i = 6; i-- > 0;) {
      if (!t[i] && !below(i)) break;
      const bool nd = below(i);
      switch (i) {
        case 5: bn3_.backward_into(sc.dsum, sc.g4, nd); break;
        case 4: conv3_.backward_into(sc.g4, sc.p1, nd); break;
        case 3: bn2_.backward_into(sc.p1, sc.p1, nd); break;
        case 2: conv2_.backward_into(sc.p1, sc.p2, nd); break;
        case 1: bn1_.backward_into(sc.p2, sc.p2, nd); break;
        case 0: conv1_.backward_into(sc.p2, dx, nd); main_dx = nd; break;
      }
    }
    const Tensor4<T>* gs = &sc.dsum;  // the identity shortcut passes the gradient through
    if (ds_conv_) {
      const bool tc = !ds_conv_->frozen(), tb = !ds_bn_->frozen();
      if (tb || tc || need_dx) {
        gs = &ds_bn_->backward(sc.dsum, tc || need_dx);
        if (tc || need_dx) gs = &ds_conv_->backward(*gs, need_dx);
      }
    }
    if (need_dx) {
      SIEVE_CHECK(main_dx, "Bottleneck.backward: internal error, main path gave no input gradient");
      SIEVE_CHECK(gs->shape() == dx.shape(), "Bottleneck.backward: shortcut gradient shape differs from input");
      const T* b = gs->data();
      T* o = dx.data();
      parallel_for(dx.size(), parallel_grain_elements, [=](std::size_t lo, std::size_t hi) {
        for (std::size_t i = lo; i < hi; ++i) o[i] += b[i];
      });
    }
    return dx;
  }
  const Tensor4<T>& backward(const Tensor4<T>& dy) { return backward(dy, true); }

  /// conv1, bn1, conv2, bn2, conv3, bn3, downsample.0, downsample.1 (torchvision's order).
  std::vector<ParamRef<T>> params() {
    std::vector<ParamRef<T>> out;
    append(out, prefixed(conv1_.params(), "conv1."));
    append(out, prefixed(bn1_.params(), "bn1."));
    append(out, prefixed(conv2_.params(), "conv2."));
    append(out, prefixed(bn2_.params(), "bn2."));
    append(out, prefixed(conv3_.params(), "conv3."));
    append(out, prefixed(bn3_.params(), "bn3."));
    if (ds_conv_) {
      append(out, prefixed(ds_conv_->params(), "downsample.0."));
      append(out, prefixed(ds_bn_->params(), "downsample.1."));
    }
    return out;
  }
  std::vector<BufferRef<T>> buffers() {
    std::vector<BufferRef<T>> out;
    append(out, prefixed(bn1_.buffers(), "bn1."));
    append(out, prefixed(bn2_.buffers(), "bn2."));
    append(out, prefixed(bn3_.buffers(), "bn3."));
    if (ds_bn_) append(out, prefixed(ds_bn_->buffers(), "downsample.1."));
    return out;
  }
  void zero_grad() {
    conv1_.zero_grad(), bn1_.zero_grad(), conv2_.zero_grad(), bn2_.zero_grad(), conv3_.zero_grad(),
        bn3_.zero_grad();
    if (ds_conv_) ds_conv_->zero_grad(), ds_bn_->zero_grad();
  }
  void set_training(bool t) {
    bn1_.set_training(t), bn2_.set_training(t), bn3_.set_training(t);
    if (ds_bn_) ds_bn_->set_training(t);
  }
  /// True when any parameter of the block is trainable.
  bool any_trainable() const {
    bool t = !conv1_.frozen() || !bn1_.frozen() || !conv2_.frozen() || !bn2_.frozen() || !conv3_.frozen() ||
             !bn3_.frozen();
    if (ds_conv_) t = t || !ds_conv_->frozen() || !ds_bn_->frozen();
    return t;
  }
  void set_workspace(const Workspace<T>& ws) {
    conv1_.set_workspace(ws), conv2_.set_workspace(ws), conv3_.set_workspace(ws);
    if (ds_conv_) ds_conv_->set_workspace(ws);
  }
  bool has_downsample() const { return ds_conv_.has_value(); }
  /// Share backward scratch buffers with other blocks of identical shapes.
  void set_scratch(std::shared_ptr<BottleneckScratch<T>> s) { scratch_ = std::move(s); }
  /// The block's output from the last forward.
  const Tensor4<T>& output() const { return y_; }

 private:
  Conv2d<T> conv1_;
  BatchNorm2d<T> bn1_;
  Conv2d<T> conv2_;
  BatchNorm2d<T> bn2_;
  Conv2d<T> conv3_;
  BatchNorm2d<T> bn3_;
  std::optional<Conv2d<T>> ds_conv_;
  std::optional<BatchNorm2d<T>> ds_bn_;
  std::shared_ptr<BottleneckScratch<T>> scratch_;
  Tensor4<T> y_, dx_;
};

}  // namespace sieve::nn
