#pragma once
/// Bottleneck residual block, torchvision's ResNet v1.5 (the stride sits on the 3x3 conv):
///   out = relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x))))))) + shortcut(x))
/// with shortcut = bn(conv1x1/stride(x)) ("downsample.0/1") when the shape changes, else x.

#include <algorithm>
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
#include "sieve/kernels/relu.hpp"
#include "sieve/nn/activation.hpp"
#include "sieve/nn/batch_norm.hpp"
#include "sieve/nn/conv2d.hpp"
#include "sieve/nn/scratch.hpp"

namespace sieve::nn {

/// The ScratchPool slots a Bottleneck uses. Forward: the bn3 and downsample outputs, dead
/// after the residual sum. Backward: the gradient flows dy -> dsum -> g4 -> p1 (in place
/// through bn2) -> p2 (in place through bn1) -> dx; the downsample branch goes dsum -> g4 -> p2.
/// `trunk` holds the block's input gradient, which may be the very buffer its dy came in (dy is
/// read only to form dsum), so a whole ResNet passes its gradient down in one buffer.
struct BottleneckSlots {
  static constexpr std::size_t trunk = 0, dsum = 1, g4 = 2, p1 = 3, p2 = 4, count = 5;
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
        scratch_(std::make_shared<ScratchPool<T>>()) {
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
    x_shape_ = {x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]};
    // The fused product (Conv2dDims::fused) for evaluation only, each convolution by the mode
    // of the batch norm after it: in training it measured no faster (no epilogue to fuse;
    // train/64/64 within noise), and training keeps BLAS's rounding, which the float32
    // gradient check against torch (forward_e2e) was set up with.
    conv1_.set_fused_product(!bn1_.training()), conv2_.set_fused_product(!bn2_.training()),
        conv3_.set_fused_product(!bn3_.training());
    if (ds_conv_) ds_conv_->set_fused_product(!ds_bn_->training());
    inferred_ = inference_ && !bn1_.training() && !bn2_.training() && !bn3_.training() &&
                (!ds_bn_ || !ds_bn_->training());
    conv1_.set_forward_only(inferred_), conv2_.set_forward_only(inferred_), conv3_.set_forward_only(inferred_);
    if (ds_conv_) ds_conv_->set_forward_only(inferred_);
    if (inferred_) return forward_inference(x);
    const auto& a1 = bn1_.forward(conv1_.forward(x));
    const auto& a2 = bn2_.forward(conv2_.forward(a1));
    const auto& c3 = conv3_.forward(a2);
    const Shape<4> os{c3.shape()[0], c3.shape()[1], c3.shape()[2], c3.shape()[3]};
    ScratchPool<T>& sp = *scratch_;
    using S = BottleneckSlots;
    sp.reserve(S::dsum, c3.size());
    if (ds_conv_) sp.reserve(S::g4, c3.size());
    const T* pb = bn3_.forward_into(c3, sp.view(S::dsum, os)).data;
    const T* pi = x.data();
    if (ds_conv_) {
      const auto& dc = ds_conv_->forward(x);
      SIEVE_CHECK(dc.shape() == c3.shape(), "Bottleneck.forward: shortcut [", dc.shape()[1], ",", dc.shape()[2],
                  ",", dc.shape()[3], "] and main path [", os[1], ",", os[2], ",", os[3], "] differ");
      pi = ds_bn_->forward_into(dc, sp.view(S::g4, os)).data;
    } else {
      SIEVE_CHECK(x.shape() == c3.shape(), "Bottleneck.forward: shortcut [", x.shape()[1], ",", x.shape()[2], ",",
                  x.shape()[3], "] and main path [", os[1], ",", os[2], ",", os[3], "] differ");
    }
    ensure_shape(y_, os);
    T* py = y_.data();
    parallel_for(y_.size(), parallel_grain_elements, [=](std::size_t lo, std::size_t hi) {
      for (std::size_t i = lo; i < hi; ++i) {
        const T v = pb[i] + pi[i];
        py[i] = v > T(0) ? v : T(0);
      }
    });
    return y_;
  }

