// Stage tests: concepts, gradient checks of every stage's input and parameters through its
// own buffers, sentinels (param grads accumulate, input grads are assigned), modes, shape
// errors, torchvision names.
#include <doctest/doctest.h>

#include <cmath>
#include <array>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "sieve/core/pipeline.hpp"
#include "sieve/nn/nn.hpp"
#include "support/gradcheck.hpp"
#include "support/naive.hpp"

using namespace sieve;
using sieve::test::check_gradient;
using sieve::test::fill_randn;

static_assert(TrainableStage<nn::Conv2d<float>> && TrainableStage<nn::BatchNorm2d<double>>);
static_assert(TrainableStage<nn::ReLU<float>> && TrainableStage<nn::MaxPool2d<float>>);
static_assert(TrainableStage<nn::GlobalPool<float>> && TrainableStage<nn::Dropout<float>>);
// Views: a tensor gives a mutable or const view, a const tensor or const view never a mutable one.
static_assert(std::is_convertible_v<Tensor4<float>&, TensorRef4<float>>);
static_assert(std::is_convertible_v<const Tensor4<float>&, TensorRef4<const float>>);
static_assert(std::is_convertible_v<TensorRef4<float>, TensorRef4<const float>>);
static_assert(!std::is_convertible_v<const Tensor4<float>&, TensorRef4<float>>);
static_assert(!std::is_convertible_v<TensorRef4<const float>, TensorRef4<float>>);
static_assert(TrainableStage<nn::Linear<float>> && TrainableStage<nn::Bottleneck<float>>);
static_assert(TrainableStage<nn::BasicBlock<double>> && TrainableStage<nn::ResidualBlock<float>>);
static_assert(nn::Bottleneck<float>::expansion == 4 && nn::BasicBlock<float>::expansion == 1);
static_assert(TrainableStage<nn::ResNet<float>> && TrainableStage<nn::ResNet<double>>);
static_assert(Chainable<nn::ResNet<float>, nn::Dropout<float>> && Chainable<nn::Dropout<float>, nn::Linear<float>>);
static_assert(!Chainable<nn::Linear<float>, nn::ResNet<float>>);      // [N,F] does not feed [N,C,H,W]
static_assert(!Chainable<nn::ResNet<float>, nn::Linear<double>>);    // precisions do not mix
static_assert(!Chainable<nn::Conv2d<float>, nn::Linear<float>>);     // rank 4 does not feed rank 2
static_assert(PlainForward<nn::Dropout<float>>);  // dropout keys its mask by its own step counter

namespace {


template <std::size_t R>
double dot(const Tensor<double, R>& a, const Tensor<double, R>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a.data()[i] * b.data()[i];
  return s;
}

// Gradient-check a stage: input and every parameter, f = sum(y * Rw); parameter gradients are
// prefilled with c = 0.25 (they must accumulate), the input gradient buffer is never read.
template <class S, class In>
void gradcheck_stage(S& s, In x, Rng& rng, const char* what, std::size_t samples = 120) {
  using Out = typename S::output_type;
  Out Rw = s.forward(x);
  fill_randn(Rw, rng);
  auto loss = [&] { return dot(s.forward(x), Rw); };
  loss();
  s.zero_grad();
  auto ps = s.params();
  for (auto& p : ps)
    for (auto& g : p.grad) g = 0.25;
  In dx = s.backward(Rw);
  for (double v : dx) REQUIRE(std::isfinite(v));
  auto r = check_gradient(std::string(what) + " dx", std::span<double>(x.data(), x.size()),
                          std::span<const double>(dx.data(), dx.size()), loss, rng, samples);
  CHECK_MESSAGE(r.ok(), r.report());
  for (auto& p : ps) {
    std::vector<double> g(p.grad.begin(), p.grad.end());
    for (auto& v : g) v -= 0.25;
    auto rp = check_gradient(std::string(what) + " " + p.name, p.value, g, loss, rng, samples);
    CHECK_MESSAGE(rp.ok(), rp.report());
  }
}

}  // namespace

