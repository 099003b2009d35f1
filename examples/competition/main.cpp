// The `sieve` command: one subcommand per .hpp in this folder. Errors are printed as
// `sieve: error: ...` with exit status 1; no exception escapes main.
//
// Under `mpirun -np N` (built with -Dmpi=enabled) train/predict/embed run on all ranks (see
// parallel.hpp); an error on any rank is printed as `sieve: rank R of N: error: ...` and ends
// the whole job (MPI_Abort), since the other ranks may be waiting for this one in a collective.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <memory>
#include <new>
#include <set>
#include <string>
#include <tuple>

#include "parallel.hpp"
#include "sieve/core/check.hpp"
#include "sieve/core/parallel.hpp"
#include "sieve/core/simd.hpp"
#include "sieve/dist/dist.hpp"

// The subcommands: one header each, each a type with `CLI::App* app`, `void add_to(CLI::App&)`
// and `int run()`. To add one: include its header here and add its type to Commands.
#include "forward.hpp"
#include "inspect.hpp"
#include "prepare_cmd.hpp"
#include "validate_cmd.hpp"
#include "embed_cmd.hpp"
#include "score_cmd.hpp"
#include "train_cmd.hpp"
#include "predict_cmd.hpp"
#include "report_cmd.hpp"

using Commands = std::tuple<sieve::cli::ForwardCommand, sieve::cli::InspectCommand, sieve::cli::ScoreCommand, sieve::cli::PrepareCommand, sieve::cli::ValidateCommand, sieve::cli::TrainCommand, sieve::cli::PredictCommand, sieve::cli::ReportCommand, sieve::cli::EmbedCommand>;

namespace {
#ifndef SIEVE_VERSION
#define SIEVE_VERSION "unknown"
#endif

// `sieve --version`: the version and what the build compiled in, for bug reports and for
// knowing whether a binary may be copied to another machine (kernels built for AVX2/AVX-512
// stop with an illegal instruction on CPUs without them).
std::string version_text() {
  std::string isa;
#if defined(__AVX512F__)
  isa += " AVX-512F";
#endif
#if defined(__AVX2__)
  isa += " AVX2";
#endif
#if defined(__FMA__)
  isa += " FMA";
#endif
  std::string text = std::string("sieve ") + SIEVE_VERSION + "\n";
  text += "instruction sets compiled in:" + (isa.empty() ? std::string(" baseline x86-64 only") : isa) +
          (SIEVE_AVX2_FMA ? " (vector kernels on; the CPU must have these)" : " (portable loops)") + "\n";
#ifdef SIEVE_WITH_MPI
  text += "MPI: yes (mpirun -np N sieve train|predict|embed)\n";
#else
  text += "MPI: no (configure with -Dmpi=enabled)\n";
#endif
#if defined(__GNUC__) && !defined(__clang__)
  text += "compiler: GCC " + std::to_string(__GNUC__) + "." + std::to_string(__GNUC_MINOR__);
#elif defined(__clang__)
  text += "compiler: clang " + std::to_string(__clang_major__) + "." + std::to_string(__clang_minor__);
#endif
#ifdef NDEBUG
  text += ", optimised (NDEBUG)";
#else
  text += ", debug (assertions on)";
#endif
  return text;
}

int error(const std::string& what) {
  const auto& comm = sieve::cli::communicator();
  std::cerr << "sieve: " << (comm.size() > 1 ? comm.who() + ": " : std::string()) << "error: " << what << std::endl;
  if (comm.size() > 1) sieve::cli::communicator().abort(1);
  return 1;
}
}  // namespace

int main(int argc, char** argv) {
  // Outside the try below: destroying an MPI communicator while an exception unwinds would abort
  // the job before the error is printed.
  std::unique_ptr<sieve::dist::Communicator> comm;
  try {
    comm = sieve::dist::make_communicator();
  } catch (const std::exception& e) {
    return error(e.what());
  }
  sieve::cli::communicator_slot() = comm.get();
  // Ranks sharing a machine split its cores (unless OMP_NUM_THREADS, or --threads later, says).
  sieve::dist::share_host_cores(*comm);
  try {
    CLI::App app{"sieve: train and run image-retrieval models (ResNet50, BCE multilabel head) on the CPU"};
    app.name("sieve");
    app.set_version_flag("--version", version_text());
    app.require_subcommand(1, 1);
    Commands commands;
    std::apply([&](auto&... c) { (c.add_to(app), ...); }, commands);
    // CLI11 reports a mistyped subcommand as "a subcommand is required"; say what was wrong.
    if (argc > 1 && argv[1][0] != '-') {
      bool known = false;
      for (const auto* sub : app.get_subcommands([](CLI::App*) { return true; })) known = known || sub->get_name() == argv[1];
      if (!known) return error(std::string("unknown subcommand '") + argv[1] + "' (run 'sieve --help' for the list)");
    }
    try {
      app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
      return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
      return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
      return app.exit(e);
    } catch (const CLI::ParseError& e) {
      return error(std::string(e.what()) + " (run 'sieve --help' or 'sieve SUBCOMMAND --help')");
    }
    if (comm->size() > 1) {
      static const std::set<std::string> parallel{"train", "predict", "embed"};
      for (const auto* sub : app.get_subcommands())
        if (parallel.count(sub->get_name()) == 0)
          return error("'sieve " + sub->get_name() + "' does not run under MPI (" + std::to_string(comm->size()) +
                       " ranks would write the same files); run it without mpirun. Only train, predict and embed "
                       "use several ranks");
    }
    int status = -1;
    std::apply([&](auto&... c) { ((status < 0 && c.app->parsed() ? (status = c.run()) : 0), ...); }, commands);
    if (status >= 0) return status;
    return error("no subcommand given (run 'sieve --help')");
  } catch (const sieve::dist::CommError& e) {
    std::cerr << e.what() << std::endl;  // already names this rank and the operation
    if (comm->size() > 1) comm->abort(1);
    return 1;
  } catch (const sieve::Error& e) {
    return error(e.what());
  } catch (const std::bad_alloc&) {
    return error("out of memory");
  } catch (const std::exception& e) {
    return error(std::string("unexpected failure: ") + e.what());
  } catch (...) {
    return error("unexpected failure of unknown type");
  }
}
