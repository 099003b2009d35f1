#pragma once
/// SIGINT / SIGTERM while `sieve train` trains: the first asks the trainer to stop at the next
/// step boundary (it saves last/, the command says how to resume and exits 128 + signal: 130 or
/// 143); a second exits at once with the same status, last/ being the previous checkpoint.
/// The handler only sets a lock-free atomic; the trainer polls it (TrainerOptions::stop_requested).

#include <signal.h>
#include <unistd.h>

#include <atomic>

namespace sieve::cli {

namespace stop_signal_detail {
inline std::atomic<int> received{0};  ///< the first signal's number, 0 = none
static_assert(std::atomic<int>::is_always_lock_free, "a signal handler may only touch lock-free atomics");

inline void on_signal(int sig) {
  int none = 0;
  if (received.compare_exchange_strong(none, sig)) return;
  static constexpr char msg[] = "\nsieve: second signal: exiting now (last/ keeps the previous checkpoint)\n";
  (void)!::write(STDERR_FILENO, msg, sizeof msg - 1);
  ::_exit(128 + sig);
}
}  // namespace stop_signal_detail

/// Installs the handler for SIGINT and SIGTERM for its lifetime (a signal the process was
/// started ignoring stays ignored) and restores the previous dispositions after.
class StopOnSignal {
 public:
  StopOnSignal() {
    stop_signal_detail::received = 0;
    struct sigaction sa {};
    sa.sa_handler = stop_signal_detail::on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;  // reads and writes in progress go on; the flag is polled
    for (int i = 0; i < 2; ++i) {
      ::sigaction(kSignals[i], nullptr, &old_[i]);
      if (old_[i].sa_handler != SIG_IGN) ::sigaction(kSignals[i], &sa, nullptr);
    }
  }
  StopOnSignal(const StopOnSignal&) = delete;
  StopOnSignal& operator=(const StopOnSignal&) = delete;
  ~StopOnSignal() {
    for (int i = 0; i < 2; ++i) ::sigaction(kSignals[i], &old_[i], nullptr);
  }

  /// The signal received (SIGINT or SIGTERM), 0 when none.
  static int received() { return stop_signal_detail::received.load(); }

 private:
  static constexpr int kSignals[2] = {SIGINT, SIGTERM};
  struct sigaction old_[2] {};
};

}  // namespace sieve::cli
