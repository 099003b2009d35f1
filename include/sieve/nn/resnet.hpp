#pragma once
/// ResNet backbone (torchvision's ResNet, v1.5), up to the pooled embedding:
/// stem - layer1..layerS - global avg pool, with Bottleneck or BasicBlock residual blocks and
/// the ImageNet stem (conv1 7x7/2 - bn1 - relu - maxpool 3x3/2) or the CIFAR stem for small
/// images (conv1 3x3/1 - bn1 - relu, no pooling). ResNet50 = bottleneck blocks {3,4,6,3},
/// width 64, ImageNet stem -> embedding 2048. The classifier is `resnet | Dropout | Linear`.

#include <algorithm>
#include <array>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/param.hpp"
#include "sieve/core/rng.hpp"
#include "sieve/core/xt.hpp"
#include "sieve/nn/activation.hpp"
#include "sieve/nn/batch_norm.hpp"
#include "sieve/nn/residual_block.hpp"
#include "sieve/nn/conv2d.hpp"
#include "sieve/nn/scratch.hpp"

namespace sieve::nn {

/// The stem before layer1: ImageNet's conv1 7x7/2 (pad 3), bn1, ReLU, maxpool 3x3/2 (input
/// reduced 4x), or the CIFAR one for 28x28 / 32x32 images: conv1 3x3/1 (pad 1), bn1, ReLU.
enum class StemKind { imagenet, cifar };

/// Shape of a ResNet: blocks per stage (1..4 stages, stage s has planes width*2^s and stride
/// 1 for the first stage, 2 after), the stem width, input channels, block and stem kinds.
/// E.g. a CIFAR ResNet-18 on gray images: {{2, 2, 2, 2}, 64, 1, BlockKind::basic, StemKind::cifar}.
struct ResNetConfig {
  std::vector<std::size_t> blocks{3, 4, 6, 3};
  std::size_t width = 64;
  std::size_t in_channels = 3;
  BlockKind block = BlockKind::bottleneck;
  StemKind stem = StemKind::imagenet;

  /// Channels of the pooled embedding: width * 2^(stages-1) * expansion (4 bottleneck, 1 basic;
  /// 2048 for ResNet50).
  std::size_t embedding_dim() const {
    return width * (std::size_t{1} << (blocks.size() - 1)) * block_expansion(block);
  }
  static ResNetConfig resnet50() { return {}; }
};

template <class T>
class ResNet {
 public:
  using input_type = Tensor4<T>;
  using output_type = Tensor2<T>;

  /// Builds the network with torchvision's initialisation, drawn from Rng(derive_seed(seed,
  /// RngPurpose::init)). Requires: 1..4 stages, each with >= 1 block; width > 0.
  explicit ResNet(ResNetConfig cfg = {}, std::uint64_t seed = 0) : ResNet(cfg, init_rng(seed)) {}

  ResNet(const ResNet& o)
      : cfg_(o.cfg_), conv1_(o.conv1_), bn1_(o.bn1_), pool_(o.pool_), blocks_(o.blocks_),
        names_(o.names_), avgpool_(o.avgpool_), layout_(o.layout_), input_grad_(o.input_grad_),
        inference_(o.inference_) {
    relink();
  }
  ResNet& operator=(const ResNet& o) {
    if (this != &o) {
      ResNet tmp(o);
      *this = std::move(tmp);
    }
    return *this;
  }
  ResNet(ResNet&&) noexcept = default;
  ResNet& operator=(ResNet&&) noexcept = default;

