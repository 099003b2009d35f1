// PoolNet tests: structure and names, an end-to-end gradient check in double through Dropout,
// Linear and BCE-with-logits (both layouts, train and eval), freezing, inference mode, and the
// Backbone that holds either network.
#include <doctest/doctest.h>

#include <cmath>
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
// Width 3, two stages on 11x11 gray images: planes 11, 5 (floor of 11/2), 2.
const nn::PoolNetConfig small{3, 2, 1};
}  // namespace

TEST_CASE("PoolNet structure: names, shapes, embedding, errors") {
  nn::PoolNet<float> net(nn::PoolNetConfig{}, 1);  // the peer's 16-32-64-128
  CHECK(net.embedding_dim() == 128);
  std::vector<std::string> names;
  std::vector<Shape<4>> conv_shapes;
  for (auto& p : net.params()) {
    names.push_back(p.name);
    if (p.name.ends_with("conv1.weight") || p.name.ends_with("conv2.weight"))
      conv_shapes.push_back({p.shape[0], p.shape[1], p.shape[2], p.shape[3]});
  }
  REQUIRE(names.size() == 3 * 7);
  CHECK(names[0] == "conv1.weight");
  CHECK(names[1] == "bn1.weight");
  CHECK(names[3] == "layer1.conv1.weight");
  CHECK(names[6] == "layer1.conv2.weight");
  CHECK(names[8] == "layer1.bn2.bias");
  CHECK(names.back() == "layer3.bn2.bias");
  const std::vector<Shape<4>> want{{16, 1, 3, 3},   {32, 16, 3, 3}, {32, 32, 3, 3},  {64, 32, 3, 3},
                                   {64, 64, 3, 3}, {128, 64, 3, 3}, {128, 128, 3, 3}};
  CHECK(conv_shapes == want);
  CHECK(net.buffers().size() == 3 * 7);  // running mean, var, num_batches_tracked per bn
  CHECK(net.forward(Tensor4<float>({2, 1, 28, 28})).shape() == Shape<2>{2, 128});
  CHECK(net.forward(Tensor4<float>({2, 1, 8, 8})).shape() == Shape<2>{2, 128});  // 8 -> 4 -> 2 -> 1
  CHECK_THROWS_WITH_AS(net.forward(Tensor4<float>({2, 1, 7, 8})), doctest::Contains("too small for 3 2x2 poolings"),
                       sieve::Error);
  CHECK_THROWS_WITH_AS(net.forward(Tensor4<float>({2, 3, 28, 28})), doctest::Contains("expected 1"), sieve::Error);
  CHECK_THROWS_WITH_AS(nn::PoolNet<float>(nn::PoolNetConfig{16, 0, 1}), doctest::Contains("1 to 4 supported"),
                       sieve::Error);
}

TEST_CASE("PoolNet + Dropout + Linear + BCE: end-to-end gradient check in double") {
  for (bool max_pool : {false, true}) {
    for (kernels::Layout layout : {kernels::Layout::cnhw, kernels::Layout::nchw})
      for (bool train : {true, false}) {
        CAPTURE(max_pool);
        CAPTURE(train);
        CAPTURE(std::string(kernels::layout_name(layout)));
        Rng rng(31);
        nn::PoolNetConfig cfg = small;
        cfg.max_pool = max_pool;
        nn::PoolNet<double> net(cfg, 3);
        CHECK(net.layout() == kernels::Layout::cnhw);  // the default
        net.set_layout(layout);
        net.set_input_grad(true);
        nn::Linear<double> fc(net.embedding_dim(), 4, rng);
        auto model = std::move(net) | nn::Dropout<double>(0.3, 8) | std::move(fc);
        const auto r = test::check_classifier_gradients(model, Shape<4>{3, 1, 11, 11}, 4, train, rng,
                                                        [](const std::string&) { return 16; });
        MESSAGE("poolnet e2e gradcheck (", std::string(train ? "train" : "eval"), "): ", r.checked,
                " parameter elements, ", r.retried, " matched only at eps/10; worst ", r.worst);
        CHECK(r.retried * 10 < r.checked);  // max-pool and ReLU kinks are rare with random inputs
      }
  }
}

TEST_CASE("PoolNet freezing: frozen units get no gradient, trainable ones the full one") {
  Rng rng(32);
  nn::PoolNet<double> net(small, 4);
  nn::Linear<double> fc(net.embedding_dim(), 3, rng);
  auto model = std::move(net) | std::move(fc);
  Tensor4<double> x({2, 1, 11, 11});
  fill_randn(x, rng);
  Tensor2<double> dz({2, 3});
  fill_randn(dz, rng);
  model.forward(x);
  model.zero_grad();
  model.backward(dz);
  std::vector<std::vector<double>> full;
  for (auto& p : model.params()) full.emplace_back(p.grad.begin(), p.grad.end());
  CHECK(nn::freeze_all_but(model, {"layer2.", "fc."}) == 6 + 2);
  model.zero_grad();
  model.forward(x);
  model.backward(dz);
  auto ps = model.params();
  for (std::size_t i = 0; i < ps.size(); ++i) {
    const bool trainable = ps[i].name.starts_with("layer2.") || ps[i].name.starts_with("fc.");
    CAPTURE(ps[i].name);
    double diff = 0;
    for (std::size_t j = 0; j < full[i].size(); ++j)
      diff = std::max(diff, std::abs(ps[i].grad[j] - (trainable ? full[i][j] : 0.0)));
    CHECK(diff <= 1e-12);
  }
}

