// The `sieve` command: one subcommand per .hpp in this folder. Errors are printed as
// `sieve: error: ...`; the exit status is 2 for a usage error (a flag CLI11 refuses, an unknown
// subcommand, cli::UsageError) and 1 for a failure while running; no exception escapes main.
// `sieve help [SUBCOMMAND]` is `sieve [SUBCOMMAND] --help`.
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
#include <vector>

#include "flags.hpp"
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

// SIEVE_CHECK ends its message with " [check failed: <the C++ condition>]" for the library's
// developers; a user of the command gets the sentence before it, which says what is wrong.
// SIEVE_DEBUG=1 in the environment keeps the condition.
std::string for_user(std::string what) {
  static const std::string tag = " [check failed: ";
  const char* debug = std::getenv("SIEVE_DEBUG");
  if (debug && *debug && std::string(debug) != "0") return what;
  const auto at = what.rfind(tag);
  if (at != std::string::npos && !what.empty() && what.back() == ']') what.erase(at);
  return what;
}

constexpr int kUsageError = 2, kFailure = 1;

int error(const std::string& what, int status = kFailure) {
  const auto& comm = sieve::cli::communicator();
  std::cerr << "sieve: " << (comm.size() > 1 ? comm.who() + ": " : std::string()) << "error: " << for_user(what)
            << std::endl;
  if (comm.size() > 1) sieve::cli::communicator().abort(status);
  return status;
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
    CLI::App app{"sieve: train image-retrieval models on the CPU and write Kaggle-style submissions (a known "
                 "class or -1 for a distractor, MAP@5). \"sieve help SUBCOMMAND\" describes each"};
    app.name("sieve");
    app.set_version_flag("--version", version_text());
    app.require_subcommand(1, 1);
    Commands commands;
    std::apply([&](auto&... c) { (c.add_to(app), ...); }, commands);
    auto is_subcommand = [&](const std::string& name) {
      for (const auto* sub : app.get_subcommands([](CLI::App*) { return true; }))
        if (sub->get_name() == name) return true;
      return false;
    };
    // `sieve help [SUBCOMMAND]`: parsed as `sieve [SUBCOMMAND] --help`.
    std::vector<std::string> help_args;
    if (argc > 1 && std::string(argv[1]) == "help") {
      if (argc > 3) return error("'sieve help' takes at most one subcommand name", kUsageError);
      if (argc == 3 && !is_subcommand(argv[2]))
        return error(std::string("unknown subcommand '") + argv[2] + "' (run 'sieve help' for the list)", kUsageError);
      help_args = {argv[0]};
      if (argc == 3) help_args.emplace_back(argv[2]);
      help_args.emplace_back("--help");
    }
    // CLI11 reports a mistyped subcommand as "a subcommand is required"; say what was wrong.
    if (help_args.empty() && argc > 1 && argv[1][0] != '-' && !is_subcommand(argv[1]))
      return error(std::string("unknown subcommand '") + argv[1] + "' (run 'sieve help' for the list)", kUsageError);
    std::vector<char*> help_argv;
    for (auto& a : help_args) help_argv.push_back(a.data());
    try {
      if (help_args.empty()) app.parse(argc, argv);
      else app.parse(static_cast<int>(help_argv.size()), help_argv.data());
    } catch (const CLI::CallForHelp& e) {
      return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
      return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
      return app.exit(e);
    } catch (const CLI::ParseError& e) {
      return error(std::string(e.what()) + " (run 'sieve help' or 'sieve help SUBCOMMAND')", kUsageError);
    }
    if (comm->size() > 1) {
      static const std::set<std::string> parallel{"train", "predict", "embed"};
      for (const auto* sub : app.get_subcommands())
        if (parallel.count(sub->get_name()) == 0)
          return error("'sieve " + sub->get_name() + "' does not run under MPI (" + std::to_string(comm->size()) +
                           " ranks would write the same files); run it without mpirun. Only train, predict and "
                           "embed use several ranks",
                       kUsageError);
    }
    int status = -1;
    std::apply([&](auto&... c) { ((status < 0 && c.app->parsed() ? (status = c.run()) : 0), ...); }, commands);
    if (status >= 0) return status;
    return error("no subcommand given (run 'sieve help')", kUsageError);
  } catch (const sieve::dist::CommError& e) {
    std::cerr << e.what() << std::endl;  // already names this rank and the operation
    if (comm->size() > 1) comm->abort(1);
    return 1;
  } catch (const sieve::cli::UsageError& e) {
    return error(e.what(), kUsageError);
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
