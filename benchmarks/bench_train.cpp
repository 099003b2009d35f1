// Training machinery costs outside the network: one optimizer step over a ResNet50-sized
// parameter set (25.6M floats, 161 tensors like torchvision's resnet50), the BCE loss on a
// [64, 3000] logit matrix, the global gradient norm, and a durable checkpoint save.
#include <benchmark/benchmark.h>

#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "sieve/core/rng.hpp"
#include "sieve/loss/bce_with_logits.hpp"
#include "sieve/optim/adamw.hpp"
#include "sieve/optim/sgd.hpp"
#include "sieve/train/checkpoint.hpp"
#include "sieve/train/weights.hpp"

namespace {

using namespace sieve;

// 161 tensors totalling ~25.6M values (ResNet50's count), sizes spread like its layers.
struct FakeParams {
  std::vector<std::vector<float>> v, g;
  std::vector<ParamRef<float>> refs;
  explicit FakeParams(std::size_t total = 25'557'032, std::size_t tensors = 161) {
    Rng rng(1, 2);
    v.resize(tensors);
    g.resize(tensors);
    std::size_t left = total;
    for (std::size_t i = 0; i < tensors; ++i) {
      const std::size_t n = i + 1 == tensors ? left : std::min(left, total / tensors / 2 + rng.below(static_cast<std::uint32_t>(total / tensors)));
      left -= n;
      v[i].assign(n, 0.01f);
      g[i].assign(n, 0.001f);
      std::string name = "p";  // appended piecewise: GCC 12 warns (-Wrestrict, false positive) on "p" + s + ".w"
      name += std::to_string(i);
      name += ".weight";
      refs.push_back({name, {n}, std::span<float>(v[i]), std::span<float>(g[i]), i % 3 != 0});
    }
  }
  std::size_t count() const {
    std::size_t n = 0;
    for (const auto& x : v) n += x.size();
    return n;
  }
};

void BM_AdamWStep_ResNet50Params(benchmark::State& state) {
  FakeParams p;
  optim::AdamW<float> opt(p.refs, {});
  for (auto _ : state) opt.step(1e-3);
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(p.count()));
}
BENCHMARK(BM_AdamWStep_ResNet50Params)->Unit(benchmark::kMillisecond);

void BM_SgdNesterovStep_ResNet50Params(benchmark::State& state) {
  FakeParams p;
  optim::Sgd<float> opt(p.refs, {0.9, 0.0, 1e-4, true});
  for (auto _ : state) opt.step(1e-2);
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(p.count()));
}
BENCHMARK(BM_SgdNesterovStep_ResNet50Params)->Unit(benchmark::kMillisecond);

void BM_GlobalGradNorm_ResNet50Params(benchmark::State& state) {
  FakeParams p;
  for (auto _ : state) benchmark::DoNotOptimize(optim::global_grad_norm(p.refs));
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(p.count()));
}
BENCHMARK(BM_GlobalGradNorm_ResNet50Params)->Unit(benchmark::kMillisecond);

void BM_BceWithLogits_64x3000(benchmark::State& state) {
  Tensor2<float> x = xt::zeros<float>(Shape<2>{64, 3000}), y = xt::zeros<float>(Shape<2>{64, 3000});
  Rng rng(3);
  for (auto& v : x) v = static_cast<float>(rng.normal());
  for (std::size_t n = 0; n < 64; ++n) y(n, n * 37 % 3000) = 1.0f;
  loss::BCEWithLogitsLoss<float> bce;
  for (auto _ : state) benchmark::DoNotOptimize(bce.forward(x, y));
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(x.size()));
}
BENCHMARK(BM_BceWithLogits_64x3000)->Unit(benchmark::kMicrosecond);

// model.safetensors of ResNet50 size + AdamW state (2x) through the durable save protocol.
void BM_CheckpointSave_ResNet50AdamW(benchmark::State& state) {
  FakeParams p;
  optim::AdamW<float> opt(p.refs, {});
  const auto run = std::filesystem::temp_directory_path() / ("sieve_bench_ckpt_" + std::to_string(::getpid()));
  std::size_t bytes = 0;
  for (auto _ : state) {
    train::CheckpointFiles f;
    f["model.safetensors"] = train::tensors_to_safetensors<float>(p.refs, {});
    f["optimizer.safetensors"] = train::tensors_to_safetensors<float>({}, opt.state());
    bytes = f["model.safetensors"].size() + f["optimizer.safetensors"].size();
    train::save_checkpoint_files(run, "last", f);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(bytes));
  std::filesystem::remove_all(run);
}
BENCHMARK(BM_CheckpointSave_ResNet50AdamW)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace

BENCHMARK_MAIN();
