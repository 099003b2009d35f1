// ResNet tests: structure and torchvision names, an end-to-end gradient check of a small
// ResNet through Dropout, Linear and BCE-with-logits in double, freezing, modes.
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <new>
#include <limits>
#include <string>
#include <vector>

#include "sieve/core/pipeline.hpp"
#include "sieve/nn/nn.hpp"
#include "support/gradcheck.hpp"
#include "support/model_gradcheck.hpp"
#include "support/naive.hpp"

using namespace sieve;
using sieve::test::check_gradient;
using sieve::test::fill_randn;

namespace {
nn::ResNetConfig tiny() { return nn::ResNetConfig{{1, 1, 1, 1}, 4, 3}; }
// Basic blocks and the CIFAR stem on gray images: layer1.0 has an identity shortcut,
// layer2.0 and layer3.0 downsample; 12x12 inputs give 12, 6 and 3 pixel planes.
nn::ResNetConfig tiny_basic() { return nn::ResNetConfig{{1, 1, 1}, 4, 1, nn::BlockKind::basic, nn::StemKind::cifar}; }
// A network and an input it takes: both kinds of block and stem run through the same tests.
struct NetCase {
  const char* name;
  nn::ResNetConfig cfg;
  Shape<4> x;
  const char* top;  // the prefix of the last stage
  std::size_t top_params;
};
const NetCase net_cases[] = {
    {"bottleneck/imagenet", tiny(), {2, 3, 32, 32}, "layer4.", 12},
    {"basic/cifar", tiny_basic(), {2, 1, 12, 12}, "layer3.", 9},
};


// Non-trivial batch-norm parameters and running statistics.
void perturb_bn(nn::ResNet<float>& net, Rng& rng) {
  for (auto& p : net.params())
    if (p.name.find("bn") != std::string::npos || p.name.find("downsample.1") != std::string::npos)
      for (auto& v : p.value) v = static_cast<float>(p.name.ends_with("weight") ? 1 + 0.3 * rng.normal() : 0.2 * rng.normal());
  for (auto& b : net.buffers()) {
    if (b.name.ends_with("running_mean"))
      for (auto& v : b.value) v = static_cast<float>(0.3 * rng.normal());
    if (b.name.ends_with("running_var"))
      for (auto& v : b.value) v = static_cast<float>(0.5 + rng.uniform());
  }
}

// One training step of two copies of a network, `a` in NCHW and `b` in CNHW, both with input
// gradients: the embeddings agree to 1e-5, the input and every parameter gradient to 1e-4.
void check_layouts_agree(nn::ResNet<float>& a, nn::ResNet<float>& b, const Tensor4<float>& x, Rng& rng,
                         const char* what) {
  REQUIRE(a.layout() == kernels::Layout::nchw);
  REQUIRE(b.layout() == kernels::Layout::cnhw);
  const Tensor2<float> ya = a.forward(x), yb = b.forward(x);
  CHECK(test::rel_err(yb.data(), ya.data(), ya.size()) < 1e-5);
  Tensor2<float> dz(ya.shape());
  fill_randn(dz, rng);
  a.zero_grad(), b.zero_grad();
  const Tensor4<float> dxa = a.backward(dz), dxb = b.backward(dz);
  CHECK(test::rel_err(dxb.data(), dxa.data(), dxa.size()) < 1e-4);
  auto pa = a.params(), pb = b.params();
  REQUIRE(pa.size() == pb.size());
  double worst = 0;
  for (std::size_t i = 0; i < pa.size(); ++i) {
    CAPTURE(pa[i].name);
    const double r = test::rel_err(pb[i].grad.data(), pa[i].grad.data(), pa[i].grad.size());
    CHECK(r < 1e-4);
    worst = std::max(worst, r);
  }
  MESSAGE(what, ": embedding ", test::rel_err(yb.data(), ya.data(), ya.size()), ", input gradient ",
          test::rel_err(dxb.data(), dxa.data(), dxa.size()), ", worst parameter gradient ", worst);
}
}  // namespace

