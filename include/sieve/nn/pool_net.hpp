#pragma once
/// PoolNet backbone: a plain (residual-free) convolutional net for small images, in the style
/// of the fast CIFAR-10 recipes (Keller Jordan's "airbench", Page's DAWNBench net) and of the
/// fast PyTorch peer in FMNIST-D's reference (`fmnist_d_fast_torch.py`):
///
///   conv1 3x3 (in -> w) - bn1 - relu                                     the stem, full size
///   layer s = 1..S: conv1 3x3 (w_{s-1} -> w_s) - maxpool 2x2/2 - bn1 - relu
///                   conv2 3x3 (w_s -> w_s)                    - bn2 - relu
///   global average (or max) pool                               -> embedding of w_S channels
///
/// with w_s = width * 2^s. Each stage widens the channels *before* it halves the plane (the
/// convolution runs at the larger size, the max pool then downsamples), where a ResNet's
/// strided convolution widens after it. On FMNIST-D this buys more accuracy per epoch at about
/// the same FLOPs as the CIFAR ResNet-10 (benchmarks/README.md has the measured table).
/// Width 16 with 3 stages is the peer's 16-32-64-128 network, with ReLU (fused into the batch
/// norm) for its GELU, and (by default) an average for its max global pool.
///
/// Parameter names follow the layout above (`conv1.weight`, `bn1.*`, `layer1.conv1.weight`,
/// `layer1.bn1.*`, `layer1.conv2.weight`, ...), the names of the PyTorch module in
/// tools/gen_nn_fixtures.py that the parity test loads.

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/param.hpp"
#include "sieve/core/rng.hpp"
#include "sieve/core/xt.hpp"
#include "sieve/nn/activation.hpp"
#include "sieve/nn/batch_norm.hpp"
#include "sieve/nn/conv2d.hpp"

namespace sieve::nn {

/// Shape of a PoolNet: stem width, number of pooling stages (1..4), input channels.
struct PoolNetConfig {
  std::size_t width = 16;
  std::size_t stages = 3;
  std::size_t in_channels = 1;
  bool max_pool = false;  ///< global max pool (the peer's) instead of the average

  /// Channels of the pooled embedding: width * 2^stages (128 for the default).
  std::size_t embedding_dim() const { return width << stages; }
};

template <class T>
class PoolNet {
 public:
  using input_type = Tensor4<T>;
  using output_type = Tensor2<T>;

  /// Builds the network with torchvision's initialisation (convolutions kaiming_normal
  /// fan_out, batch norms weight 1 / bias 0), drawn from Rng(derive_seed(seed,
  /// RngPurpose::init)) in parameter order. Requires: 1..4 stages; width, in_channels > 0.
  explicit PoolNet(PoolNetConfig cfg = {}, std::uint64_t seed = 0)
      : cfg_(validated(cfg)), pool_(cfg.max_pool ? GlobalPoolKind::max : GlobalPoolKind::avg) {
    Rng rng(derive_seed(seed, RngPurpose::init));
    ws_ = std::make_shared<std::vector<T>>();
    auto add = [&](std::size_t in, std::size_t out, bool pool, std::string name) {
      Unit u{Conv2d<T>(in, out, 3, 1, 1, rng), BatchNorm2d<T>(out), {}, std::move(name)};
      if (pool) u.pool.emplace(2, 2, 0);
      u.bn.set_fused_relu(true);
      units_.push_back(std::move(u));
    };
    add(cfg.in_channels, cfg.width, false, "");
    for (std::size_t s = 1; s <= cfg.stages; ++s) {
      const std::string p = "layer" + std::to_string(s) + ".";
      add(cfg.width << (s - 1), cfg.width << s, true, p);
      add(cfg.width << s, cfg.width << s, false, p);
    }
    set_layout(layout_);
    relink();
  }

  PoolNet(const PoolNet& o)
      : cfg_(o.cfg_), units_(o.units_), pool_(o.pool_), layout_(o.layout_), input_grad_(o.input_grad_),
        inference_(o.inference_) {
    relink();
  }
  PoolNet& operator=(const PoolNet& o) {
    if (this != &o) {
      PoolNet tmp(o);
      *this = std::move(tmp);
    }
    return *this;
  }
  PoolNet(PoolNet&&) noexcept = default;
  PoolNet& operator=(PoolNet&&) noexcept = default;

  /// x: [N,in_channels,H,W] -> pooled embedding [N, embedding_dim()].
  /// Requires: H, W >= 2^stages (each stage halves the plane, rounding down); in training
  /// N*H'*W' > 1 at every batch norm.
  const Tensor2<T>& forward(const Tensor4<T>& x) {
    const auto& s = x.shape();
    SIEVE_CHECK(s[1] == cfg_.in_channels, "PoolNet.forward: input [", s[0], ",", s[1], ",", s[2], ",", s[3],
                "] has ", s[1], " channels, expected ", cfg_.in_channels);
    SIEVE_CHECK((s[2] >> cfg_.stages) >= 1 && (s[3] >> cfg_.stages) >= 1, "PoolNet.forward: input ", s[2], "x",
                s[3], " is too small for ", cfg_.stages, " 2x2 poolings (needs at least ", 1u << cfg_.stages,
                " pixels per side)");
    // Copy the input: conv1 keeps it by address for backward (see ResNet::forward).
    ensure_shape(x_, s);
    std::copy(x.begin(), x.end(), x_.begin());
    const bool training = units_[0].bn.training();
    inferred_ = inference_ && !training;
    const Tensor4<T>* h = &x_;
    for (auto& u : units_) {
      // The fused product in evaluation only, and no state kept for backward in inference,
      // as ResidualBlock::forward decides.
      u.conv.set_fused_product(!u.bn.training());
      u.conv.set_forward_only(inferred_);
      h = &u.conv.forward(*h);
      if (u.pool) h = &u.pool->forward(*h, /*for_backward=*/!inferred_);
      h = &u.bn.forward(*h);  // bn applies the ReLU
    }
    return pool_.forward(*h);
  }

