#pragma once
// A tiny two-layer MLP TrainableStage for the trainer tests: Tensor4 [N,C,H,W] -> Tensor2 [N,K],
// with dropout (so resume must restore the dropout keys) and buffers (a running mean and a
// num_batches_tracked-style counter, like BatchNorm's), named torchvision-style.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "sieve/core/param.hpp"
#include "sieve/core/rng.hpp"
#include "sieve/core/xt.hpp"
#include "sieve/kernels/gemm.hpp"

namespace sieve_test {

using namespace sieve;

template <class T>
class TinyMlp {
 public:
  using input_type = Tensor4<T>;
  using output_type = Tensor2<T>;

  TinyMlp(std::size_t in, std::size_t hidden, std::size_t out, std::uint64_t seed, double dropout = 0.0)
      : in_(in), hid_(hidden), out_(out), p_drop_(dropout) {
    Rng rng(derive_seed(seed, RngPurpose::init));
    w1_.resize(hidden * in);
    b1_.assign(hidden, T(0));
    w2_.resize(out * hidden);
    b2_.assign(out, T(0));
    for (auto& w : w1_) w = static_cast<T>(rng.normal() / std::sqrt(static_cast<double>(in)));
    for (auto& w : w2_) w = static_cast<T>(rng.normal() / std::sqrt(static_cast<double>(hidden)));
    gw1_.assign(w1_.size(), T(0));
    gb1_.assign(hidden, T(0));
    gw2_.assign(w2_.size(), T(0));
    gb2_.assign(out, T(0));
    running_mean_.assign(hidden, T(0));
  }

  void set_training(bool t) { training_ = t; }

  const Tensor2<T>& forward(const Tensor4<T>& x, Rng& rng) {
    N_ = x.shape()[0];
    SIEVE_CHECK(x.size() == N_ * in_, "TinyMlp: input has ", x.size() / std::max<std::size_t>(N_, 1),
                " features per sample, expected ", in_);
    x_.assign(x.data(), x.data() + x.size());
    h_.assign(N_ * hid_, T(0));
    kernels::gemm(kernels::Trans::no, kernels::Trans::yes, N_, hid_, in_, T(1), x_.data(), w1_.data(), T(0), h_.data());
    mask_.assign(N_ * hid_, T(1));
    for (std::size_t n = 0; n < N_; ++n)
      for (std::size_t j = 0; j < hid_; ++j) {
        T& v = h_[n * hid_ + j];
        v += b1_[j];
        if (v < T(0)) v = T(0), mask_[n * hid_ + j] = T(0);
        if (training_ && p_drop_ > 0.0) {
          const T keep = rng.bernoulli(p_drop_) ? T(0) : static_cast<T>(1.0 / (1.0 - p_drop_));
          v *= keep;
          mask_[n * hid_ + j] *= keep;
        }
      }
    if (training_) {
      for (std::size_t j = 0; j < hid_; ++j) {
        T m = 0;
        for (std::size_t n = 0; n < N_; ++n) m += h_[n * hid_ + j];
        running_mean_[j] = T(0.9) * running_mean_[j] + T(0.1) * m / static_cast<T>(N_);
      }
      ++tracked_;
    }
    ensure_shape(y_, {N_, out_});
    kernels::gemm(kernels::Trans::no, kernels::Trans::yes, N_, out_, hid_, T(1), h_.data(), w2_.data(), T(0), y_.data());
    for (std::size_t n = 0; n < N_; ++n)
      for (std::size_t k = 0; k < out_; ++k) y_(n, k) += b2_[k];
    return y_;
  }

  const Tensor4<T>& backward(const Tensor2<T>& dy) {
    kernels::gemm(kernels::Trans::yes, kernels::Trans::no, out_, hid_, N_, T(1), dy.data(), h_.data(), T(1), gw2_.data());
    for (std::size_t n = 0; n < N_; ++n)
      for (std::size_t k = 0; k < out_; ++k) gb2_[k] += dy(n, k);
    dh_.assign(N_ * hid_, T(0));
    kernels::gemm(kernels::Trans::no, kernels::Trans::no, N_, hid_, out_, T(1), dy.data(), w2_.data(), T(0), dh_.data());
    for (std::size_t i = 0; i < dh_.size(); ++i) dh_[i] *= mask_[i];
    kernels::gemm(kernels::Trans::yes, kernels::Trans::no, hid_, in_, N_, T(1), dh_.data(), x_.data(), T(1), gw1_.data());
    for (std::size_t n = 0; n < N_; ++n)
      for (std::size_t j = 0; j < hid_; ++j) gb1_[j] += dh_[n * hid_ + j];
    ensure_shape(dx_, {N_, in_, 1, 1});
    kernels::gemm(kernels::Trans::no, kernels::Trans::no, N_, in_, hid_, T(1), dh_.data(), w1_.data(), T(0), dx_.data());
    return dx_;
  }

  std::vector<ParamRef<T>> params() {
    return {{"fc1.weight", {hid_, in_}, std::span<T>(w1_), std::span<T>(gw1_), true, &frozen_fc1_},
            {"fc1.bias", {hid_}, std::span<T>(b1_), std::span<T>(gb1_), false, &frozen_fc1_},
            {"fc2.weight", {out_, hid_}, std::span<T>(w2_), std::span<T>(gw2_), true, nullptr},
            {"fc2.bias", {out_}, std::span<T>(b2_), std::span<T>(gb2_), false, nullptr}};
  }
  std::vector<BufferRef<T>> buffers() {
    return {{"bn.running_mean", {hid_}, std::span<T>(running_mean_), nullptr},
            {"bn.num_batches_tracked", {}, {}, &tracked_}};
  }
  void zero_grad() {
    for (auto* g : {&gw1_, &gb1_, &gw2_, &gb2_}) std::fill(g->begin(), g->end(), T(0));
  }

  /// All weights and buffers concatenated, for bit-identity checks.
  std::vector<T> snapshot() const {
    std::vector<T> s;
    for (const auto* v : {&w1_, &b1_, &w2_, &b2_, &running_mean_}) s.insert(s.end(), v->begin(), v->end());
    s.push_back(static_cast<T>(tracked_));
    return s;
  }

  bool frozen_fc1_ = false;

 private:
  std::size_t in_, hid_, out_;
  double p_drop_;
  bool training_ = true;
  std::size_t N_ = 0;
  std::vector<T> w1_, b1_, w2_, b2_, gw1_, gb1_, gw2_, gb2_, running_mean_;
  std::int64_t tracked_ = 0;
  std::vector<T> x_, h_, mask_, dh_;
  Tensor2<T> y_;
  Tensor4<T> dx_;
};

}  // namespace sieve_test
