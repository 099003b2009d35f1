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
