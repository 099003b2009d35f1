// The GEMM wrapper against a raw cblas_sgemm call on ResNet50-shaped products, and the FMA
// ceiling of this machine. Each case reports GFLOP/s (2*M*N*K per product). Both GEMM sides use
// 2 threads: the wrapper splits C's columns over sieve's threads (one single-threaded OpenBLAS
// call each); the raw call lets OpenBLAS thread itself. The per-thread cases compare
// fused_sgemm (no epilogue) with one single-threaded cblas_sgemm on the shapes one thread
// multiplies in the model (Winograd's products, im2col's, the batch-folded 1x1s), and the
// transposed products of a small network's backward (gemm_ld against cblas_sgemm).
#include <benchmark/benchmark.h>
#include <cblas.h>

#if defined(__FMA__)
#include <immintrin.h>
#endif

#include <vector>

#include "sieve/core/rng.hpp"
#include "sieve/kernels/gemm.hpp"
#include "sieve/kernels/sgemm_fused.hpp"

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

// One thread's share of a product at batch 64 (64x64 input) or 16 (224), N halved for 2 threads.
const Shape kThreadShapes[] = {
    {"wino_64to64_16x16_b64", 64, 2048, 64},      // layer1 3x3 at 64x64 input: tiles of one chunk
    {"wino_256to256_4x4_b64", 256, 128, 256},     // layer3 3x3 at 64x64 input
    {"wino_512to512_7x7_b16", 512, 128, 512},     // layer4 3x3 at 224
    {"im2col_stem_7x7s2_b64", 64, 1024, 147},     // conv1 at 64x64 input, one sample
    {"im2col_3x3s2_256_b64", 256, 512, 1152},     // layer3's stride-2 3x3 at 64x64 input
    {"folded_1x1_1024to256_b64", 256, 512, 1024}, // layer3 1x1 at 64x64 input
};

// One thread's transposed products in a PoolNet (16-32-64-128) training step at batch 256,
// 28x28 (conv2d's sample groups): weight gradients dw[K, CKK] = dy col^T (A B^T, the inner
// dimension the group's pixels) and input gradients dcol[CKK, gP] = w^T dy (A^T B).
struct TShape {
  const char* name;
  bool ta, tb;
  int M, N, K;
};
const TShape kTransShapes[] = {
    {"dw_16to32_28x28_g18", false, true, 32, 144, 14112},
    {"dw_32to64_14x14_g37", false, true, 64, 288, 7252},
    {"dw_64to128_7x7_g74", false, true, 128, 576, 3626},
    {"dw_128to128_3x3_g128", false, true, 128, 1152, 1152},
    {"dx_32to32_14x14_g37", true, false, 288, 7252, 32},
    {"dx_64to128_7x7_g74", true, false, 576, 3626, 128},
};

std::vector<float> random_buffer(std::size_t n, std::uint64_t stream) {
  sieve::Rng rng(1, stream);
  std::vector<float> v(n);
  for (auto& x : v) x = rng.uniform() - 0.5f;
  return v;
}

template <bool Wrapper>
void BM_sgemm(benchmark::State& state) {
  sieve::set_threads(2);
  // The wrapper pins OpenBLAS to one thread; the raw side gets OpenBLAS's own 2 threads back.
  sieve::kernels::detail::blas_pin_single_thread();
  openblas_set_num_threads(Wrapper ? 1 : 2);
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
  openblas_set_num_threads(1);
}

