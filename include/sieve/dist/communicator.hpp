#pragma once
/// The collective operations data-parallel training needs, behind one small interface: a
/// single-process implementation (always available) and an MPI one (dist/mpi.hpp, compiled
/// only with SIEVE_WITH_MPI). Every operation is collective: all ranks call it in the same
/// order with matching sizes, or the job stops with a CommError (never hangs: see mpi.hpp).

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "sieve/core/check.hpp"

namespace sieve::dist {

/// A communication failure: a rank died or stalled past the timeout, or MPI returned an error.
/// The message names this rank, the operation and its size. After it, the only safe next step
/// is Communicator::abort(): the collective may still be pending on other ranks.
class CommError : public Error {
 public:
  using Error::Error;
};

enum class DType { f32, f64, i64 };

template <class T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, float>) return DType::f32;
  else if constexpr (std::is_same_v<T, double>) return DType::f64;
  else {
    static_assert(std::is_same_v<T, std::int64_t>, "dist: only float, double and int64 reduce");
    return DType::i64;
  }
}

/// A group of `size()` cooperating processes, this one being `rank()`.
class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// "rank R of N" (for messages).
  std::string who() const { return str("rank ", rank(), " of ", size()); }

  /// Start an elementwise in-place sum over all ranks; returns a handle for wait().
  /// Requires: every rank passes the same count and type; `data` stays valid until wait().
  virtual std::size_t start_allreduce_sum(void* data, std::size_t count, DType t, std::string what) = 0;
  /// Complete a started operation. Throws CommError on error or timeout.
  virtual void wait(std::size_t handle) = 0;
  /// Copy `bytes` bytes from `root` to every rank (in place).
  virtual void broadcast(void* data, std::size_t bytes, int root, std::string_view what) = 0;
  /// Concatenate every rank's bytes in rank order, on every rank; `counts` gets each rank's size.
  virtual std::vector<std::byte> allgather_bytes(std::span<const std::byte> mine, std::vector<std::size_t>& counts,
                                                 std::string_view what) = 0;
  virtual void barrier(std::string_view what) = 0;
  /// End the whole job now (all ranks) with exit code `code`. Never returns.
  [[noreturn]] virtual void abort(int code) noexcept = 0;

  /// Blocking in-place sum.
  template <class T>
  void allreduce_sum(std::span<T> data, std::string what) {
    if (data.empty()) return;
    wait(start_allreduce_sum(data.data(), data.size(), dtype_of<T>(), std::move(what)));
  }
  template <class T>
  void broadcast(std::span<T> data, int root, std::string_view what) {
    static_assert(std::is_trivially_copyable_v<T>);
    if (!data.empty()) broadcast(static_cast<void*>(data.data()), data.size_bytes(), root, what);
  }
};

/// One process: sums are the identity, broadcasts and barriers are no-ops.
class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::size_t start_allreduce_sum(void*, std::size_t, DType, std::string) override { return 0; }
  void wait(std::size_t) override {}
  void broadcast(void*, std::size_t, int root, std::string_view what) override {
    SIEVE_CHECK(root == 0, "dist: broadcast '", what, "' from root ", root, " but there is only rank 0");
  }
  std::vector<std::byte> allgather_bytes(std::span<const std::byte> mine, std::vector<std::size_t>& counts,
                                         std::string_view) override {
    counts.assign(1, mine.size());
    return {mine.begin(), mine.end()};
  }
  void barrier(std::string_view) override {}
  [[noreturn]] void abort(int code) noexcept override { std::exit(code); }
};

}  // namespace sieve::dist