TEST_CASE("ResNet50 structure: torchvision names, shapes and counts") {
  nn::ResNet<float> net(nn::ResNetConfig::resnet50(), 1);
  CHECK(net.embedding_dim() == 2048);
  CHECK(net.num_blocks() == 16);
  auto ps = net.params();
  auto bs = net.buffers();
  CHECK(ps.size() == 161 - 2);  // torchvision's 161 parameters minus fc
  CHECK(bs.size() == 53 * 3);
  std::size_t n = 0;
  for (auto& p : ps) n += p.value.size();
  CHECK(n == 25557032 - (2048 * 1000 + 1000));  // torchvision resnet50 minus its fc
  CHECK(ps[0].name == "conv1.weight");
  CHECK(ps[0].shape == std::vector<std::size_t>{64, 3, 7, 7});
  CHECK(ps[3].name == "layer1.0.conv1.weight");
  CHECK(ps[3].shape == std::vector<std::size_t>{64, 64, 1, 1});
  CHECK(ps[14].name == "layer1.0.downsample.1.bias");
  CHECK(ps[15].name == "layer1.1.conv1.weight");
  CHECK(ps.back().name == "layer4.2.bn3.bias");
  CHECK(bs[0].name == "bn1.running_mean");
  CHECK(bs[2].name == "bn1.num_batches_tracked");
  CHECK(bs.back().name == "layer4.2.bn3.num_batches_tracked");
  // v1.5: layer2.0 strides on its 3x3 conv, so conv1 of the block is 1x1/1.
  Tensor4<float> x({1, 3, 64, 48});
  CHECK(net.forward(x).shape() == Shape<2>{1, 2048});
  Tensor4<float> bad({1, 1, 64, 64});
  CHECK_THROWS_WITH_AS(net.forward(bad), doctest::Contains("1 channels, expected 3"), sieve::Error);
  CHECK_THROWS_AS(nn::ResNet<float>(nn::ResNetConfig{{1, 0}, 4, 3}), sieve::Error);
}

TEST_CASE("ResNet with basic blocks and the CIFAR stem: torchvision names, shapes and counts") {
  const nn::ResNetConfig defaults;
  CHECK(defaults.block == nn::BlockKind::bottleneck);
  CHECK(defaults.stem == nn::StemKind::imagenet);
  nn::ResNet<float> net(tiny_basic(), 1);
  CHECK(net.embedding_dim() == 16);  // 4 * 2^2 * 1
  CHECK(net.num_blocks() == 3);
  auto ps = net.params();
  REQUIRE(ps.size() == 3 + 6 + 9 + 9);
  CHECK(ps[0].name == "conv1.weight");
  CHECK(ps[0].shape == std::vector<std::size_t>{4, 1, 3, 3});  // 3x3 stem on one channel
  CHECK(ps[3].name == "layer1.0.conv1.weight");
  CHECK(ps[3].shape == std::vector<std::size_t>{4, 4, 3, 3});
  CHECK(ps[6].name == "layer1.0.conv2.weight");
  CHECK(ps[8].name == "layer1.0.bn2.bias");
  CHECK(ps[9].name == "layer2.0.conv1.weight");
  CHECK(ps[9].shape == std::vector<std::size_t>{8, 4, 3, 3});
  CHECK(ps[15].name == "layer2.0.downsample.0.weight");
  CHECK(ps[15].shape == std::vector<std::size_t>{8, 4, 1, 1});
  CHECK(ps.back().name == "layer3.0.downsample.1.bias");
  CHECK(net.buffers().size() == 9 * 3);  // bn1, 2 in layer1.0, 3 in each downsampling block
  CHECK(!net.blocks()[0].has_downsample());
  CHECK(net.blocks()[1].has_downsample());
  // No max pool and a stride-1 stem: layer1 runs on the full 12x12 plane.
  Tensor4<float> x({2, 1, 12, 12});
  CHECK(net.forward(x).shape() == Shape<2>{2, 16});
  CHECK(net.blocks()[0].output().shape() == Shape<4>{2, 4, 12, 12});
  CHECK(net.blocks()[1].output().shape() == Shape<4>{2, 8, 6, 6});
  CHECK(net.blocks()[2].output().shape() == Shape<4>{2, 16, 3, 3});
  Tensor4<float> rgb({2, 3, 12, 12});
  CHECK_THROWS_WITH_AS(net.forward(rgb), doctest::Contains("3 channels, expected 1"), sieve::Error);
  // ResNet-18 for CIFAR: torchvision's resnet18 (11689512 parameters) minus its fc (512*1000 +
  // 1000) with the 3x3 stem (64*3*3*3) in place of the 7x7 one (64*3*7*7).
  nn::ResNet<float> r18(nn::ResNetConfig{{2, 2, 2, 2}, 64, 3, nn::BlockKind::basic, nn::StemKind::cifar}, 1);
  CHECK(r18.embedding_dim() == 512);
  auto rp = r18.params();
  CHECK(rp.size() == 62 - 2);
  std::size_t n = 0;
  for (auto& p : rp) n += p.value.size();
  CHECK(n == 11689512 - 513000 - 64 * 3 * 7 * 7 + 64 * 3 * 3 * 3);
  // A basic-block ImageNet net and a bottleneck CIFAR one are valid shapes too.
  nn::ResNet<float> mixed(nn::ResNetConfig{{1, 1}, 4, 3, nn::BlockKind::basic, nn::StemKind::imagenet}, 1);
  CHECK(mixed.forward(Tensor4<float>({1, 3, 16, 16})).shape() == Shape<2>{1, 8});
  CHECK(mixed.blocks()[0].output().shape() == Shape<4>{1, 4, 4, 4});  // stem: /2 conv, /2 pool
  nn::ResNet<float> bcifar(nn::ResNetConfig{{1, 1}, 4, 3, nn::BlockKind::bottleneck, nn::StemKind::cifar}, 1);
  CHECK(bcifar.forward(Tensor4<float>({1, 3, 8, 8})).shape() == Shape<2>{1, 32});
  CHECK(bcifar.blocks()[0].output().shape() == Shape<4>{1, 16, 8, 8});
}

