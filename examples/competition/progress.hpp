#pragma once
/// One progress line for long CLI work: redrawn in place on a terminal, a plain line every
/// ~10% otherwise (logs stay short).

#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <string>

namespace sieve::cli {

class ProgressLine {
 public:
  explicit ProgressLine(std::string what) : what_(std::move(what)), tty_(::isatty(STDERR_FILENO) == 1) {}

  void operator()(std::size_t done, std::size_t total) {
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const int pct = total ? static_cast<int>(100.0 * static_cast<double>(done) / static_cast<double>(total)) : 100;
    if (tty_) {
      std::fprintf(stderr, "\r%s: %zu/%zu (%d%%) %.0f s", what_.c_str(), done, total, pct, secs);
      if (done == total) std::fprintf(stderr, "\n");
    } else if (pct / 10 != last_decile_ || done == total) {
      last_decile_ = pct / 10;
      std::fprintf(stderr, "%s: %zu/%zu (%d%%) %.0f s\n", what_.c_str(), done, total, pct, secs);
    }
    std::fflush(stderr);
  }

 private:
  std::string what_;
  bool tty_;
  int last_decile_ = -1;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace sieve::cli
