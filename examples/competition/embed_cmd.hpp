#pragma once
/// `sieve embed --run RUN --images DIR --out E.safetensors`: the L2-normalised embeddings of a
/// folder of images under a run's best weights, with their ids, for users' own analysis.
/// Under `mpirun -np N` each rank embeds a block of the images; rank 0 gathers and writes.

#include <CLI/CLI.hpp>

#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "flags.hpp"
#include "parallel.hpp"
#include "run.hpp"
#include "sieve/io/data_folder.hpp"
#include "sieve/retrieval/scores.hpp"

namespace sieve::cli {

struct EmbedCommand {
  CLI::App* app = nullptr;
  std::string run_dir, images, out, tta = "none";
  std::size_t workers = 1, batch = 64;
  bool quiet = false;

  void add_to(CLI::App& parent) {
    app = parent.add_subcommand("embed", "L2-normalised embeddings (and ids) of a folder of images, as safetensors: "
                                         "tensor 'embedding' [N,D], ids in the metadata");
    app->add_option("--run", run_dir, "the run folder (its best/ weights, else last/)")->required();
    app->add_option("--images", images, "folder of .png/.jpg images (ids = file names without extension)")
        ->required();
    app->add_option("--out", out, "the .safetensors file to write")->required();
    app->add_option("--tta", tta, "test-time augmentation: " + tta_help)
        ->check(CLI::IsMember({"none", "flip", "flip-translate"}))
        ->capture_default_str();
    app->add_option("--workers", workers, "image decoding threads")->check(CLI::Range(std::size_t{0}, std::size_t{64}));
    app->add_option("--batch", batch, "inference batch size")->check(CLI::Range(std::size_t{1}, std::size_t{4096}));
    app->add_flag("--quiet", quiet, "no progress lines");
  }

  int run() {
    namespace fs = std::filesystem;
    dist::Communicator& comm = communicator();
    if (comm.rank() != 0) quiet = true;
    SIEVE_CHECK(fs::is_directory(images), images, ": not a directory");
    const RunConfig cfg = load_config(run_dir);
    std::vector<std::string> dupes;
    std::vector<io::FileSample> samples;
    for (const auto& [id, path] : io::detail::list_images(images, images, &dupes, nullptr, nullptr)) samples.push_back({id, path, {}});
    SIEVE_CHECK(dupes.empty(), images, ": two image files share the id '", dupes.empty() ? "" : dupes[0], "'");
    SIEVE_CHECK(!samples.empty(), images, ": no .png or .jpg images");

    Model model = load_model_parallel(comm, run_dir, cfg);
    const io::FileDataset ds(samples);
    const Embedded q = embed_sharded(comm, model, ds, cfg, workers, tta, "embed", batch, quiet);
    if (comm.rank() != 0) return 0;  // rank 0 writes
    EmbeddingsFile e;
    e.embedding = q.embeddings;
    retrieval::l2_normalize_rows(e.embedding);
    e.label.assign(q.ids.size(), -1);
    e.ids = q.ids;
    write_embeddings(out, e,
                     {{"producer", "sieve embed"}, {"normalised", "yes"}, {"tta", tta},
                      {"run", fs::absolute(run_dir).string()}, {"transform", eval_transform_text(cfg)}});
    std::cout << "sieve embed: " << e.ids.size() << " embeddings of dimension " << e.embedding.shape()[1]
              << " written to " << out << "\n";
    return 0;
  }
};

}  // namespace sieve::cli
