// Parity with PyTorch: sieve's ResNet against fixtures written by tools/gen_nn_fixtures.py.
// The small fixture (committed) runs in the unit suite for float and double; the ResNet50
// fixture is generated at test time and checked by the e2e suite (`nn_resnet50_parity`).
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "sieve/core/pipeline.hpp"
#include "sieve/io/safetensors.hpp"
#include "sieve/nn/nn.hpp"
#include "support/gradcheck.hpp"
#include "support/naive.hpp"

using namespace sieve;
using sieve::test::rel_err;

namespace {

std::vector<std::size_t> parse_list(const std::string& s) {
  std::vector<std::size_t> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) v.push_back(std::stoul(item));
  return v;
}
std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) v.push_back(item);
  return v;
}

struct Tolerances {
  double out, grad_eval, grad_train, buf;
};

// Copy every parameter and buffer from the file by torchvision name; names and shapes must match.
template <class M>
void load_params(M& model, const io::SafeTensors& st) {
  for (auto& p : model.params()) {
    INFO(p.name);
    REQUIRE(st.contains(p.name));
    REQUIRE(st.info(p.name).shape == p.shape);
    const auto v = st.doubles(p.name);
    std::copy(v.begin(), v.end(), p.value.begin());
  }
}

// Copy every buffer (running statistics, num_batches_tracked) by name.
template <class M>
void load_buffers(M& model, const io::SafeTensors& st) {
  for (auto& b : model.buffers()) {
    INFO(b.name);
    REQUIRE(st.contains(b.name));
    REQUIRE(st.info(b.name).shape == b.shape);
    if (b.is_count()) {
      *b.count = st.ints(b.name).at(0);
    } else {
      const auto v = st.doubles(b.name);
      std::copy(v.begin(), v.end(), b.value.begin());
    }
  }
}

// The fixture's input of case c ("input.<c>", NCHW).
template <class T>
Tensor4<T> load_input(const io::SafeTensors& st, const std::string& c) {
  const auto& xi = st.info("input." + c);
  Tensor4<T> x(Shape<4>{xi.shape[0], xi.shape[1], xi.shape[2], xi.shape[3]});
  const auto xv = st.doubles("input." + c);
  std::copy(xv.begin(), xv.end(), x.begin());
  return x;
}

