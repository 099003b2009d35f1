#pragma once
/// Named parameters, buffers and optimizer state <-> safetensors bytes, strictly checked.
/// Parameters and buffers keep their torchvision names, so PyTorch loads a saved
/// model.safetensors with `model.load_state_dict(...)` after reading it.

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/param.hpp"
#include "sieve/io/safetensors.hpp"
#include "sieve/nn/state_dict.hpp"

namespace sieve::train {

/// Anything exposing `params()` as a vector of ParamRef<T>.
template <class M>
concept HasParams = requires(M& m) {
  { m.params() };
  typename std::remove_cvref_t<decltype(m.params())>::value_type;
};

/// The model's buffers (BN running statistics, num_batches_tracked) if it has any.
template <class T, class M>
std::vector<BufferRef<T>> buffers_of(M& model) {
  if constexpr (requires { model.buffers(); })
    return model.buffers();
  else
    return {};
}

template <class T>
void add_tensor(io::SafeTensorsWriter& w, const std::string& name, const std::vector<std::size_t>& shape,
                std::span<const T> values) {
  std::size_t n = 1;
  for (auto d : shape) n *= d;
  SIEVE_CHECK(n == values.size(), "weights: tensor ", name, " has ", values.size(), " values but its shape holds ", n);
  w.add(name, shape, values);
}

template <class T>
void add_buffer(io::SafeTensorsWriter& w, const BufferRef<T>& b) {
  if (b.is_count()) {
    const std::int64_t c = *b.count;
    w.add(b.name, {}, std::span<const std::int64_t>(&c, 1));
  } else {
    add_tensor<T>(w, b.name, b.shape, std::span<const T>(b.value.data(), b.value.size()));
  }
}

/// Serialize parameters and buffers as safetensors in torchvision's state_dict order (per
/// module: parameters, then buffers; counters as I64 rank 0), with `metadata`.
template <class T>
std::vector<std::byte> tensors_to_safetensors(const std::vector<ParamRef<T>>& params, const std::vector<BufferRef<T>>& buffers,
                                              const std::map<std::string, std::string>& metadata = {}) {
  io::SafeTensorsWriter w;
  for (const auto& e : nn::state_order(params, buffers)) {
    if (e.param)
      add_tensor<T>(w, e.param->name, e.param->shape, std::span<const T>(e.param->value.data(), e.param->value.size()));
    else
      add_buffer(w, *e.buffer);
  }
  for (const auto& [k, v] : metadata) w.set_metadata(k, v);
  return w.to_bytes();
}

namespace detail {
template <class T>
void load_values(const io::SafeTensors& st, const std::string& name, const std::vector<std::size_t>& shape, std::span<T> dst) {
  if (!st.contains(name)) fail(st.source(), ": tensor '", name, "' is missing");
  const auto& info = st.info(name);
  if (info.shape != shape) {
    std::string want, got;
    for (auto d : shape) want += std::to_string(d) + ",";
    for (auto d : info.shape) got += std::to_string(d) + ",";
    fail(st.source(), ": tensor '", name, "' has shape [", got, "] but the model expects [", want, "]");
  }
  if (const auto bad = st.nonfinite_text(name); !bad.empty()) fail(st.source(), ": tensor '", name, "' has ", bad);
  if constexpr (std::is_same_v<T, float>) {
    SIEVE_CHECK(info.dtype == io::DType::F32, st.source(), ": tensor '", name, "' is not F32");
    const auto v = st.floats(name);
    std::copy(v.begin(), v.end(), dst.begin());
  } else {
    SIEVE_CHECK(info.dtype == io::DType::F64, st.source(), ": tensor '", name, "' is not F64");
    const auto v = st.doubles(name);
    std::copy(v.begin(), v.end(), dst.begin());
  }
}
}  // namespace detail

/// Load every parameter and buffer by name, strictly: a missing, mis-shaped, wrongly typed or
/// non-finite tensor, or an unexpected extra one, throws naming it and the file.
template <class T>
void tensors_from_safetensors(const io::SafeTensors& st, const std::vector<ParamRef<T>>& params,
                              const std::vector<BufferRef<T>>& buffers) {
  std::size_t expected = 0;
  for (const auto& p : params) detail::load_values<T>(st, p.name, p.shape, p.value), ++expected;
  for (const auto& b : buffers) {
    ++expected;
    if (b.is_count()) {
      if (!st.contains(b.name)) fail(st.source(), ": counter '", b.name, "' is missing");
      const auto v = st.ints(b.name);
      SIEVE_CHECK(v.size() == 1, st.source(), ": counter '", b.name, "' has ", v.size(), " values, expected 1");
      *b.count = v[0];
    } else {
      detail::load_values<T>(st, b.name, b.shape, b.value);
    }
  }
  if (st.size() != expected) {
    std::string extra;
    for (const auto& n : st.names()) {
      bool known = false;
      for (const auto& p : params) known = known || p.name == n;
      for (const auto& b : buffers) known = known || b.name == n;
      if (!known) extra += " " + n;
    }
    fail(st.source(), ": unexpected tensors:", extra);
  }
}

}  // namespace sieve::train
