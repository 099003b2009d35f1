#pragma once
/// Residual block of torchvision's ResNet, either kind, as one class: a main path of 2 or 3
/// (Conv2d, BatchNorm2d) pairs, a ReLU after every batch norm but the last, the shortcut
/// added before the last ReLU:
///   bottleneck (v1.5, stride on the 3x3):  1x1 -> 3x3/stride -> 1x1 (x4 channels)
///   basic:                                 3x3/stride -> 3x3
///   out = relu(bnK(convK(... relu(bn1(conv1(x))) ...)) + shortcut(x))
/// with shortcut = bn(conv1x1/stride(x)) ("downsample.0/1") when the shape changes, else x.
/// The pairs are a short runtime list, so forward, backward, inference folding and the
/// scratch plan are written once for both kinds.

#include <algorithm>
#include <array>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
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

/// Which residual block a ResNet is built from (torchvision's Bottleneck or BasicBlock).
enum class BlockKind { bottleneck, basic };

/// Output channels per plane of a block kind: 4 for bottleneck, 1 for basic.
constexpr std::size_t block_expansion(BlockKind k) { return k == BlockKind::bottleneck ? 4 : 1; }

/// The ScratchPool slots a residual block uses. Forward: the last batch norm's and the
/// downsample's outputs, dead after the residual sum. Backward: the gradient flows
/// dy -> dsum -> g4 (through the last bn) and then down the pairs, alternating between p1 and
/// p2 (each inner bn works in place; bottleneck: g4 -> p1 -> p2 -> dx, basic: g4 -> p1 -> dx);
/// the downsample branch goes dsum -> g4 -> p2. `trunk` holds the block's input gradient,
/// which may be the very buffer its dy came in (dy is read only to form dsum), so a whole
/// ResNet passes its gradient down in one buffer.
struct ResidualSlots {
  static constexpr std::size_t trunk = 0, dsum = 1, g4 = 2, p1 = 3, p2 = 4, count = 5;
};
using BottleneckSlots = ResidualSlots;  // the name before basic blocks existed

template <class T>
class ResidualBlock {
 public:
  using input_type = Tensor4<T>;
  using output_type = Tensor4<T>;

  /// in: input channels; planes: the main path's width (output = planes * expansion);
  /// stride on the bottleneck's 3x3 conv or the basic block's first conv. A downsample
  /// branch is built when stride != 1 or in != planes * expansion (as torchvision).
  ResidualBlock(BlockKind kind, std::size_t in, std::size_t planes, std::size_t stride, Rng& rng)
      : kind_(kind), scratch_(std::make_shared<ScratchPool<T>>()) {
    SIEVE_CHECK(in > 0 && planes > 0 && stride > 0, "ResidualBlock: in=", in, " planes=", planes,
                " stride=", stride, " must be positive");
    const std::size_t out = planes * block_expansion(kind);
    // (in, out, kernel, stride, pad) of each pair, in torchvision's order (the Rng draws follow it).
    struct Spec {
      std::size_t in, out, k, s, p;
    };
    const std::array<Spec, 3> bottleneck{{{in, planes, 1, 1, 0}, {planes, planes, 3, stride, 1}, {planes, out, 1, 1, 0}}};
    const std::array<Spec, 2> basic{{{in, planes, 3, stride, 1}, {planes, out, 3, 1, 1}}};
    const Spec* specs = kind == BlockKind::bottleneck ? bottleneck.data() : basic.data();
    const std::size_t n = kind == BlockKind::bottleneck ? bottleneck.size() : basic.size();
    pairs_.reserve(n);
    for (std::size_t k = 0; k < n; ++k) {
      pairs_.push_back(Pair{Conv2d<T>(specs[k].in, specs[k].out, specs[k].k, specs[k].s, specs[k].p, rng),
                            BatchNorm2d<T>(specs[k].out)});
      // The ReLUs after the inner batch norms run in place on their outputs (as torchvision's
      // inplace ReLU); the last one follows the residual sum.
      if (k + 1 < n) pairs_.back().bn.set_fused_relu(true);
    }
    if (stride != 1 || in != out) ds_.emplace(Pair{Conv2d<T>(in, out, 1, stride, 0, rng), BatchNorm2d<T>(out)});
  }

  BlockKind kind() const { return kind_; }