  /// Inference mode: while on, a forward with every batch norm in eval mode keeps no state
  /// for backward: each batch norm is folded into its convolution's epilogue with the ReLU
  /// and the residual sum (no separate passes over memory), the 3x3 convolutions choose
  /// Winograd with kept weights, F(4x4,3x3) among them (Conv2dDims::forward_only: the output
  /// agrees with eval mode's to rounding), and backward is refused until a forward with
  /// inference off.
  void set_inference(bool on) { inference_ = on; }
  bool inference() const { return inference_; }

  /// Grows each ScratchPool slot `need[slot]` to what this block's backward will view (shapes
  /// of the last forward). A model calls it for all blocks before the first backward view.
  void scratch_needs(std::array<std::size_t, BottleneckSlots::count>& need) const {
    SIEVE_CHECK(!inferred_, "Bottleneck.backward: the last forward ran in inference mode and kept nothing for "
                            "backward (set_inference(false), then forward again)");
    using S = BottleneckSlots;
    const std::size_t in = shape_size(x_shape_);
    const std::size_t out = y_.size(), p1 = shape_size(conv3_.input_shape()), p2 = shape_size(conv2_.input_shape());
    auto grow = [&](std::size_t slot, std::size_t n) { need[slot] = std::max(need[slot], n); };
    grow(S::trunk, in), grow(S::dsum, out), grow(S::g4, out), grow(S::p1, p1);
    grow(S::p2, ds_conv_ ? std::max(p2, in) : p2);
  }

  /// Parameter gradients of unfrozen layers accumulate; the input gradient is computed only
  /// when need_dx (into the block's own buffer). Layers are visited only while something at
  /// or below them needs a gradient, so a frozen block under no trainable layer costs nothing.
  const Tensor4<T>& backward(const Tensor4<T>& dy, bool need_dx) {
    std::array<std::size_t, BottleneckSlots::count> need{};
    scratch_needs(need);
    for (std::size_t i = 0; i < need.size(); ++i)
      if (i != BottleneckSlots::trunk) scratch_->reserve(i, need[i]);
    if (need_dx) ensure_shape(dx_, x_shape_);
    backward_into(TensorRef4<const T>(dy), TensorRef4<T>(dx_), need_dx);
    return dx_;
  }
  const Tensor4<T>& backward(const Tensor4<T>& dy) { return backward(dy, true); }