TEST_CASE("small ResNet + Dropout + Linear + BCE: end-to-end gradient check in double") {
 for (const NetCase& nc : net_cases)
 for (kernels::Layout layout : {kernels::Layout::cnhw, kernels::Layout::nchw})
 for (bool train : {true, false}) {
  CAPTURE(nc.name);
  CAPTURE(train);
  CAPTURE(kernels::layout_name(layout));
  Rng rng(21);
  nn::ResNet<double> net(nc.cfg, 3);
  CHECK(net.layout() == kernels::Layout::cnhw);  // the default
  net.set_layout(layout);
  net.set_input_grad(true);
  nn::Linear<double> fc(net.embedding_dim(), 5, rng);
  auto model = std::move(net) | nn::Dropout<double>(0.3, 8) | std::move(fc);
  const auto r = test::check_classifier_gradients(model, nc.x, 5, train, rng, [](const std::string& name) {
    return name == "conv1.weight" ? 60 : 12;
  });
  MESSAGE("resnet e2e gradcheck (", std::string(train ? "train" : "eval"), "): ", r.checked, " parameter elements, ",
          r.retried, " matched only at eps/10; worst ", r.worst);
  CHECK(r.retried * 20 < r.checked);  // kinks are rare; a wrong gradient would fail everywhere
  // The stem, then per block its pairs (3 or 2) and the downsample's conv and bn (3 params).
  CHECK(model.get<0>().params().size() ==
        (nc.cfg.block == nn::BlockKind::bottleneck ? 1 + 2 + 4 * 9 + 4 * 3 : 1 + 2 + 3 * 6 + 2 * 3));
 }
}

