#pragma once
/// Data-parallel training on MPI: umbrella header. With SIEVE_WITH_MPI, make_communicator()
/// returns an MpiCommunicator when launched by mpirun, otherwise (and without MPI) a
/// SingleProcess communicator, so one binary runs both ways.

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <memory>
#include <string>

#include "sieve/core/parallel.hpp"
#include "sieve/dist/communicator.hpp"
#include "sieve/dist/data_parallel.hpp"
#include "sieve/dist/shard.hpp"
#ifdef SIEVE_WITH_MPI
#include "sieve/dist/mpi.hpp"
#endif

namespace sieve::dist {

/// True when this process was started by an MPI launcher (OpenMPI's mpirun, or a PMI/PMIx one).
inline bool launched_by_mpirun() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMIX_RANK") != nullptr ||
         std::getenv("PMI_RANK") != nullptr;
}

/// The communicator for this process: MPI under mpirun (when built with SIEVE_WITH_MPI),
/// otherwise a single process. Throws when started by mpirun but built without MPI, since
/// N independent copies of the same run would silently overwrite each other's files.
inline std::unique_ptr<Communicator> make_communicator() {
#ifdef SIEVE_WITH_MPI
  if (launched_by_mpirun()) return std::make_unique<MpiCommunicator>();
#else
  if (const char* n = std::getenv("OMPI_COMM_WORLD_SIZE"); n != nullptr && std::atoi(n) > 1)
    fail("sieve was started by mpirun with ", n, " ranks but built without MPI: reconfigure with -Dmpi=enabled");
#endif
  return std::make_unique<SingleProcess>();
}

/// Ranks sharing a host would each start one compute thread per core. Unless the user chose
/// (OMP_NUM_THREADS set), and when the launcher says how many ranks share this host (OpenMPI's
/// OMPI_COMM_WORLD_LOCAL_SIZE), give each rank its share of the current thread count (at
/// least 1). Returns the compute threads this rank now uses. Call once, at startup.
inline int share_host_cores(const Communicator& c) {
  if (c.size() > 1 && std::getenv("OMP_NUM_THREADS") == nullptr)
    if (const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE"); local != nullptr && std::atoi(local) > 0)
      set_threads(std::max(1, threads() / std::atoi(local)));
  return threads();
}

/// Run `body()` (returning an exit code) so that a failure on any rank ends the job with a message
/// instead of a hang: an exception is printed as "<prog>: rank R of N: error: ..." (a CommError
/// already names its rank) and, with more than one rank, the job is aborted (MPI_Abort), since
/// the other ranks may be waiting in a collective for this one.
template <class F>
int run_guarded(Communicator& c, const std::string& prog, F&& body, std::ostream& err = std::cerr) {
  try {
    return body();
  } catch (const CommError& e) {
    err << e.what() << std::endl;
  } catch (const std::exception& e) {
    err << prog << ": " << (c.size() > 1 ? c.who() + ": " : std::string()) << "error: " << e.what() << std::endl;
  }
  if (c.size() > 1) c.abort(1);
  return 1;
}

}  // namespace sieve::dist