TEST_CASE("PoolNet inference mode agrees with eval; Backbone forwards to the network it holds") {
  Rng rng(33);
  for (const std::size_t width : {4, 32}) {  // width 32 at 16x16: Winograd with kept weights
    CAPTURE(width);
    nn::PoolNet<float> net(nn::PoolNetConfig{width, 2, 3}, 9);
    for (auto& p : net.params())
      if (p.name.find("bn") != std::string::npos)
        for (auto& v : p.value) v = static_cast<float>(p.name.ends_with("weight") ? 1 + 0.3 * rng.normal() : 0.2 * rng.normal());
    Tensor4<float> x({4, 3, 16, 16});
    fill_randn(x, rng);
    for (int i = 0; i < 3; ++i) net.forward(x);  // running statistics
    nn::Backbone<float> bb(net);
    net.set_training(false);
    const Tensor2<float> eval = net.forward(x);
    net.set_inference(true);
    const Tensor2<float> inf = net.forward(x);
    CHECK(test::rel_err(inf.data(), eval.data(), eval.size()) < 1e-5);
    CHECK_THROWS_WITH_AS(net.backward(Tensor2<float>(inf.shape())), doctest::Contains("inference mode"),
                         sieve::Error);
    net.set_inference(false);
    CHECK(net.forward(x) == eval);

    REQUIRE(bb.pool_net() != nullptr);
    CHECK(bb.resnet() == nullptr);
    CHECK(bb.embedding_dim() == net.embedding_dim());
    bb.set_training(false);
    CHECK(bb.forward(x) == eval);
    CHECK(bb.output() == eval);
    CHECK(bb.params().size() == net.params().size());
  }
  nn::Backbone<float> rb(nn::ResNet<float>(nn::ResNetConfig{{1}, 4, 1, nn::BlockKind::basic, nn::StemKind::cifar}, 1));
  REQUIRE(rb.resnet() != nullptr);
  CHECK(rb.params().front().name == "conv1.weight");
  CHECK(rb.forward(Tensor4<float>({1, 1, 8, 8})).shape() == Shape<2>{1, 4});
}

TEST_CASE("Classifier: backbone | dropout | head, the head drawn from its own stream, freezing modes") {
  const sieve::nn::PoolNetConfig pc{4, 2, 1, false};  // embedding 16
  sieve::nn::Classifier<float> m(sieve::nn::Backbone<float>(sieve::nn::PoolNet<float>(pc, 7)), 5, 0.5, 7, 99);
  CHECK(m.embedding_dim() == 16);
  CHECK(m.num_classes() == 5);
  // The head is torchvision's Linear init from (seed 7, init purpose, stream 1), whatever the backbone.
  sieve::Rng rng(sieve::derive_seed(7, sieve::RngPurpose::init), 1);
  sieve::nn::Linear<float> fc(16, 5, rng, "fc");
  const auto& w = m.head().weight();
  REQUIRE(w.size() == fc.weight().size());
  for (std::size_t i = 0; i < w.size(); ++i) CHECK(w.data()[i] == fc.weight().data()[i]);
  // Eval mode: logits = fc(embedding), dropout the identity.
  m.set_training(false);
  CHECK_FALSE(m.training());
  sieve::Tensor4f x = sieve::Tensor4f::from_shape({2, 1, 8, 8});
  for (std::size_t i = 0; i < x.size(); ++i) x.data()[i] = static_cast<float>((i * 37) % 11) / 11.0f - 0.4f;
  const sieve::Tensor2f logits = m.forward(x);
  const sieve::Tensor2f emb = m.embedding();
  REQUIRE(emb.shape() == std::array<std::size_t, 2>{2, 16});
  const sieve::Tensor2f want = fc.forward(emb);
  for (std::size_t i = 0; i < logits.size(); ++i) CHECK(logits.data()[i] == doctest::Approx(want.data()[i]));
  // Freezing: backbone = the head alone trains; stem = all but conv1/bn1; none = all.
  auto trainable = [&] {
    std::vector<std::string> names;
    for (auto& p : m.params())
      if (!p.frozen || !*p.frozen) names.push_back(p.name);
    return names;
  };
  const std::size_t all = m.params().size();
  sieve::nn::apply_freeze(m, sieve::nn::FreezeMode::backbone);
  CHECK(trainable() == std::vector<std::string>{"fc.weight", "fc.bias"});
  sieve::nn::apply_freeze(m, sieve::nn::FreezeMode::stem);
  const auto stem = trainable();
  CHECK(stem.size() == all - 3);  // conv1.weight, bn1.weight, bn1.bias
  for (const auto& n : stem) CHECK_FALSE((n.starts_with("conv1.") || n.starts_with("bn1.")));
  sieve::nn::apply_freeze(m, sieve::nn::FreezeMode::none);
  CHECK(trainable().size() == all);
  CHECK(sieve::nn::parse_freeze_mode("stem") == sieve::nn::FreezeMode::stem);
  CHECK_THROWS_WITH_AS(sieve::nn::parse_freeze_mode("head"), doctest::Contains("'head'"), sieve::Error);
  CHECK_THROWS_AS(sieve::nn::Classifier<float>(sieve::nn::Backbone<float>(sieve::nn::PoolNet<float>(pc, 7)), 0, 0.0, 7, 7),
                  sieve::Error);
}