  /// x: [N,in_channels,H,W] -> pooled embedding [N, embedding_dim()].
  /// Requires: H, W >= 1 (the stem and stages reduce them 2^(stages+1)x with the ImageNet
  /// stem, 2^(stages-1)x with the CIFAR stem; torchvision accepts 32x32); in training
  /// N*H'*W' > 1 at every BN.
  const Tensor2<T>& forward(const Tensor4<T>& x) {
    SIEVE_CHECK(x.shape()[1] == cfg_.in_channels, "ResNet.forward: input [", x.shape()[0], ",", x.shape()[1], ",",
                x.shape()[2], ",", x.shape()[3], "] has ", x.shape()[1], " channels, expected ", cfg_.in_channels);
    // Copy the input: conv1 keeps it by address for backward, and callers often pass a
    // temporary batch.
    ensure_shape(x_, x.shape());
    std::copy(x.begin(), x.end(), x_.begin());
    inferred_ = inference_ && !bn1_.training();
    conv1_.set_fused_product(!bn1_.training());  // as in ResidualBlock::forward
    const Tensor4<T>* h = nullptr;
    if (inferred_) {  // bn1 and its ReLU folded into conv1 (see set_inference)
      stem_affine_.resize(2 * bn1_.channels());
      T* const scale = stem_affine_.data();
      T* const shift = scale + bn1_.channels();
      bn1_.eval_affine(scale, shift);
      h = &conv1_.forward(x_, {scale, shift, nullptr, true});
    } else {
      h = &bn1_.forward(conv1_.forward(x_));  // bn1 applies the ReLU
    }
    if (pooled()) h = &pool_.forward(*h, /*for_backward=*/!inferred_);
    for (auto& b : blocks_) h = &b.forward(*h);
    return avgpool_.forward(*h);
  }

  /// Back-propagates dL/d(embedding). Parameter gradients of unfrozen layers accumulate;
  /// layers below the lowest trainable layer are skipped. Ensures: returns dL/dx when
  /// input_grad() (set_input_grad(true)), else an unspecified buffer (torch likewise computes
  /// no gradient for an input that does not require one).
  const Tensor4<T>& backward(const Tensor2<T>& dy) {
    SIEVE_CHECK(!inferred_, "ResNet.backward: the last forward ran in inference mode and kept nothing for "
                            "backward (set_inference(false), then forward again)");
    const std::size_t B = blocks_.size();
    // needs[i]: does anything at or below block i (stem = -1) train?
    const bool stem_t = !conv1_.frozen() || !bn1_.frozen();
    std::vector<char>& below = below_;  // below[i]: something strictly below block i trains
    below.assign(B + 1, 0);
    bool acc = input_grad_ || stem_t;
    for (std::size_t i = 0; i < B; ++i) {
      below[i] = acc;
      acc = acc || blocks_[i].any_trainable();
    }
    if (!acc) return dx_empty();  // nothing trains and no input gradient wanted
    // The memory plan: every block's temporaries live in one ScratchPool, sized once for the
    // largest block (and the stem) before any view is taken, and the gradient travels down
    // the trunk in one slot (see ResidualSlots).
    using S = ResidualSlots;
    std::array<std::size_t, S::count> need{};
    for (const auto& b : blocks_) b.scratch_needs(need);
    // The stem's output gradient: the max pool's input in its own slot (the pool reads the
    // trunk), else the trunk itself (layer1's input gradient is bn1's output gradient).
    const Shape<4> stem_shape = pooled() ? pool_.input_shape() : blocks_[0].input_shape();
    if (pooled()) need[S::dsum] = std::max(need[S::dsum], shape_size(stem_shape));
    for (std::size_t i = 0; i < S::count; ++i) scratch_->reserve(i, need[i]);

    TensorRef4<const T> g = avgpool_.backward(dy);
    for (std::size_t i = B; i-- > 0;) {
      if (!below[i] && !blocks_[i].any_trainable()) return dx_empty();
      const TensorRef4<T> dx = scratch_->view(S::trunk, blocks_[i].input_shape());
      blocks_[i].backward_into(g, dx, below[i] != 0);
      if (!below[i]) return dx_empty();
      if (block_grad_hook_) block_grad_hook_(i, dx);
      g = dx;
    }
    const TensorRef4<T> gs = scratch_->view(pooled() ? S::dsum : S::trunk, stem_shape);
    if (pooled()) pool_.backward_into(g, gs);  // else gs is g, layer1's input gradient
    const bool conv1_needed = !conv1_.frozen() || input_grad_;
    bn1_.backward_into(gs, gs, conv1_needed);
    if (!conv1_needed) return dx_empty();
    if (input_grad_) ensure_shape(dx_, conv1_.input_shape());
    conv1_.backward_into(gs, TensorRef4<T>(dx_), input_grad_);
    return input_grad_ ? dx_ : dx_empty();
  }

