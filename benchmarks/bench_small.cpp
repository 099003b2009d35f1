// Whole-model throughput of the small-image networks (basic-block ResNets with the 3x3 CIFAR
// stem, and PoolNet, the fast recipe's default) + a linear head with an "other" class: eval = inference-mode forward; train = forward
// in train mode, softmax cross-entropy with label smoothing, backward, and a Nesterov SGD
// step (the fast recipe's step). items_per_second = images/s; GFLOPs = nominal multiply-adds
// x 2 of a direct convolution (x 3 for a training step: forward, input and weight gradients),
// per second. sieve runs on 2 threads (SIEVE_BENCH_THREADS overrides).
// Cases: <mode>/<net>/<channels>x<size>/<batch>; benchmarks/torch_small.py prints the same for PyTorch.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "sieve/core/pipeline.hpp"
#include "sieve/loss/cross_entropy.hpp"
#include "sieve/nn/nn.hpp"
#include "sieve/optim/sgd.hpp"

namespace {

using namespace sieve;

struct SmallNet {
  const char* name;
  std::vector<std::size_t> blocks;  // PoolNet: one entry per stage
  std::size_t width;
  bool pool = false;  // nn::PoolNet instead of a basic-block ResNet
};

const SmallNet kNets[] = {
    {"poolnetw16", {1, 1, 1}, 16, true}, {"poolnetw24", {1, 1, 1}, 24, true},
    {"resnet8w16", {1, 1, 1}, 16},  {"resnet8w32", {1, 1, 1}, 32},   {"resnet8w64", {1, 1, 1}, 64},
    {"resnet10w16", {1, 1, 1, 1}, 16}, {"resnet10w24", {1, 1, 1, 1}, 24}, {"resnet10w32", {1, 1, 1, 1}, 32},
    {"resnet14w32", {2, 2, 2}, 32}, {"resnet20w16", {3, 3, 3}, 16},  {"resnet18w64", {2, 2, 2, 2}, 64},
};

nn::ResNetConfig config(const SmallNet& n, std::size_t channels) {
  return {n.blocks, n.width, channels, nn::BlockKind::basic, nn::StemKind::cifar};
}

nn::Backbone<float> make_net(const SmallNet& n, std::size_t channels) {
  if (n.pool) return nn::Backbone<float>(nn::PoolNet<float>(nn::PoolNetConfig{n.width, n.blocks.size(), channels}, 1));
  return nn::Backbone<float>(nn::ResNet<float>(config(n, channels), 1));
}

double conv_macs(double hw, double cin, double cout, double k) { return hw * cin * cout * k * k; }

// PoolNet: the stem and each stage's first convolution at the stage's input size, the second
// after the 2x2 pool.
double pool_net_macs(const SmallNet& n, std::size_t channels, std::size_t size, std::size_t classes) {
  double macs = conv_macs(static_cast<double>(size * size), static_cast<double>(channels), static_cast<double>(n.width), 3);
  std::size_t in = n.width, s = size;
  for (std::size_t st = 1; st <= n.blocks.size(); ++st) {
    const std::size_t out = n.width << st;
    macs += conv_macs(static_cast<double>(s * s), static_cast<double>(in), static_cast<double>(out), 3);
    s /= 2;
    macs += conv_macs(static_cast<double>(s * s), static_cast<double>(out), static_cast<double>(out), 3);
    in = out;
  }
  return macs + static_cast<double>(in * classes);
}

// Multiply-adds of one forward of a direct convolution, summed over the network.
double nominal_macs(const SmallNet& n, std::size_t channels, std::size_t size, std::size_t classes) {
  if (n.pool) return pool_net_macs(n, channels, size, classes);
  const nn::ResNetConfig c = config(n, channels);
  double macs = conv_macs(static_cast<double>(size * size), static_cast<double>(c.in_channels),
                          static_cast<double>(c.width), 3);
  std::size_t in = c.width, s = size;
  for (std::size_t st = 0; st < c.blocks.size(); ++st) {
    const std::size_t planes = c.width << st;
    for (std::size_t b = 0; b < c.blocks[st]; ++b) {
      const std::size_t stride = (b == 0 && st > 0) ? 2 : 1;
      const std::size_t o = (s + 2 - 3) / stride + 1;
      const double hw = static_cast<double>(o * o);
      macs += conv_macs(hw, static_cast<double>(in), static_cast<double>(planes), 3) +
              conv_macs(hw, static_cast<double>(planes), static_cast<double>(planes), 3);
      if (stride != 1 || in != planes) macs += conv_macs(hw, static_cast<double>(in), static_cast<double>(planes), 1);
      in = planes, s = o;
    }
  }
  return macs + static_cast<double>(in * classes);
}

void BM_small(benchmark::State& state, bool train, const SmallNet& n, std::size_t channels, std::size_t size,
              std::size_t batch) {
  const char* env = std::getenv("SIEVE_BENCH_THREADS");
  set_threads(env ? std::atoi(env) : 2);
  Rng rng(7);
  const std::size_t classes = 9;  // FMNIST-D: 8 known classes + other
  nn::Backbone<float> net = make_net(n, channels);
  nn::Linear<float> fc(net.embedding_dim(), classes, rng);
  auto model = std::move(net) | std::move(fc);
  model.set_training(train);
  model.set_inference(!train);
  Tensor4<float> x(Shape<4>{batch, channels, size, size});
  for (auto& v : x) v = static_cast<float>(rng.normal());
  Tensor2<float> target = xt::zeros<float>(Shape<2>{batch, classes - 1});
  for (std::size_t i = 0; i < batch; ++i)
    if (i % 5 != 0) target(i, rng.below(static_cast<std::uint32_t>(classes - 1))) = 1.0f;  // every 5th: other
  loss::OtherClassCrossEntropyLoss<float> ce(0.1);
  optim::Sgd<float> opt(model.params(), {.momentum = 0.9, .weight_decay = 5e-4, .nesterov = true});
  auto step = [&] {
    const auto& z = model.forward(x);
    if (!train) return;
    ce.forward(z, target);
    model.zero_grad();
    model.backward(ce.backward());
    opt.step(0.05);
  };
  step();  // the first step sizes every buffer
  for (auto _ : state) {
    step();
    benchmark::ClobberMemory();
  }
  const double images = static_cast<double>(state.iterations() * batch);
  state.SetItemsProcessed(static_cast<int64_t>(images));
  state.counters["GFLOPs"] = benchmark::Counter(
      images * 2.0 * nominal_macs(n, channels, size, classes) * (train ? 3.0 : 1.0) * 1e-9,
      benchmark::Counter::kIsRate);
}

[[maybe_unused]] const int registered = [] {
  for (const bool train : {true, false})
    for (const auto& n : kNets)
      for (const auto& [c, s] : {std::pair<std::size_t, std::size_t>{1, 28}, {3, 32}})
        for (const std::size_t b : {128, 512}) {
          const std::string name =
              std::string(train ? "train/" : "eval/") + n.name + "/" + std::to_string(c) + "x" + std::to_string(s) +
              "/" + std::to_string(b);
          benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& st) { BM_small(st, train, n, c, s, b); })
              ->Unit(benchmark::kMillisecond)
              ->UseRealTime();
        }
  return 0;
}();

}  // namespace

BENCHMARK_MAIN();
