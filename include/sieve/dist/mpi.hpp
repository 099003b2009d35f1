#pragma once
/// MPI implementation of dist::Communicator (OpenMPI), compiled only when SIEVE_WITH_MPI is
/// defined (meson: -Dmpi=enabled, or tests/dist). A failed rank must not leave the others hung
/// in a collective: errors are returned (MPI_ERRORS_RETURN) instead of aborting silently, and
/// every collective is nonblocking, polled with MPI_Test against a deadline; a miss throws a
/// CommError naming the rank, the operation and its size, after which the caller aborts the job.

#ifndef SIEVE_WITH_MPI
#error "sieve/dist/mpi.hpp needs SIEVE_WITH_MPI (configure with -Dmpi=enabled)"
#endif

// The C++ bindings (removed in MPI-3) are not used and warn under -Wextra.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include "sieve/dist/communicator.hpp"

namespace sieve::dist {

struct MpiOptions {
  /// Seconds a collective may wait for the other ranks before this rank gives up. Must exceed
  /// the longest gap between collectives (a step's compute, a validation pass, a checkpoint
  /// save on rank 0). Environment SIEVE_MPI_TIMEOUT (seconds) overrides it.
  double timeout_seconds = 600.0;
  /// On SIGTERM (what mpirun sends the survivors after a rank aborted) print one line saying
  /// why before exiting, instead of vanishing silently.
  bool explain_sigterm = true;
};

namespace detail {
inline char g_sigterm_msg[160];
inline void on_sigterm(int) {
  // Only async-signal-safe calls here.
  const auto n = ::strlen(g_sigterm_msg);
  if (::write(2, g_sigterm_msg, n) < 0) {}
  ::_exit(143);
}
}  // namespace detail

class MpiCommunicator final : public Communicator {
 public:
  /// Initialises MPI (thread level FUNNELED: loader threads never call MPI) unless already done.
  explicit MpiCommunicator(MpiOptions o = {}) : o_(o) {
    if (const char* t = std::getenv("SIEVE_MPI_TIMEOUT")) o_.timeout_seconds = std::atof(t);
    SIEVE_CHECK(o_.timeout_seconds > 0, "MpiCommunicator: timeout must be > 0 s, got ", o_.timeout_seconds);
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
      int provided = 0;
      if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        throw CommError("MpiCommunicator: MPI_Init_thread failed");
      owns_ = true;
    }
    check(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "MPI_Comm_dup", 0);
    check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler", 0);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    if (o_.explain_sigterm && size_ > 1) {
      std::snprintf(detail::g_sigterm_msg, sizeof detail::g_sigterm_msg,
                    "sieve: rank %d of %d: terminated by the MPI launcher (SIGTERM), most likely because "
                    "another rank failed: see its message\n", rank_, size_);
      std::signal(SIGTERM, detail::on_sigterm);
    }
  }
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  /// Finalizes MPI when this object initialised it. Unwinding from an exception instead aborts
  /// the job: MPI_Finalize would wait forever for ranks still blocked in a collective.
  ~MpiCommunicator() override {
    if (std::uncaught_exceptions() > 0 && size_ > 1) {
      std::fprintf(stderr, "sieve: %s: leaving on an exception; aborting the MPI job\n", who().c_str());
      abort(1);
    }
    for (auto& p : pending_) if (p.req != MPI_REQUEST_NULL) MPI_Request_free(&p.req);
    if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
    if (owns_) MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  double timeout_seconds() const { return o_.timeout_seconds; }

  std::size_t start_allreduce_sum(void* data, std::size_t count, DType t, std::string what) override {
    SIEVE_CHECK(count <= static_cast<std::size_t>(INT32_MAX), "dist: allreduce '", what, "' of ", count,
                " elements exceeds MPI's int count; use smaller buckets");
    Pending p;
    p.what = str("allreduce '", what, "' (", count, " elements)");
    check(MPI_Iallreduce(MPI_IN_PLACE, data, static_cast<int>(count), mpi_type(t), MPI_SUM, comm_, &p.req),
          p.what.c_str(), 0);
    pending_.push_back(std::move(p));
    return pending_.size() - 1 + base_;
  }

  void wait(std::size_t handle) override {
    SIEVE_CHECK(handle >= base_ && handle - base_ < pending_.size(), "dist: wait on unknown handle ", handle);
    Pending& p = pending_[handle - base_];
    poll(p.req, p.what);
    // Handles are waited in order in practice; drop the completed prefix.
    while (!pending_.empty() && pending_.front().req == MPI_REQUEST_NULL) {
      pending_.erase(pending_.begin());
      ++base_;
    }
  }

  void broadcast(void* data, std::size_t bytes, int root, std::string_view what) override {
    SIEVE_CHECK(root >= 0 && root < size_, "dist: broadcast '", what, "' from root ", root, " of ", size_, " ranks");
    SIEVE_CHECK(bytes <= static_cast<std::size_t>(INT32_MAX), "dist: broadcast '", what, "' of ", bytes, " bytes is too large");
    const std::string w = str("broadcast '", what, "' (", bytes, " bytes from rank ", root, ")");
    MPI_Request req = MPI_REQUEST_NULL;
    check(MPI_Ibcast(data, static_cast<int>(bytes), MPI_BYTE, root, comm_, &req), w.c_str(), 0);
    poll(req, w);
  }

  std::vector<std::byte> allgather_bytes(std::span<const std::byte> mine, std::vector<std::size_t>& counts,
                                         std::string_view what) override {
    const std::string w = str("allgather '", what, "' (", mine.size(), " bytes here)");
    long long n = static_cast<long long>(mine.size());
    std::vector<long long> all(static_cast<std::size_t>(size_));
    MPI_Request req = MPI_REQUEST_NULL;
    check(MPI_Iallgather(&n, 1, MPI_LONG_LONG, all.data(), 1, MPI_LONG_LONG, comm_, &req), w.c_str(), 0);
    poll(req, w);
    std::vector<int> cnt(all.size()), disp(all.size());
    long long total = 0;
    counts.assign(all.size(), 0);
    for (std::size_t r = 0; r < all.size(); ++r) {
      SIEVE_CHECK(total + all[r] <= INT32_MAX, "dist: allgather '", what, "' exceeds 2 GiB");
      cnt[r] = static_cast<int>(all[r]);
      disp[r] = static_cast<int>(total);
      counts[r] = static_cast<std::size_t>(all[r]);
      total += all[r];
    }
    std::vector<std::byte> out(static_cast<std::size_t>(total));
    check(MPI_Iallgatherv(mine.data(), static_cast<int>(mine.size()), MPI_BYTE, out.data(), cnt.data(), disp.data(),
                          MPI_BYTE, comm_, &req), w.c_str(), 0);
    poll(req, w);
    return out;
  }

  void barrier(std::string_view what) override {
    const std::string w = str("barrier '", what, "'");
    MPI_Request req = MPI_REQUEST_NULL;
    check(MPI_Ibarrier(comm_, &req), w.c_str(), 0);
    poll(req, w);
  }

  [[noreturn]] void abort(int code) noexcept override {
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);  // MPI_Abort should not return; make sure we do not either
  }

 private:
  struct Pending {
    MPI_Request req = MPI_REQUEST_NULL;
    std::string what;
  };

  static MPI_Datatype mpi_type(DType t) {
    switch (t) {
      case DType::f32: return MPI_FLOAT;
      case DType::f64: return MPI_DOUBLE;
      case DType::i64: return MPI_INT64_T;
    }
    return MPI_BYTE;
  }

  void check(int rc, const char* what, int) const {
    if (rc == MPI_SUCCESS) return;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    throw CommError(str("sieve: ", who(), ": ", what, " failed: ", std::string(msg, static_cast<std::size_t>(len))));
  }

  // MPI_Test until done or the deadline. Spin briefly (small messages finish in microseconds),
  // then sleep between tests so a waiting rank leaves the core to the one still computing.
  void poll(MPI_Request& req, const std::string& what) {
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    const auto deadline = t0 + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(o_.timeout_seconds));
    for (long i = 0;; ++i) {
      int done = 0;
      MPI_Status st;
      check(MPI_Test(&req, &done, &st), what.c_str(), 0);
      if (done) return;
      if (i < spin_) continue;
      if (clock::now() > deadline)
        throw CommError(str("sieve: ", who(), ": ", what, " did not complete within ", o_.timeout_seconds,
                            " s: another rank has failed or stalled (see its message). Stopping the job."));
      std::this_thread::sleep_for(std::chrono::microseconds(i < 20000 ? 20 : 200));
    }
  }

  MpiOptions o_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  bool owns_ = false;
  long spin_ = std::getenv("SIEVE_MPI_SPIN") ? std::atol(std::getenv("SIEVE_MPI_SPIN")) : 2000;
  std::vector<Pending> pending_;
  std::size_t base_ = 0;
};

}  // namespace sieve::dist
