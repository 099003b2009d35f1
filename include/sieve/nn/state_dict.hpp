#pragma once
/// Loading and saving a model's parameters and buffers as a PyTorch-style state dict in a
/// safetensors file, under torchvision's names.
///
/// Works for any model exposing `params()` -> vector<ParamRef<T>> and `buffers()` ->
/// vector<BufferRef<T>> (see core/param.hpp); several models can be combined with
/// `state_refs(backbone, head)`. torchvision and timm `resnet50` checkpoints share their names
/// (conv1, bn1, layerS.B.{conv,bn}{1,2,3}, layerS.0.downsample.{0,1}, fc): timm's Bottleneck
/// adds only parameter-free modules (act, aa, drop_block, drop_path). What differs in practice
/// is handled here: timm's headless checkpoints (num_classes=0) have no `fc.*`, other class
/// counts give a differently shaped `fc`, some exports omit `num_batches_tracked` (PyTorch
/// itself then loads 0), and DataParallel checkpoints prefix every name with `module.`.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/param.hpp"
#include "sieve/io/safetensors.hpp"

namespace sieve::nn {

/// How strictly load_state_dict matches the file against the model.
struct LoadOptions {
  /// When the file's head (tensors under head_prefix) is absent or shaped differently (another
  /// class count), load everything else and keep the model's freshly initialised head.
  bool allow_head_mismatch = false;
  std::string head_prefix = "fc.";
  /// Accept F64 for float parameters (rounded). Lossless widenings (F16/BF16 -> float,
  /// F16/BF16/F32 -> double) are always accepted; integer tensors never are.
  bool allow_lossy_dtype = false;
  /// Treat a missing `*.num_batches_tracked` as 0 (PyTorch does the same for state dicts
  /// without version metadata, which is what a safetensors file is).
  bool default_num_batches_tracked = true;
  /// Strip a `module.` prefix present on every name (DataParallel checkpoints).
  bool strip_module_prefix = true;
};

/// What load_state_dict did.
struct LoadReport {
  std::size_t loaded = 0;                       ///< tensors copied into the model
  std::vector<std::string> defaulted;           ///< num_batches_tracked absent, set to 0
  std::vector<std::string> skipped_head;        ///< model head tensors left as initialised
  std::vector<std::string> ignored_head;        ///< file head tensors not loaded
  bool head_fresh = false;                      ///< the head was not loaded
  bool stripped_module_prefix = false;
  std::string message;                          ///< human-readable summary of the above ("" = exact load)
};

/// Parameters and buffers of several models combined, in argument order; itself a "model"
/// for load_state_dict/save_state_dict. Holds references into the models.
template <class T>
struct StateRefs {
  std::vector<ParamRef<T>> p;
  std::vector<BufferRef<T>> b;
  std::vector<ParamRef<T>> params() const { return p; }
  std::vector<BufferRef<T>> buffers() const { return b; }
};

namespace detail {
template <class T>
struct ParamScalar;
template <class T>
struct ParamScalar<std::vector<ParamRef<T>>> {
  using type = T;
};
template <class M>
using model_scalar_t = typename ParamScalar<std::decay_t<decltype(std::declval<M&>().params())>>::type;

inline std::string join(const std::vector<std::string>& v, std::size_t max_items = 40) {
  std::string out;
  for (std::size_t i = 0; i < v.size() && i < max_items; ++i) {
    if (i) out += ", ";
    out += v[i];
  }
  if (v.size() > max_items) out += str(", ... (", v.size() - max_items, " more)");
  return out;
}

inline bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

/// The module a tensor belongs to: its name up to the last '.'.
inline std::string_view module_of(std::string_view name) {
  const auto dot = name.rfind('.');
  return dot == std::string_view::npos ? std::string_view{} : name.substr(0, dot);
}
}  // namespace detail

/// Combine the state of several models (e.g. a backbone and its head) into one.
template <class M, class... Ms>
StateRefs<detail::model_scalar_t<M>> state_refs(M& first, Ms&... rest) {
  StateRefs<detail::model_scalar_t<M>> s;
  append(s.p, first.params());
  append(s.b, first.buffers());
  (append(s.p, rest.params()), ...);
  (append(s.b, rest.buffers()), ...);
  return s;
}

/// One entry of a state dict in torchvision's order: a parameter or a buffer.
template <class T>
struct StateEntry {
  const ParamRef<T>* param = nullptr;
  const BufferRef<T>* buffer = nullptr;
  const std::string& name() const { return param ? param->name : buffer->name; }
  const std::vector<std::size_t>& shape() const { return param ? param->shape : buffer->shape; }
};

/// torchvision's state_dict order: modules in the order their first parameter appears
/// (buffer-only modules after, in their order); within a module its parameters, then its
/// buffers (PyTorch's Module.state_dict emits `_parameters` then `_buffers` per module).
template <class T>
std::vector<StateEntry<T>> state_order(const std::vector<ParamRef<T>>& params, const std::vector<BufferRef<T>>& buffers) {
  std::vector<std::string_view> modules;
  std::map<std::string_view, std::size_t> index;
  auto see = [&](std::string_view m) {
    if (index.emplace(m, modules.size()).second) modules.push_back(m);
  };
  for (const auto& p : params) see(detail::module_of(p.name));
  for (const auto& b : buffers) see(detail::module_of(b.name));
  std::vector<std::vector<StateEntry<T>>> groups(modules.size());
  for (const auto& p : params) groups[index[detail::module_of(p.name)]].push_back({&p, nullptr});
  for (const auto& b : buffers) groups[index[detail::module_of(b.name)]].push_back({nullptr, &b});
  std::vector<StateEntry<T>> out;
  for (auto& g : groups) out.insert(out.end(), g.begin(), g.end());
  return out;
}

/// Load a state dict into the given parameters and buffers. All checks run before anything
/// is copied: on error the model is unchanged.
/// Requires: unique names in params/buffers.
/// Ensures: every model tensor loaded (or defaulted/skipped as `opts` allows and the report
/// says); otherwise one sieve::Error naming the file and listing every missing, unexpected,
/// mis-shaped, wrongly typed and non-finite (NaN/Inf values) tensor.
template <class T>
LoadReport load_state_dict(const std::vector<ParamRef<T>>& params, const std::vector<BufferRef<T>>& buffers,
                           const io::SafeTensors& st, const LoadOptions& opts = {}) {
  using io::DType;
  LoadReport rep;
  const auto order = state_order(params, buffers);
  std::set<std::string> model_names;
  for (const auto& e : order) {
    SIEVE_CHECK(model_names.insert(e.name()).second, "load_state_dict: the model has two tensors named '", e.name(),
                "'");
  }
  // Map file names to model names (optionally dropping a DataParallel "module." prefix).
  const auto file_names = st.names();
  std::string prefix;
  if (opts.strip_module_prefix && !file_names.empty() &&
      std::all_of(file_names.begin(), file_names.end(), [](const std::string& n) { return detail::starts_with(n, "module."); })) {
    prefix = "module.";
    rep.stripped_module_prefix = true;
  }
  auto file_name = [&](const std::string& model_name) { return prefix + model_name; };

  std::vector<std::string> missing, unexpected, misshaped, wrong_dtype, nonfinite;
  std::vector<std::string> defaulted;
  auto shape_of = [](const std::vector<std::size_t>& s) { return io::shape_text(s); };
  auto dtype_ok = [&](DType d, bool is_count) {
    if (is_count) return d == DType::I64;
    if (d == DType::I64) return false;
    if constexpr (std::is_same_v<T, float>) return d != DType::F64 || opts.allow_lossy_dtype;
    return true;
  };

  // Head handling decided first: does the file's head fit the model's?
  const bool have_head_prefix = !opts.head_prefix.empty();
  bool head_mismatch = false;
  std::vector<std::string> head_problems;
  if (have_head_prefix) {
    for (const auto& e : order) {
      if (!detail::starts_with(e.name(), opts.head_prefix)) continue;
      const std::string fn = file_name(e.name());
      if (!st.contains(fn)) {
        head_mismatch = true;
        head_problems.push_back(e.name() + " absent");
      } else if (st.info(fn).shape != e.shape()) {
        head_mismatch = true;
        head_problems.push_back(e.name() + " " + shape_of(st.info(fn).shape) + " vs model " + shape_of(e.shape()));
      }
    }
  }
  const bool skip_head = head_mismatch && opts.allow_head_mismatch;

  for (const auto& e : order) {
    const bool in_head = have_head_prefix && detail::starts_with(e.name(), opts.head_prefix);
    if (skip_head && in_head) {
      rep.skipped_head.push_back(e.name());
      continue;
    }
    const std::string fn = file_name(e.name());
    const bool is_count = e.buffer && e.buffer->is_count();
    if (!st.contains(fn)) {
      if (is_count && opts.default_num_batches_tracked && std::string_view(e.name()).ends_with("num_batches_tracked")) {
        defaulted.push_back(e.name());
      } else {
        missing.push_back(e.name());
      }
      continue;
    }
    const auto& info = st.info(fn);
    if (info.shape != e.shape()) {
      misshaped.push_back(e.name() + " (file " + shape_of(info.shape) + ", model " + shape_of(e.shape()) + ")");
    }
    if (!dtype_ok(info.dtype, is_count)) {
      wrong_dtype.push_back(e.name() + " (file " + std::string(io::dtype_name(info.dtype)) + ", model " +
                            (is_count ? "I64" : (std::is_same_v<T, float> ? "F32" : "F64")) + ")");
    } else if (const auto bad = st.nonfinite_text(fn); !bad.empty()) {
      nonfinite.push_back(e.name() + " (" + bad + ")");  // would poison every step that follows
    }
  }
  for (const auto& fn : file_names) {
    const std::string mn = fn.substr(prefix.size());
    if (model_names.count(mn)) continue;
    if (skip_head && detail::starts_with(mn, opts.head_prefix)) {
      rep.ignored_head.push_back(mn);
      continue;
    }
    unexpected.push_back(fn);
  }
  if (skip_head)
    for (const auto& e : order)
      if (detail::starts_with(e.name(), opts.head_prefix) && st.contains(file_name(e.name())))
        rep.ignored_head.push_back(e.name());

  if (!missing.empty() || !unexpected.empty() || !misshaped.empty() || !wrong_dtype.empty() || !nonfinite.empty()) {
    const bool fits = missing.empty() && unexpected.empty() && misshaped.empty() && wrong_dtype.empty();
    std::string msg = str("load_state_dict: ", st.source(), fits ? " cannot be loaded:" : " does not match the model:");
    if (!missing.empty()) msg += str(" ", missing.size(), " missing [", detail::join(missing), "];");
    if (!unexpected.empty()) msg += str(" ", unexpected.size(), " unexpected [", detail::join(unexpected), "];");
    if (!misshaped.empty()) msg += str(" ", misshaped.size(), " mis-shaped [", detail::join(misshaped), "];");
    if (!wrong_dtype.empty()) msg += str(" ", wrong_dtype.size(), " wrong dtype [", detail::join(wrong_dtype), "];");
    if (!nonfinite.empty()) msg += str(" ", nonfinite.size(), " non-finite [", detail::join(nonfinite), "];");
    if (head_mismatch && !opts.allow_head_mismatch)
      msg += str(" (the head differs: ", detail::join(head_problems),
                 "; allow a head mismatch to load the backbone and initialise the head fresh)");
    if (st.contains(file_name("conv1.0.weight")) || st.contains("conv1.0.weight"))
      msg += " (conv1.0.* suggests a deep-stem resnet50d-style checkpoint, which is a different architecture)";
    fail(msg);
  }

  // Everything checked: copy.
  for (const auto& e : order) {
    const bool in_head = have_head_prefix && detail::starts_with(e.name(), opts.head_prefix);
    if (skip_head && in_head) continue;
    const std::string fn = file_name(e.name());
    if (!st.contains(fn)) {
      *e.buffer->count = 0;
      continue;
    }
    if (e.buffer && e.buffer->is_count()) {
      *e.buffer->count = st.ints(fn).at(0);
    } else {
      const std::span<T> dst = e.param ? e.param->value : e.buffer->value;
      SIEVE_CHECK(dst.size() == st.info(fn).numel(), "load_state_dict: ", e.name(), " has ", dst.size(),
                  " values in the model but its shape says ", st.info(fn).numel());
      if constexpr (std::is_same_v<T, float>) {
        const auto v = st.floats(fn);
        std::copy(v.begin(), v.end(), dst.begin());
      } else {
        const auto v = st.doubles(fn);
        std::transform(v.begin(), v.end(), dst.begin(), [](double x) { return static_cast<T>(x); });
      }
    }
    ++rep.loaded;
  }
  rep.defaulted = std::move(defaulted);
  rep.head_fresh = skip_head;
  std::string note;
  if (skip_head)
    note += str(st.source(), ": checkpoint head does not fit the model (", detail::join(head_problems),
                "): backbone loaded, head '", opts.head_prefix, "*' initialised fresh.");
  if (!rep.defaulted.empty())
    note += str(note.empty() ? "" : " ", st.source(), ": ", rep.defaulted.size(),
                " num_batches_tracked absent, set to 0 (as PyTorch does).");
  if (rep.stripped_module_prefix) note += str(note.empty() ? "" : " ", st.source(), ": stripped the 'module.' prefix.");
  rep.message = note;
  return rep;
}

/// Load into a model (anything with params() and buffers()); see the overload above.
template <class Model>
LoadReport load_state_dict(Model&& model, const io::SafeTensors& st, const LoadOptions& opts = {}) {
  const auto p = model.params();
  const auto b = model.buffers();
  return load_state_dict(p, b, st, opts);
}

/// Add the model's tensors to `w` in torchvision's state_dict order: parameters and running
/// statistics as `as` (default F32 for float models, F64 for double), num_batches_tracked as
/// I64 rank 0.
template <class Model>
void add_state_dict(io::SafeTensorsWriter& w, Model&& model, const std::string& name_prefix = "",
                    std::optional<io::DType> as = std::nullopt) {
  using T = detail::model_scalar_t<std::remove_reference_t<Model>>;
  const io::DType dt = as.value_or(std::is_same_v<T, float> ? io::DType::F32 : io::DType::F64);
  const auto p = model.params();
  const auto b = model.buffers();
  for (const auto& e : state_order(p, b)) {
    if (e.buffer && e.buffer->is_count()) {
      const std::int64_t c = *e.buffer->count;
      w.add(name_prefix + e.name(), e.shape(), std::span<const std::int64_t>(&c, 1));
    } else {
      const std::span<const T> v = e.param ? e.param->value : e.buffer->value;
      w.add(name_prefix + e.name(), e.shape(), v, dt);
    }
  }
}

/// Save the model as a safetensors state dict that torchvision's load_state_dict accepts.
/// Ensures: the file is replaced atomically; metadata goes to `__metadata__`.
template <class Model>
void save_state_dict(Model&& model, const std::filesystem::path& path,
                     const std::map<std::string, std::string>& metadata = {},
                     std::optional<io::DType> as = std::nullopt) {
  io::SafeTensorsWriter w;
  add_state_dict(w, model, "", as);
  for (const auto& [k, v] : metadata) w.set_metadata(k, v);
  w.write(path);
}

}  // namespace sieve::nn