template <class T>
void check_parity(const std::string& path, const Tolerances& tol) {
  const auto st = io::SafeTensors::load(path);
  const auto& meta = st.metadata();
  // The basic-block fixtures name their input channels, block and stem; the others are RGB
  // bottleneck nets with the ImageNet stem.
  auto meta_or = [&](const std::string& key, const std::string& fallback) {
    const auto it = meta.find(key);
    return it == meta.end() ? fallback : it->second;
  };
  const std::string block = meta_or("block", "bottleneck"), stem = meta_or("stem", "imagenet");
  REQUIRE((block == "bottleneck" || block == "basic" || block == "pool"));
  REQUIRE((stem == "imagenet" || stem == "cifar"));
  const nn::ResNetConfig cfg{parse_list(meta.at("blocks")), std::stoul(meta.at("width")),
                             std::stoul(meta_or("in_channels", "3")),
                             block == "basic" ? nn::BlockKind::basic : nn::BlockKind::bottleneck,
                             stem == "cifar" ? nn::StemKind::cifar : nn::StemKind::imagenet};
  // The "pool" fixtures hold an nn::PoolNet: one stage per entry of blocks.
  auto make_net = [&](std::uint64_t seed) {
    if (block == "pool")
      return nn::Backbone<T>(nn::PoolNet<T>(
          nn::PoolNetConfig{cfg.width, cfg.blocks.size(), cfg.in_channels, meta_or("global_pool", "avg") == "max"},
          seed));
    return nn::Backbone<T>(nn::ResNet<T>(cfg, seed));
  };
  const std::size_t classes = std::stoul(meta.at("classes"));
  const auto grad_cases = split(meta.at("grad_cases"));
  const auto grad_modes = split(meta.at("grad_modes"));
  Rng rng(0);

  // The state_dict order: params() and buffers() follow the file's (torchvision's) order.
  {
    nn::Backbone<T> net = make_net(0);
    nn::Linear<T> fc(net.embedding_dim(), classes, rng);
    auto model = std::move(net) | std::move(fc);
    std::vector<std::string> file_params, file_buffers;
    for (const auto& n : st.names()) {
      if (n.find('.') == std::string::npos || n.starts_with("input.") || n.starts_with("target.") ||
          n.starts_with("eval.") || n.starts_with("train."))
        continue;
      (n.ends_with("running_mean") || n.ends_with("running_var") || n.ends_with("num_batches_tracked")
           ? file_buffers
           : file_params)
          .push_back(n);
    }
    std::vector<std::string> ours_p, ours_b;
    for (auto& p : model.params()) ours_p.push_back(p.name);
    for (auto& b : model.template get<0>().buffers()) ours_b.push_back(b.name);
    CHECK(ours_p == file_params);
    CHECK(ours_b == file_buffers);
  }

  for (const auto& c : split(meta.at("cases"))) {
    for (const std::string mode : {"eval", "train"}) {
      CAPTURE(c);
      CAPTURE(mode);
      nn::Backbone<T> net = make_net(1);
      nn::Linear<T> fc(net.embedding_dim(), classes, rng);
      auto model = std::move(net) | std::move(fc);
      load_params(model, st);
      load_buffers(model.template get<0>(), st);
      model.set_training(mode == "train");
      const auto x = load_input<T>(st, c);
      const auto target = st.doubles("target." + c);
      const auto& z = model.forward(x);
      const std::string pre = mode + "." + c + ".";
      const auto zr = st.doubles(pre + "logits");
      const auto er = st.doubles(pre + "embedding");
      REQUIRE(z.size() == zr.size());
      const auto& emb = model.template get<0>().output();
      REQUIRE(emb.size() == er.size());
      const double ez = rel_err(z.data(), zr, zr.size()), ee = rel_err(emb.data(), er, er.size());
      MESSAGE(path, " ", pre, " logits rel ", ez, " embedding rel ", ee);
      CHECK(ez <= tol.out);
      CHECK(ee <= tol.out);
      std::vector<double> zd(z.begin(), z.end()), dzd(z.size());
      const double loss = test::naive_bce_with_logits(zd.data(), target.data(), zd.size(), dzd.data());
      CHECK(loss == doctest::Approx(st.doubles(pre + "loss").at(0)).epsilon(tol.out));

      bool grads = false;
      for (const auto& g : grad_cases) grads = grads || g == c;
      bool gm = false;
      for (const auto& g : grad_modes) gm = gm || g == mode;
      if (grads && gm) {
        Tensor2<T> dz(Shape<2>{z.shape()[0], z.shape()[1]});
        std::copy(dzd.begin(), dzd.end(), dz.begin());
        model.zero_grad();
        model.backward(dz);
        double worst = 0;
        std::string worst_name;
        const double tg = mode == "train" ? tol.grad_train : tol.grad_eval;
        for (auto& p : model.params()) {
          const auto gr = st.doubles(pre + "grad." + p.name);
          REQUIRE(gr.size() == p.grad.size());
          const double e = rel_err(p.grad.data(), gr, gr.size());
          CHECK_MESSAGE(e <= tg, p.name, " gradient rel ", e);
          if (e > worst) worst = e, worst_name = p.name;
        }
        MESSAGE(pre, " worst parameter gradient: ", worst_name, " rel ", worst);
      }
      if (mode == "train") {
        double worst = 0;
        for (auto& b : model.template get<0>().buffers()) {
          const std::string ref = pre + "buffer." + b.name;
          REQUIRE(st.contains(ref));
          if (b.is_count()) {
            CHECK(*b.count == st.ints(ref).at(0));
            continue;
          }
          const auto r = st.doubles(ref);
          for (std::size_t i = 0; i < r.size(); ++i) {
            const double e = std::abs(static_cast<double>(b.value[i]) - r[i]) / (1.0 + std::abs(r[i]));
            worst = std::max(worst, e);
          }
        }
        MESSAGE(pre, " worst running-stat error ", worst);
        CHECK(worst <= tol.buf);
      }
    }
  }
}

}  // namespace

TEST_CASE("parity with PyTorch: small ResNet fixture, double") {
  check_parity<double>(SIEVE_NN_DATA "/small_resnet.safetensors", {1e-10, 1e-8, 1e-8, 1e-12});
}

TEST_CASE("parity with PyTorch: small ResNet fixture, float") {
  check_parity<float>(SIEVE_NN_DATA "/small_resnet.safetensors", {1e-5, 1e-4, 1e-3, 1e-6});
}

// Basic blocks and the CIFAR stem (torchvision's BasicBlock, conv1 3x3/1, no max pool): a gray
// net with blocks {1,1,1} (an identity and two downsampling blocks) and an RGB one with
// blocks {2,2} (an identity block after a downsampling one in a strided stage).
TEST_CASE("parity with PyTorch: small basic-block CIFAR-stem ResNets, double") {
  for (const char* f : {"/small_basic_gray.safetensors", "/small_basic_rgb.safetensors"}) {
    CAPTURE(f);
    check_parity<double>(std::string(SIEVE_NN_DATA) + f, {1e-10, 1e-8, 1e-8, 1e-12});
  }
}

