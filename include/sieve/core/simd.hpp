#pragma once
/// The vector instruction set a build may use, from the compiler's target flags (sieve's own
/// executables build with -march=native; the installed headers impose nothing, users choose).
/// SIEVE_AVX2_FMA is 1 when AVX2 and FMA are both enabled: the kernels written with intrinsics
/// (the fused product, AdamW, batch-norm sums) take their vector path only then, and otherwise
/// a portable loop computing the same results.
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define SIEVE_AVX2_FMA 1
#else
#define SIEVE_AVX2_FMA 0
#endif
/// SIEVE_AVX512 is 1 when AVX-512 Foundation (and with it AVX2 and FMA) is enabled: the float
/// matrix product then takes its 512-bit code (kernels/sgemm_avx512.hpp) instead of BLAS.
#if SIEVE_AVX2_FMA && defined(__AVX512F__)
#define SIEVE_AVX512 1
#else
#define SIEVE_AVX512 0
#endif
