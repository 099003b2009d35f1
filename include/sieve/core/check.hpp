#pragma once
/// Errors: one exception type and SIEVE_CHECK, whose message names the operation and sizes.

#include <cstddef>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace sieve {

/// Every failure sieve reports is a sieve::Error carrying a complete, human-readable message.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <class... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
}  // namespace detail

/// Build a message from streamable pieces: str("conv2d: C=", C, " but weight has ", K).
template <class... Args>
std::string str(Args&&... args) {
  return detail::concat(std::forward<Args>(args)...);
}

/// The first `max_listed` problems, one per indented line, then "... and N more": how one
/// error lists many problems (a user fixes a file once, not N times).
inline std::string join_problems(const std::vector<std::string>& v, std::size_t max_listed = 20) {
  std::string out;
  for (std::size_t i = 0; i < v.size() && i < max_listed; ++i) out += "\n  " + v[i];
  if (v.size() > max_listed) out += str("\n  ... and ", v.size() - max_listed, " more");
  return out;
}

/// Throw a sieve::Error built from the pieces.
template <class... Args>
[[noreturn]] void fail(Args&&... args) {
  throw Error(detail::concat(std::forward<Args>(args)...));
}

}  // namespace sieve

/// SIEVE_CHECK(cond, pieces...): if cond is false, throw sieve::Error whose message is the
/// pieces concatenated (they must name the operation and the sizes involved), followed by the
/// failed condition. The pieces are only evaluated on failure.
#define SIEVE_CHECK(cond, ...)                                                              \
  do {                                                                                      \
    if (!(cond)) [[unlikely]]                                                               \
      ::sieve::fail(__VA_ARGS__, " [check failed: " #cond "]");                             \
  } while (false)