// nn::PoolNet (width 4, 2 stages, gray; 11x13 images pool with the floor to 5x6 and 2x3), with
// the global average and with the global max pool.
TEST_CASE("parity with PyTorch: small PoolNet, double and float") {
  for (const char* f : {"/small_pool_net.safetensors", "/small_pool_net_max.safetensors"}) {
    CAPTURE(f);
    check_parity<double>(std::string(SIEVE_NN_DATA) + f, {1e-10, 1e-8, 1e-8, 1e-12});
    check_parity<float>(std::string(SIEVE_NN_DATA) + f, {1e-5, 1e-4, 1e-4, 1e-6});
  }
}

TEST_CASE("parity with PyTorch: small basic-block CIFAR-stem ResNets, float") {
  for (const char* f : {"/small_basic_gray.safetensors", "/small_basic_rgb.safetensors"}) {
    CAPTURE(f);
    check_parity<float>(std::string(SIEVE_NN_DATA) + f, {1e-5, 1e-4, 1e-4, 1e-6});
  }
}

// The reference is PyTorch in float64 (gradients stored as F32), so the exactness claim rests
// on the double build: outputs to 1e-9, every gradient to 1e-5 (the F32 storage limit), running
// stats to 1e-9. The float build is held to what float32 arithmetic can give on this problem,
// measured (2026-11-27) against the same float64 truth:
//  - outputs: sieve float 5.9e-5 (train) / 5.1e-7 (eval); PyTorch float32 5.8e-5 / 8.1e-7.
//  - train-mode gradients: batch 2 at 64x64 is ill-conditioned (layer4's BN normalises 8 values
//    per channel); PyTorch float32 is off by up to 6.4%, sieve float by up to 5.0%.
//  - running stats: PyTorch float32 1.0e-4, sieve float 6.9e-5 (layer4.2.bn1.running_var).
//  - eval-mode gradients: 8.0e-3, from a single ReLU decision: layer3.1's output element 21565
//    is 0 in double and 2^-20 in float (one ulp from the kink); every parameter above it
//    agrees to 1e-6. PyTorch float32 happens to round to the same side as float64 there.
TEST_CASE("parity with PyTorch: ResNet50 in double (fixture generated at test time)" * doctest::skip()) {
  const char* path = std::getenv("SIEVE_NN_R50");
  REQUIRE_MESSAGE(path != nullptr, "set SIEVE_NN_R50 to the file tools/gen_nn_fixtures.py --resnet50 wrote");
  check_parity<double>(path, {1e-9, 1e-5, 1e-5, 1e-9});
}

TEST_CASE("parity with PyTorch: ResNet50 in float (fixture generated at test time)" * doctest::skip()) {
  const char* path = std::getenv("SIEVE_NN_R50");
  REQUIRE_MESSAGE(path != nullptr, "set SIEVE_NN_R50 to the file tools/gen_nn_fixtures.py --resnet50 wrote");
  check_parity<float>(path, {1e-4, 2e-2, 0.1, 2e-4});
}

