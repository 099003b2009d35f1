#pragma once
/// sieve/core: tensors, errors, counter-based RNG and the one shuffle, stage concepts, pipelines.
#include "sieve/core/check.hpp"
#include "sieve/core/parallel.hpp"
#include "sieve/core/param.hpp"
#include "sieve/core/pipeline.hpp"
#include "sieve/core/rng.hpp"
#include "sieve/core/shuffle.hpp"
#include "sieve/core/simd.hpp"
#include "sieve/core/stage.hpp"
#include "sieve/core/xt.hpp"
