// The GEMM wrapper against a raw cblas_sgemm call on ResNet50-shaped products.
// Each case reports GFLOP/s (2*M*N*K per product); the two variants should match, showing
// the wrapper adds nothing measurable.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <vector>

#include "sieve/core/rng.hpp"
#include "sieve/kernels/gemm.hpp"

namespace {

struct Shape {
  const char* name;
  int M, N, K;
};

// Conv as GEMM: M = output channels, N = output pixels (per image), K = C*KH*KW.
const Shape kShapes[] = {
    {"layer1_1x1_64to256_56x56", 256, 3136, 64},
    {"layer2_3x3_128_28x28", 128, 784, 1152},
    {"layer3_3x3_256_14x14", 256, 196, 2304},
    {"layer4_3x3_512_7x7", 512, 49, 4608},
    {"fc_b16_2048to1000", 16, 1000, 2048},
};

std::vector<float> random_buffer(std::size_t n, std::uint64_t stream) {
  sieve::Rng rng(1, stream);
  std::vector<float> v(n);
  for (auto& x : v) x = rng.uniform() - 0.5f;
  return v;
}

template <bool Wrapper>
void BM_sgemm(benchmark::State& state) {
  const Shape& s = kShapes[state.range(0)];
  state.SetLabel(s.name);
  auto a = random_buffer(std::size_t(s.M) * s.K, 1);
  auto b = random_buffer(std::size_t(s.K) * s.N, 2);
  std::vector<float> c(std::size_t(s.M) * s.N);
  for (auto _ : state) {
    if constexpr (Wrapper)
      sieve::kernels::gemm(sieve::kernels::Trans::no, sieve::kernels::Trans::no, s.M, s.N, s.K, 1.0f, a.data(),
                           b.data(), 0.0f, c.data());
    else
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s.M, s.N, s.K, 1.0f, a.data(), s.K, b.data(), s.N,
                  0.0f, c.data(), s.N);
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  const double flops = 2.0 * s.M * s.N * s.K;
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void shapes(benchmark::internal::Benchmark* b) {
  for (int i = 0; i < int(std::size(kShapes)); ++i) b->Arg(i);
}

}  // namespace

BENCHMARK(BM_sgemm<true>)->Name("gemm/sieve_wrapper")->Apply(shapes)->UseRealTime();
BENCHMARK(BM_sgemm<false>)->Name("gemm/raw_cblas")->Apply(shapes)->UseRealTime();

BENCHMARK_MAIN();