TEST_CASE("freezing by prefix: frozen layers get no gradient, layers below are skipped") {
 for (const NetCase& nc : net_cases) {
  CAPTURE(nc.name);
  Rng rng(22);
  nn::ResNet<double> net(nc.cfg, 4);
  nn::Linear<double> fc(net.embedding_dim(), 3, rng);
  auto model = std::move(net) | std::move(fc);
  Tensor4<double> x(nc.x);
  fill_randn(x, rng);
  Tensor2<double> dz({2, 3});
  fill_randn(dz, rng);

  // Reference: everything trainable.
  model.forward(x);
  model.zero_grad();
  model.backward(dz);
  std::vector<std::vector<double>> full;
  for (auto& p : model.params()) full.emplace_back(p.grad.begin(), p.grad.end());

  CHECK(nn::freeze_all_but(model, {nc.top, "fc."}) == nc.top_params + 2);
  model.zero_grad();
  model.forward(x);
  model.backward(dz);
  auto ps = model.params();
  for (std::size_t i = 0; i < ps.size(); ++i) {
    const bool trainable = ps[i].name.starts_with(nc.top) || ps[i].name.starts_with("fc.");
    CAPTURE(ps[i].name);
    CHECK(ps[i].is_frozen() == !trainable);
    double diff = 0, mag = 0;
    for (std::size_t j = 0; j < full[i].size(); ++j) {
      diff = std::max(diff, std::abs(ps[i].grad[j] - (trainable ? full[i][j] : 0.0)));
      mag = std::max(mag, std::abs(full[i][j]));
    }
    CHECK(diff <= 1e-12 * (1 + mag));  // trainable grads unchanged, frozen ones untouched (0)
  }
  // layer3's blocks were never visited: their input-gradient buffers were never allocated.
  // (The block below layer4.0 is layer3.0; its output grad buffer is empty.)
  nn::set_frozen_prefix(model, "", false);
  for (auto& p : model.params()) CHECK(!p.is_frozen());
 }
}

// The values are checked against PyTorch's per block by the e2e test nn_resnet50_grad_accuracy.
TEST_CASE("block gradient hook: each block's input gradient, top down, only where computed") {
  Rng rng(23);
  nn::ResNet<double> net(nn::ResNetConfig{{2, 1}, 4, 3}, 4);
  nn::Linear<double> fc(net.embedding_dim(), 3, rng);
  auto model = std::move(net) | std::move(fc);
  Tensor4<double> x({2, 3, 32, 32});
  fill_randn(x, rng);
  Tensor2<double> dz({2, 3});
  fill_randn(dz, rng);
  auto& resnet = model.get<0>();
  std::vector<std::size_t> calls;
  resnet.set_block_grad_hook([&](std::size_t i, TensorRef4<const double> g) {
    calls.push_back(i);
    CHECK(g.shape == resnet.blocks()[i].input_shape());
    double sq = 0;
    for (std::size_t k = 0; k < g.size(); ++k) sq += g.data[k] * g.data[k];
    CHECK(sq > 0);
  });
  model.forward(x);
  model.backward(dz);
  CHECK(calls == std::vector<std::size_t>{2, 1, 0});
  // A copy does not report to the original's observer.
  auto copy = resnet;
  calls.clear();
  copy.forward(x);
  copy.backward(Tensor2<double>(resnet.output()));
  CHECK(calls.empty());
  // Nothing below the last stage trains: no input gradient is computed, none reported.
  nn::freeze_all_but(model, {"layer2.", "fc."});
  model.forward(x);
  model.backward(dz);
  CHECK(calls.empty());
}

