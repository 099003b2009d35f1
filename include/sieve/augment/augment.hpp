#pragma once
/// sieve/augment: decode, resize, fit, crops, flips, colour jitter, grayscale, to-tensor, normalize,
/// test-time views, the input transform (InputSpec).
#include "sieve/augment/color.hpp"
#include "sieve/augment/crop.hpp"
#include "sieve/augment/decode.hpp"
#include "sieve/augment/fit.hpp"
#include "sieve/augment/flip.hpp"
#include "sieve/augment/input.hpp"
#include "sieve/augment/resize.hpp"
#include "sieve/augment/tensor.hpp"
#include "sieve/augment/tta.hpp"