  /// x: [N,in,H,W] -> [N,planes*block_expansion(kind()),OH,OW].
  const Tensor4<T>& forward(const Tensor4<T>& x) {
    x_shape_ = {x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]};
    // The fused product (Conv2dDims::fused) for evaluation only, each convolution by the mode
    // of the batch norm after it: in training it measured no faster (no epilogue to fuse;
    // train/64/64 within noise), and training keeps BLAS's rounding, which the float32
    // gradient check against torch (forward_e2e) was set up with.
    bool all_eval = true;
    for_each_pair([&](Pair& q) {
      q.conv.set_fused_product(!q.bn.training());
      all_eval = all_eval && !q.bn.training();
    });
    inferred_ = inference_ && all_eval;
    for_each_pair([&](Pair& q) { q.conv.set_forward_only(inferred_); });
    if (inferred_) return forward_inference(x);
    const Tensor4<T>* a = &x;
    for (std::size_t k = 0; k + 1 < pairs_.size(); ++k) a = &pairs_[k].bn.forward(pairs_[k].conv.forward(*a));
    const auto& c = pairs_.back().conv.forward(*a);
    const Shape<4> os{c.shape()[0], c.shape()[1], c.shape()[2], c.shape()[3]};
    ScratchPool<T>& sp = *scratch_;
    using S = ResidualSlots;
    sp.reserve(S::dsum, c.size());
    if (ds_) sp.reserve(S::g4, c.size());
    const T* pb = pairs_.back().bn.forward_into(c, sp.view(S::dsum, os)).data;
    const T* pi = x.data();
    if (ds_) {
      const auto& dc = ds_->conv.forward(x);
      check_shortcut(dc.shape(), os);
      pi = ds_->bn.forward_into(dc, sp.view(S::g4, os)).data;
    } else {
      check_shortcut(x.shape(), os);
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
  void scratch_needs(std::array<std::size_t, ResidualSlots::count>& need) const {
    check_not_inferred();
    using S = ResidualSlots;
    const std::size_t in = shape_size(x_shape_), out = y_.size();
    auto grow = [&](std::size_t slot, std::size_t n) { need[slot] = std::max(need[slot], n); };
    grow(S::trunk, in), grow(S::dsum, out), grow(S::g4, out);
    for (std::size_t k = 0; k + 1 < pairs_.size(); ++k) grow(inner_slot(k), shape_size(pairs_[k + 1].conv.input_shape()));
    if (ds_) grow(S::p2, in);
  }

  /// Parameter gradients of unfrozen layers accumulate; the input gradient is computed only
  /// when need_dx (into the block's own buffer). Layers are visited only while something at
  /// or below them needs a gradient, so a frozen block under no trainable layer costs nothing.
  const Tensor4<T>& backward(const Tensor4<T>& dy, bool need_dx) {
    std::array<std::size_t, ResidualSlots::count> need{};
    scratch_needs(need);
    for (std::size_t i = 0; i < need.size(); ++i)
      if (i != ResidualSlots::trunk) scratch_->reserve(i, need[i]);
    if (need_dx) ensure_shape(dx_, x_shape_);
    backward_into(TensorRef4<const T>(dy), TensorRef4<T>(dx_), need_dx);
    return dx_;
  }
  const Tensor4<T>& backward(const Tensor4<T>& dy) { return backward(dy, true); }

  /// As backward, writing the input gradient into a view, which may be dy's own buffer (dy is
  /// read only before dx is written). Requires: scratch slots reserved (scratch_needs); dy and
  /// dx not in slots dsum..p2; when need_dx, dx has the input's shape.
  void backward_into(TensorRef4<const T> dy, TensorRef4<T> dx, bool need_dx) {
    check_not_inferred();
    SIEVE_CHECK(dy.shape == y_.shape(), "ResidualBlock.backward: dy [", dy.shape[0], ",", dy.shape[1], ",",
                dy.shape[2], ",", dy.shape[3], "] differs from the output [", y_.shape()[0], ",", y_.shape()[1],
                ",", y_.shape()[2], ",", y_.shape()[3], "]");
    SIEVE_CHECK(!need_dx || dx.shape == x_shape_, "ResidualBlock.backward: dx [", dx.shape[0], ",", dx.shape[1],
                ",", dx.shape[2], ",", dx.shape[3], "] differs from the input [", x_shape_[0], ",", x_shape_[1],
                ",", x_shape_[2], ",", x_shape_[3], "]");
    ScratchPool<T>& sp = *scratch_;
    using S = ResidualSlots;
    const Shape<4> os = y_.shape();
    const TensorRef4<T> dsum = sp.view(S::dsum, os);
    {
      const T* py = y_.data();
      const T* pd = dy.data;
      T* ps = dsum.data;
      parallel_for(y_.size(), parallel_grain_elements, [=](std::size_t lo, std::size_t hi) {
        kernels::relu_backward(py + lo, pd + lo, ps + lo, hi - lo);
      });
    }
    // Main path, top down over its 2K layers (conv_k is layer 2k, bn_k layer 2k+1): layer i
    // runs while it or something below it needs a gradient.
    const std::size_t L = 2 * pairs_.size();
    auto trainable = [&](std::size_t i) {
      const Pair& q = pairs_[i / 2];
      return i % 2 == 0 ? !q.conv.frozen() : !q.bn.frozen();
    };
    auto below = [&](std::size_t i) {  // is a gradient needed at layer i's input?
      bool b = need_dx;
      for (std::size_t j = 0; j < i; ++j) b = b || trainable(j);
      return b;
    };
    // The gradient at pair k's output (after its ReLU): dsum for the last pair, else a slot.
    auto grad_out = [&](std::size_t k) {
      return k + 1 == pairs_.size() ? dsum : sp.view(inner_slot(k), pairs_[k + 1].conv.input_shape());
    };
    bool main_dx = false;
    for (std::size_t i = L; i-- > 0;) {
      if (!trainable(i) && !below(i)) break;
      const bool nd = below(i);
      const std::size_t k = i / 2;
      Pair& q = pairs_[k];
      // The last bn writes to g4 (dsum stays for the shortcut); inner bns work in place.
      const TensorRef4<T> dc = k + 1 == pairs_.size() ? sp.view(S::g4, os) : grad_out(k);
      if (i % 2 == 1) {
        q.bn.backward_into(grad_out(k), dc, nd);
      } else if (k == 0) {
        q.conv.backward_into(dc, dx, nd);
        main_dx = nd;
      } else {
        q.conv.backward_into(dc, grad_out(k - 1), nd);
      }
    }
    const T* gs = dsum.data;  // the identity shortcut passes the gradient through
    if (ds_) {
      const bool tc = !ds_->conv.frozen(), tb = !ds_->bn.frozen();
      if (tb || tc || need_dx) {
        const TensorRef4<T> g4 = sp.view(S::g4, os);
        ds_->bn.backward_into(dsum, g4, tc || need_dx);
        if (tc || need_dx) {
          const TensorRef4<T> p2 = sp.view(S::p2, x_shape_);  // the main path is done with p2
          ds_->conv.backward_into(g4, p2, need_dx);
          gs = p2.data;
        }
      }
    }
    if (need_dx) {
      SIEVE_CHECK(main_dx, "ResidualBlock.backward: internal error, main path gave no input gradient");
      T* o = dx.data;
      parallel_for(dx.size(), parallel_grain_elements, [=](std::size_t lo, std::size_t hi) {
        for (std::size_t i = lo; i < hi; ++i) o[i] += gs[i];
      });
    }
  }

  /// conv1, bn1, conv2, bn2[, conv3, bn3], downsample.0, downsample.1 (torchvision's order).
  std::vector<ParamRef<T>> params() {
    std::vector<ParamRef<T>> out;
    for (std::size_t k = 0; k < pairs_.size(); ++k) {
      append(out, prefixed(pairs_[k].conv.params(), "conv" + std::to_string(k + 1) + "."));
      append(out, prefixed(pairs_[k].bn.params(), "bn" + std::to_string(k + 1) + "."));
    }
    if (ds_) {
      append(out, prefixed(ds_->conv.params(), "downsample.0."));
      append(out, prefixed(ds_->bn.params(), "downsample.1."));
    }
    return out;
  }
  std::vector<BufferRef<T>> buffers() {
    std::vector<BufferRef<T>> out;
    for (std::size_t k = 0; k < pairs_.size(); ++k)
      append(out, prefixed(pairs_[k].bn.buffers(), "bn" + std::to_string(k + 1) + "."));
    if (ds_) append(out, prefixed(ds_->bn.buffers(), "downsample.1."));
    return out;
  }
  void zero_grad() {
    for_each_pair([](Pair& q) { q.conv.zero_grad(), q.bn.zero_grad(); });
  }
  void set_training(bool t) {
    for_each_pair([&](Pair& q) { q.bn.set_training(t); });
  }
  /// True when any parameter of the block is trainable.
  bool any_trainable() const {
    bool t = false;
    for (const Pair& q : pairs_) t = t || !q.conv.frozen() || !q.bn.frozen();
    if (ds_) t = t || !ds_->conv.frozen() || !ds_->bn.frozen();
    return t;
  }
  void set_workspace(const Workspace<T>& ws) {
    for_each_pair([&](Pair& q) { q.conv.set_workspace(ws); });
  }
  bool has_downsample() const { return ds_.has_value(); }
  /// The memory layout of every activation of the block, input and output included.
  void set_layout(kernels::Layout l) {
    for_each_pair([&](Pair& q) { q.conv.set_layout(l, l), q.bn.set_layout(l); });
  }
  /// Share the scratch pool with the other layers of a model (only one block runs at a time).
  void set_scratch(ScratchHandle<T> s) { scratch_ = std::move(s); }
  /// The input shape of the last forward.
  const Shape<4>& input_shape() const { return x_shape_; }
  /// The block's output from the last forward.
  const Tensor4<T>& output() const { return inferred_ ? pairs_.back().conv.output() : y_; }

 private:
  struct Pair {
    Conv2d<T> conv;
    BatchNorm2d<T> bn;
  };

  // f on every (conv, bn) pair: the main path's, then the downsample's.
  template <class F>
  void for_each_pair(F&& f) {
    for (Pair& q : pairs_) f(q);
    if (ds_) f(*ds_);
  }

  // The slot holding the gradient at inner pair k's output (k < K-1): p1 next to the last
  // pair, then alternating, so no convolution reads and writes the same slot.
  std::size_t inner_slot(std::size_t k) const {
    return (pairs_.size() - 2 - k) % 2 == 0 ? ResidualSlots::p1 : ResidualSlots::p2;
  }

  void check_not_inferred() const {
    SIEVE_CHECK(!inferred_, "ResidualBlock.backward: the last forward ran in inference mode and kept nothing for "
                            "backward (set_inference(false), then forward again)");
  }
  static void check_shortcut(const Shape<4>& sc, const Shape<4>& os) {
    SIEVE_CHECK(sc == os, "ResidualBlock.forward: shortcut [", sc[1], ",", sc[2], ",", sc[3], "] and main path [",
                os[1], ",", os[2], ",", os[3], "] differ");
  }

  const Tensor4<T>& forward_inference(const Tensor4<T>& x) {
    // A scale and a shift per channel of every batch norm (the downsample's last).
    std::size_t n = 0;
    for_each_pair([&](Pair& q) { n += 2 * q.bn.channels(); });
    affine_.resize(n);
    T* s = affine_.data();
    auto fold = [&](Pair& q) {  // the batch norm as an affine map: {scale, shift}
      T* const scale = s;
      s += 2 * q.bn.channels();
      q.bn.eval_affine(scale, scale + q.bn.channels());
      return std::array<T*, 2>{scale, scale + q.bn.channels()};
    };
    std::array<std::array<T*, 2>, 3> aff{};
    for (std::size_t k = 0; k < pairs_.size(); ++k) aff[k] = fold(pairs_[k]);
    const Tensor4<T>* a = &x;
    for (std::size_t k = 0; k + 1 < pairs_.size(); ++k)
      a = &pairs_[k].conv.forward(*a, {aff[k][0], aff[k][1], nullptr, true});
    Pair& last = pairs_.back();
    const Shape<4> os{a->shape()[0], last.bn.channels(), a->shape()[2], a->shape()[3]};
    const Tensor4<T>* id = &x;
    if (ds_) {
      const auto d = fold(*ds_);
      id = &ds_->conv.forward(x, {d[0], d[1], nullptr, false});
    }
    // The last convolution's stride is 1 in both kinds, so its output plane is its input's.
    check_shortcut(id->shape(), os);
    const auto& al = aff[pairs_.size() - 1];
    return last.conv.forward(*a, {al[0], al[1], id->data(), true});
  }

  BlockKind kind_;
  std::vector<Pair> pairs_;  // the main path: 3 pairs (bottleneck) or 2 (basic)
  std::optional<Pair> ds_;   // the downsample branch
  ScratchHandle<T> scratch_;
  Shape<4> x_shape_{};
  Tensor4<T> y_, dx_;
  std::vector<T> affine_;
  bool inference_ = false, inferred_ = false;
};

/// A residual block of one kind, fixed at compile time: the constructor and the
/// `expansion` constant torchvision's block classes have.
template <class T, BlockKind K>
class ResidualBlockOf : public ResidualBlock<T> {
 public:
  static constexpr std::size_t expansion = block_expansion(K);
  ResidualBlockOf(std::size_t in, std::size_t planes, std::size_t stride, Rng& rng)
      : ResidualBlock<T>(K, in, planes, stride, rng) {}
};

/// torchvision's Bottleneck (1x1, 3x3/stride, 1x1 to planes * 4).
template <class T>
using Bottleneck = ResidualBlockOf<T, BlockKind::bottleneck>;
/// torchvision's BasicBlock (3x3/stride, 3x3, planes channels out).
template <class T>
using BasicBlock = ResidualBlockOf<T, BlockKind::basic>;

}  // namespace sieve::nn
