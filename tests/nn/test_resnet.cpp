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
#include "support/naive.hpp"

using namespace sieve;
using sieve::test::check_gradient;

namespace {
template <class T, std::size_t R>
void fill_randn(Tensor<T, R>& t, Rng& rng, double scale = 1.0) {
  for (auto& v : t) v = static_cast<T>(rng.normal() * scale);
}
nn::ResNetConfig tiny() { return nn::ResNetConfig{{1, 1, 1, 1}, 4, 3}; }
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

TEST_CASE("small ResNet + Dropout + Linear + BCE: end-to-end gradient check in double") {
 for (kernels::Layout layout : {kernels::Layout::cnhw, kernels::Layout::nchw})
 for (bool train : {true, false}) {
  CAPTURE(train);
  CAPTURE(kernels::layout_name(layout));
  Rng rng(21);
  nn::ResNet<double> net(tiny(), 3);
  CHECK(net.layout() == kernels::Layout::cnhw);  // the default
  net.set_layout(layout);
  net.set_input_grad(true);
  nn::Linear<double> fc(net.embedding_dim(), 5, rng);
  nn::Dropout<double> drop(0.3, 8);
  auto model = std::move(net) | std::move(drop) | std::move(fc);
  auto& resnet = model.get<0>();
  // Non-trivial BN affine parameters, so their gradients are exercised.
  for (auto& p : model.params())
    if (p.name.find("bn") != std::string::npos || p.name.find("downsample.1") != std::string::npos)
      for (auto& v : p.value) v += 0.2 * rng.normal();
  Tensor4<double> x({2, 3, 32, 32});
  fill_randn(x, rng);
  if (!train) {  // realistic running statistics: a few training passes on other data
    Tensor4<double> warm({2, 3, 32, 32});
    for (int i = 0; i < 15; ++i) {
      fill_randn(warm, rng);
      model.get<0>().forward(warm);
    }
  }
  model.set_training(train);
  Tensor2<double> target({2, 5});
  for (auto& v : target) v = rng.bernoulli(0.4) ? 1.0 : 0.0;
  Tensor2<double> dz({2, 5});
  auto loss = [&] {
    model.get<1>().set_step(7);  // the same dropout mask on every evaluation
    const auto& z = model.forward(x);
    return test::naive_bce_with_logits(z.data(), target.data(), z.size(), dz.data());
  };
  loss();
  model.zero_grad();
  const Tensor4<double> dx = model.backward(dz);
  auto r = check_gradient("resnet input", std::span<double>(x.data(), x.size()),
                          std::span<const double>(dx.data(), dx.size()), loss, rng, 40);
  CHECK_MESSAGE(r.ok(), r.report());
  std::size_t checked = 0, retried = r.retried;
  double worst = -1e300;
  std::string worst_report;
  for (auto& p : model.params()) {
    std::vector<double> g(p.grad.begin(), p.grad.end());
    double norm = 0;
    for (double v : g) norm += v * v;
    CHECK_MESSAGE(norm > 0, p.name, " has an all-zero gradient: the check would be vacuous");
    auto rp = check_gradient(p.name, p.value, g, loss, rng, p.name == "conv1.weight" ? 60 : 12);
    CHECK_MESSAGE(rp.ok(), rp.report());
    checked += rp.checked;
    retried += rp.retried;
    if (rp.worst_excess > worst) worst = rp.worst_excess, worst_report = rp.report();
  }
  MESSAGE("resnet e2e gradcheck (", std::string(train ? "train" : "eval"), "): ", checked, " parameter elements, ", retried,
          " matched only at eps/10; worst ", worst_report);
  CHECK(retried * 20 < checked);  // kinks are rare; a wrong gradient would fail everywhere
  CHECK(resnet.params().size() == 1 + 2 + 4 * 9 + 4 * 3);
 }
}

TEST_CASE("freezing by prefix: frozen layers get no gradient, layers below are skipped") {
  Rng rng(22);
  nn::ResNet<double> net(tiny(), 4);
  nn::Linear<double> fc(net.embedding_dim(), 3, rng);
  auto model = std::move(net) | std::move(fc);
  Tensor4<double> x({2, 3, 32, 32});
  fill_randn(x, rng);
  Tensor2<double> dz({2, 3});
  fill_randn(dz, rng);

  // Reference: everything trainable.
  model.forward(x);
  model.zero_grad();
  model.backward(dz);
  std::vector<std::vector<double>> full;
  for (auto& p : model.params()) full.emplace_back(p.grad.begin(), p.grad.end());

  CHECK(nn::freeze_all_but(model, {"layer4.", "fc."}) == 12 + 2);
  model.zero_grad();
  model.forward(x);
  model.backward(dz);
  auto ps = model.params();
  for (std::size_t i = 0; i < ps.size(); ++i) {
    const bool trainable = ps[i].name.starts_with("layer4.") || ps[i].name.starts_with("fc.");
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

TEST_CASE("train and eval modes: BN statistics, num_batches_tracked, deterministic eval") {
  nn::ResNet<float> net(tiny(), 5);
  Tensor4<float> x({2, 3, 32, 32});
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
  Rng rng(24);
  nn::ResNet<float> net(tiny(), 6);
  nn::Linear<float> fc(net.embedding_dim(), 3, rng);
  nn::Dropout<float> drop(0.2, 1);
  auto model = std::move(net) | std::move(drop) | std::move(fc);
  nn::freeze_all_but(model, {"layer3.", "layer4.", "fc."});
  Tensor4<float> x({4, 3, 32, 32});
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
  // Non-trivial batch-norm parameters and statistics.
  for (auto& p : net.params())
    if (p.name.find("bn") != std::string::npos || p.name.find("downsample.1") != std::string::npos)
      for (auto& v : p.value) v = static_cast<float>(p.name.ends_with("weight") ? 1 + 0.3 * rng.normal() : 0.2 * rng.normal());
  for (auto& b : net.buffers()) {
    if (b.name.ends_with("running_mean"))
      for (auto& v : b.value) v = static_cast<float>(0.3 * rng.normal());
    if (b.name.ends_with("running_var"))
      for (auto& v : b.value) v = static_cast<float>(0.5 + rng.uniform());
  }
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
  const Tensor2<float> ya = a.forward(x), yb = b.forward(x);
  auto rel = [](const float* p, const float* q, std::size_t n) {
    double num = 0, den = 0;
    for (std::size_t i = 0; i < n; ++i) num += (double(p[i]) - q[i]) * (double(p[i]) - q[i]), den += double(q[i]) * q[i];
    return std::sqrt(num / std::max(den, 1e-300));
  };
  CHECK(rel(yb.data(), ya.data(), ya.size()) < 1e-5);
  Tensor2<float> dz(ya.shape());
  fill_randn(dz, rng);
  a.zero_grad(), b.zero_grad();
  const Tensor4<float> dxa = a.backward(dz), dxb = b.backward(dz);
  CHECK(rel(dxb.data(), dxa.data(), dxa.size()) < 1e-4);
  auto pa = a.params(), pb = b.params();
  REQUIRE(pa.size() == pb.size());
  double worst = 0;
  for (std::size_t i = 0; i < pa.size(); ++i) {
    CAPTURE(pa[i].name);
    const double r = rel(pb[i].grad.data(), pa[i].grad.data(), pa[i].grad.size());
    CHECK(r < 1e-4);
    worst = std::max(worst, r);
  }
  MESSAGE("CNHW vs NCHW: embedding ", rel(yb.data(), ya.data(), ya.size()), ", input gradient ",
          rel(dxb.data(), dxa.data(), dxa.size()), ", worst parameter gradient ", worst);
  // Inference mode: layer1's 3x3 convolutions take Winograd F(4x4,3x3) (forward only), the
  // rest as in eval mode; the embedding agrees with eval mode's to rounding.
  b.set_training(false);
  const Tensor2<float> ye = b.forward(x);
  b.set_inference(true);
  const Tensor2<float> yi = b.forward(x);
  MESSAGE("inference vs eval mode: embedding ", rel(yi.data(), ye.data(), ye.size()));
  CHECK(rel(yi.data(), ye.data(), ye.size()) < 1e-5);
}
