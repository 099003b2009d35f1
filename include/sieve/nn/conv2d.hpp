#pragma once
/// Conv2d stage: a bias-free 2-D convolution (torchvision's ResNet convolutions).

#include <cstddef>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/param.hpp"
#include "sieve/core/rng.hpp"
#include "sieve/core/xt.hpp"
#include "sieve/kernels/conv2d.hpp"
#include "sieve/nn/init.hpp"

namespace sieve::nn {

/// Scratch memory shared by the convolutions of one model (only one runs at a time).
template <class T>
using Workspace = std::shared_ptr<std::vector<T>>;

/// y = conv(x, weight), weight [K,C,KH,KW], no bias.
/// The forward input is kept by address for backward: it must stay alive and unchanged until
/// backward (true for a previous stage's output buffer inside a model).
template <class T>
class Conv2d {
 public:
  using input_type = Tensor4<T>;
  using output_type = Tensor4<T>;

  /// Requires: C, K, kernel sizes and strides > 0. Ensures: weight ~ kaiming_normal(fan_out).
  Conv2d(std::size_t C, std::size_t K, kernels::Conv2dGeom g, Rng& rng)
      : C_(C), K_(K), g_(g), weight_(Shape<4>{K, C, g.kh, g.kw}), grad_(xt::zeros<T>({K, C, g.kh, g.kw})),
        ws_(std::make_shared<std::vector<T>>()) {
    SIEVE_CHECK(C > 0 && K > 0 && g.kh > 0 && g.kw > 0 && g.sh > 0 && g.sw > 0, "Conv2d: C=", C, " K=", K,
                " kernel ", g.kh, "x", g.kw, " stride ", g.sh, "x", g.sw, " must all be positive");
    kaiming_normal_fan_out(std::span<T>(weight_.data(), weight_.size()), K * g.kh * g.kw, rng);
  }
  Conv2d(std::size_t C, std::size_t K, std::size_t kernel, std::size_t stride, std::size_t pad, Rng& rng)
      : Conv2d(C, K, kernels::Conv2dGeom{kernel, kernel, stride, stride, pad, pad}, rng) {}

  /// x: [N,C,H,W] -> y: [N,K,OH,OW]. Requires: x.shape()[1] == C.
  const Tensor4<T>& forward(const Tensor4<T>& x) { return forward(x, {}); }

  /// As forward, then the epilogue on each output row while it is in cache (a folded
  /// eval-mode batch norm, a residual sum, a ReLU). Backward then sees the post-epilogue
  /// output only through its caller: the weight gradient needs just x and dy.
  /// Requires: an epilogue residual has the output's shape.
  const Tensor4<T>& forward(const Tensor4<T>& x, const kernels::Conv2dEpilogue<T>& epi) {
    const auto& s = x.shape();
    SIEVE_CHECK(s[1] == C_, "Conv2d.forward: input [", s[0], ",", s[1], ",", s[2], ",", s[3], "] has C=", s[1],
                " but weight [", K_, ",", C_, ",", g_.kh, ",", g_.kw, "] expects C=", C_);
    d_ = kernels::Conv2dDims{s[0], s[1], s[2], s[3], K_, g_, 0, kernels::Conv2dAlgo::automatic, in_, out_, fused_,
                               forward_only_};
    kernels::conv2d_check(d_, "Conv2d.forward");
    x_ = &x;
    ensure_shape(y_, {d_.N, K_, d_.OH(), d_.OW()});
    T* ws = workspace(kernels::conv2d_workspace_size(d_));
    kernels::conv2d_forward(x.data(), weight_.data(), y_.data(), d_, ws, ws_->size(), epi, winograd_weights());
    return y_;
  }
  /// The input shape of the last forward.
  Shape<4> input_shape() const { return {d_.N, d_.C, d_.H, d_.W}; }

  /// Weight gradient (unless frozen) accumulates; the input gradient is assigned and
  /// computed only when `need_dx` (otherwise the returned buffer is stale).
  /// Requires: forward(x) was called and x is unchanged; dy has the output's shape.
  const Tensor4<T>& backward(const Tensor4<T>& dy, bool need_dx) { return backward_into(dy, dx_, need_dx); }

  /// As backward, writing the input gradient into `dx` (a buffer the caller owns; not dy).
  const Tensor4<T>& backward_into(const Tensor4<T>& dy, Tensor4<T>& dx, bool need_dx) {
    if (need_dx) ensure_shape(dx, {d_.N, d_.C, d_.H, d_.W});
    backward_into(TensorRef4<const T>(dy), TensorRef4<T>(dx), need_dx);
    return dx;
  }