TEST_CASE("train and eval modes: BN statistics, num_batches_tracked, deterministic eval") {
 for (const NetCase& nc : net_cases) {
  CAPTURE(nc.name);
  nn::ResNet<float> net(nc.cfg, 5);
  Tensor4<float> x(nc.x);
  Rng rng(23);
  fill_randn(x, rng);
  net.set_training(true);
  const Tensor2<float> a = net.forward(x);
  for (auto& b : net.buffers())
    if (b.is_count()) CHECK(*b.count == 1);
  net.set_training(false);
  const Tensor2<float> e1 = net.forward(x);
  const Tensor2<float> e2 = net.forward(x);
  CHECK(e1 == e2);
  CHECK(a != e1);
  for (auto& b : net.buffers())
    if (b.is_count()) CHECK(*b.count == 1);  // eval does not count
  // Copies are independent models with their own workspace.
  nn::ResNet<float> copy = net;
  CHECK(copy.forward(x) == e1);
  copy.params()[0].value[0] += 1.0f;
  CHECK(net.forward(x) == e1);
  CHECK(copy.forward(x) != e1);
  // A copy trains like the original, on its own buffers, while the original runs on.
  nn::ResNet<float> twin = net;
  net.set_training(true), twin.set_training(true);
  const Tensor2<float> ya = net.forward(x);
  CHECK(twin.forward(x) == ya);
  Tensor2<float> dz(ya.shape());
  fill_randn(dz, rng);
  net.zero_grad(), twin.zero_grad();
  net.backward(dz);
  net.forward(x);  // the original's buffers change; the twin's backward must not see them
  twin.backward(dz);
  net.zero_grad();
  net.forward(x);
  net.backward(dz);
  auto pn = net.params(), pt = twin.params();
  for (std::size_t i = 0; i < pn.size(); ++i) CHECK(test::rel_err(pt[i].grad.data(), pn[i].grad.data(), pn[i].grad.size()) == 0.0);
 }
}