TEST_CASE("Conv2d stage: agrees with naive, gradients, names, shape errors") {
  Rng rng(1);
  nn::Conv2d<double> conv(3, 4, 3, 2, 1, rng);
  Tensor4<double> x({2, 3, 7, 5});
  fill_randn(x, rng);
  const auto& y = conv.forward(x);
  CHECK(y.shape() == Shape<4>{2, 4, 4, 3});
  std::vector<double> xv(x.begin(), x.end()), wv(conv.weight().begin(), conv.weight().end());
  const auto ref = test::naive_conv2d(xv, wv, 2, 3, 7, 5, 4, 3, 3, 2, 2, 1, 1);
  CHECK(test::rel_err(y.data(), ref, ref.size()) < 1e-14);
  gradcheck_stage(conv, x, rng, "Conv2d");
  auto ps = conv.params();
  REQUIRE(ps.size() == 1);
  CHECK(ps[0].name == "weight");
  CHECK(ps[0].shape == std::vector<std::size_t>{4, 3, 3, 3});
  CHECK(ps[0].decay);
  Tensor4<double> bad({2, 5, 7, 5});
  CHECK_THROWS_WITH_AS(conv.forward(bad), doctest::Contains("has C=5 but weight [4,3,3,3] expects C=3"),
                       sieve::Error);
  conv.forward(x);
  Tensor4<double> bad_dy({2, 4, 4, 4});
  CHECK_THROWS_AS(conv.backward(bad_dy), sieve::Error);
  // Kaiming fan_out init: std sqrt(2 / (K*3*3)).
  nn::Conv2d<double> big(64, 64, 3, 1, 1, rng);
  double ss = 0;
  for (double v : big.weight()) ss += v * v;
  CHECK(std::sqrt(ss / big.weight().size()) == doctest::Approx(std::sqrt(2.0 / 576)).epsilon(0.02));
}

