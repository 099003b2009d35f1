#pragma once
/// Linear stage: y = x weight^T + bias, PyTorch's nn.Linear (the classifier head `fc`).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/param.hpp"
#include "sieve/core/rng.hpp"
#include "sieve/core/xt.hpp"
#include "sieve/kernels/linear.hpp"
#include "sieve/nn/init.hpp"

namespace sieve::nn {

/// Fully connected layer with weight [Out,In] and bias [Out]; its parameters are named
/// `<name>.weight` and `<name>.bias` (default "fc", torchvision's head). Keeps the forward
/// input by address for backward (see Conv2d).
template <class T>
class Linear {
 public:
  using input_type = Tensor2<T>;
  using output_type = Tensor2<T>;

  /// Requires: in, out > 0. Ensures: weight and bias ~ U(-1/sqrt(in), 1/sqrt(in)) (PyTorch).
  Linear(std::size_t in, std::size_t out, Rng& rng, std::string name = "fc")
      : in_(in), out_(out), name_(std::move(name)), weight_(Shape<2>{out, in}), bias_(Shape<1>{out}),
        gweight_(xt::zeros<T>({out, in})), gbias_(xt::zeros<T>({out})) {
    SIEVE_CHECK(in > 0 && out > 0, "Linear(", name_, "): in=", in, " and out=", out, " must be positive");
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    uniform_fill(std::span<T>(weight_.data(), weight_.size()), bound, rng);
    uniform_fill(std::span<T>(bias_.data(), bias_.size()), bound, rng);
  }

  /// x: [N,In] -> y: [N,Out].
  const Tensor2<T>& forward(const Tensor2<T>& x) {
    SIEVE_CHECK(x.shape()[1] == in_, "Linear(", name_, ").forward: input [", x.shape()[0], ",", x.shape()[1],
                "] but weight [", out_, ",", in_, "] expects ", in_, " features");
    x_ = &x;
    ensure_shape(y_, {x.shape()[0], out_});
    kernels::linear_forward(x.data(), weight_.data(), bias_.data(), y_.data(), x.shape()[0], in_, out_);
    return y_;
  }
  /// Parameter gradients accumulate (unless frozen); dx assigned when need_dx.
  const Tensor2<T>& backward(const Tensor2<T>& dy, bool need_dx) {
    SIEVE_CHECK(x_ != nullptr, "Linear(", name_, ").backward: called before forward");
    SIEVE_CHECK(dy.shape() == y_.shape(), "Linear(", name_, ").backward: dy [", dy.shape()[0], ",", dy.shape()[1],
                "] differs from the output [", y_.shape()[0], ",", y_.shape()[1], "]");
    const std::size_t N = dy.shape()[0];
    if (!frozen_) kernels::linear_backward_params(x_->data(), dy.data(), gweight_.data(), gbias_.data(), N, in_, out_);
    if (need_dx) {
      ensure_shape(dx_, {N, in_});
      kernels::linear_backward_input(dy.data(), weight_.data(), dx_.data(), N, in_, out_);
    }
    return dx_;
  }
  const Tensor2<T>& backward(const Tensor2<T>& dy) { return backward(dy, true); }

  std::vector<ParamRef<T>> params() {
    return {{name_ + ".weight", {out_, in_}, {weight_.data(), weight_.size()}, {gweight_.data(), gweight_.size()},
             true, &frozen_},
            {name_ + ".bias", {out_}, {bias_.data(), out_}, {gbias_.data(), out_}, false, &frozen_}};
  }
  std::vector<BufferRef<T>> buffers() { return {}; }
  void zero_grad() {
    std::fill(gweight_.begin(), gweight_.end(), T(0));
    std::fill(gbias_.begin(), gbias_.end(), T(0));
  }
  bool frozen() const { return frozen_; }
  void set_frozen(bool f) { frozen_ = f; }

  Tensor2<T>& weight() { return weight_; }
  Tensor1<T>& bias() { return bias_; }
  const Tensor2<T>& weight_grad() const { return gweight_; }
  const Tensor1<T>& bias_grad() const { return gbias_; }
  std::size_t in_features() const { return in_; }
  std::size_t out_features() const { return out_; }

 private:
  std::size_t in_, out_;
  std::string name_;
  Tensor2<T> weight_;
  Tensor1<T> bias_;
  Tensor2<T> gweight_;
  Tensor1<T> gbias_;
  Tensor2<T> y_, dx_;
  const Tensor2<T>* x_ = nullptr;
  bool frozen_ = false;
};

}  // namespace sieve::nn
