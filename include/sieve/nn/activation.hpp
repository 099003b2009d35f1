#pragma once
/// Parameter-free stages: ReLU, MaxPool2d, GlobalPool (average or max), Dropout.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/param.hpp"
#include "sieve/core/rng.hpp"
#include "sieve/core/xt.hpp"
#include "sieve/kernels/dropout.hpp"
#include "sieve/kernels/pool.hpp"
#include "sieve/kernels/relu.hpp"

namespace sieve::nn {

/// y = max(x, 0), any fixed rank.
template <class T, std::size_t R = 4>
class ReLU {
 public:
  using input_type = Tensor<T, R>;
  using output_type = Tensor<T, R>;

  const Tensor<T, R>& forward(const Tensor<T, R>& x) {
    ensure_shape(y_, x.shape());
    kernels::relu_forward(x.data(), y_.data(), x.size());
    return y_;
  }
  /// dx assigned. Requires: dy has the output's shape.
  const Tensor<T, R>& backward(const Tensor<T, R>& dy) {
    SIEVE_CHECK(dy.shape() == y_.shape(), "ReLU.backward: dy has ", dy.size(), " elements in a different shape ",
                "from the output's ", y_.size());
    ensure_shape(dx_, y_.shape());
    kernels::relu_backward(y_.data(), dy.data(), dx_.data(), dy.size());
    return dx_;
  }
  std::vector<ParamRef<T>> params() { return {}; }
  std::vector<BufferRef<T>> buffers() { return {}; }
  void zero_grad() {}

 private:
  Tensor<T, R> y_, dx_;
};

/// Max pooling (ResNet's stem: 3x3, stride 2, padding 1); keeps the argmax for backward.
template <class T>
class MaxPool2d {
 public:
  using input_type = Tensor4<T>;
  using output_type = Tensor4<T>;

  explicit MaxPool2d(std::size_t kernel = 3, std::size_t stride = 2, std::size_t pad = 1)
      : g_{kernel, kernel, stride, stride, pad, pad} {}

  /// x: [N,C,H,W] -> y: [N,C,OH,OW] with OH = (H + 2p - k) / s + 1. With for_backward false
  /// (inference) no argmax is kept and backward is refused until the next forward.
  const Tensor4<T>& forward(const Tensor4<T>& x, bool for_backward = true) {
    const auto& s = x.shape();
    N_ = s[0], C_ = s[1], H_ = s[2], W_ = s[3];
    SIEVE_CHECK(H_ + 2 * g_.ph >= g_.kh && W_ + 2 * g_.pw >= g_.kw, "MaxPool2d.forward: input ", H_, "x", W_,
                " is smaller than the window ", g_.kh, "x", g_.kw);
    OH_ = kernels::pool_out(H_, g_.kh, g_.sh, g_.ph), OW_ = kernels::pool_out(W_, g_.kw, g_.sw, g_.pw);
    ensure_shape(y_, {N_, C_, OH_, OW_});
    kept_argmax_ = for_backward;
    if (for_backward) ensure_shape(argmax_, {N_, C_, OH_, OW_});
    kernels::max_pool2d_forward(x.data(), N_ * C_, H_, W_, g_, y_.data(), for_backward ? argmax_.data() : nullptr);
    return y_;
  }
  /// dx assigned. Requires: dy has the output's shape.
  const Tensor4<T>& backward(const Tensor4<T>& dy) {
    SIEVE_CHECK(dy.shape() == y_.shape(), "MaxPool2d.backward: dy [", dy.shape()[0], ",", dy.shape()[1], ",",
                dy.shape()[2], ",", dy.shape()[3], "] differs from the output [", N_, ",", C_, ",", OH_, ",", OW_,
                "]");
    ensure_shape(dx_, {N_, C_, H_, W_});
    backward_into(TensorRef4<const T>(dy), TensorRef4<T>(dx_));
    return dx_;
  }
  /// As backward, writing dx into a view. Requires: dy has the output's shape, dx the input's.
  void backward_into(TensorRef4<const T> dy, TensorRef4<T> dx) {
    SIEVE_CHECK(dy.shape == (Shape<4>{N_, C_, OH_, OW_}) && dx.shape == (Shape<4>{N_, C_, H_, W_}),
                "MaxPool2d.backward: dy [", dy.shape[0], ",", dy.shape[1], ",", dy.shape[2], ",", dy.shape[3],
                "] and dx [", dx.shape[0], ",", dx.shape[1], ",", dx.shape[2], ",", dx.shape[3],
                "] differ from the output [", N_, ",", C_, ",", OH_, ",", OW_, "] and input [", N_, ",", C_, ",",
                H_, ",", W_, "]");
    SIEVE_CHECK(kept_argmax_, "MaxPool2d.backward: the last forward kept no argmax (for_backward = false)");
    kernels::max_pool2d_backward(dy.data, argmax_.data(), N_ * C_, H_, W_, OH_, OW_, dx.data);
  }
  /// The input shape of the last forward.
  Shape<4> input_shape() const { return {N_, C_, H_, W_}; }
  std::vector<ParamRef<T>> params() { return {}; }
  std::vector<BufferRef<T>> buffers() { return {}; }
  void zero_grad() {}

 private:
  kernels::Conv2dGeom g_;
  std::size_t N_ = 0, C_ = 0, H_ = 0, W_ = 0, OH_ = 0, OW_ = 0;
  bool kept_argmax_ = false;
  Tensor4<T> y_, dx_;
  Tensor4<std::int32_t> argmax_;
};

/// Global pooling kind: the mean or the maximum over each channel's plane.
enum class GlobalPoolKind { avg, max };

/// [N,C,H,W] -> [N,C]: the mean (avg) or the maximum (max: PyTorch's adaptive_max_pool2d to
/// 1x1, then flatten; the gradient goes to the first maximum) over each channel's plane, the
/// pooled embedding.
template <class T>
class GlobalPool {
 public:
  using input_type = Tensor4<T>;
  using output_type = Tensor2<T>;

