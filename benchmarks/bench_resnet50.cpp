// Whole-model throughput of sieve's ResNet50 (+ a 1000-class Linear head, as torchvision's
// resnet50): eval = forward in eval mode; train = forward in train mode, BCE-with-logits
// gradient, backward through every layer, and an AdamW step (lr 1e-4, weight decay 1e-4) over
// all parameters. items_per_second = images/s. sieve runs on 2 threads (SIEVE_BENCH_THREADS
// overrides). Cases: <mode>/<size>/<batch>.
// benchmarks/torch_resnet50.py prints the same cases for PyTorch.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdlib>
#include <string>

#include "sieve/core/pipeline.hpp"
#include "sieve/nn/nn.hpp"
#include "sieve/optim/adamw.hpp"

namespace {

using namespace sieve;

void BM_resnet50(benchmark::State& state, bool train, std::size_t size, std::size_t batch) {
  const char* env = std::getenv("SIEVE_BENCH_THREADS");
  set_threads(env ? std::atoi(env) : 2);
  Rng rng(7);
  nn::ResNet<float> net(nn::ResNetConfig::resnet50(), 1);
  // SIEVE_BENCH_LAYOUT=nchw|cnhw overrides the network's default activation layout.
  if (const char* lay = std::getenv("SIEVE_BENCH_LAYOUT"))
    net.set_layout(std::string(lay) == "cnhw" ? kernels::Layout::cnhw : kernels::Layout::nchw);
  nn::Linear<float> fc(net.embedding_dim(), 1000, rng);
  auto model = std::move(net) | std::move(fc);
  model.set_training(train);
  // eval = inference, as the peers run it (torch.no_grad, ONNX Runtime): batch norm folded
  // into the convolutions, nothing kept for backward. SIEVE_BENCH_NO_INFERENCE=1 measures the
  // plain eval-mode forward instead.
  const char* plain = std::getenv("SIEVE_BENCH_NO_INFERENCE");
  model.set_inference(!train && !(plain && std::string(plain) == "1"));
  Tensor4<float> x(Shape<4>{batch, 3, size, size});
  for (auto& v : x) v = static_cast<float>(rng.normal());
  Tensor2<float> target(Shape<2>{batch, 1000});
  for (auto& v : target) v = rng.bernoulli(0.01) ? 1.0f : 0.0f;
  Tensor2<float> dz(Shape<2>{batch, 1000});
  optim::AdamW<float> opt(model.params(), {.weight_decay = 1e-4});
  auto step = [&] {
    const auto& z = model.forward(x);
    if (!train) return;
    const float inv = 1.0f / static_cast<float>(z.size());
    for (std::size_t i = 0; i < z.size(); ++i)
      dz.data()[i] = (1.0f / (1.0f + std::exp(-z.data()[i])) - target.data()[i]) * inv;
    model.zero_grad();
    model.backward(dz);
    opt.step(1e-4);
  };
  step();  // the first step sizes every buffer
  for (auto _ : state) {
    step();
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * batch));
}

const struct {
  bool train;
  std::size_t size, batch;
} kCases[] = {{false, 224, 16}, {false, 64, 64}, {false, 32, 64}, {true, 224, 16}, {true, 64, 64}, {true, 32, 64}};

const bool registered = [] {
  for (const auto& c : kCases) {
    const std::string name =
        std::string(c.train ? "train/" : "eval/") + std::to_string(c.size) + "/" + std::to_string(c.batch);
    benchmark::RegisterBenchmark(name.c_str(), BM_resnet50, c.train, c.size, c.batch)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();  // --benchmark_min_time sets the time per case (benchmarks/compare.sh passes it)
  }
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