  /// As backward, writing the input gradient into a view (e.g. of a model's ScratchPool).
  /// Requires: when need_dx, dx has the input's shape and does not overlap dy.
  void backward_into(TensorRef4<const T> dy, TensorRef4<T> dx, bool need_dx) {
    SIEVE_CHECK(x_ != nullptr, "Conv2d.backward: called before forward");
    SIEVE_CHECK(dy.shape == y_.shape(), "Conv2d.backward: dy [", dy.shape[0], ",", dy.shape[1], ",", dy.shape[2],
                ",", dy.shape[3], "] differs from the output [", y_.shape()[0], ",", y_.shape()[1], ",",
                y_.shape()[2], ",", y_.shape()[3], "]");
    if (need_dx) {
      SIEVE_CHECK(dx.data != dy.data, "Conv2d.backward_into: dx must not alias dy");
      SIEVE_CHECK(dx.shape == (Shape<4>{d_.N, d_.C, d_.H, d_.W}), "Conv2d.backward_into: dx [", dx.shape[0], ",",
                  dx.shape[1], ",", dx.shape[2], ",", dx.shape[3], "] differs from the input [", d_.N, ",", d_.C,
                  ",", d_.H, ",", d_.W, "]");
    }
    T* ws = workspace(kernels::conv2d_workspace_size(d_));
    if (!frozen_) kernels::conv2d_backward_weight(x_->data(), dy.data, grad_.data(), d_, ws, ws_->size());
    if (need_dx) kernels::conv2d_backward_input(dy.data, weight_.data(), dx.data, d_, ws, ws_->size());
  }
  /// The Stage interface: backward computing the input gradient.
  const Tensor4<T>& backward(const Tensor4<T>& dy) { return backward(dy, true); }

  std::vector<ParamRef<T>> params() {
    return {{"weight", {K_, C_, g_.kh, g_.kw}, {weight_.data(), weight_.size()}, {grad_.data(), grad_.size()},
             true, &frozen_}};
  }
  std::vector<BufferRef<T>> buffers() { return {}; }
  void zero_grad() { std::fill(grad_.begin(), grad_.end(), T(0)); }

  bool frozen() const { return frozen_; }
  void set_frozen(bool f) { frozen_ = f; }
  /// The memory layouts of x (and dx) and of y (and dy); the shapes stay [N,C,H,W] and
  /// [N,K,OH,OW]. A CNHW input needs a CNHW output (checked at forward).
  void set_layout(kernels::Layout in, kernels::Layout out) { in_ = in, out_ = out; }
  /// Whether a float forward's products may take the fused product (Conv2dDims::fused).
  void set_fused_product(bool on) { fused_ = on; }
  /// Whether no backward follows the next forwards (inference: Conv2dDims::forward_only).
  void set_forward_only(bool on) { forward_only_ = on; }
  /// Share scratch memory with other convolutions of the same model.
  void set_workspace(Workspace<T> ws) { ws_ = std::move(ws); }

  Tensor4<T>& weight() { return weight_; }
  const Tensor4<T>& weight() const { return weight_; }
  const Tensor4<T>& weight_grad() const { return grad_; }
  const Tensor4<T>& output() const { return y_; }
  std::size_t in_channels() const { return C_; }
  std::size_t out_channels() const { return K_; }
  const kernels::Conv2dGeom& geom() const { return g_; }

 private:
  T* workspace(std::size_t n) {
    if (ws_->size() < n) ws_->resize(n);  // grows during the first steps only
    return ws_->data();
  }

  // The forward's Winograd weights, kept with a copy of the weights they came from: while
  // the weights are unchanged (evaluation, inference, a frozen layer) forward reuses them;
  // after an update (or any write) the byte comparison fails and they are transformed anew.
  // Null when this convolution does not take Winograd. Inference may take F(4x4,3x3) where
  // training takes F(2x2,3x3): their sizes differ, so a size mismatch transforms anew too.
  const T* winograd_weights() {
    if (!kernels::conv2d_uses_winograd(d_)) return nullptr;
    const std::size_t n = weight_.size(), nu = kernels::conv2d_winograd_weights_size(d_);
    if (wino_u_.size() != nu || wino_from_.size() != n ||
        std::memcmp(wino_from_.data(), weight_.data(), n * sizeof(T)) != 0) {
      wino_from_.assign(weight_.begin(), weight_.end());
      wino_u_.resize(nu);
      kernels::conv2d_winograd_weights(weight_.data(), d_, wino_u_.data());
    }
    return wino_u_.data();
  }

  std::size_t C_, K_;
  kernels::Conv2dGeom g_;
  Tensor4<T> weight_, grad_;
  Tensor4<T> y_, dx_;
  kernels::Conv2dDims d_{};
  const Tensor4<T>* x_ = nullptr;
  kernels::Layout in_ = kernels::Layout::nchw, out_ = kernels::Layout::nchw;
  Workspace<T> ws_;
  std::vector<T> wino_from_, wino_u_;  // see winograd_weights()
  bool frozen_ = false, fused_ = true, forward_only_ = false;
};

}  // namespace sieve::nn
