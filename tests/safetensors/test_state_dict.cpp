#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdint>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <filesystem>
#include <numeric>
#include <string>
#include <vector>

#include "sieve/io/safetensors.hpp"
#include "sieve/nn/state_dict.hpp"

namespace fs = std::filesystem;
using sieve::BufferRef;
using sieve::ParamRef;
using sieve::io::DType;
using sieve::io::SafeTensors;
using sieve::io::SafeTensorsWriter;
using sieve::nn::LoadOptions;

namespace {

/// A tiny stand-in for a network: conv [2,3,1,1] (no bias), bn(2), and a head fc [K,2] + bias,
/// exposing params()/buffers() the way sieve's stages do (params listed before buffers).
/// Mirrors torch's `Tiny` in tests/safetensors/interop.py.
template <class T>
struct Tiny {
  std::size_t K;
  std::vector<T> conv_w, bn_w, bn_b, bn_rm, bn_rv, fc_w, fc_b, g;
  std::int64_t nbt = 0;
  bool frozen = false;

  explicit Tiny(std::size_t k = 3, T base = 0)
      : K(k), conv_w(6), bn_w(2), bn_b(2), bn_rm(2), bn_rv(2), fc_w(2 * k), fc_b(k), g(64) {
    T v = base;
    for (auto* vec : {&conv_w, &bn_w, &bn_b, &bn_rm, &bn_rv, &fc_w, &fc_b})
      for (auto& x : *vec) x = (v += T(0.25));
  }
  std::vector<ParamRef<T>> params() {
    auto pr = [&](const char* n, std::vector<std::size_t> s, std::vector<T>& v) {
      return ParamRef<T>{n, std::move(s), {v.data(), v.size()}, {g.data(), v.size()}, true, &frozen};
    };
    return {pr("conv.weight", {2, 3, 1, 1}, conv_w), pr("bn.weight", {2}, bn_w), pr("bn.bias", {2}, bn_b),
            pr("fc.weight", {K, 2}, fc_w), pr("fc.bias", {K}, fc_b)};
  }
  std::vector<BufferRef<T>> buffers() {
    return {{"bn.running_mean", {2}, {bn_rm.data(), 2}, nullptr},
            {"bn.running_var", {2}, {bn_rv.data(), 2}, nullptr},
            {"bn.num_batches_tracked", {}, {}, &nbt}};
  }
  bool operator==(const Tiny& o) const {
    return conv_w == o.conv_w && bn_w == o.bn_w && bn_b == o.bn_b && bn_rm == o.bn_rm && bn_rv == o.bn_rv &&
           fc_w == o.fc_w && fc_b == o.fc_b && nbt == o.nbt;
  }
};

const std::vector<std::string> kTorchOrder = {"conv.weight",     "bn.weight",      "bn.bias",
                                              "bn.running_mean", "bn.running_var", "bn.num_batches_tracked",
                                              "fc.weight",       "fc.bias"};

SafeTensors to_file(Tiny<float>& m, std::string name = "tiny.safetensors") {
  SafeTensorsWriter w;
  sieve::nn::add_state_dict(w, m);
  return SafeTensors::parse(w.to_bytes(), std::move(name));
}

std::string load_error(Tiny<float>& m, const SafeTensors& st, const LoadOptions& o = {}) {
  try {
    (void)sieve::nn::load_state_dict(m, st, o);
  } catch (const sieve::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("state_dict: saved in torchvision order, I64 rank-0 counts, and loaded back exactly") {
  Tiny<float> a(3, 1.0f);
  a.nbt = 17;
  const auto st = to_file(a);
  CHECK(st.names() == kTorchOrder);
  CHECK(st.info("bn.num_batches_tracked").dtype == DType::I64);
  CHECK(st.info("bn.num_batches_tracked").shape.empty());
  CHECK(st.info("conv.weight").shape == std::vector<std::size_t>{2, 3, 1, 1});
  CHECK(st.info("conv.weight").dtype == DType::F32);
  Tiny<float> b(3, -5.0f);
  CHECK_FALSE(a == b);
  const auto rep = sieve::nn::load_state_dict(b, st);
  CHECK(a == b);
  CHECK(rep.loaded == 8);
  CHECK(rep.message.empty());
  CHECK_FALSE(rep.head_fresh);

  // A double model saves F64 and loads float files losslessly.
  Tiny<double> d(3, 0.0);
  sieve::nn::load_state_dict(d, st);
  CHECK(d.fc_b[2] == static_cast<double>(a.fc_b[2]));
  CHECK(d.nbt == 17);
  SafeTensorsWriter w;
  sieve::nn::add_state_dict(w, d);
  CHECK(SafeTensors::parse(w.to_bytes(), "d").info("bn.weight").dtype == DType::F64);
}

TEST_CASE("state_dict: save_state_dict writes a file with metadata; state_refs combines models") {
  const fs::path p = fs::temp_directory_path() / ("sieve-sd-" + std::to_string(::getpid()) + ".safetensors");
  Tiny<float> a(2, 3.0f), b(2, 7.0f);
  sieve::nn::save_state_dict(a, p, {{"arch", "tiny"}});
  const auto st = SafeTensors::load(p);
  CHECK(st.metadata().at("arch") == "tiny");
  sieve::nn::load_state_dict(b, st);
  CHECK(a == b);
  fs::remove(p);

  // Two models combined: the second one's names follow the first's.
  struct Head {
    std::vector<float> w{1, 2}, g{0, 0};
    std::vector<ParamRef<float>> params() { return {{"head.weight", {1, 2}, {w.data(), 2}, {g.data(), 2}}}; }
    std::vector<BufferRef<float>> buffers() { return {}; }
  } head;
  Tiny<float> t(2, 0.0f);
  SafeTensorsWriter w;
  sieve::nn::add_state_dict(w, sieve::nn::state_refs(t, head));
  const auto st2 = SafeTensors::parse(w.to_bytes(), "combined");
  CHECK(st2.names().back() == "head.weight");
  CHECK(st2.size() == 9);
  head.w = {0, 0};
  sieve::nn::load_state_dict(sieve::nn::state_refs(t, head), st2);
  CHECK(head.w == std::vector<float>{1, 2});
}

TEST_CASE("state_dict: missing, unexpected, mis-shaped and wrongly typed tensors are all listed in one error") {
  Tiny<float> m(3, 0.0f);
  const Tiny<float> before = m;
  SafeTensorsWriter w;
  const std::vector<float> six(6, 1.0f), two(2, 1.0f), four(4, 1.0f), three(3, 1.0f);
  const std::vector<double> twod(2, 1.0);
  const std::vector<std::int64_t> one = {1};
  w.add("conv.weight", {6}, std::span<const float>(six));            // mis-shaped
  w.add("bn.weight", {2}, std::span<const float>(two));
  // bn.bias missing
  w.add("bn.running_mean", {2}, std::span<const double>(twod));      // F64 into float: lossy
  w.add("bn.running_var", {2}, std::span<const float>(two));
  w.add("bn.num_batches_tracked", {}, std::span<const std::int64_t>(one));
  w.add("fc.weight", {3, 2}, std::span<const float>(six));
  w.add("fc.bias", {3}, std::span<const float>(three));
  w.add("extra.weight", {4}, std::span<const float>(four));          // unexpected
  const auto st = SafeTensors::parse(w.to_bytes(), "bad.safetensors");
  const std::string msg = load_error(m, st);
  CAPTURE(msg);
  CHECK(msg.find("load_state_dict: bad.safetensors does not match the model") != std::string::npos);
  CHECK(msg.find("1 missing [bn.bias]") != std::string::npos);
  CHECK(msg.find("1 unexpected [extra.weight]") != std::string::npos);
  CHECK(msg.find("1 mis-shaped [conv.weight (file [6], model [2, 3, 1, 1])]") != std::string::npos);
  CHECK(msg.find("1 wrong dtype [bn.running_mean (file F64, model F32)]") != std::string::npos);
  CHECK(m == before);  // nothing copied on error

  // num_batches_tracked must be I64.
  SafeTensorsWriter w2;
  Tiny<float> src(3, 0.0f);
  for (const auto& n : kTorchOrder) {
    if (n == "bn.num_batches_tracked") {
      const std::vector<float> f = {1};
      w2.add(n, {}, std::span<const float>(f));
    } else {
      const auto st0 = to_file(src);
      const auto v = st0.floats(n);
      w2.add(n, st0.info(n).shape, std::span<const float>(v));
    }
  }
  CHECK(load_error(m, SafeTensors::parse(w2.to_bytes(), "f.safetensors"))
            .find("wrong dtype [bn.num_batches_tracked (file F32, model I64)]") != std::string::npos);
}

TEST_CASE("state_dict: NaN or Inf weights are refused at load, naming the file and every such tensor") {
  Tiny<float> src(3, 0.0f);
  src.conv_w[3] = std::numeric_limits<float>::infinity();
  src.conv_w[5] = -std::numeric_limits<float>::infinity();
  src.bn_rv[1] = std::nanf("");
  const auto st = to_file(src, "poisoned.safetensors");
  Tiny<float> m(3, 1.0f);
  const Tiny<float> before = m;
  const std::string msg = load_error(m, st);
  CAPTURE(msg);
  CHECK(msg.find("load_state_dict: poisoned.safetensors cannot be loaded: 2 non-finite [") != std::string::npos);
  CHECK(msg.find("conv.weight (2 of 6 values non-finite, the first inf at index 3)") != std::string::npos);
  CHECK(msg.find("bn.running_var (1 of 2 values non-finite, the first nan at index 1)") != std::string::npos);
  CHECK(m == before);  // nothing copied
  src.conv_w[3] = src.conv_w[5] = 0.5f;
  src.bn_rv[1] = 1.0f;
  CHECK(load_error(m, to_file(src)).empty());
}

TEST_CASE("state_dict: allowed conversions: F16/BF16 widen; F64 into float only when allowed") {
  Tiny<float> src(3, 0.0f);
  const auto st = to_file(src);
  SafeTensorsWriter w;
  for (const auto& n : st.names()) {
    if (st.info(n).dtype == DType::I64) {
      const auto v = st.ints(n);
      w.add(n, st.info(n).shape, std::span<const std::int64_t>(v));
    } else {
      const auto v = st.doubles(n);  // multiples of 0.25: exact in every float format
      w.add(n, st.info(n).shape, std::span<const double>(v), n == "conv.weight" ? DType::BF16 : n == "bn.weight" ? DType::F16 : DType::F64);
    }
  }
  const auto mixed = SafeTensors::parse(w.to_bytes(), "mixed.safetensors");
  Tiny<float> m(3, 9.0f);
  CHECK(load_error(m, mixed).find("wrong dtype") != std::string::npos);
  LoadOptions lossy;
  lossy.allow_lossy_dtype = true;
  sieve::nn::load_state_dict(m, mixed, lossy);
  CHECK(m == src);
  Tiny<double> d(3, 9.0);
  sieve::nn::load_state_dict(d, mixed);  // double takes every float dtype
  CHECK(d.conv_w[5] == static_cast<double>(src.conv_w[5]));
}

TEST_CASE("state_dict: head of another class count: error by default, fresh head when allowed") {
  Tiny<float> ckpt(10, 100.0f);  // 10 classes
  ckpt.nbt = 5;
  const auto st = to_file(ckpt, "imagenet.safetensors");
  Tiny<float> m(3, 0.0f);  // 3 classes
  const Tiny<float> fresh = m;
  const std::string msg = load_error(m, st);
  CHECK(msg.find("mis-shaped [fc.weight (file [10, 2], model [3, 2]), fc.bias (file [10], model [3])]") !=
        std::string::npos);
  CHECK(msg.find("allow a head mismatch") != std::string::npos);
  LoadOptions o;
  o.allow_head_mismatch = true;
  const auto rep = sieve::nn::load_state_dict(m, st, o);
  CHECK(rep.head_fresh);
  CHECK(rep.loaded == 6);
  CHECK(rep.skipped_head == std::vector<std::string>{"fc.weight", "fc.bias"});
  CHECK(rep.message.find("imagenet.safetensors: checkpoint head does not fit the model (fc.weight [10, 2] vs model [3, 2]") !=
        std::string::npos);
  CHECK(rep.message.find("backbone loaded, head 'fc.*' initialised fresh") != std::string::npos);
  CHECK(m.conv_w == ckpt.conv_w);
  CHECK(m.bn_rv == ckpt.bn_rv);
  CHECK(m.nbt == 5);
  CHECK(m.fc_w == fresh.fc_w);  // untouched
  CHECK(m.fc_b == fresh.fc_b);

  // A matching head is loaded even when mismatches are allowed.
  Tiny<float> m10(10, 0.0f);
  CHECK_FALSE(sieve::nn::load_state_dict(m10, st, o).head_fresh);
  CHECK(m10 == ckpt);
}

TEST_CASE("state_dict: timm-style headless checkpoint, missing num_batches_tracked, module. prefix") {
  Tiny<float> src(3, 2.0f);
  src.nbt = 9;
  const auto full = to_file(src);
  auto rewrite = [&](auto keep, auto rename, const std::string& file) {
    SafeTensorsWriter w;
    for (const auto& n : full.names()) {
      if (!keep(n)) continue;
      if (full.info(n).dtype == DType::I64) {
        const auto v = full.ints(n);
        w.add(rename(n), full.info(n).shape, std::span<const std::int64_t>(v));
      } else {
        const auto v = full.floats(n);
        w.add(rename(n), full.info(n).shape, std::span<const float>(v));
      }
    }
    return SafeTensors::parse(w.to_bytes(), file);
  };
  auto same = [](const std::string& n) { return n; };

  // Headless (timm num_classes=0): fc.* absent.
  const auto headless = rewrite([](const std::string& n) { return n.rfind("fc.", 0) != 0; }, same, "timm.safetensors");
  Tiny<float> m(3, 0.0f);
  CHECK(load_error(m, headless).find("2 missing [fc.weight, fc.bias]") != std::string::npos);
  LoadOptions o;
  o.allow_head_mismatch = true;
  const auto rep = sieve::nn::load_state_dict(m, headless, o);
  CHECK(rep.head_fresh);
  CHECK(rep.message.find("fc.weight absent") != std::string::npos);
  CHECK(m.bn_w == src.bn_w);

  // num_batches_tracked absent: 0, as PyTorch; an error when the default is turned off.
  const auto no_nbt = rewrite([](const std::string& n) { return n.find("num_batches_tracked") == std::string::npos; },
                              same, "nonbt.safetensors");
  Tiny<float> m2(3, 0.0f);
  m2.nbt = 33;
  const auto rep2 = sieve::nn::load_state_dict(m2, no_nbt);
  CHECK(m2.nbt == 0);
  CHECK(rep2.defaulted == std::vector<std::string>{"bn.num_batches_tracked"});
  CHECK(rep2.message.find("num_batches_tracked absent, set to 0") != std::string::npos);
  LoadOptions strict;
  strict.default_num_batches_tracked = false;
  CHECK(load_error(m2, no_nbt, strict).find("1 missing [bn.num_batches_tracked]") != std::string::npos);

  // DataParallel "module." prefix on every name.
  const auto dp = rewrite([](const std::string&) { return true; },
                          [](const std::string& n) { return "module." + n; }, "dp.safetensors");
  Tiny<float> m3(3, 0.0f);
  const auto rep3 = sieve::nn::load_state_dict(m3, dp);
  CHECK(rep3.stripped_module_prefix);
  CHECK(m3 == src);
  LoadOptions keep_prefix;
  keep_prefix.strip_module_prefix = false;
  const std::string kp = load_error(m3, dp, keep_prefix);
  CHECK(kp.find("7 missing") != std::string::npos);  // num_batches_tracked defaults
  CHECK(kp.find("8 unexpected [module.conv.weight") != std::string::npos);
}

// Driven by tests/safetensors/interop.py: torch's Tiny state_dict in, sieve's state dict out.
TEST_CASE("state_dict interop with live PyTorch" * doctest::skip()) {
  const char* dir = std::getenv("SIEVE_ST_INTEROP_DIR");
  REQUIRE_MESSAGE(dir != nullptr, "set SIEVE_ST_INTEROP_DIR (run through tests/safetensors/interop.py)");
  Tiny<float> m(4, 0.0f);
  const auto rep = sieve::nn::load_state_dict(m, SafeTensors::load(fs::path(dir) / "torch_tiny.safetensors"));
  CHECK(rep.loaded == 8);
  // torch wrote arange-based values: conv.weight = 0..5, bn.running_var = 2..3, nbt = 3.
  CHECK(m.conv_w == std::vector<float>{0, 1, 2, 3, 4, 5});
  CHECK(m.bn_rv == std::vector<float>{2, 3});
  CHECK(m.nbt == 3);
  // Change everything in a known way, then save for torch to check.
  for (auto* v : {&m.conv_w, &m.bn_w, &m.bn_b, &m.bn_rm, &m.bn_rv, &m.fc_w, &m.fc_b})
    for (auto& x : *v) x = x * 2 + 1;
  m.nbt += 1;
  sieve::nn::save_state_dict(m, fs::path(dir) / "sieve_tiny.safetensors", {{"producer", "sieve"}});
}
