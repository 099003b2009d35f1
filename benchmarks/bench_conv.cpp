// Per-layer convolution throughput on ResNet50's shapes (224x224 input, batch 16): forward,
// backward-input and backward-weight, each reported as GFLOP/s (2*N*K*C*KH*KW*OH*OW per pass,
// the direct convolution's count also for Winograd, so the rates compare as speeds).
// sieve runs on 2 threads (each BLAS call single-threaded), as the model benchmarks and the
// PyTorch reference do.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "sieve/core/rng.hpp"
#include "sieve/kernels/conv2d.hpp"

namespace {

struct Layer {
  const char* name;
  std::size_t C, H, K, k, s, p;
};

const Layer kLayers[] = {
    {"conv1_7x7s2_3to64_224", 3, 224, 64, 7, 2, 3},
    {"layer1_1x1_64to64_56", 64, 56, 64, 1, 1, 0},
    {"layer1_3x3_64_56", 64, 56, 64, 3, 1, 1},
    {"layer1_1x1_64to256_56", 64, 56, 256, 1, 1, 0},
    {"layer2_3x3s2_128_56", 128, 56, 128, 3, 2, 1},
    {"layer2_ds_1x1s2_256to512_56", 256, 56, 512, 1, 2, 0},
    {"layer2_3x3_128_28", 128, 28, 128, 3, 1, 1},
    {"layer3_3x3_256_14", 256, 14, 256, 3, 1, 1},
    {"layer3_1x1_1024to256_14", 1024, 14, 256, 1, 1, 0},
    {"layer4_3x3_512_7", 512, 7, 512, 3, 1, 1},
    {"layer4_1x1_512to2048_7", 512, 7, 2048, 1, 1, 0},
    // 3x3 stride-1 layers of 64x64 and 32x32 inputs (where the Winograd threshold sits).
    {"in64_layer1_3x3_64_16", 64, 16, 64, 3, 1, 1},
    {"in64_layer2_3x3_128_8", 128, 8, 128, 3, 1, 1},
    {"in32_layer1_3x3_64_8", 64, 8, 64, 3, 1, 1},
    {"in64_layer3_3x3_256_4", 256, 4, 256, 3, 1, 1},
    {"in64_layer4_3x3_512_2", 512, 2, 512, 3, 1, 1},
    {"in32_layer2_3x3_128_4", 128, 4, 128, 3, 1, 1},
    {"in32_layer3_3x3_256_2", 256, 2, 256, 3, 1, 1},
    {"in32_layer4_3x3_512_1", 512, 1, 512, 3, 1, 1},
    // The other shapes of a 64x64 input (run at batch 64, as eval/64/64): the stem, 1x1
    // convolutions with few output or input channels, the strided ones.
    {"in64_conv1_7x7s2_3to64_64", 3, 64, 64, 7, 2, 3},
    {"in64_layer1_1x1_256to64_16", 256, 16, 64, 1, 1, 0},
    {"in64_layer1_1x1_64to256_16", 64, 16, 256, 1, 1, 0},
    {"in64_layer2_3x3s2_128_16", 128, 16, 128, 3, 2, 1},
    {"in64_layer2_ds_1x1s2_256to512_16", 256, 16, 512, 1, 2, 0},
    {"in64_layer3_1x1_1024to256_4", 1024, 4, 256, 1, 1, 0},
    {"in64_layer3_3x3s2_256_8", 256, 8, 256, 3, 2, 1},
    {"in64_layer4_1x1_512to2048_2", 512, 2, 2048, 1, 1, 0},
};
// SIEVE_BENCH_CONV_BATCH overrides the batch (the in64/in32 layers run at 64 in the model).
std::size_t batch() {
  const char* b = std::getenv("SIEVE_BENCH_CONV_BATCH");
  return b ? static_cast<std::size_t>(std::atoi(b)) : 16;
}

std::vector<float> random_buffer(std::size_t n, std::uint64_t stream) {
  sieve::Rng rng(1, stream);
  std::vector<float> v(n);
  for (auto& x : v) x = rng.uniform() - 0.5f;
  return v;
}

enum class Pass { forward, backward_input, backward_weight };

template <Pass P>
void BM_conv(benchmark::State& state) {
  sieve::set_threads(2);
  const Layer& L = kLayers[state.range(0)];
  state.SetLabel(L.name);
  const std::size_t kBatch = batch();
  sieve::kernels::Conv2dDims d{kBatch, L.C, L.H, L.H, L.K, {L.k, L.k, L.s, L.s, L.p, L.p}};
  // The layout ResNet uses (batch-folded CNHW) unless SIEVE_BENCH_CONV_LAYOUT=nchw.
  const char* lay = std::getenv("SIEVE_BENCH_CONV_LAYOUT");
  if (!(lay && std::string(lay) == "nchw")) d.in = d.out = sieve::kernels::Layout::cnhw;
  // SIEVE_BENCH_CONV_ALGO=im2col|winograd|winograd4 forces one algorithm where it applies
  // (winograd: F(2x2,3x3), winograd4: F(4x4,3x3); default: sieve's choice).
  if (const char* a = std::getenv("SIEVE_BENCH_CONV_ALGO")) {
    const std::string algo(a);
    const bool fits = L.k == 3 && L.s == 1 && L.p == 1;
    if (algo == "im2col") d.algo = sieve::kernels::Conv2dAlgo::im2col;
    if (algo == "winograd" && fits) d.algo = sieve::kernels::Conv2dAlgo::winograd;
    if (algo == "winograd4" && fits) d.algo = sieve::kernels::Conv2dAlgo::winograd4;
  }
  // SIEVE_BENCH_CONV_INFER=1: the forward as inference runs it: F(4x4,3x3) where the
  // automatic choice takes it (Conv2dDims::forward_only), Winograd's weights transformed once
  // (as nn::Conv2d keeps them), not per call.
  const char* inf = std::getenv("SIEVE_BENCH_CONV_INFER");
  const bool infer = inf && std::string(inf) == "1" && P == Pass::forward;
  if (infer) d.forward_only = true;
  const std::size_t OH = d.OH(), OW = d.OW();
  auto x = random_buffer(kBatch * L.C * L.H * L.H, 1);
  auto w = random_buffer(L.K * L.C * L.k * L.k, 2);
  auto y = random_buffer(kBatch * L.K * OH * OW, 3);
  std::vector<float> ws(sieve::kernels::conv2d_workspace_size(d));
  std::vector<float> u;
  if (infer && sieve::kernels::conv2d_uses_winograd(d)) {
    u.resize(sieve::kernels::conv2d_winograd_weights_size(d));
    sieve::kernels::conv2d_winograd_weights(w.data(), d, u.data());
  }
  for (auto _ : state) {
    if constexpr (P == Pass::forward)
      sieve::kernels::conv2d_forward(x.data(), w.data(), y.data(), d, ws.data(), ws.size(), {},
                                     u.empty() ? nullptr : u.data());
    else if constexpr (P == Pass::backward_input)
      sieve::kernels::conv2d_backward_input(y.data(), w.data(), x.data(), d, ws.data(), ws.size());
    else
      sieve::kernels::conv2d_backward_weight(x.data(), y.data(), w.data(), d, ws.data(), ws.size());
    benchmark::ClobberMemory();
  }
  const double flops = 2.0 * kBatch * L.K * L.C * L.k * L.k * OH * OW;
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["group"] = static_cast<double>(sieve::kernels::conv2d_group(d));
  state.counters["winograd"] = P != Pass::backward_weight && sieve::kernels::conv2d_uses_winograd(d) ? 1 : 0;
}

void layers(benchmark::internal::Benchmark* b) {
  for (std::size_t i = 0; i < std::size(kLayers); ++i) b->Arg(static_cast<int64_t>(i));
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(BM_conv<Pass::forward>)->Name("conv_forward")->Apply(layers);
BENCHMARK(BM_conv<Pass::backward_input>)->Name("conv_backward_input")->Apply(layers);
BENCHMARK(BM_conv<Pass::backward_weight>)->Name("conv_backward_weight")->Apply(layers);

}  // namespace

BENCHMARK_MAIN();
