#pragma once
/// Validators shared by the subcommands' flags.

#include <CLI/CLI.hpp>

#include <cmath>
#include <string>

namespace sieve::cli {

/// A flag that must be a finite number: CLI::Range lets "nan" through (every comparison with
/// NaN is false) and "inf" parses as a number, and either would silently poison a threshold.
inline const CLI::Validator finite_number(
    [](std::string& s) -> std::string {
      double v = 0.0;
      if (!CLI::detail::lexical_cast(s, v)) return "'" + s + "' is not a number";
      return std::isfinite(v) ? std::string() : "'" + s + "' is not a finite number";
    },
    "FINITE", "finite number");

}  // namespace sieve::cli
