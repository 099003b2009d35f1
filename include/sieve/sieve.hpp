#pragma once
/// The umbrella header: everything sieve offers. Examples include this; tests include what
/// they use.
#include "sieve/core/core.hpp"
#include "sieve/kernels/gemm.hpp"
#include "sieve/io/file.hpp"
