#pragma once
/// sieve/kernels: stateless numeric kernels on contiguous buffers (float and double).
#include "sieve/kernels/batch_norm.hpp"
#include "sieve/kernels/conv2d.hpp"
#include "sieve/kernels/dropout.hpp"
#include "sieve/kernels/gemm.hpp"
#include "sieve/kernels/linear.hpp"
#include "sieve/kernels/pool.hpp"
#include "sieve/kernels/relu.hpp"
#include "sieve/kernels/sgemm_avx512.hpp"
#include "sieve/kernels/sgemm_fused.hpp"