// One thread: fused_sgemm or a single-threaded cblas_sgemm, C = A B (beta 0).
template <bool Fused>
void BM_thread_sgemm(benchmark::State& state) {
  sieve::kernels::detail::blas_pin_single_thread();
  openblas_set_num_threads(1);
  const Shape& s = kThreadShapes[state.range(0)];
  state.SetLabel(s.name);
  auto a = random_buffer(std::size_t(s.M) * s.K, 1);
  auto b = random_buffer(std::size_t(s.K) * s.N, 2);
  std::vector<float> c(std::size_t(s.M) * s.N), ws(sieve::kernels::fused_sgemm_b_workspace());
  for (auto _ : state) {
    if constexpr (Fused)
      sieve::kernels::fused_sgemm(s.M, s.N, s.K, a.data(), s.K, b.data(), s.N, c.data(), s.N, {}, ws.data());
    else
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s.M, s.N, s.K, 1.0f, a.data(), s.K, b.data(), s.N,
                  0.0f, c.data(), s.N);
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * s.M * s.N * s.K * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// One thread: gemm_ld (sieve's product on AVX-512 builds, else BLAS) or a single-threaded
// cblas_sgemm, on kTransShapes.
template <bool Sieve>
void BM_thread_sgemm_t(benchmark::State& state) {
  sieve::kernels::detail::blas_pin_single_thread();
  openblas_set_num_threads(1);
  sieve::set_threads(1);
  const TShape& s = kTransShapes[state.range(0)];
  state.SetLabel(s.name);
  auto a = random_buffer(std::size_t(s.M) * s.K, 1);
  auto b = random_buffer(std::size_t(s.K) * s.N, 2);
  std::vector<float> c(std::size_t(s.M) * s.N);
  const int lda = s.ta ? s.M : s.K, ldb = s.tb ? s.K : s.N;
  for (auto _ : state) {
    if constexpr (Sieve)
      sieve::kernels::gemm_ld(s.ta ? sieve::kernels::Trans::yes : sieve::kernels::Trans::no,
                              s.tb ? sieve::kernels::Trans::yes : sieve::kernels::Trans::no, s.M, s.N, s.K, 1.0f,
                              a.data(), lda, b.data(), ldb, 1.0f, c.data(), s.N);
    else
      cblas_sgemm(CblasRowMajor, s.ta ? CblasTrans : CblasNoTrans, s.tb ? CblasTrans : CblasNoTrans, s.M, s.N, s.K,
                  1.0f, a.data(), lda, b.data(), ldb, 1.0f, c.data(), s.N);
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * s.M * s.N * s.K * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  sieve::set_threads(2);
}

#if defined(__FMA__)
// The FMA ceiling: every thread runs 12 independent chains of 8-wide fused multiply-adds
// (enough in flight to cover the FMA latency on two pipes), 2 flops per lane.
void BM_fma_peak(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  constexpr long kIters = 1L << 22;
  float sink = 0;
  for (auto _ : state) {
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    {
      __m256 acc[12];
      for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i) * 1e-3f);
      const __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
      for (long it = 0; it < kIters; ++it)
        for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], b, c);
      float out[8];
      __m256 t = acc[0];
      for (int i = 1; i < 12; ++i) t = _mm256_add_ps(t, acc[i]);
      _mm256_storeu_ps(out, t);
      for (float v : out) sink += v;
    }
    benchmark::DoNotOptimize(sink);
  }
  const double flops = 2.0 * 8 * 12 * static_cast<double>(kIters) * threads;
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
#endif

void shapes(benchmark::internal::Benchmark* b) {
  for (int i = 0; i < int(std::size(kShapes)); ++i) b->Arg(i);
}
void thread_shapes(benchmark::internal::Benchmark* b) {
  for (int i = 0; i < int(std::size(kThreadShapes)); ++i) b->Arg(i);
}
void trans_shapes(benchmark::internal::Benchmark* b) {
  for (int i = 0; i < int(std::size(kTransShapes)); ++i) b->Arg(i);
}

}  // namespace

BENCHMARK(BM_sgemm<true>)->Name("gemm/sieve_wrapper")->Apply(shapes)->UseRealTime();
BENCHMARK(BM_sgemm<false>)->Name("gemm/raw_cblas")->Apply(shapes)->UseRealTime();
BENCHMARK(BM_thread_sgemm<true>)->Name("thread_gemm/fused_sgemm")->Apply(thread_shapes)->UseRealTime();
BENCHMARK(BM_thread_sgemm<false>)->Name("thread_gemm/cblas_1thread")->Apply(thread_shapes)->UseRealTime();
BENCHMARK(BM_thread_sgemm_t<true>)->Name("thread_gemm_t/sieve")->Apply(trans_shapes)->UseRealTime();
BENCHMARK(BM_thread_sgemm_t<false>)->Name("thread_gemm_t/cblas_1thread")->Apply(trans_shapes)->UseRealTime();
#if defined(__FMA__)
BENCHMARK(BM_fma_peak)->Name("fma_peak/threads")->Arg(1)->Arg(2)->UseRealTime();
#endif

BENCHMARK_MAIN();