  /// As backward, writing the input gradient into a view, which may be dy's own buffer (dy is
  /// read only before dx is written). Requires: scratch slots reserved (scratch_needs); dy and
  /// dx not in slots dsum..p2; when need_dx, dx has the input's shape.
  void backward_into(TensorRef4<const T> dy, TensorRef4<T> dx, bool need_dx) {
    SIEVE_CHECK(!inferred_, "Bottleneck.backward: the last forward ran in inference mode and kept nothing for "
                            "backward (set_inference(false), then forward again)");
    SIEVE_CHECK(dy.shape == y_.shape(), "Bottleneck.backward: dy [", dy.shape[0], ",", dy.shape[1], ",",
                dy.shape[2], ",", dy.shape[3], "] differs from the output [", y_.shape()[0], ",", y_.shape()[1],
                ",", y_.shape()[2], ",", y_.shape()[3], "]");
    SIEVE_CHECK(!need_dx || dx.shape == x_shape_, "Bottleneck.backward: dx [", dx.shape[0], ",", dx.shape[1], ",",
                dx.shape[2], ",", dx.shape[3], "] differs from the input [", x_shape_[0], ",", x_shape_[1], ",",
                x_shape_[2], ",", x_shape_[3], "]");
    ScratchPool<T>& sp = *scratch_;
    using S = BottleneckSlots;
    const Shape<4> os = y_.shape(), m1 = conv3_.input_shape(), m2 = conv2_.input_shape();
    const TensorRef4<T> dsum = sp.view(S::dsum, os);
    {
      const T* py = y_.data();
      const T* pd = dy.data;
      T* ps = dsum.data;
      parallel_for(y_.size(), parallel_grain_elements, [=](std::size_t lo, std::size_t hi) {
        kernels::relu_backward(py + lo, pd + lo, ps + lo, hi - lo);
      });
    }
    // Main path, top down: layer i runs while it or something below it needs a gradient.
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
        case 5: bn3_.backward_into(dsum, sp.view(S::g4, os), nd); break;
        case 4: conv3_.backward_into(sp.view(S::g4, os), sp.view(S::p1, m1), nd); break;
        case 3: bn2_.backward_into(sp.view(S::p1, m1), sp.view(S::p1, m1), nd); break;
        case 2: conv2_.backward_into(sp.view(S::p1, m1), sp.view(S::p2, m2), nd); break;
        case 1: bn1_.backward_into(sp.view(S::p2, m2), sp.view(S::p2, m2), nd); break;
        case 0: conv1_.backward_into(sp.view(S::p2, m2), dx, nd); main_dx = nd; break;
      }
    }
    const T* gs = dsum.data;  // the identity shortcut passes the gradient through
    if (ds_conv_) {
      const bool tc = !ds_conv_->frozen(), tb = !ds_bn_->frozen();
      if (tb || tc || need_dx) {
        const TensorRef4<T> g4 = sp.view(S::g4, os);
        ds_bn_->backward_into(dsum, g4, tc || need_dx);
        if (tc || need_dx) {
          const TensorRef4<T> p2 = sp.view(S::p2, x_shape_);  // the main path is done with p2
          ds_conv_->backward_into(g4, p2, need_dx);
          gs = p2.data;
        }
      }
    }
    if (need_dx) {
      SIEVE_CHECK(main_dx, "Bottleneck.backward: internal error, main path gave no input gradient");
      T* o = dx.data;
      parallel_for(dx.size(), parallel_grain_elements, [=](std::size_t lo, std::size_t hi) {
        for (std::size_t i = lo; i < hi; ++i) o[i] += gs[i];
      });
    }
  }

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
  /// The memory layout of every activation of the block, input and output included.
  void set_layout(kernels::Layout l) {
    conv1_.set_layout(l, l), conv2_.set_layout(l, l), conv3_.set_layout(l, l);
    bn1_.set_layout(l), bn2_.set_layout(l), bn3_.set_layout(l);
    if (ds_conv_) ds_conv_->set_layout(l, l), ds_bn_->set_layout(l);
  }
  /// Share the scratch pool with the other layers of a model (only one block runs at a time).
  void set_scratch(ScratchHandle<T> s) { scratch_ = std::move(s); }
  /// The input shape of the last forward.
  const Shape<4>& input_shape() const { return x_shape_; }
  /// The block's output from the last forward.
  const Tensor4<T>& output() const { return inferred_ ? conv3_.output() : y_; }

 private:
  const Tensor4<T>& forward_inference(const Tensor4<T>& x) {
    const std::size_t p = bn1_.channels(), q = bn3_.channels();
    affine_.resize(4 * p + 4 * q);  // scale and shift of bn1, bn2 (p each), bn3, downsample (q each)
    T* const s1 = affine_.data();
    T *const h1 = s1 + p, *const s2 = h1 + p, *const h2 = s2 + p, *const s3 = h2 + p, *const h3 = s3 + q;
    T *const sd = h3 + q, *const hd = sd + q;
    bn1_.eval_affine(s1, h1), bn2_.eval_affine(s2, h2), bn3_.eval_affine(s3, h3);
    const auto& a1 = conv1_.forward(x, {s1, h1, nullptr, true});
    const auto& a2 = conv2_.forward(a1, {s2, h2, nullptr, true});
    const Shape<4> os{a2.shape()[0], q, a2.shape()[2], a2.shape()[3]};
    const Tensor4<T>* id = &x;
    if (ds_conv_) {
      ds_bn_->eval_affine(sd, hd);
      id = &ds_conv_->forward(x, {sd, hd, nullptr, false});
    }
    SIEVE_CHECK(id->shape() == os, "Bottleneck.forward: shortcut [", id->shape()[1], ",", id->shape()[2], ",",
                id->shape()[3], "] and main path [", os[1], ",", os[2], ",", os[3], "] differ");
    return conv3_.forward(a2, {s3, h3, id->data(), true});
  }

  Conv2d<T> conv1_;
  BatchNorm2d<T> bn1_;
  Conv2d<T> conv2_;
  BatchNorm2d<T> bn2_;
  Conv2d<T> conv3_;
  BatchNorm2d<T> bn3_;
  std::optional<Conv2d<T>> ds_conv_;
  std::optional<BatchNorm2d<T>> ds_bn_;
  ScratchHandle<T> scratch_;
  Shape<4> x_shape_{};
  Tensor4<T> y_, dx_;
  std::vector<T> affine_;
  bool inference_ = false, inferred_ = false;
};

}  // namespace sieve::nn
