#pragma once
/// Shared plumbing for the `sieve` subcommands: the ResNet50 classifier built from a weights
/// file, and tensor I/O helpers. Every failure is a sieve::Error naming the file and tensor;
/// main() prints it as `sieve: error: ...` and exits 1.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/param.hpp"
#include "sieve/core/xt.hpp"
#include "sieve/io/safetensors.hpp"
#include "sieve/nn/linear.hpp"
#include "sieve/nn/resnet.hpp"
#include "sieve/nn/state_dict.hpp"

namespace sieve::cli {

/// torchvision's resnet50: the ResNet backbone (pooled [N,2048] embedding) and the `fc` head,
/// with no dropout, under torchvision's state_dict names.
template <class T>
struct Classifier {
  nn::ResNet<T> net;
  nn::Linear<T> fc;

  Classifier(std::size_t num_classes, std::uint64_t seed)
      : net(nn::ResNetConfig::resnet50(), seed), fc(make_fc(net.embedding_dim(), num_classes, seed)) {}

  std::vector<ParamRef<T>> params() {
    auto p = net.params();
    append(p, fc.params());
    return p;
  }
  std::vector<BufferRef<T>> buffers() {
    auto b = net.buffers();
    append(b, fc.buffers());
    return b;
  }
  void set_training(bool t) { net.set_training(t); }
  void zero_grad() {
    net.zero_grad();
    fc.zero_grad();
  }

 private:
  static nn::Linear<T> make_fc(std::size_t in, std::size_t out, std::uint64_t seed) {
    Rng rng(derive_seed(seed, RngPurpose::init), /*stream*/ 1);
    return nn::Linear<T>(in, out, rng);
  }
};

/// Number of classes of the `fc` head stored in `st`.
/// Requires: `fc.weight` present with shape [K, 2048].
inline std::size_t head_classes(const io::SafeTensors& st) {
  SIEVE_CHECK(st.contains("fc.weight"), st.source(),
              ": no tensor 'fc.weight', so the class count is unknown (expected a torchvision resnet50 state dict)");
  const auto& s = st.info("fc.weight").shape;
  SIEVE_CHECK(s.size() == 2 && s[0] > 0 && s[1] == 2048, st.source(), ": fc.weight has shape ", io::shape_text(s),
              ", expected [K, 2048] for resnet50");
  return s[0];
}

/// Read a rank-R floating-point tensor `name` from `st` as T (float: F64 is rounded).
/// Requires: the tensor exists, is floating-point and has rank R.
template <class T, std::size_t R>
Tensor<T, R> read_tensor(const io::SafeTensors& st, const std::string& name) {
  SIEVE_CHECK(st.contains(name), st.source(), ": no tensor named '", name, "'");
  const auto& info = st.info(name);
  SIEVE_CHECK(info.shape.size() == R, st.source(), ": tensor '", name, "' has shape ", io::shape_text(info.shape),
              " but rank ", R, " is required");
  Shape<R> shape{};
  for (std::size_t i = 0; i < R; ++i) shape[i] = info.shape[i];
  Tensor<T, R> t(shape);
  const auto v = [&] {
    if constexpr (std::is_same_v<T, float>) return st.floats(name);
    else return st.doubles(name);
  }();
  std::copy(v.begin(), v.end(), t.begin());
  return t;
}

/// Add a tensor to a writer with its xtensor shape (float -> F32, double -> F64).
template <class E>
void add_tensor(io::SafeTensorsWriter& w, const std::string& name, const E& t) {
  using T = typename E::value_type;
  std::vector<std::size_t> shape(t.shape().begin(), t.shape().end());
  w.add(name, std::move(shape), std::span<const T>(t.data(), t.size()));
}

}  // namespace sieve::cli
