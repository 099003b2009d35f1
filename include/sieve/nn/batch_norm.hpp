#pragma once
/// BatchNorm2d stage, PyTorch semantics (eps 1e-5, momentum 0.1, running stats, counter).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/param.hpp"
#include "sieve/core/xt.hpp"
#include "sieve/kernels/batch_norm.hpp"

namespace sieve::nn {

/// y = (x - mean) / sqrt(var + eps) * weight + bias per channel; batch statistics in training
/// (updating running_mean, running_var and num_batches_tracked), running statistics in eval.
/// Keeps the forward input by address for backward (see Conv2d).
template <class T>
class BatchNorm2d {
 public:
  using input_type = Tensor4<T>;
  using output_type = Tensor4<T>;

  /// Ensures: weight 1, bias 0, running_mean 0, running_var 1, num_batches_tracked 0, training.
  explicit BatchNorm2d(std::size_t C, double eps = 1e-5, double momentum = 0.1)
      : C_(C), eps_(eps), momentum_(momentum), weight_(xt::ones<T>({C})), bias_(xt::zeros<T>({C})),
        gweight_(xt::zeros<T>({C})), gbias_(xt::zeros<T>({C})), running_mean_(xt::zeros<T>({C})),
        running_var_(xt::ones<T>({C})), save_mean_(xt::zeros<T>({C})), save_invstd_(xt::zeros<T>({C})) {
    SIEVE_CHECK(C > 0, "BatchNorm2d: C must be positive");
  }

  /// x: [N,C,H,W] -> y: [N,C,H,W]. Requires: x.shape()[1] == C; in training N*H*W > 1.
  const Tensor4<T>& forward(const Tensor4<T>& x) {
    ensure_shape(y_, {x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]});
    run_forward(x, y_.data(), true);
    return y_;
  }