  /// torchvision's state_dict order: conv1, bn1, layer1.0 ... layerS.(B-1).
  std::vector<ParamRef<T>> params() {
    std::vector<ParamRef<T>> out;
    append(out, prefixed(conv1_.params(), "conv1."));
    append(out, prefixed(bn1_.params(), "bn1."));
    for (std::size_t i = 0; i < blocks_.size(); ++i) append(out, prefixed(blocks_[i].params(), names_[i]));
    return out;
  }
  std::vector<BufferRef<T>> buffers() {
    std::vector<BufferRef<T>> out;
    append(out, prefixed(bn1_.buffers(), "bn1."));
    for (std::size_t i = 0; i < blocks_.size(); ++i) append(out, prefixed(blocks_[i].buffers(), names_[i]));
    return out;
  }
  void zero_grad() {
    conv1_.zero_grad();
    bn1_.zero_grad();
    for (auto& b : blocks_) b.zero_grad();
  }
  void set_training(bool t) {
    bn1_.set_training(t);
    for (auto& b : blocks_) b.set_training(t);
  }
  /// Inference mode (default off): while on, a forward in eval mode keeps nothing for
  /// backward; every batch norm is folded into the epilogue of its convolution, with the
  /// ReLU and the residual sum, which saves the separate passes over memory, and 3x3
  /// convolutions take Winograd, F(4x4,3x3) where the batch gives its products enough columns,
  /// with their transformed weights kept (Conv2dDims::forward_only; the output agrees with
  /// eval mode's to rounding). backward is refused after such a
  /// forward. For predicting and embedding;
  /// eval mode alone stays differentiable (frozen batch-norm statistics while fine-tuning).
  void set_inference(bool on) {
    inference_ = on;
    for (auto& b : blocks_) b.set_inference(on);
  }
  bool inference() const { return inference_; }

  /// The memory layout of the activations inside the network (the input and the embedding
  /// are NCHW and [N,C] either way; so are block and layer outputs' shapes, whatever their
  /// memory order). Layout::cnhw (batch-folded, the default) makes every 1x1 convolution one
  /// GEMM over the whole batch and drops the per-sample copies that small planes need in
  /// NCHW (medians of 3 alternating runs: train/32/64 +10%, eval/32/64 +17%, train/64/64
  /// +4%, the rest within noise); results agree with NCHW to rounding (the products are
  /// blocked differently).
  void set_layout(kernels::Layout l) {
    layout_ = l;
    conv1_.set_layout(kernels::Layout::nchw, l);
    bn1_.set_layout(l);
    for (auto& b : blocks_) b.set_layout(l);
    avgpool_.set_layout(l);
  }
  kernels::Layout layout() const { return layout_; }

  /// Observer of the gradient on its way down the trunk (torch's Tensor.register_hook, for
  /// analysis and tests): backward calls it with block i (named block_names()[i]) and the
  /// gradient with respect to that block's input, whenever that gradient is computed (something
  /// below the block trains, or input_grad()). The view has the NCHW shape and layout()'s
  /// memory order and lives until the next backward. Empty (the default) = none; a copy of
  /// the network does not carry the hook (it would report the copy's gradients as ours).
  using BlockGradHook = std::function<void(std::size_t, TensorRef4<const T>)>;
  void set_block_grad_hook(BlockGradHook h) { block_grad_hook_ = std::move(h); }

