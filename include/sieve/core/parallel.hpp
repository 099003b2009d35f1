#pragma once
/// Threads of sieve's compute: one level of parallelism, OpenMP's.
///
/// Kernels split their work (samples, channels, element ranges, GEMM columns) across
/// `threads()` OpenMP threads with a static partition, and every BLAS call inside runs on one
/// thread (gemm.hpp pins OpenBLAS to a single thread). Two levels of threading (OpenBLAS's
/// pool inside sieve's, or beside it) would fight over the cores: PyTorch's im2col path gets
/// slower with two threads than with one for exactly that reason.
///
/// A partition depends only on the work size and the thread count, so results are
/// bit-identical from run to run at a fixed thread count (the trainer's exact resume relies
/// on it); a different thread count may change the rounding of reductions across threads.
/// Compiled without OpenMP (-fopenmp), everything runs serially and stays correct.

#include <algorithm>
#include <cstddef>
#include <exception>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace sieve {

/// The number of threads kernels use (OpenMP's max threads: OMP_NUM_THREADS or the core count).
inline int threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/// Sets the number of threads kernels use; n <= 0 leaves it unchanged.
inline void set_threads(int n) {
#if defined(_OPENMP)
  if (n > 0) omp_set_num_threads(n);
#else
  (void)n;
#endif
}

/// True inside a parallel region (nested kernels then run serially on the calling thread).
inline bool in_parallel() {
#if defined(_OPENMP)
  return omp_in_parallel() != 0;
#else
  return false;
#endif
}

/// The contiguous share [lo, hi) of [0, n) that part `t` of `parts` gets (static partition,
/// sizes differing by at most one).
inline void partition(std::size_t n, std::size_t parts, std::size_t t, std::size_t& lo, std::size_t& hi) {
  const std::size_t q = n / parts, r = n % parts;
  lo = t * q + std::min(t, r);
  hi = lo + q + (t < r ? 1 : 0);
}

/// Runs f(t, lo, hi) for parts t = 0..parts-1 over the static partition of [0, n), one part
/// per thread, with parts = min(threads(), n, max_parts) (1 inside a parallel region). If parts
/// throw, the others still run to the end and the first exception is rethrown here. Returns
/// the number of parts used (callers size per-thread scratch with `parallel_parts`).
template <class F>
std::size_t parallel_for_parts(std::size_t n, std::size_t max_parts, F&& f);

/// The number of parts parallel_for_parts(n, max_parts, ...) will use.
inline std::size_t parallel_parts(std::size_t n, std::size_t max_parts = static_cast<std::size_t>(-1)) {
  if (n == 0) return 0;
  if (in_parallel()) return 1;
  return std::min({static_cast<std::size_t>(std::max(threads(), 1)), n, std::max<std::size_t>(max_parts, 1)});
}

template <class F>
std::size_t parallel_for_parts(std::size_t n, std::size_t max_parts, F&& f) {
  const std::size_t parts = parallel_parts(n, max_parts);
  if (parts <= 1) {
    if (n > 0) f(std::size_t{0}, std::size_t{0}, n);
    return parts;
  }
#if defined(_OPENMP)
  // An exception must not leave a parallel region (that terminates the program): the first
  // part to throw hands its exception to the calling thread, which rethrows it after the join.
  std::exception_ptr error;
#pragma omp parallel num_threads(static_cast<int>(parts))
  {
    const auto t = static_cast<std::size_t>(omp_get_thread_num());
    std::size_t lo, hi;
    partition(n, parts, t, lo, hi);
    try {
      if (lo < hi) f(t, lo, hi);
    } catch (...) {
#pragma omp critical(sieve_parallel_error)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
#endif
  return parts;
}

/// Runs f(lo, hi) over a static partition of [0, n) when there are at least `grain` items per
/// thread, else serially (exceptions as parallel_for_parts).
template <class F>
void parallel_for(std::size_t n, std::size_t grain, F&& f) {
  const std::size_t max_parts = grain == 0 ? n : n / grain;
  parallel_for_parts(n, std::max<std::size_t>(max_parts, 1),
                     [&](std::size_t, std::size_t lo, std::size_t hi) { f(lo, hi); });
}

/// Element-wise work smaller than this stays on one thread (waking threads costs more).
inline constexpr std::size_t parallel_grain_elements = std::size_t{1} << 15;

}  // namespace sieve