namespace {

// Train-mode float gradients held to PyTorch float32's own accuracy, tensor by tensor (issue
// 24): the fixture (tools/gen_nn_fixtures.py --resnet50-grads) holds the float64 truth of every
// parameter gradient and every block's input gradient, and PyTorch float32's relative distance
// to it. sieve's float build must be within 3x that distance, or within 1e-5.
//
// The fixture keeps every ReLU input and the stem pool's runner-ups clear of float32's forward
// error, because a kink decides more than any rounding (measured 2026-12-07 on the same
// network with its BN biases left near zero, batch 3): at 64x64 one bn1 output of layer4.2 is
// -4.5e-5 in float64; both forwards are as accurate as each other (every block's output within
// 1.0-1.04x PyTorch float32's distance), but sieve's lands at +6e-6 and PyTorch NCHW's at
// -2e-5, so sieve's layer4.2 bn1.bias gradient was 1.8e-2 from the truth against PyTorch's
// 1.3e-4 (145x). PyTorch float32 in channels-last lands on the same side as sieve and is 145.6x
// its own NCHW distance on that tensor: a coin toss, not a weaker pass. Kink-free, sieve's
// worst tensor is 1.2-1.6x PyTorch float32's distance (it was 1.7-2.1x before the batch-norm
// backward took x - mean first, see kernels/batch_norm.hpp).
void check_grad_accuracy(const std::string& path, kernels::Layout layout) {
  const auto st = io::SafeTensors::load(path);
  const auto& meta = st.metadata();
  const nn::ResNetConfig cfg{parse_list(meta.at("blocks")), std::stoul(meta.at("width"))};
  const std::size_t classes = std::stoul(meta.at("classes"));
  Rng rng(0);
  nn::ResNet<float> net(cfg, 1);
  net.set_layout(layout);
  nn::Linear<float> fc(net.embedding_dim(), classes, rng);
  auto model = std::move(net) | std::move(fc);
  load_params(model, st);
  load_buffers(model.get<0>(), st);
  auto& resnet = model.get<0>();
  const auto names = resnet.block_names();
  // Every block's input gradient, copied to NCHW as the backward passes it down.
  std::vector<std::vector<float>> dinput(names.size());
  resnet.set_block_grad_hook([&](std::size_t i, TensorRef4<const float> g) {
    const auto [N, C, H, W] = g.shape;
    auto& out = dinput[i];
    out.resize(g.size());
    for (std::size_t n = 0; n < N; ++n)
      for (std::size_t c = 0; c < C; ++c)
        for (std::size_t p = 0; p < H * W; ++p)
          out[(n * C + c) * H * W + p] =
              g.data[(layout == kernels::Layout::cnhw ? c * N + n : n * C + c) * H * W + p];
  });
  std::size_t checked = 0;
  for (const auto& c : split(meta.at("cases"))) {
    CAPTURE(c);
    model.set_training(true);
    const auto x = load_input<float>(st, c);
    const auto target = st.doubles("target." + c);
    const auto& z = model.forward(x);
    std::vector<double> zd(z.begin(), z.end()), dzd(z.size());
    test::naive_bce_with_logits(zd.data(), target.data(), zd.size(), dzd.data());
    Tensor2<float> dz(Shape<2>{z.shape()[0], z.shape()[1]});
    std::copy(dzd.begin(), dzd.end(), dz.begin());
    model.zero_grad();
    std::fill(dinput.begin(), dinput.end(), std::vector<float>{});
    model.backward(dz);
    // (tensor, sieve's distance, PyTorch float32's distance)
    std::vector<std::tuple<std::string, double, double>> rows;
    for (auto& p : model.params()) {
      const auto truth = st.doubles("train." + c + ".grad." + p.name);
      REQUIRE(truth.size() == p.grad.size());
      rows.emplace_back("grad." + p.name, rel_err(p.grad.data(), truth, truth.size()),
                        st.doubles("torch32." + c + ".grad." + p.name).at(0));
    }
    for (std::size_t i = 0; i < names.size(); ++i) {
      const std::string block = names[i].substr(0, names[i].size() - 1);  // "layer4.2." -> "layer4.2"
      const auto truth = st.doubles("train." + c + ".dinput." + block);
      INFO(block);
      REQUIRE(dinput[i].size() == truth.size());
      rows.emplace_back("dinput." + block, rel_err(dinput[i].data(), truth, truth.size()),
                        st.doubles("torch32." + c + ".dinput." + block).at(0));
    }
    // The stem's gradients pass the max pool, whose closest call may be within float32's
    // error of a tie: checked only where the fixture found every window's winner clear.
    const bool stem = st.doubles("margin." + c + ".pool").at(0) >= std::stod(meta.at("pool_margin_min"));
    double worst = 0;
    for (const auto& [name, ours, torch32] : rows) {
      if (!stem && (name.starts_with("grad.conv1.") || name.starts_with("grad.bn1."))) continue;
      CHECK_MESSAGE(ours <= std::max(3 * torch32, 1e-5), c, " ", name, ": sieve float ", ours,
                    " from the float64 truth, PyTorch float32 ", torch32);
      worst = std::max(worst, ours / std::max(torch32, 1e-5 / 3));
      ++checked;
    }
    MESSAGE(c, ": worst ratio of sieve's distance to PyTorch float32's (floor 1e-5/3): ", worst);
  }
  CHECK(checked >= split(meta.at("cases")).size() * (model.params().size() + names.size() - 3));
}

}  // namespace

// Fixture: tools/gen_nn_fixtures.py --resnet50-grads (generated at test time, e2e suite).
TEST_CASE("float gradients as accurate as PyTorch float32: ResNet50 train mode (fixture at test time)" *
          doctest::skip()) {
  const char* path = std::getenv("SIEVE_NN_R50_GRADS");
  REQUIRE_MESSAGE(path != nullptr, "set SIEVE_NN_R50_GRADS to the file tools/gen_nn_fixtures.py --resnet50-grads wrote");
  for (const auto layout : {kernels::Layout::cnhw, kernels::Layout::nchw}) {
    CAPTURE(std::string(kernels::layout_name(layout)));
    check_grad_accuracy(path, layout);
  }
}