  /// As forward, writing y into a caller's view (scratch shared between layers): backward
  /// needs only x and the saved statistics. Requires: no fused ReLU (its backward reads y);
  /// y has x's shape.
  TensorRef4<T> forward_into(const Tensor4<T>& x, TensorRef4<T> y) {
    SIEVE_CHECK(!fused_relu_, "BatchNorm2d.forward_into: not available with a fused ReLU");
    SIEVE_CHECK(y.shape == (Shape<4>{x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]}),
                "BatchNorm2d.forward_into: y [", y.shape[0], ",", y.shape[1], ",", y.shape[2], ",", y.shape[3],
                "] differs from x [", x.shape()[0], ",", x.shape()[1], ",", x.shape()[2], ",", x.shape()[3], "]");
    run_forward(x, y.data, false);
    return y;
  }

  /// Gradients of weight and bias accumulate (unless frozen); dx assigned when need_dx.
  /// Requires: forward(x) was called and x is unchanged; dy has the output's shape.
  const Tensor4<T>& backward(const Tensor4<T>& dy, bool need_dx) { return backward_into(dy, dx_, need_dx); }

  /// As backward, writing the input gradient into `dx`, which may be `dy` itself (in place).
  const Tensor4<T>& backward_into(const Tensor4<T>& dy, Tensor4<T>& dx, bool need_dx) {
    if (need_dx) ensure_shape(dx, out_shape_);
    backward_into(TensorRef4<const T>(dy), TensorRef4<T>(dx), need_dx);
    return dx;
  }

  /// As backward, writing the input gradient into a view, which may be dy's buffer (in place).
  /// Requires: when need_dx, dx has the input's shape.
  void backward_into(TensorRef4<const T> dy, TensorRef4<T> dx, bool need_dx) {
    SIEVE_CHECK(x_ != nullptr, "BatchNorm2d.backward: called before forward");
    SIEVE_CHECK(dy.shape == out_shape_, "BatchNorm2d.backward: dy [", dy.shape[0], ",", dy.shape[1], ",",
                dy.shape[2], ",", dy.shape[3], "] differs from the output [", out_shape_[0], ",", out_shape_[1],
                ",", out_shape_[2], ",", out_shape_[3], "]");
    SIEVE_CHECK(!need_dx || dx.shape == out_shape_, "BatchNorm2d.backward_into: dx [", dx.shape[0], ",",
                dx.shape[1], ",", dx.shape[2], ",", dx.shape[3], "] differs from the input [", out_shape_[0], ",",
                out_shape_[1], ",", out_shape_[2], ",", out_shape_[3], "]");
    kernels::batch_norm_backward(x_->data(), dy.data, weight_.data(), save_mean_.data(), save_invstd_.data(),
                                 batch_stats_, need_dx ? dx.data : nullptr, frozen_ ? nullptr : gweight_.data(),
                                 frozen_ ? nullptr : gbias_.data(), d_, fused_relu_ ? y_.data() : nullptr);
  }
  const Tensor4<T>& backward(const Tensor4<T>& dy) { return backward(dy, true); }

  /// Eval-mode batch norm as y = x * scale + shift per channel (scale, shift: C values each),
  /// for folding into the preceding convolution (see kernels::Conv2dEpilogue).
  void eval_affine(T* scale, T* shift) const {
    for (std::size_t c = 0; c < C_; ++c)
      kernels::batch_norm_eval_affine(weight_.data(), bias_.data(), running_mean_.data(), running_var_.data(), eps_,
                                      c, scale[c], shift[c]);
  }
  std::size_t channels() const { return C_; }

  /// weight, bias (no weight decay, as is usual for BN).
  std::vector<ParamRef<T>> params() {
    return {{"weight", {C_}, {weight_.data(), C_}, {gweight_.data(), C_}, false, &frozen_},
            {"bias", {C_}, {bias_.data(), C_}, {gbias_.data(), C_}, false, &frozen_}};
  }
  /// running_mean, running_var, num_batches_tracked (torchvision's state_dict order).
  std::vector<BufferRef<T>> buffers() {
    return {{"running_mean", {C_}, {running_mean_.data(), C_}, nullptr},
            {"running_var", {C_}, {running_var_.data(), C_}, nullptr},
            {"num_batches_tracked", {}, {}, &num_batches_tracked_}};
  }
  void zero_grad() {
    std::fill(gweight_.begin(), gweight_.end(), T(0));
    std::fill(gbias_.begin(), gbias_.end(), T(0));
  }
  void set_training(bool t) { training_ = t; }
  bool training() const { return training_; }
  /// Apply a ReLU to the output in place (y = max(bn(x), 0)), saving a separate ReLU's
  /// output and gradient buffers; backward accounts for it.
  void set_fused_relu(bool on) { fused_relu_ = on; }
  bool fused_relu() const { return fused_relu_; }
  bool frozen() const { return frozen_; }
  void set_frozen(bool f) { frozen_ = f; }
  /// The memory layout of x, y and their gradients (the shape stays [N,C,H,W]).
  void set_layout(kernels::Layout l) { layout_ = l; }
  kernels::Layout layout() const { return layout_; }

  Tensor1<T>& weight() { return weight_; }
  Tensor1<T>& bias() { return bias_; }
  Tensor1<T>& running_mean() { return running_mean_; }
  Tensor1<T>& running_var() { return running_var_; }
  std::int64_t num_batches_tracked() const { return num_batches_tracked_; }
  const Tensor1<T>& weight_grad() const { return gweight_; }
  const Tensor1<T>& bias_grad() const { return gbias_; }
  /// The output of the last forward() (not of forward_into).
  const Tensor4<T>& output() const { return y_; }

 private:
  void run_forward(const Tensor4<T>& x, T* y, bool own) {
    const auto& s = x.shape();
    SIEVE_CHECK(s[1] == C_, "BatchNorm2d.forward: input [", s[0], ",", s[1], ",", s[2], ",", s[3], "] has C=", s[1],
                " but the layer has ", C_, " channels");
    d_ = kernels::BatchNormDims{s[0], C_, s[2] * s[3], eps_, momentum_, layout_};
    out_shape_ = {s[0], s[1], s[2], s[3]};
    x_ = &x;
    batch_stats_ = training_;
    if (training_) {
      kernels::batch_norm_forward_train(x.data(), weight_.data(), bias_.data(), y, save_mean_.data(),
                                        save_invstd_.data(), running_mean_.data(), running_var_.data(), d_,
                                        own && fused_relu_);
      ++num_batches_tracked_;
    } else {
      kernels::batch_norm_forward_eval(x.data(), weight_.data(), bias_.data(), running_mean_.data(),
                                       running_var_.data(), y, save_mean_.data(), save_invstd_.data(), d_,
                                       own && fused_relu_);
    }
  }

  std::size_t C_;
  double eps_, momentum_;
  Shape<4> out_shape_{};
  Tensor1<T> weight_, bias_, gweight_, gbias_, running_mean_, running_var_, save_mean_, save_invstd_;
  std::int64_t num_batches_tracked_ = 0;
  Tensor4<T> y_, dx_;
  kernels::BatchNormDims d_{};
  const Tensor4<T>* x_ = nullptr;
  kernels::Layout layout_ = kernels::Layout::nchw;
  bool training_ = true, batch_stats_ = true, frozen_ = false, fused_relu_ = false;
};

}  // namespace sieve::nn
