#pragma once
/// The embedding pass: a classifier's pooled features and head logits for every image of a
/// dataset, in dataset order, averaged over test-time views (augment/tta.hpp). What ranking,
/// calibration and `sieve embed` consume.
///
/// The views' outputs are averaged with their weights. That is the average of the views'
/// predictions only for outputs linear in the embedding (the head's logits are, so averaged
/// logits are the head of the averaged embedding); probabilities are computed afterwards.

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "sieve/augment/input.hpp"
#include "sieve/augment/tta.hpp"
#include "sieve/core/check.hpp"
#include "sieve/core/xt.hpp"
#include "sieve/io/dataset.hpp"
#include "sieve/io/loader.hpp"

namespace sieve::retrieval {

/// Model outputs for a dataset, rows in dataset order.
struct Embedded {
  Tensor2f embeddings;               ///< [N,D] pooled backbone features, NOT normalised
  Tensor2f logits;                   ///< [N,K] head logits
  std::vector<std::string> ids;      ///< dataset ids
  std::vector<std::int64_t> labels;  ///< first label of each sample (-1 = none)
};

/// A classifier the pass can run: forward gives logits [N,K] and leaves the pooled features
/// [N,D] in embedding(); training/inference modes as nn::ResNet has them.
template <class M>
concept EmbeddingModel = requires(M& m, const M& cm, const Tensor4f& x, bool on) {
  { m.forward(x) } -> std::convertible_to<const Tensor2f&>;
  { cm.embedding() } -> std::convertible_to<const Tensor2f&>;
  { cm.embedding_dim() } -> std::convertible_to<std::size_t>;
  { cm.num_classes() } -> std::convertible_to<std::size_t>;
  { cm.training() } -> std::convertible_to<bool>;
  { cm.inference() } -> std::convertible_to<bool>;
  m.set_training(on);
  m.set_inference(on);
};

struct EmbedOptions {
  std::size_t batch = 64;
  std::size_t workers = 1;  ///< loader threads (0: decode on the calling thread)
  std::uint64_t seed = 0;   ///< the loader's seed (the eval transform draws nothing that matters)
};

/// Called after each batch: (view index, number of views, images done in this view, images).
using EmbedProgress = std::function<void(std::size_t, std::size_t, std::size_t, std::size_t)>;

/// Embeddings and logits of every sample of `ds` under the inference input of `input`,
/// averaged over `views` with their weights. The model runs in eval and inference mode (batch
/// norm folded: faster, equal to eval mode to rounding); both modes are restored on return, so
/// a training run can embed mid-run.
/// Requires: ds.size() >= 1, views non-empty, every image decodable (errors name the sample).
/// Ensures: rows in dataset order; labels[i] = the sample's first label, or -1.
template <EmbeddingModel M>
Embedded embed_dataset(M& model, const io::Dataset& ds, const augment::InputSpec& input,
                       std::span<const augment::TtaView> views, const EmbedOptions& opt = {},
                       const EmbedProgress& progress = {}) {
  const std::size_t N = ds.size(), D = model.embedding_dim(), K = model.num_classes();
  SIEVE_CHECK(N > 0, "embed_dataset: no images to embed");
  SIEVE_CHECK(!views.empty(), "embed_dataset: no test-time views (use augment::tta_views(\"none\"))");
  struct ModeScope {
    M& m;
    bool training, inference;
    ~ModeScope() {
      m.set_inference(inference);
      m.set_training(training);
    }
  } scope{model, model.training(), model.inference()};
  model.set_training(false);
  model.set_inference(true);
  Embedded out;
  out.embeddings = xt::zeros<float>({N, D});
  out.logits = xt::zeros<float>({N, K});
  out.ids.resize(N);
  out.labels.assign(N, -1);
  for (std::size_t v = 0; v < views.size(); ++v) {
    const auto w = static_cast<float>(views[v].weight);
    io::LoaderOptions lo;
    lo.batch_size = opt.batch;
    lo.workers = opt.workers;
    lo.shuffle = false;
    lo.seed = opt.seed;
    io::Loader<augment::InputTransform> loader(ds, augment::eval_input_transform(input, views[v]), lo);
    loader.start(0);
    std::size_t done = 0;
    while (auto b = loader.next()) {
      const Tensor2f& logits = model.forward(b->images);
      const Tensor2f& emb = model.embedding();
      SIEVE_CHECK(logits.shape()[1] == K && emb.shape()[1] == D, "embed_dataset: the model gave logits [",
                  logits.shape()[0], ",", logits.shape()[1], "] and embeddings [", emb.shape()[0], ",",
                  emb.shape()[1], "], expected K=", K, " and D=", D);
      for (std::size_t k = 0; k < b->size(); ++k) {
        const std::size_t i = b->indices[k];
        float* e = out.embeddings.data() + i * D;
        float* l = out.logits.data() + i * K;
        for (std::size_t d = 0; d < D; ++d) e[d] += w * emb(k, d);
        for (std::size_t c = 0; c < K; ++c) l[c] += w * logits(k, c);
        out.ids[i] = b->ids[k];
        out.labels[i] = b->labels[k].empty() ? -1 : b->labels[k][0];
      }
      done += b->size();
      if (progress) progress(v, views.size(), done, N);
    }
  }
  return out;
}

}  // namespace sieve::retrieval
