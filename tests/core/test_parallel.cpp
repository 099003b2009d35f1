// sieve's threads (core/parallel.hpp): the static partition, every index visited exactly once,
// nested calls serial, exceptions carried out of the parallel region.
#include <doctest/doctest.h>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "sieve/core/parallel.hpp"

using namespace sieve;

TEST_CASE("partition: contiguous shares covering [0, n), sizes differing by at most one") {
  for (std::size_t n : {0u, 1u, 2u, 7u, 64u, 1001u})
    for (std::size_t parts : {1u, 2u, 3u, 8u}) {
      std::size_t expect_lo = 0, smallest = n + 1, largest = 0;
      for (std::size_t t = 0; t < parts; ++t) {
        std::size_t lo, hi;
        partition(n, parts, t, lo, hi);
        CHECK(lo == expect_lo);
        expect_lo = hi;
        smallest = std::min(smallest, hi - lo);
        largest = std::max(largest, hi - lo);
      }
      CHECK(expect_lo == n);
      CHECK(largest - smallest <= 1);
    }
}

TEST_CASE("parallel_for_parts: every index once, at most threads() and max_parts parts") {
  const int saved = threads();
  set_threads(2);
  for (std::size_t n : {1u, 2u, 5u, 1000u}) {
    std::vector<std::atomic<int>> seen(n);
    std::atomic<std::size_t> calls{0};
    const std::size_t parts = parallel_for_parts(n, 8, [&](std::size_t t, std::size_t lo, std::size_t hi) {
      ++calls;
      CHECK(t < 8);
      for (std::size_t i = lo; i < hi; ++i) ++seen[i];
    });
    for (const auto& s : seen) CHECK(s.load() == 1);
    CHECK(calls.load() == parts);
    CHECK(parts == parallel_parts(n, 8));
    CHECK(parts <= std::min<std::size_t>(n, static_cast<std::size_t>(threads())));
  }
  CHECK(parallel_parts(100, 1) == 1);
  CHECK(parallel_parts(0) == 0);
  set_threads(saved);
}

TEST_CASE("parallel_for_parts: nested calls run serially; exceptions reach the caller") {
  const int saved = threads();
  set_threads(2);
  std::atomic<int> nested_parts{0};
  parallel_for_parts(2, 2, [&](std::size_t, std::size_t, std::size_t) {
    nested_parts += static_cast<int>(parallel_for_parts(100, 100, [](std::size_t, std::size_t, std::size_t) {}));
  });
  CHECK(nested_parts.load() == static_cast<int>(parallel_parts(2, 2)));  // one serial part inside each
  CHECK_THROWS_WITH_AS(parallel_for(1000, 1,
                                    [](std::size_t lo, std::size_t) {
                                      if (lo > 0) throw std::runtime_error("part failed");
                                    }),
                       "part failed", std::runtime_error);
  CHECK_THROWS_AS(parallel_for(10, 100, [](std::size_t, std::size_t) { throw std::runtime_error("serial"); }),
                  std::runtime_error);
  set_threads(saved);
}