  /// Whether backward computes the gradient with respect to the input image (default off).
  void set_input_grad(bool on) { input_grad_ = on; }
  bool input_grad() const { return input_grad_; }

  /// The embedding computed by the last forward.
  const Tensor2<T>& output() const { return avgpool_.output(); }
  const ResNetConfig& config() const { return cfg_; }
  std::size_t embedding_dim() const { return cfg_.embedding_dim(); }
  std::size_t num_blocks() const { return blocks_.size(); }
  /// The block named e.g. "layer2.1." (with trailing dot) is blocks()[i] with names()[i].
  std::vector<ResidualBlock<T>>& blocks() { return blocks_; }
  const std::vector<std::string>& block_names() const { return names_; }

 private:
  static Rng init_rng(std::uint64_t seed) { return Rng(derive_seed(seed, RngPurpose::init)); }
  ResNet(const ResNetConfig& cfg, Rng rng)
      : cfg_(validated(cfg)), conv1_(cfg.in_channels, cfg.width, stem_geom(cfg.stem), rng), bn1_(cfg.width) {
    bn1_.set_fused_relu(true);
    std::size_t in = cfg.width;
    for (std::size_t s = 0; s < cfg.blocks.size(); ++s) {
      const std::size_t planes = cfg.width << s;
      for (std::size_t b = 0; b < cfg.blocks[s]; ++b) {
        blocks_.emplace_back(cfg.block, in, planes, (b == 0 && s > 0) ? 2 : 1, rng);
        names_.push_back("layer" + std::to_string(s + 1) + "." + std::to_string(b) + ".");
        in = planes * block_expansion(cfg.block);
      }
    }
    set_layout(layout_);
    relink();
  }
  static kernels::Conv2dGeom stem_geom(StemKind k) {
    return k == StemKind::cifar ? kernels::Conv2dGeom{3, 3, 1, 1, 1, 1} : kernels::Conv2dGeom{7, 7, 2, 2, 3, 3};
  }
  bool pooled() const { return cfg_.stem == StemKind::imagenet; }
  static const ResNetConfig& validated(const ResNetConfig& cfg) {
    SIEVE_CHECK(!cfg.blocks.empty() && cfg.blocks.size() <= 4, "ResNet: ", cfg.blocks.size(),
                " stages given, 1 to 4 supported");
    for (std::size_t s = 0; s < cfg.blocks.size(); ++s)
      SIEVE_CHECK(cfg.blocks[s] > 0, "ResNet: stage ", s + 1, " has no blocks");
    SIEVE_CHECK(cfg.width > 0 && cfg.in_channels > 0, "ResNet: width=", cfg.width, " in_channels=",
                cfg.in_channels, " must be positive");
    return cfg;
  }
  // One conv workspace and one scratch pool for the model (one layer runs at a time).
  void relink() {
    ws_ = std::make_shared<std::vector<T>>();
    scratch_ = std::make_shared<ScratchPool<T>>();
    conv1_.set_workspace(ws_);
    for (auto& b : blocks_) {
      b.set_workspace(ws_);
      b.set_scratch(scratch_);
    }
  }
  const Tensor4<T>& dx_empty() {
    ensure_shape(empty_, {0, 0, 0, 0});
    return empty_;
  }

  ResNetConfig cfg_;
  Conv2d<T> conv1_;
  BatchNorm2d<T> bn1_;
  MaxPool2d<T> pool_;
  std::vector<ResidualBlock<T>> blocks_;
  std::vector<std::string> names_;
  GlobalAvgPool<T> avgpool_;
  Tensor4<T> x_, dx_, empty_;
  Workspace<T> ws_;
  ScratchHandle<T> scratch_;
  std::vector<char> below_;
  std::vector<T> stem_affine_;
  BlockGradHook block_grad_hook_;
  kernels::Layout layout_ = kernels::Layout::cnhw;
  bool input_grad_ = false, inference_ = false, inferred_ = false;
};

}  // namespace sieve::nn
