#pragma once
/// Validators shared by the subcommands' flags, and the usage error.

#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "sieve/core/check.hpp"

namespace sieve::cli {

/// A mistake in how a command was called (a flag, its value, or flags that do not go
/// together), found after parsing. main prints it like any error but exits 2, as CLI11's own
/// parse errors do (and argparse, and most CLIs); failures while running exit 1.
class UsageError : public Error {
 public:
  using Error::Error;
};

/// Throw a UsageError built from the pieces when `ok` is false (the pieces are always built:
/// for flag checks, not for hot paths).
template <class... Args>
void usage_check(bool ok, Args&&... pieces) {
  if (!ok) throw UsageError(str(std::forward<Args>(pieces)...));
}

/// What --tta's modes mean (train, predict and embed take it; augment::tta_views defines them).
inline const std::string tta_help =
    "none; flip (average with the mirrored image); flip-translate (six views: the flip pairs of the image and of "
    "it moved by one pixel either way along the diagonal)";

/// A flag that must be a finite number: CLI::Range lets "nan" through (every comparison with
/// NaN is false) and "inf" parses as a number, and either would silently poison a threshold.
inline const CLI::Validator finite_number(
    [](std::string& s) -> std::string {
      double v = 0.0;
      if (!CLI::detail::lexical_cast(s, v)) return "'" + s + "' is not a number";
      return std::isfinite(v) ? std::string() : "'" + s + "' is not a finite number";
    },
    "FINITE", "finite number");

/// A --distractor-share value: a number in [0, 1] or one of `words` (train: data, none;
/// predict: estimate). One check for both subcommands.
inline CLI::Validator share_or(std::vector<std::string> words) {
  return CLI::Validator(
      [words](std::string& v) -> std::string {
        for (const auto& w : words)
          if (v == w) return "";
        char* end = nullptr;
        const double p = std::strtod(v.c_str(), &end);
        if (!v.empty() && *end == '\0' && p >= 0.0 && p <= 1.0) return "";
        std::string names;
        for (const auto& w : words) names += w + ", ";
        return "--distractor-share '" + v + "': expected " + names + "or a number in [0, 1]";
      },
      "SHARE", "distractor share");
}

}  // namespace sieve::cli