TEST_CASE("Conv2d stage: kept Winograd weights follow every change of the weights") {
  // 64 channels at 16x16 take Winograd; the stage keeps the transformed weights between
  // forwards and must notice any write to the weights (an optimizer step, a loaded state).
  Rng rng(12);
  nn::Conv2d<float> conv(64, 64, 3, 1, 1, rng);
  Tensor4<float> x({2, 64, 16, 16});
  fill_randn(x, rng);
  const kernels::Conv2dDims d{2, 64, 16, 16, 64, conv.geom()};
  REQUIRE(kernels::conv2d_uses_winograd(d));
  std::vector<float> ws(kernels::conv2d_workspace_size(d)), fresh(x.size());
  auto direct = [&] {  // the kernel transforming the current weights itself
    kernels::conv2d_forward(x.data(), conv.weight().data(), fresh.data(), d, ws.data(), ws.size());
  };
  const Tensor4<float> y1 = conv.forward(x);
  direct();
  CHECK(std::memcmp(y1.data(), fresh.data(), fresh.size() * sizeof(float)) == 0);
  for (const std::size_t at : {std::size_t{0}, conv.weight().size() - 1}) {
    conv.weight().data()[at] += 0.5f;  // one weight, first and last
    const Tensor4<float>& y2 = conv.forward(x);
    direct();
    CHECK(std::memcmp(y2.data(), fresh.data(), fresh.size() * sizeof(float)) == 0);
    CHECK(std::memcmp(y2.data(), y1.data(), fresh.size() * sizeof(float)) != 0);
  }
  // Inference (forward only) takes F(4x4,3x3) where training takes F(2x2,3x3): the kept
  // weights follow the tile size too, with the weights unchanged.
  REQUIRE(kernels::conv2d_winograd_tile(d) == 2);
  for (const bool inference : {true, false}) {
    CAPTURE(inference);
    conv.set_forward_only(inference);
    auto df = d;
    df.forward_only = inference;
    REQUIRE(kernels::conv2d_winograd_tile(df) == (inference ? 4u : 2u));
    ws.resize(kernels::conv2d_workspace_size(df));
    const Tensor4<float>& y3 = conv.forward(x);
    kernels::conv2d_forward(x.data(), conv.weight().data(), fresh.data(), df, ws.data(), ws.size());
    CHECK(std::memcmp(y3.data(), fresh.data(), fresh.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("BatchNorm2d stage: train/eval, buffers, counter, gradients") {
  Rng rng(2);
  nn::BatchNorm2d<double> bn(3);
  for (auto& v : bn.weight()) v = 1 + 0.3 * rng.normal();
  for (auto& v : bn.bias()) v = 0.3 * rng.normal();
  Tensor4<double> x({2, 3, 3, 2});
  fill_randn(x, rng, 2.0);
  bn.forward(x);
  CHECK(bn.num_batches_tracked() == 1);
  gradcheck_stage(bn, x, rng, "BatchNorm2d(train)");
  bn.set_training(false);
  const auto rm = bn.running_mean();
  gradcheck_stage(bn, x, rng, "BatchNorm2d(eval)");
  CHECK(bn.running_mean() == rm);  // eval never touches the running stats
  auto bufs = bn.buffers();
  REQUIRE(bufs.size() == 3);
  CHECK(bufs[0].name == "running_mean");
  CHECK(bufs[1].name == "running_var");
  CHECK(bufs[2].name == "num_batches_tracked");
  CHECK(bufs[2].is_count());
  CHECK(bufs[2].shape.empty());
  auto ps = bn.params();
  CHECK(ps[0].name == "weight");
  CHECK(ps[1].name == "bias");
  CHECK(!ps[0].decay);
  Tensor4<double> bad({2, 4, 3, 2});
  CHECK_THROWS_WITH_AS(bn.forward(bad), doctest::Contains("has C=4 but the layer has 3 channels"), sieve::Error);
}

TEST_CASE("ReLU, MaxPool2d, GlobalPool (avg and max) stages: gradients") {
  Rng rng(3);
  // Inputs shifted away from 0 so no perturbation crosses the ReLU kink.
  Tensor4<double> x({2, 2, 5, 4});
  for (auto& v : x) {
    const double u = rng.normal();
    v = u + (u >= 0 ? 0.05 : -0.05);
  }
  nn::ReLU<double> relu;
  gradcheck_stage(relu, x, rng, "ReLU");
  nn::MaxPool2d<double> pool;
  CHECK(pool.forward(x).shape() == Shape<4>{2, 2, 3, 2});
  gradcheck_stage(pool, x, rng, "MaxPool2d");
  nn::GlobalAvgPool<double> gap;
  CHECK(gap.forward(x).shape() == Shape<2>{2, 2});
  gradcheck_stage(gap, x, rng, "GlobalAvgPool");
  Tensor2<double> bad({2, 3});
  CHECK_THROWS_AS(gap.backward(bad), sieve::Error);
  nn::GlobalPool<double> gmp(nn::GlobalPoolKind::max);
  CHECK(gmp.forward(x).shape() == Shape<2>{2, 2});
  gradcheck_stage(gmp, x, rng, "GlobalMaxPool");
  CHECK_THROWS_AS(gmp.backward(bad), sieve::Error);
}

TEST_CASE("Linear stage: init bounds, names, gradients, shape errors") {
  Rng rng(4);
  nn::Linear<double> fc(6, 3, rng);
  for (double v : fc.weight()) CHECK(std::abs(v) <= 1 / std::sqrt(6.0));
  Tensor2<double> x({4, 6});
  fill_randn(x, rng);
  gradcheck_stage(fc, x, rng, "Linear");
  auto ps = fc.params();
  CHECK(ps[0].name == "fc.weight");
  CHECK(ps[1].name == "fc.bias");
  CHECK(ps[0].decay);
  CHECK(!ps[1].decay);
  Tensor2<double> bad({4, 5});
  CHECK_THROWS_WITH_AS(fc.forward(bad), doctest::Contains("expects 6 features"), sieve::Error);
}

TEST_CASE("Dropout stage: steps, eval identity, backward mask, gradients with a fixed step") {
  nn::Dropout<double> drop(0.5, 99);
  Tensor2<double> x = xt::ones<double>({4, 8});
  const Tensor2<double> y0 = drop.forward(x);
  const Tensor2<double> y1 = drop.forward(x);
  CHECK(drop.step() == 2);
  CHECK(y0 != y1);
  const auto& dx = drop.backward(x);
  CHECK(dx == y1);  // the mask of the last forward
  drop.set_step(0);
  CHECK(drop.forward(x) == y0);  // resumable: the mask is a function of (seed, step)
  drop.set_training(false);
  CHECK(drop.forward(x) == x);
  CHECK(drop.step() == 1);
}

TEST_CASE("Bottleneck: gradients with and without downsample, torchvision names") {
  Rng rng(5);
  for (std::size_t stride : {1, 2}) {
    CAPTURE(stride);
    // in == planes*4 and stride 1: identity shortcut; stride 2: downsample branch.
    nn::Bottleneck<double> block(8, 2, stride, rng);
    CHECK(block.has_downsample() == (stride == 2));
    Tensor4<double> x({2, 8, 5, 4});
    fill_randn(x, rng);
    gradcheck_stage(block, x, rng, stride == 1 ? "Bottleneck" : "Bottleneck(ds)", 60);
    auto ps = block.params();
    CHECK(ps.size() == (stride == 2 ? 12u : 9u));
    CHECK(ps[0].name == "conv1.weight");
    CHECK(ps[8].name == "bn3.bias");
    if (stride == 2) {
      CHECK(ps[9].name == "downsample.0.weight");
      CHECK(ps[11].name == "downsample.1.bias");
      CHECK(block.buffers()[9].name == "downsample.1.running_mean");
    }
  }
  nn::Bottleneck<double> block(3, 2, 1, rng);
  Tensor4<double> bad({1, 4, 5, 5});
  CHECK_THROWS_AS(block.forward(bad), sieve::Error);
}

namespace {
// Training-mode reference of torchvision's BasicBlock from the naive kernels, in double:
// relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), parameters in params() order.
std::vector<double> naive_basic_block(const Tensor4<double>& x, const std::vector<ParamRef<double>>& ps,
                                      std::size_t planes, std::size_t stride) {
  const std::size_t N = x.shape()[0], C = x.shape()[1], H = x.shape()[2], W = x.shape()[3];
  const std::size_t OH = (H - 1) / stride + 1, OW = (W - 1) / stride + 1;
  auto vec = [](const auto& r) { return std::vector<double>(r.begin(), r.end()); };
  auto bn = [&](const std::vector<double>& v, std::size_t at) {
    std::vector<double> mean, var;
    return test::naive_batch_norm_train(v, vec(ps[at].value), vec(ps[at + 1].value), N, planes, OH * OW, 1e-5,
                                        mean, var);
  };
  auto relu = [](std::vector<double> v) {
    for (auto& e : v) e = std::max(e, 0.0);
    return v;
  };
  const std::vector<double> xv = vec(x);
  const auto h1 = relu(bn(test::naive_conv2d(xv, vec(ps[0].value), N, C, H, W, planes, 3, 3, stride, stride, 1, 1), 1));
  const auto h2 = bn(test::naive_conv2d(h1, vec(ps[3].value), N, planes, OH, OW, planes, 3, 3, 1, 1, 1, 1), 4);
  const auto sc = ps.size() == 9
                      ? bn(test::naive_conv2d(xv, vec(ps[6].value), N, C, H, W, planes, 1, 1, stride, stride, 0, 0), 7)
                      : xv;
  std::vector<double> y(h2.size());
  for (std::size_t i = 0; i < y.size(); ++i) y[i] = std::max(h2[i] + sc.at(i), 0.0);
  return y;
}
}  // namespace

TEST_CASE("BasicBlock: forward against the naive reference, gradients, sentinels, torchvision names") {
  Rng rng(15);
  struct Case {
    std::size_t in, planes, stride;
    bool ds;
  };
  // Identity shortcut; downsample for a channel change; downsample for a stride.
  for (const Case c : {Case{3, 3, 1, false}, Case{3, 4, 1, true}, Case{4, 4, 2, true}}) {
    CAPTURE(c.in);
    CAPTURE(c.planes);
    CAPTURE(c.stride);
    nn::BasicBlock<double> block(c.in, c.planes, c.stride, rng);
    CHECK(block.kind() == nn::BlockKind::basic);
    CHECK(block.has_downsample() == c.ds);
    auto ps = block.params();
    REQUIRE(ps.size() == (c.ds ? 9u : 6u));
    // Non-trivial batch-norm affine parameters (their gradients are checked too).
    for (auto& p : ps)
      if (p.name.find("bn") != std::string::npos || p.name.starts_with("downsample.1."))
        for (auto& v : p.value) v = (p.name.ends_with("weight") ? 1.0 : 0.0) + 0.3 * rng.normal();
    Tensor4<double> x({2, c.in, 5, 4});
    fill_randn(x, rng);
    const auto& y = block.forward(x);
    REQUIRE(y.shape() == Shape<4>{2, c.planes, c.stride == 1 ? 5u : 3u, c.stride == 1 ? 4u : 2u});
    const auto ref = naive_basic_block(x, ps, c.planes, c.stride);
    CHECK(test::rel_err(y.data(), ref, ref.size()) < 1e-12);
    gradcheck_stage(block, x, rng, c.ds ? "BasicBlock(ds)" : "BasicBlock", 60);

    // Sentinel: an input gradient prefilled with NaN is fully overwritten, through the view
    // path ResNet uses and in place over dy (the trunk) when the shapes allow.
    Tensor4<double> dy(block.forward(x).shape());
    fill_randn(dy, rng);
    const Tensor4<double> dx = block.backward(dy);
    std::array<std::size_t, nn::ResidualSlots::count> need{};
    block.scratch_needs(need);
    CHECK(need[nn::ResidualSlots::trunk] == x.size());
    CHECK(need[nn::ResidualSlots::p2] == (c.ds ? x.size() : 0u));  // only the downsample's dx
    std::vector<double> buf(x.size(), std::numeric_limits<double>::quiet_NaN());
    block.backward_into(TensorRef4<const double>(dy), TensorRef4<double>(buf.data(), x.shape()), true);
    CHECK(test::rel_err(buf.data(), dx.data(), dx.size()) == 0.0);
    if (!c.ds) {
      Tensor4<double> inplace = dy;
      block.backward_into(TensorRef4<const double>(inplace), TensorRef4<double>(inplace), true);
      CHECK(test::rel_err(inplace.data(), dx.data(), dx.size()) == 0.0);
    }

    // torchvision's names and shapes.
    CHECK(ps[0].name == "conv1.weight");
    CHECK(ps[0].shape == std::vector<std::size_t>{c.planes, c.in, 3, 3});
    CHECK(ps[2].name == "bn1.bias");
    CHECK(ps[3].name == "conv2.weight");
    CHECK(ps[3].shape == std::vector<std::size_t>{c.planes, c.planes, 3, 3});
    CHECK(ps[5].name == "bn2.bias");
    const auto bs = block.buffers();
    REQUIRE(bs.size() == (c.ds ? 9u : 6u));
    CHECK(bs[3].name == "bn2.running_mean");
    if (c.ds) {
      CHECK(ps[6].name == "downsample.0.weight");
      CHECK(ps[6].shape == std::vector<std::size_t>{c.planes, c.in, 1, 1});
      CHECK(ps[7].name == "downsample.1.weight");
      CHECK(bs[8].name == "downsample.1.num_batches_tracked");
    }
  }
}

TEST_CASE("BasicBlock: mismatched shapes and a backward after an inference forward throw") {
  Rng rng(16);
  nn::BasicBlock<double> block(3, 3, 1, rng);
  Tensor4<double> bad({1, 4, 5, 5});
  CHECK_THROWS_WITH_AS(block.forward(bad), doctest::Contains("has C=4"), sieve::Error);
  Tensor4<double> x({2, 3, 5, 5});
  fill_randn(x, rng);
  block.forward(x);
  Tensor4<double> bad_dy({2, 3, 5, 4});
  CHECK_THROWS_WITH_AS(block.backward(bad_dy), doctest::Contains("dy [2,3,5,4] differs from the output [2,3,5,5]"),
                       sieve::Error);
  Tensor4<double> dy({2, 3, 5, 5});
  block.backward(dy);  // reserves the scratch slots
  std::vector<double> buf(x.size());
  CHECK_THROWS_WITH_AS(block.backward_into(TensorRef4<const double>(dy), TensorRef4<double>(buf.data(), {2, 3, 25, 1}),
                                           true),
                       doctest::Contains("dx [2,3,25,1] differs from the input [2,3,5,5]"), sieve::Error);
  // An inference-mode forward keeps nothing for backward.
  block.set_training(false);
  block.set_inference(true);
  block.forward(x);
  CHECK_THROWS_WITH_AS(block.backward(dy), doctest::Contains("inference mode"), sieve::Error);
}

TEST_CASE("BatchNorm2d with fused ReLU: output, gradients, in-place backward") {
  Rng rng(6);
  for (bool train : {true, false}) {
    CAPTURE(train);
    nn::BatchNorm2d<double> plain(3), fused(3);
    fused.set_fused_relu(true);
    for (auto* b : {&plain, &fused}) b->set_training(train);
    for (std::size_t c = 0; c < 3; ++c) {
      fused.weight()(c) = plain.weight()(c) = 1 + 0.3 * rng.normal();
      fused.bias()(c) = plain.bias()(c) = 0.3 * rng.normal();
    }
    Tensor4<double> x({2, 3, 3, 4});
    fill_randn(x, rng, 1.5);
    const Tensor4<double> yp = plain.forward(x);
    const auto& yf = fused.forward(x);
    for (std::size_t i = 0; i < yp.size(); ++i) CHECK(yf.data()[i] == std::max(yp.data()[i], 0.0));
    gradcheck_stage(fused, x, rng, train ? "BatchNorm2d+ReLU(train)" : "BatchNorm2d+ReLU(eval)");
    Tensor4<double> R(yf.shape());
    fill_randn(R, rng);
    fused.forward(x);
    const Tensor4<double> out = fused.backward(R);
    Tensor4<double> inplace = R;
    fused.backward_into(inplace, inplace, true);
    CHECK(test::rel_err(inplace.data(), out.data(), out.size()) == 0.0);
  }
}

TEST_CASE("ScratchPool: views need a reservation; slots only grow") {
  nn::ScratchPool<float> pool;
  CHECK_THROWS_WITH_AS(pool.view(2, {1, 2, 3, 4}), doctest::Contains("slot 2 holds 0 elements"), sieve::Error);
  pool.reserve(2, 24);
  const TensorRef4<float> a = pool.view(2, {1, 2, 3, 4});
  CHECK(a.size() == 24);
  CHECK(a.shape == Shape<4>{1, 2, 3, 4});
  pool.reserve(2, 10);  // smaller: the slot keeps its buffer, views stay valid
  CHECK(pool.view(2, {2, 1, 1, 5}).data == a.data);
  CHECK_THROWS_WITH_AS(pool.view(2, {5, 5, 1, 1}), doctest::Contains("needs 25"), sieve::Error);
  CHECK(pool.held() == 24);
  pool.reserve(0, 7);
  CHECK(pool.held() == 31);
}

TEST_CASE("Conv2d, BatchNorm2d, MaxPool2d: view backward checks shapes and matches the tensor path") {
  Rng rng(8);
  nn::Conv2d<double> conv(3, 4, 3, 1, 1, rng);
  Tensor4<double> x({2, 3, 5, 5});
  fill_randn(x, rng);
  const auto& y = conv.forward(x);
  Tensor4<double> dy(y.shape());
  fill_randn(dy, rng);
  const Tensor4<double> dx_tensor = conv.backward(dy, true);
  std::vector<double> buf(x.size(), std::numeric_limits<double>::quiet_NaN());
  conv.backward_into(TensorRef4<const double>(dy), TensorRef4<double>(buf.data(), x.shape()), true);
  CHECK(test::rel_err(buf.data(), dx_tensor.data(), buf.size()) == 0.0);
  CHECK_THROWS_WITH_AS(conv.backward_into(TensorRef4<const double>(dy), TensorRef4<double>(buf.data(), {2, 3, 5, 4}),
                                          true),
                       doctest::Contains("differs from the input [2,3,5,5]"), sieve::Error);
  CHECK_THROWS_AS(conv.backward_into(TensorRef4<const double>(dy), TensorRef4<double>(dy), true), sieve::Error);

  nn::BatchNorm2d<double> bn(3);
  bn.forward(x);
  CHECK_THROWS_WITH_AS(bn.backward_into(TensorRef4<const double>(x), TensorRef4<double>(buf.data(), {2, 3, 25, 1}),
                                        true),
                       doctest::Contains("BatchNorm2d.backward_into: dx [2,3,25,1]"), sieve::Error);
  Tensor4<double> y3({2, 3, 5, 4});
  CHECK_THROWS_WITH_AS(bn.forward_into(x, TensorRef4<double>(y3)), doctest::Contains("differs from x [2,3,5,5]"),
                       sieve::Error);

  nn::MaxPool2d<double> pool;
  const auto& py = pool.forward(x);
  Tensor4<double> pdy(py.shape());
  fill_randn(pdy, rng);
  const Tensor4<double> pdx = pool.backward(pdy);
  std::fill(buf.begin(), buf.end(), std::numeric_limits<double>::quiet_NaN());
  pool.backward_into(TensorRef4<const double>(pdy), TensorRef4<double>(buf.data(), x.shape()));
  CHECK(test::rel_err(buf.data(), pdx.data(), buf.size()) == 0.0);
  CHECK_THROWS_AS(pool.backward_into(TensorRef4<const double>(x), TensorRef4<double>(buf.data(), x.shape())),
                  sieve::Error);
  // A values-only forward (inference) gives the same output and refuses backward.
  const Tensor4<double> py_kept = py;
  CHECK(test::rel_err(pool.forward(x, false).data(), py_kept.data(), py_kept.size()) == 0.0);
  CHECK_THROWS_WITH_AS(pool.backward(pdy), doctest::Contains("kept no argmax"), sieve::Error);
}