// Counting replacement of the global operator new (the whole test binary uses it; only the
// window between the two reads matters). Not under AddressSanitizer, which owns operator new
// to check new/delete pairing.
#if defined(__SANITIZE_ADDRESS__)
#define SIEVE_NN_COUNT_ALLOCS 0
#else
#define SIEVE_NN_COUNT_ALLOCS 1
#endif
namespace {
std::atomic<std::size_t> g_allocs{0}, g_alloc_bytes{0};
}
#if SIEVE_NN_COUNT_ALLOCS
// GCC 12 flags malloc/free inside a replacement operator new/delete pair as mismatched.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
namespace {
void* counted_alloc(std::size_t n) {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  g_alloc_bytes.fetch_add(n, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
}  // namespace
void* operator new(std::size_t n) { return counted_alloc(n); }
void* operator new[](std::size_t n) { return counted_alloc(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
#endif

TEST_CASE("a steady-state training step allocates nothing") {
  if (!SIEVE_NN_COUNT_ALLOCS) {
    MESSAGE("allocation counting is off under AddressSanitizer");
    return;
  }
  for (const NetCase& nc : net_cases) {
  CAPTURE(nc.name);
  Rng rng(24);
  nn::ResNet<float> net(nc.cfg, 6);
  nn::Linear<float> fc(net.embedding_dim(), 3, rng);
  nn::Dropout<float> drop(0.2, 1);
  auto model = std::move(net) | std::move(drop) | std::move(fc);
  nn::freeze_all_but(model, {"layer3.", "layer4.", "fc."});
  Tensor4<float> x({4, nc.x[1], nc.x[2], nc.x[3]});
  fill_randn(x, rng);
  Tensor2<float> dz({4, 3});
  fill_randn(dz, rng);
  auto step = [&] {
    model.zero_grad();
    model.forward(x);
    model.backward(dz);
  };
  const std::size_t first = g_allocs.load();
  step();
  CHECK(g_allocs.load() - first > 0);  // the first step sizes every buffer (and the counter works)
  step();
  const std::size_t before = g_allocs.load();
  step();
  CHECK(g_allocs.load() - before == 0);
  nn::set_frozen_prefix(model, "", false);
  model.get<0>().set_input_grad(true);
  step();
  const std::size_t before2 = g_allocs.load();
  step();
  CHECK(g_allocs.load() - before2 == 0);
  }
}

TEST_CASE("memory plan: a backward allocates a handful of the largest activations, not one per layer") {
  if (!SIEVE_NN_COUNT_ALLOCS) {
    MESSAGE("allocation counting is off under AddressSanitizer");
    return;
  }
  Rng rng(25);
  // Two blocks per stage: identity and downsampling blocks both use the pool.
  nn::ResNet<float> net(nn::ResNetConfig{{2, 2, 2, 2}, 4, 3}, 7);
  net.set_input_grad(true);
  Tensor4<float> x({4, 3, 32, 32});
  fill_randn(x, rng);
  const auto& z = net.forward(x);
  Tensor2<float> dz(z.shape());
  fill_randn(dz, rng);
  // The largest activation: the stem's conv output and layer1's output, [4,16,8,8] and [4,4,16,16].
  const std::size_t largest = 4 * 16 * 8 * 8;
  const std::size_t before = g_alloc_bytes.load();
  const auto& dx = net.backward(dz);
  const std::size_t used = g_alloc_bytes.load() - before;
  // 5 scratch slots of at most the largest activation, the pooled gradient [4,128,1,1], the input
  // gradient [4,3,32,32], and a few small vectors. One buffer per layer would be over 40 of them.
  const std::size_t bound = (5 * largest + 4 * 128 + x.size()) * sizeof(float) + 1024;
  CHECK(used <= bound);
  CHECK(used >= 3 * largest * sizeof(float));  // the counter sees the pool
  CHECK(dx.shape() == x.shape());
  // Same result as the previous backward, from the reused buffers (nothing stale leaks in).
  const Tensor4<float> first = dx;
  net.zero_grad();
  net.forward(x);
  CHECK(test::rel_err(net.backward(dz).data(), first.data(), first.size()) == 0.0);
}

TEST_CASE("inference mode: batch norm folded into the convolutions, bit-identical to eval, no backward") {
 for (kernels::Layout layout : {kernels::Layout::cnhw, kernels::Layout::nchw}) {
  CAPTURE(kernels::layout_name(layout));
  Rng rng(26);
  nn::ResNet<float> net(nn::ResNetConfig{{2, 2, 2, 2}, 8, 3}, 9);
  net.set_layout(layout);
  perturb_bn(net, rng);
  // 40x40 and batch 6: direct 1x1, im2col, and grouped (several samples per GEMM) convolutions.
  Tensor4<float> x({6, 3, 40, 40});
  fill_randn(x, rng);
  net.set_training(false);
  const Tensor2<float> eval = net.forward(x);
  net.set_inference(true);
  const Tensor2<float> inf = net.forward(x);
  CHECK(inf == eval);
  for (std::size_t i = 0; i < net.num_blocks(); ++i) CHECK(net.blocks()[i].output().size() > 0);
  Tensor2<float> dz(inf.shape());
  fill_randn(dz, rng);
  CHECK_THROWS_WITH_AS(net.backward(dz), doctest::Contains("inference mode"), sieve::Error);
  // Training-mode batch norm needs batch statistics: inference mode does not apply, and
  // backward works.
  net.set_training(true);
  const Tensor2<float> train = net.forward(x);
  CHECK(train != eval);
  CHECK_NOTHROW(net.backward(dz));
  // Back to eval with inference off: differentiable again (frozen-statistics fine-tuning).
  net.set_training(false);
  net.set_inference(false);
  const Tensor2<float> eval2 = net.forward(x);
  CHECK_NOTHROW(net.backward(dz));
  net.set_inference(true);
  CHECK(net.forward(x) == eval2);
  // The Pipeline forwards the mode to the stages that have one.
  auto model = std::move(net) | nn::Linear<float>(eval.shape()[1], 3, rng);
  model.set_training(false);
  model.set_inference(false);
  const Tensor2<float> pe = model.forward(x);
  model.set_inference(true);
  CHECK(model.get<0>().inference());
  CHECK(model.forward(x) == pe);
  CHECK_THROWS_AS(model.backward(Tensor2<float>(pe.shape())), sieve::Error);
 }
}

TEST_CASE("batch-folded layout: CNHW and NCHW networks agree in float, Winograd and folded 1x1 included") {
  // Width 64 at 64x64: layer1's 3x3 convolutions take Winograd (16x16 planes, 64 channels),
  // every 1x1 stride-1 convolution is one folded product in CNHW (per sample or grouped in
  // NCHW), layer4's 2x2 planes copy through the tiny-plane table; train mode, so batch
  // statistics and every gradient go through both layouts.
  Rng rng(27);
  nn::ResNet<float> a(nn::ResNetConfig{{1, 1, 1, 1}, 64, 3}, 5);
  nn::ResNet<float> b = a;
  a.set_layout(kernels::Layout::nchw);
  CHECK(b.layout() == kernels::Layout::cnhw);
  a.set_input_grad(true), b.set_input_grad(true);
  Tensor4<float> x({3, 3, 64, 64});
  fill_randn(x, rng);
  check_layouts_agree(a, b, x, rng, "CNHW vs NCHW");
  // Inference mode: layer1's 3x3 convolutions take Winograd F(4x4,3x3) (forward only), the
  // rest as in eval mode; the embedding agrees with eval mode's to rounding.
  b.set_training(false);
  const Tensor2<float> ye = b.forward(x);
  b.set_inference(true);
  const Tensor2<float> yi = b.forward(x);
  MESSAGE("inference vs eval mode: embedding ", test::rel_err(yi.data(), ye.data(), ye.size()));
  CHECK(test::rel_err(yi.data(), ye.data(), ye.size()) < 1e-5);
}

TEST_CASE("basic blocks, CIFAR stem: inference mode agrees with eval, CNHW with NCHW") {
  Rng rng(28);
  // Width 64 at 16x16: layer1's 3x3 convolutions take Winograd, F(2x2) in training (both
  // layouts, forward and input gradient) and F(4x4) with kept weights in inference.
  const nn::ResNetConfig wide{{1, 1}, 64, 3, nn::BlockKind::basic, nn::StemKind::cifar};
  kernels::Conv2dDims d{2, 64, 16, 16, 64, kernels::Conv2dGeom{3, 3, 1, 1, 1, 1}};
  REQUIRE(kernels::conv2d_winograd_tile(d) == 2);
  d.forward_only = true;
  REQUIRE(kernels::conv2d_winograd_tile(d) == 4);
  for (kernels::Layout layout : {kernels::Layout::cnhw, kernels::Layout::nchw}) {
    CAPTURE(kernels::layout_name(layout));
    // Narrow (no Winograd): the folded epilogues give eval mode's bits. Wide: to rounding.
    for (const bool is_wide : {false, true}) {
      CAPTURE(is_wide);
      nn::ResNet<float> net(is_wide ? wide : nn::ResNetConfig{{2, 2}, 8, 1, nn::BlockKind::basic, nn::StemKind::cifar}, 9);
      net.set_layout(layout);
      perturb_bn(net, rng);
      Tensor4<float> x(is_wide ? Shape<4>{2, 3, 16, 16} : Shape<4>{6, 1, 20, 20});
      fill_randn(x, rng);
      net.set_training(false);
      const Tensor2<float> eval = net.forward(x);
      net.set_inference(true);
      const Tensor2<float> inf = net.forward(x);
      if (is_wide) {
        MESSAGE("basic/cifar inference vs eval (Winograd F(4x4)): ", test::rel_err(inf.data(), eval.data(), eval.size()));
        CHECK(test::rel_err(inf.data(), eval.data(), eval.size()) < 1e-5);
        CHECK(inf != eval);  // Winograd really ran: the products are rounded differently
      } else {
        CHECK(inf == eval);
      }
      for (std::size_t i = 0; i < net.num_blocks(); ++i) CHECK(net.blocks()[i].output().size() > 0);
      CHECK_THROWS_WITH_AS(net.backward(Tensor2<float>(inf.shape())), doctest::Contains("inference mode"),
                           sieve::Error);
      net.set_inference(false);
      CHECK(net.forward(x) == eval);
      CHECK_NOTHROW(net.backward(Tensor2<float>(inf.shape())));
    }
  }
  // CNHW against NCHW in training: embedding, input gradient and every parameter gradient.
  nn::ResNet<float> a(wide, 5);
  perturb_bn(a, rng);
  nn::ResNet<float> b = a;
  a.set_layout(kernels::Layout::nchw);
  a.set_input_grad(true), b.set_input_grad(true);
  Tensor4<float> x({2, 3, 16, 16});
  fill_randn(x, rng);
  check_layouts_agree(a, b, x, rng, "basic/cifar CNHW vs NCHW");
}