  /// Back-propagates dL/d(embedding): parameter gradients of unfrozen layers accumulate.
  /// Ensures: returns dL/dx when input_grad(), else an unspecified buffer.
  const Tensor4<T>& backward(const Tensor2<T>& dy) {
    SIEVE_CHECK(!inferred_, "PoolNet.backward: the last forward ran in inference mode and kept nothing for "
                            "backward (set_inference(false), then forward again)");
    // Below the lowest trainable layer nothing needs a gradient (frozen stems, as ResNet).
    std::size_t lowest = units_.size();
    for (std::size_t i = 0; i < units_.size() && lowest == units_.size(); ++i)
      if (!units_[i].conv.frozen() || !units_[i].bn.frozen()) lowest = i;
    if (input_grad_) lowest = 0;
    const Tensor4<T>* g = &pool_.backward(dy);
    for (std::size_t i = units_.size(); i-- > lowest;) {
      Unit& u = units_[i];
      const bool conv_dx = i > 0 ? i > lowest : input_grad_;
      g = &u.bn.backward(*g, /*need_dx=*/true);
      if (u.pool) g = &u.pool->backward(*g);
      g = &u.conv.backward(*g, conv_dx);
      if (!conv_dx) break;
    }
    if (input_grad_) return *g;
    ensure_shape(empty_, {0, 0, 0, 0});
    return empty_;
  }

  /// conv1, bn1, layer1.conv1, layer1.bn1, layer1.conv2, layer1.bn2, layer2. ...
  std::vector<ParamRef<T>> params() {
    std::vector<ParamRef<T>> out;
    for (std::size_t i = 0; i < units_.size(); ++i) {
      append(out, prefixed(units_[i].conv.params(), conv_name(i)));
      append(out, prefixed(units_[i].bn.params(), bn_name(i)));
    }
    return out;
  }
  std::vector<BufferRef<T>> buffers() {
    std::vector<BufferRef<T>> out;
    for (std::size_t i = 0; i < units_.size(); ++i) append(out, prefixed(units_[i].bn.buffers(), bn_name(i)));
    return out;
  }
  void zero_grad() {
    for (auto& u : units_) u.conv.zero_grad(), u.bn.zero_grad();
  }
  void set_training(bool t) {
    for (auto& u : units_) u.bn.set_training(t);
  }
  /// Inference mode (default off): a forward in eval mode keeps nothing for backward and the
  /// 3x3 convolutions may take Winograd with kept weights (Conv2dDims::forward_only).
  void set_inference(bool on) { inference_ = on; }
  bool inference() const { return inference_; }

  /// Activation memory layout inside the network, as ResNet::set_layout (CNHW by default:
  /// the small planes of the later stages become one GEMM over the whole batch).
  void set_layout(kernels::Layout l) {
    layout_ = l;
    for (std::size_t i = 0; i < units_.size(); ++i) {
      units_[i].conv.set_layout(i == 0 ? kernels::Layout::nchw : l, l);
      units_[i].bn.set_layout(l);
    }
    pool_.set_layout(l);  // max pooling reads contiguous planes in either layout
  }
  kernels::Layout layout() const { return layout_; }

  void set_input_grad(bool on) { input_grad_ = on; }
  bool input_grad() const { return input_grad_; }

  /// The embedding computed by the last forward.
  const Tensor2<T>& output() const { return pool_.output(); }
  const PoolNetConfig& config() const { return cfg_; }
  std::size_t embedding_dim() const { return cfg_.embedding_dim(); }

 private:
  struct Unit {
    Conv2d<T> conv;
    BatchNorm2d<T> bn;
    std::optional<MaxPool2d<T>> pool;  // between conv and bn: the first unit of each stage
    std::string prefix;                // "" for the stem, "layerS." in stage S
  };

  // Unit 0 is conv1/bn1; in a stage the pooled unit is conv1/bn1, the next conv2/bn2.
  std::string conv_name(std::size_t i) const {
    return units_[i].prefix + (i == 0 || units_[i].pool ? "conv1." : "conv2.");
  }
  std::string bn_name(std::size_t i) const { return units_[i].prefix + (i == 0 || units_[i].pool ? "bn1." : "bn2."); }

  static const PoolNetConfig& validated(const PoolNetConfig& cfg) {
    SIEVE_CHECK(cfg.stages >= 1 && cfg.stages <= 4, "PoolNet: ", cfg.stages, " stages given, 1 to 4 supported");
    SIEVE_CHECK(cfg.width > 0 && cfg.in_channels > 0, "PoolNet: width=", cfg.width, " in_channels=",
                cfg.in_channels, " must be positive");
    return cfg;
  }
  // One conv workspace for the model (one layer runs at a time).
  void relink() {
    ws_ = std::make_shared<std::vector<T>>();
    for (auto& u : units_) u.conv.set_workspace(ws_);
  }

  PoolNetConfig cfg_;
  std::vector<Unit> units_;
  GlobalPool<T> pool_;  // the embedding: average, or max (cfg_.max_pool)
  Tensor4<T> x_, empty_;
  Workspace<T> ws_;
  kernels::Layout layout_ = kernels::Layout::cnhw;
  bool input_grad_ = false, inference_ = false, inferred_ = false;
};

}  // namespace sieve::nn
