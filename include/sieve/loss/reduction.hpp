#pragma once
/// Loss reductions, shared by every loss in sieve::loss.

namespace sieve::loss {

/// How per-element losses become one number. Sums always run in index order in double, so a
/// loss value never depends on thread count or vector width (deterministic, bit-reproducible).
enum class Reduction { mean, sum };

}  // namespace sieve::loss