  explicit GlobalPool(GlobalPoolKind kind = GlobalPoolKind::avg) : kind_(kind) {}

  const Tensor2<T>& forward(const Tensor4<T>& x) {
    const auto& s = x.shape();
    in_shape_ = {s[0], s[1], s[2], s[3]};
    SIEVE_CHECK(s[2] * s[3] > 0, name(), ".forward: empty plane ", s[2], "x", s[3]);
    ensure_shape(y_, {s[0], s[1]});
    if (kind_ == GlobalPoolKind::avg) {
      kernels::global_avg_pool_forward(x.data(), s[0], s[1], s[2] * s[3], y_.data(), layout_);
    } else {
      ensure_shape(argmax_, {s[0], s[1]});
      kernels::global_max_pool_forward(x.data(), s[0], s[1], s[2] * s[3], y_.data(), argmax_.data(), layout_);
    }
    return y_;
  }
  /// dx assigned. Requires: dy is [N,C] as the output.
  const Tensor4<T>& backward(const Tensor2<T>& dy) {
    SIEVE_CHECK(dy.shape() == y_.shape(), name(), ".backward: dy [", dy.shape()[0], ",", dy.shape()[1],
                "] differs from the output [", y_.shape()[0], ",", y_.shape()[1], "]");
    ensure_shape(dx_, in_shape_);
    const std::size_t N = in_shape_[0], C = in_shape_[1], HW = in_shape_[2] * in_shape_[3];
    if (kind_ == GlobalPoolKind::avg)
      kernels::global_avg_pool_backward(dy.data(), N, C, HW, dx_.data(), layout_);
    else
      kernels::global_max_pool_backward(dy.data(), argmax_.data(), N, C, HW, dx_.data(), layout_);
    return dx_;
  }
  std::vector<ParamRef<T>> params() { return {}; }
  std::vector<BufferRef<T>> buffers() { return {}; }
  void zero_grad() {}
  const Tensor2<T>& output() const { return y_; }
  GlobalPoolKind kind() const { return kind_; }
  /// The memory layout of x (and of the gradient backward returns); the output is [N,C] either way.
  void set_layout(kernels::Layout l) { layout_ = l; }

 private:
  const char* name() const { return kind_ == GlobalPoolKind::avg ? "GlobalAvgPool" : "GlobalMaxPool"; }

  GlobalPoolKind kind_;
  kernels::Layout layout_ = kernels::Layout::nchw;
  Shape<4> in_shape_{};
  Tensor2<T> y_;
  Tensor2<std::int32_t> argmax_;  // max only
  Tensor4<T> dx_;
};

/// The ResNets' embedding: GlobalPool(avg).
template <class T>
using GlobalAvgPool = GlobalPool<T>;

/// Inverted dropout on [N,F] features. The mask of training step s is keyed by
/// (derive_seed(seed, RngPurpose::dropout), s): element i's keep decision is word i of that
/// Philox stream, independent of threads and call order. Each training forward uses the
/// current step, then advances it; eval mode is the identity.
template <class T>
class Dropout {
 public:
  using input_type = Tensor2<T>;
  using output_type = Tensor2<T>;

  /// Requires: 0 <= p < 1.
  explicit Dropout(double p = 0.5, std::uint64_t seed = 0) : p_(p), key_(derive_seed(seed, RngPurpose::dropout)) {
    SIEVE_CHECK(p >= 0.0 && p < 1.0, "Dropout: p=", p, " must be in [0, 1)");
  }

  const Tensor2<T>& forward(const Tensor2<T>& x) {
    ensure_shape(y_, x.shape());
    used_mask_ = training_ && p_ > 0.0;
    if (used_mask_) {
      used_step_ = step_++;
      kernels::dropout_forward(x.data(), y_.data(), x.size(), p_, key_, used_step_);
    } else {
      std::copy(x.begin(), x.end(), y_.begin());
    }
    return y_;
  }
  /// dx assigned, with the mask of the last forward. Requires: dy has the output's shape.
  const Tensor2<T>& backward(const Tensor2<T>& dy) {
    SIEVE_CHECK(dy.shape() == y_.shape(), "Dropout.backward: dy [", dy.shape()[0], ",", dy.shape()[1],
                "] differs from the output [", y_.shape()[0], ",", y_.shape()[1], "]");
    ensure_shape(dx_, dy.shape());
    if (used_mask_)
      kernels::dropout_backward(dy.data(), dx_.data(), dy.size(), p_, key_, used_step_);
    else
      std::copy(dy.begin(), dy.end(), dx_.begin());
    return dx_;
  }
  std::vector<ParamRef<T>> params() { return {}; }
  std::vector<BufferRef<T>> buffers() { return {}; }
  void zero_grad() {}
  void set_training(bool t) { training_ = t; }
  bool training() const { return training_; }
  /// The step the next training forward uses (checkpoint it to resume exactly).
  std::uint64_t step() const { return step_; }
  void set_step(std::uint64_t s) { step_ = s; }
  /// The trainer's hook (see Pipeline::set_random_step): the mask is keyed by this step.
  void set_random_step(std::uint64_t s) { set_step(s); }
  double p() const { return p_; }

 private:
  double p_;
  std::uint64_t key_;
  std::uint64_t step_ = 0, used_step_ = 0;
  bool training_ = true, used_mask_ = false;
  Tensor2<T> y_, dx_;
};

}  // namespace sieve::nn
