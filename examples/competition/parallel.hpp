#pragma once
/// MPI for the `sieve` subcommands: the process-wide communicator (MPI under mpirun when built
/// with -Dmpi=enabled, else a single process) and sharded inference. With one process every
/// helper here does exactly what the plain code did, so single-process runs stay bit-identical.
///
/// Under `mpirun -np N`: `train` is data-parallel (see train_cmd.hpp), `predict` and `embed`
/// shard the images over the ranks and gather the results; rank 0 alone writes files and prints.

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "run.hpp"
#include "sieve/dist/dist.hpp"

namespace sieve::cli {

/// Where main() installs the process's communicator (nullptr until then: one process).
inline dist::Communicator*& communicator_slot() {
  static dist::Communicator* c = nullptr;
  return c;
}

/// The process's communicator.
/// Ensures: a single-process communicator when main() installed none (tests, tools).
inline dist::Communicator& communicator() {
  static dist::SingleProcess single;
  dist::Communicator* c = communicator_slot();
  return c != nullptr ? *c : single;
}

/// embed_dataset over the ranks: rank r embeds block r of `ds` (dist::shard_range), then the
/// rows, ids and labels are gathered in rank order, so every rank returns what one process
/// would (rows in dataset order). Collective. Progress is shown for rank 0's block only.
/// Requires: ds.size() >= 1; the same model weights on every rank.
inline Embedded embed_sharded(dist::Communicator& comm, Model& model, const io::Dataset& ds, const RunConfig& cfg,
                              std::size_t workers, const std::string& tta, const std::string& what, std::size_t batch,
                              bool quiet) {
  if (comm.size() == 1) return embed_dataset(model, ds, cfg, workers, tta, what, batch, quiet);
  SIEVE_CHECK(ds.size() > 0, what, ": no images to embed");
  const dist::RangeDataset part(ds, dist::shard_range(ds.size(), comm.rank(), comm.size()));
  Embedded mine;
  if (part.size() > 0) {
    mine = embed_dataset(model, part, cfg, workers, tta, what, batch, quiet || comm.rank() != 0);
  } else {  // fewer images than ranks: this rank contributes no rows
    mine.embeddings = Tensor2f::from_shape({0, model.embedding_dim()});
    mine.logits = Tensor2f::from_shape({0, model.num_classes()});
  }
  Embedded all;
  all.embeddings = dist::allgather_rows(comm, mine.embeddings, what + " embeddings");
  all.logits = dist::allgather_rows(comm, mine.logits, what + " logits");
  all.ids = dist::allgather_strings(comm, mine.ids, what + " ids");
  all.labels = dist::allgather_values(comm, mine.labels, what + " labels");
  SIEVE_CHECK(all.embeddings.shape()[0] == ds.size() && all.logits.shape()[0] == ds.size() &&
                  all.ids.size() == ds.size() && all.labels.size() == ds.size(),
              what, ": gathered ", all.embeddings.shape()[0], " embeddings, ", all.logits.shape()[0], " logits, ",
              all.ids.size(), " ids and ", all.labels.size(), " labels from ", comm.size(), " ranks for ", ds.size(),
              " images");
  return all;
}

/// The training loss averaged over all ranks' samples (a wrapper of the trainer's loss): each
/// rank's mean loss is weighted by its sample count. Gradients are untouched (the allreduce in
/// dist::DataParallel averages them); what changes is the value the trainer logs and checks, so
/// metrics.jsonl reports the global batch's loss, as one process would, and a non-finite loss on
/// any rank makes every rank skip the step together. Collective (one tiny allreduce per step).
template <class L>
class RankMeanLoss {
 public:
  using value_type = typename L::value_type;
  using output_type = typename L::output_type;
  using target_type = typename L::target_type;

  /// Requires: `inner` and `comm` outlive the wrapper.
  RankMeanLoss(L& inner, dist::Communicator& comm) : inner_(inner), comm_(comm) {}

  double forward(const output_type& x, const target_type& y, double grad_scale = 1.0) {
    const double n = static_cast<double>(x.shape()[0]);
    std::array<double, 2> sum{inner_.forward(x, y, grad_scale) * n, n};
    comm_.allreduce_sum(std::span<double>(sum), "training loss");
    return sum[0] / sum[1];
  }
  decltype(auto) backward() const { return inner_.backward(); }

 private:
  L& inner_;
  dist::Communicator& comm_;
};

template <class M>
inline constexpr bool is_data_parallel = false;
template <class X>
inline constexpr bool is_data_parallel<dist::DataParallel<X>> = true;

/// load_model for every rank: rank 0 first recovers an interrupted checkpoint rename (the only
/// write weights_dir may do), then all ranks read the same best/ (else last/). Collective.
inline Model load_model_parallel(dist::Communicator& comm, const fs::path& run, const RunConfig& cfg) {
  if (comm.size() > 1) {
    if (comm.rank() == 0) (void)weights_dir(run);
    comm.barrier("checkpoint recovered by rank 0");
  }
  return load_model(run, cfg);
}

/// Seed of the Dropout stage on `rank`: rank 0 keeps cfg.seed (its masks are the ones a single
/// process draws for the first rows of each batch); the other ranks get their own streams, since
/// the trainer keys dropout by (epoch, batch), which is the same on every rank, and equal seeds
/// would give rank r's i-th sample the mask of rank 0's i-th sample.
inline std::uint64_t dropout_seed(std::uint64_t seed, int rank) {
  return rank == 0 ? seed : seed ^ (0xD1B54A32D192ED03ull * static_cast<std::uint64_t>(rank));
}

}  // namespace sieve::cli
