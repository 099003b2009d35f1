#pragma once
/// `sieve train --data DIR --out RUN [...]`: train the classifier (ResNet | Dropout | Linear,
/// BCE-with-logits on one-hot targets, AdamW, warmup + cosine, early stopping on validation
/// MAP@5), then calibrate the -1 threshold of every ranking method on validation with the best
/// weights. Writes RUN/config.json, split.json, metrics.jsonl, last/, best/, calibration.json
/// and train_embeddings.safetensors. `--resume RUN` continues from RUN/last/ exactly.
///
/// Validation: a seeded stratified `--val-frac` of each class of train.csv, plus outside
/// images making up `--outside-frac` of the validation set (labelled -1). With `--negatives`
/// the remaining outside images train as all-zero targets.
/// `--freeze backbone --augment none` takes the embedding-cache fast path: backbone features
/// are computed once (cached under RUN/cache/) and only the head trains.
///
/// Under `mpirun -np N` (built with -Dmpi=enabled) training is data-parallel: --batch is the
/// global batch (a multiple of N; each rank takes batch/N of every batch, drawn from the same
/// seeded epoch order one process uses), gradients are averaged over the ranks, validation,
/// calibration embeddings and a missing embedding cache are computed in shards, and rank 0
/// alone writes RUN/ and prints. --max-minutes is refused (the ranks' clocks would stop them at
/// different steps); use --max-steps. With N = 1 nothing changes.

#include <CLI/CLI.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "parallel.hpp"
#include "run.hpp"
#include "sieve/dist/dist.hpp"
#include "sieve/io/data_folder.hpp"
#include "sieve/io/file.hpp"
#include "sieve/kernels/gemm.hpp"
#include "sieve/loss/bce_with_logits.hpp"
#include "sieve/nn/state_dict.hpp"
#include "sieve/optim/adamw.hpp"
#include "sieve/optim/schedule.hpp"
#include "sieve/retrieval/scores.hpp"
#include "sieve/retrieval/threshold.hpp"
#include "sieve/train/embedding_cache.hpp"
#include "sieve/train/loader_adapter.hpp"
#include "sieve/train/memory_loader.hpp"
#include "sieve/train/trainer.hpp"

namespace sieve::cli {

/// Which samples train and which validate. Indices into DataFolder::train / ::outside.
struct TrainSplit {
  std::vector<std::size_t> train;        ///< labelled train images used for training
  std::vector<std::size_t> val;          ///< labelled train images held out
  std::vector<std::size_t> val_outside;  ///< outside images in the validation set (label -1)
  std::vector<std::size_t> negatives;    ///< outside images trained as all-zero targets (--negatives)
};

/// Seeded stratified split. Per class c (n_c images): floor(n_c * val_frac) held out, at least
/// 1 when n_c >= 2, always leaving one to train. Outside images: round(n_val * f / (1 - f))
/// (capped by what exists) join validation; the rest are negatives when asked.
/// Ensures: deterministic in (folder, seed, fractions); index lists sorted.
inline TrainSplit make_split(const io::DataFolder& df, std::uint64_t seed, double val_frac, double outside_frac,
                             bool negatives) {
  const std::size_t K = df.classes.size();
  std::vector<std::vector<std::size_t>> by_class(K);
  for (std::size_t i = 0; i < df.train.size(); ++i)
    by_class[static_cast<std::size_t>(df.train[i].labels.at(0))].push_back(i);
  const std::uint64_t key = derive_seed(seed, RngPurpose::split);
  auto shuffle = [&](std::vector<std::size_t>& v, std::uint64_t stream) {
    Rng rng(key, stream);
    for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.below(i)]);
  };
  TrainSplit s;
  for (std::size_t c = 0; c < K; ++c) {
    auto& v = by_class[c];
    shuffle(v, c);
    std::size_t n_val = static_cast<std::size_t>(std::floor(static_cast<double>(v.size()) * val_frac));
    if (n_val == 0 && v.size() >= 2) n_val = 1;
    if (n_val >= v.size()) n_val = v.size() - 1;
    s.val.insert(s.val.end(), v.begin(), v.begin() + static_cast<std::ptrdiff_t>(n_val));
    s.train.insert(s.train.end(), v.begin() + static_cast<std::ptrdiff_t>(n_val), v.end());
  }
  std::vector<std::size_t> out(df.outside.size());
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = i;
  shuffle(out, K + 1000);
  const auto want = static_cast<std::size_t>(
      std::llround(static_cast<double>(s.val.size()) * outside_frac / (1.0 - outside_frac)));
  const std::size_t n_out = std::min(want, out.size());
  s.val_outside.assign(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(n_out));
  if (negatives) s.negatives.assign(out.begin() + static_cast<std::ptrdiff_t>(n_out), out.end());
  for (auto* v : {&s.train, &s.val, &s.val_outside, &s.negatives}) std::sort(v->begin(), v->end());
  return s;
}

/// The head on cached backbone embeddings: forward = fc(dropout(embedding)). Its params()
/// and buffers() are the whole model's (backbone frozen), so the trainer's checkpoints hold
/// the complete classifier, loadable like any other run.
class CachedHead {
 public:
  using input_type = Tensor2f;
  using output_type = Tensor2f;
  explicit CachedHead(Model& m) : m_(m) {}
  const Tensor2f& forward(const Tensor2f& x) { return m_.head().forward(m_.dropout().forward(x)); }
  const Tensor2f& backward(const Tensor2f& dy) { return m_.dropout().backward(m_.head().backward(dy)); }
  std::vector<ParamRef<float>> params() { return m_.params(); }
  std::vector<BufferRef<float>> buffers() { return m_.buffers(); }
  void zero_grad() { m_.head().zero_grad(); }
  void set_training(bool t) { m_.dropout().set_training(t); }
  void set_random_step(std::uint64_t s) { m_.dropout().set_step(s); }

 private:
  Model& m_;
};

/// Validation MAP@5 of the head with the -1 threshold swept (the early-stopping metric), and
/// the known-class top-1 of the held-out train images.
inline std::map<std::string, double> head_validation(const Tensor2f& logits, const std::vector<std::int64_t>& truth) {
  const auto sweep = retrieval::sweep_threshold(retrieval::head_scores(logits), truth, threshold_grid(Method::head));
  const std::size_t N = logits.shape()[0], K = logits.shape()[1];
  std::size_t known = 0, hit = 0;
  for (std::size_t i = 0; i < N; ++i) {
    if (truth[i] < 0) continue;
    ++known;
    const float* r = logits.data() + i * K;
    hit += static_cast<std::int64_t>(std::max_element(r, r + K) - r) == truth[i];
  }
  return {{"val_map5", sweep.best_map5},
          {"val_threshold", sweep.best_threshold},
          {"val_top1", known ? static_cast<double>(hit) / static_cast<double>(known) : 0.0}};
}

struct TrainCommand {
  CLI::App* app = nullptr;
  std::string data, out, resume, weights, arch = "resnet50", blocks, fit = "resize", augment = "crop-flip",
                                              freeze = "none";
  std::vector<float> mean, stdev;
  std::size_t image_size = 224, width = 64, workers = 2;
  std::int64_t epochs = 30, batch = 64, patience = 6, max_steps = -1;
  double lr = 1e-3, weight_decay = 1e-4, dropout = 0.2, outside_frac = 0.3, val_frac = 0.1, warmup_epochs = 1.0,
         max_minutes = 0.0;
  std::uint64_t seed = 0;
  bool negatives = false, quiet = false;
  int threads = 0;

  // Flags that define the run; with --resume they come from RUN/config.json instead.
  static const std::vector<std::string>& config_flags() {
    static const std::vector<std::string> f{"--data", "--out", "--weights", "--arch", "--blocks", "--width",
                                            "--image-size", "--fit", "--mean", "--std", "--augment", "--freeze",
                                            "--epochs", "--batch", "--lr", "--weight-decay", "--dropout",
                                            "--warmup-epochs", "--patience", "--seed", "--negatives",
                                            "--outside-frac", "--val-frac"};
    return f;
  }

  void add_to(CLI::App& parent) {
    app = parent.add_subcommand("train", "Train the classifier on a data folder (ResNet backbone, dropout, linear "
                                         "head, BCE, AdamW, warmup+cosine, early stopping on validation MAP@5), then "
                                         "calibrate the -1 threshold of every ranking method on validation");
    app->add_option("--data", data, "data folder (train.csv, train/, optional outside/; see 'sieve validate')");
    app->add_option("--out", out, "run folder to create (must not already hold a run)");
    app->add_option("--resume", resume, "continue the run in this folder from its last/ checkpoint (its "
                                        "config.json fixes every setting; only --max-minutes, --max-steps, "
                                        "--threads, --workers may be given)");
    app->add_option("--weights", weights, "start from pretrained weights (.safetensors, torchvision or timm names; "
                                          "the head is re-initialised when its class count differs)");
    app->add_option("--arch", arch, "backbone: resnet50 (3,4,6,3), resnet26 (2,2,2,2), resnet101 (3,4,23,3), "
                                    "tiny (1,1,1,1 width 16); --blocks/--width override")
        ->check(CLI::IsMember({"resnet26", "resnet50", "resnet101", "tiny"}))
        ->capture_default_str();
    app->add_option("--blocks", blocks, "bottleneck blocks per stage, comma-separated, 1-4 stages (e.g. 1,1)");
    app->add_option("--width", width, "stem width (64 for resnet50); the embedding has width*2^(stages-1)*4 dims")
        ->check(CLI::Range(std::size_t{1}, std::size_t{512}));
    app->add_option("--image-size", image_size, "network input size S (S x S)")
        ->check(CLI::Range(std::size_t{8}, std::size_t{4096}))
        ->capture_default_str();
    app->add_option("--fit", fit, "resize: shorter edge to S + centre crop; pad: letterbox to S x S (zero padding, "
                                  "shrinking larger images)")
        ->check(CLI::IsMember({"resize", "pad"}))
        ->capture_default_str();
    app->add_option("--mean", mean, "per-channel mean (1 or 3 values; default ImageNet's)")->expected(1, 3);
    app->add_option("--std", stdev, "per-channel std (1 or 3 values; default ImageNet's)")->expected(1, 3);
    app->add_option("--augment", augment, "crop-flip: random crop (padding S/8) + horizontal flip; none")
        ->check(CLI::IsMember({"crop-flip", "none"}))
        ->capture_default_str();
    app->add_option("--freeze", freeze, "backbone: train only the head (with --augment none: embedding-cache fast "
                                        "path); stem: freeze conv1/bn1; none")
        ->check(CLI::IsMember({"none", "stem", "backbone"}))
        ->capture_default_str();
    app->add_option("--epochs", epochs, "maximum epochs")->check(CLI::Range(1, 100000))->capture_default_str();
    app->add_option("--batch", batch, "batch size")->check(CLI::Range(1, 65536))->capture_default_str();
    app->add_option("--lr", lr, "AdamW learning rate (peak of the schedule)")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    app->add_option("--weight-decay", weight_decay, "AdamW decoupled weight decay (not on BN and biases)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    app->add_option("--dropout", dropout, "dropout before the head")->check(CLI::Range(0.0, 0.99))->capture_default_str();
    app->add_option("--warmup-epochs", warmup_epochs, "linear warmup length in epochs (at most a tenth of all "
                                                      "steps), then cosine to 0")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    app->add_option("--patience", patience, "early stopping: epochs without a better validation MAP@5")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    app->add_option("--seed", seed, "seed of initialisation, split, order, augmentation and dropout")
        ->capture_default_str();
    app->add_flag("--negatives", negatives, "also train on the outside images not used for validation, as "
                                            "all-zero targets");
    app->add_option("--outside-frac", outside_frac, "fraction of the validation set made of outside images")
        ->check(CLI::Range(0.0, 0.95))
        ->capture_default_str();
    app->add_option("--val-frac", val_frac, "fraction of each class held out for validation")
        ->check(CLI::Range(0.001, 0.9))
        ->capture_default_str();
    app->add_option("--max-minutes", max_minutes, "stop (saving last/) after this much training time in this "
                                                  "invocation; calibration still runs")
        ->check(CLI::NonNegativeNumber);
    app->add_option("--max-steps", max_steps, "stop (saving last/) after this many optimizer steps in this "
                                              "invocation; calibration still runs")
        ->check(CLI::PositiveNumber);
    app->add_option("--threads", threads, "compute threads (0 = OMP_NUM_THREADS or all cores)")->check(CLI::NonNegativeNumber);
    app->add_option("--workers", workers, "image loading threads (0 = load on the training thread)")
        ->capture_default_str();
    app->add_flag("--quiet", quiet, "no progress lines (errors and the final summary only)");
  }

  /// Configuration from the command line (a fresh run).
  RunConfig config_from_flags() const {
    RunConfig c;
    SIEVE_CHECK(!data.empty(), "train: --data DIR is required (or --resume RUN)");
    SIEVE_CHECK(!out.empty(), "train: --out RUN is required (or --resume RUN)");
    c.data = fs::absolute(data).lexically_normal().string();
    c.arch = arch;
    if (arch == "resnet26") c.blocks = {2, 2, 2, 2};
    else if (arch == "resnet101") c.blocks = {3, 4, 23, 3};
    else if (arch == "tiny") c.blocks = {1, 1, 1, 1}, c.width = 16;
    if (!blocks.empty()) {
      c.blocks.clear();
      std::size_t pos = 0;
      while (pos <= blocks.size()) {
        const auto comma = std::min(blocks.find(',', pos), blocks.size());
        const std::string part = blocks.substr(pos, comma - pos);
        SIEVE_CHECK(!part.empty() && part.size() <= 3 && part.find_first_not_of("0123456789") == std::string::npos &&
                        std::stoul(part) >= 1,
                    "train: --blocks '", blocks, "': '", part, "' is not a positive block count (e.g. --blocks 1,1,1,1)");
        c.blocks.push_back(std::stoul(part));
        pos = comma + 1;
      }
      SIEVE_CHECK(c.blocks.size() <= 4, "train: --blocks '", blocks, "' has ", c.blocks.size(),
                  " stages; 1 to 4 are supported");
      c.arch = "custom";
    }
    if (app->count("--width") > 0) c.width = width, c.arch = "custom";
    c.image_size = image_size;
    c.fit = fit;
    auto triple = [](const std::vector<float>& v, const char* flag) {
      SIEVE_CHECK(v.size() == 1 || v.size() == 3, "train: ", flag, " takes 1 or 3 values, got ", v.size());
      return v.size() == 1 ? std::array<float, 3>{v[0], v[0], v[0]} : std::array<float, 3>{v[0], v[1], v[2]};
    };
    if (!mean.empty()) c.mean = triple(mean, "--mean");
    if (!stdev.empty()) c.std = triple(stdev, "--std");
    c.augment = augment;
    c.epochs = epochs;
    c.batch = batch;
    c.lr = lr;
    c.weight_decay = weight_decay;
    c.dropout = dropout;
    c.warmup_epochs = warmup_epochs;
    c.patience = patience;
    c.seed = seed;
    c.freeze = freeze;
    c.negatives = negatives;
    c.outside_frac = outside_frac;
    c.val_frac = val_frac;
    if (!weights.empty()) {
      SIEVE_CHECK(fs::is_regular_file(weights), "train: --weights ", weights, ": no such file");
      c.weights = fs::absolute(weights).lexically_normal().string();
    }
    return c;
  }

  int run() {
    if (threads > 0) sieve::set_threads(threads);
    dist::Communicator& comm = communicator();
    const int ranks = comm.size();
    const bool root = comm.rank() == 0;
    if (!root) quiet = true;  // progress and notes from rank 0 only
    if (ranks > 1)
      SIEVE_CHECK(max_minutes <= 0.0, "train: --max-minutes cannot be used with ", ranks, " MPI ranks: each rank "
                  "would stop on its own clock, at different steps; use --max-steps");
    RunConfig cfg;
    fs::path run_dir;
    const bool resuming = !resume.empty();
    if (resuming) {
      for (const auto& f : config_flags())
        SIEVE_CHECK(app->count(f) == 0, "train: ", f, " cannot be combined with --resume (the run's config.json "
                                        "fixes it; start a new run with --out to change it)");
      run_dir = resume;
      cfg = load_config(run_dir);
      if (ranks > 1) {
        // An interrupted checkpoint rename is repaired by one writer before any rank reads last/.
        if (root) train::recover_slot(run_dir, "last");
        comm.barrier("train: rank 0 recovered last/");
      }
    } else {
      cfg = config_from_flags();
      run_dir = out;
      if (fs::exists(run_dir)) {
        SIEVE_CHECK(fs::is_directory(run_dir), "train: --out ", run_dir.string(), " exists and is not a directory");
        SIEVE_CHECK(fs::is_empty(run_dir), "train: --out ", run_dir.string(),
                    " is not empty; continue that run with --resume ", run_dir.string(), " or choose a new folder");
      }
    }

    const io::DataFolder df = io::open_data_folder(cfg.data, /*require_test*/ false);
    if (resuming) {
      SIEVE_CHECK(df.classes == cfg.classes, "train --resume: the classes of ", cfg.data, " (", df.classes.size(),
                  ") differ from the run's config.json (", cfg.classes.size(), "): the data folder changed");
    } else {
      cfg.classes = df.classes;
    }
    cfg.validate("train");
    SIEVE_CHECK(cfg.batch % ranks == 0, "train: --batch ", cfg.batch, " is the global batch under MPI and must be a "
                "multiple of the ", ranks, " ranks (each rank takes batch / ranks samples of every batch)");
    const std::size_t K = cfg.num_classes();
    const TrainSplit split = make_split(df, cfg.seed, cfg.val_frac, cfg.outside_frac, cfg.negatives);
    SIEVE_CHECK(!split.val.empty(), "train: ", cfg.data, " has no class with 2 or more images, so nothing can be "
                                    "held out for validation");
    const json split_json = {{"seed", cfg.seed},
                             {"val_frac", cfg.val_frac},
                             {"outside_frac", cfg.outside_frac},
                             {"n_train", split.train.size()},
                             {"n_negatives", split.negatives.size()},
                             {"val_ids", ids_of(df.train, split.val)},
                             {"val_outside_ids", ids_of(df.outside, split.val_outside)}};
    if (resuming && fs::exists(run_dir / "split.json")) {
      const json old = read_json_file(run_dir / "split.json");
      SIEVE_CHECK(old.value("val_ids", json()) == split_json["val_ids"] &&
                      old.value("val_outside_ids", json()) == split_json["val_outside_ids"],
                  "train --resume: the validation split recomputed from ", cfg.data, " differs from ",
                  (run_dir / "split.json").string(), ": the data folder changed since the run started");
    }
    // Every rank has checked its inputs (and, for a fresh run, that --out is empty) before
    // rank 0 creates anything.
    if (ranks > 1) comm.barrier("train: inputs checked on every rank");
    if (!resuming && root) {
      save_config(run_dir, cfg);
      write_json_file(run_dir / "split.json", split_json);
    }
    say(str("train: ", df.train.size(), " labelled images in ", K, " classes; training on ", split.train.size(),
            split.negatives.empty() ? std::string() : str(" + ", split.negatives.size(), " negatives"),
            "; validation ", split.val.size(), " held out + ", split.val_outside.size(), " outside images"));
    if (split.val_outside.empty())
      say("train: note: no outside images in validation, so the -1 threshold is tuned without distractors");

    // Datasets: train (labelled + negatives), validation (held out + outside as -1).
    std::vector<io::FileSample> tr, va, tr_labelled;
    for (auto i : split.train) tr.push_back(df.train[i]), tr_labelled.push_back(df.train[i]);
    for (auto i : split.negatives) tr.push_back(with_label(df.outside[i], -1));
    for (auto i : split.val) va.push_back(df.train[i]);
    for (auto i : split.val_outside) va.push_back(with_label(df.outside[i], -1));
    const io::FileDataset train_ds(tr), val_ds(va), train_labelled_ds(tr_labelled);

    Model model(cfg, dropout_seed(cfg.seed, comm.rank()));
    const bool has_checkpoint = resuming && fs::exists(run_dir / "last");
    if (cfg.weights && !has_checkpoint) {
      const auto st = io::SafeTensors::load(*cfg.weights);
      nn::LoadOptions lo;
      lo.allow_head_mismatch = true;
      const auto rep = nn::load_state_dict(model.params(), model.buffers(), st, lo);
      say(str("train: loaded ", rep.loaded, " tensors from ", *cfg.weights,
              rep.message.empty() ? std::string() : " (" + rep.message + ")"));
    }
    apply_freeze(model, cfg.freeze);
    if (cfg.freeze == "backbone" && !cfg.weights)
      say("train: warning: --freeze backbone without --weights trains a head on a random backbone");

    const bool cached = cfg.freeze == "backbone" && cfg.augment == "none";
    train::FitResult fr;
    std::string checkpoint_used;
    if (cached) {
      fr = fit_cached(model, cfg, run_dir, train_ds, val_ds, resuming);
    } else {
      fr = fit_images(model, cfg, run_dir, train_ds, val_ds, resuming);
    }
    if (ranks > 1) comm.barrier("train: rank 0 saved the checkpoints");
    say(str("train: ", fr.epochs_completed, " epoch(s) this run, ", fr.steps, " optimizer steps in total",
            fr.early_stopped ? " (early stopped)" : "", fr.stopped_by_limit ? " (stopped by --max-steps/--max-minutes)" : ""));

    // Calibration on the best weights (else last), on the validation set.
    const fs::path wdir = weights_dir(run_dir);
    Model best(cfg);
    load_weights(best, wdir);
    best.set_training(false);
    Embedded val, trn;
    if (cached) {
      // The backbone is frozen and never ran in train mode: its features are the cached ones.
      val = from_cache(best, cached_embeddings(best, cfg, run_dir, val_ds, "calibrate: validation"), val_ds.samples());
      // train_ds lists the labelled images first, then the negatives.
      trn = from_cache(best, cached_embeddings(best, cfg, run_dir, train_ds, "calibrate: train embeddings"),
                       train_labelled_ds.samples());
    } else {
      val = embed_sharded(comm, best, val_ds, cfg, workers, false, "calibrate: validation", 64, quiet);
      trn = embed_sharded(comm, best, train_labelled_ds, cfg, workers, false, "calibrate: train embeddings", 64, quiet);
    }
    if (!root) return 0;  // the sweeps are cheap; rank 0 calibrates and writes
    EmbeddingsFile db;
    db.embedding = std::move(trn.embeddings);
    db.label = std::move(trn.labels);
    db.ids = std::move(trn.ids);
    Calibration cal;
    cal.n_val = val.ids.size();
    cal.n_val_outside = split.val_outside.size();
    cal.checkpoint = wdir.filename().string();
    double best_map = -1.0;
    for (const auto& name : method_names()) {
      cal.methods[name] = calibrate(parse_method(name), val, db, K);
      if (cal.methods[name].val_map5 > best_map) best_map = cal.methods[name].val_map5, cal.recommended = name;
    }
    write_embeddings(run_dir / "train_embeddings.safetensors", db,
                     {{"producer", "sieve train"}, {"checkpoint", cal.checkpoint}, {"normalised", "no"}});
    write_json_file(run_dir / "calibration.json", json(cal));
    std::cout << "sieve train: run " << run_dir.string() << " (weights from " << cal.checkpoint << "/)\n";
    for (const auto& name : method_names()) {
      const auto& m = cal.methods[name];
      std::cout << "  validation MAP@5 " << name << ": " << m.val_map5 << " (threshold " << m.threshold;
      if (m.weight) std::cout << ", head weight " << *m.weight;
      std::cout << ")\n";
    }
    return 0;
  }

 private:
  void say(const std::string& s) const {
    if (!quiet) std::cerr << s << "\n" << std::flush;
  }

  /// Embedded from cached features: the first samples.size() rows of `emb`, logits by the head.
  static Embedded from_cache(Model& m, const Tensor2f& emb, const std::vector<io::FileSample>& samples) {
    const std::size_t N = samples.size(), D = emb.shape()[1];
    SIEVE_CHECK(emb.shape()[0] >= N, "train: cached embeddings have ", emb.shape()[0], " rows, need ", N);
    Embedded e;
    e.embeddings = Tensor2f::from_shape({N, D});
    std::copy(emb.data(), emb.data() + N * D, e.embeddings.data());
    m.set_training(false);
    e.logits = m.head().forward(m.dropout().forward(e.embeddings));
    for (const auto& s : samples) e.ids.push_back(s.id), e.labels.push_back(s.labels.empty() ? -1 : s.labels[0]);
    return e;
  }

  static io::FileSample with_label(io::FileSample s, std::int32_t label) {
    s.labels = {label};
    return s;
  }
  static std::vector<std::string> ids_of(const std::vector<io::FileSample>& v, const std::vector<std::size_t>& idx) {
    std::vector<std::string> out;
    out.reserve(idx.size());
    for (auto i : idx) out.push_back(v[i].id);
    return out;
  }

  train::TrainerOptions trainer_options(const RunConfig& cfg, const fs::path& run_dir) const {
    train::TrainerOptions o;
    o.run_dir = run_dir;
    o.epochs = cfg.epochs;
    o.seed = cfg.seed;
    o.max_minutes = max_minutes;
    o.throughput_scale = static_cast<double>(communicator().size());  // equal shards per rank
    o.progress = quiet ? train::Progress::off : train::Progress::automatic;
    o.early_stopping = train::EarlyStoppingOptions{"val_map5", train::Mode::max, cfg.patience, 0.0};
    o.config = {{"data", cfg.data}, {"classes", std::to_string(cfg.num_classes())}, {"freeze", cfg.freeze},
                {"augment", cfg.augment}};
    // --max-steps counts steps of this invocation; the trainer counts from the run's start.
    std::int64_t done = 0;
    if (fs::exists(run_dir / "last")) {
      const auto files = train::load_checkpoint_files(run_dir / "last");
      const auto& sj = files.at("state.json");
      const json st = json::parse(std::string(reinterpret_cast<const char*>(sj.data()), sj.size()), nullptr, false);
      SIEVE_CHECK(st.is_object() && st.contains("step"), (run_dir / "last/state.json").string(),
                  ": not a trainer state");
      done = st.at("step").get<std::int64_t>();
    }
    if (max_steps > 0) o.stop_after_steps = done + max_steps;
    return o;
  }

  optim::WarmupCosineLR schedule(const RunConfig& cfg, std::int64_t steps_per_epoch) const {
    optim::WarmupCosineLR s;
    s.base = cfg.lr;
    s.total = std::max<std::int64_t>(1, cfg.epochs * steps_per_epoch);
    // Capped at a tenth of training: a short budgeted run should spend its steps annealing.
    s.warmup = std::min<std::int64_t>({s.total - 1, s.total / 10,
                                       std::llround(cfg.warmup_epochs * static_cast<double>(steps_per_epoch))});
    return s;
  }

  /// Train `m` (the model, or its dist::DataParallel wrapper under MPI). `sync_from_root` runs
  /// after a multi-rank resume (every rank read last/; rank 0's weights are re-broadcast).
  template <class M, class L>
  train::FitResult fit_with(M& m, const RunConfig& cfg, const fs::path& run_dir, L& loader, std::int64_t steps_per_epoch,
                            bool resuming, train::ValidationFn<M> validate,
                            const std::function<void()>& sync_from_root = {}) const {
    loss::BCEWithLogitsLoss<float> bce;
    if constexpr (is_data_parallel<M>) {
      RankMeanLoss<loss::BCEWithLogitsLoss<float>> global(bce, communicator());
      return fit_trainer(m, global, cfg, run_dir, loader, steps_per_epoch, resuming, std::move(validate), sync_from_root);
    } else {
      return fit_trainer(m, bce, cfg, run_dir, loader, steps_per_epoch, resuming, std::move(validate), sync_from_root);
    }
  }

  template <class M, class Loss, class L>
  train::FitResult fit_trainer(M& m, Loss& loss, const RunConfig& cfg, const fs::path& run_dir, L& loader,
                               std::int64_t steps_per_epoch, bool resuming, train::ValidationFn<M> validate,
                               const std::function<void()>& sync_from_root) const {
    dist::Communicator& comm = communicator();
    optim::AdamWOptions ao;
    ao.weight_decay = cfg.weight_decay;
    optim::AdamW<float> opt(m.params(), ao);
    const auto sched = schedule(cfg, steps_per_epoch);
    auto options = trainer_options(cfg, run_dir);
    if (comm.rank() != 0) options.run_dir.clear();  // only rank 0 writes checkpoints and metrics
    train::Trainer trainer(m, loss, opt, sched, options);
    trainer.set_validation(std::move(validate));
    bool resumed = false;
    if (resuming && comm.size() == 1) {
      resumed = trainer.resume();
    } else if (resuming) {
      // run() had rank 0 recover last/; every rank now reads the same files.
      if (fs::exists(run_dir / "last")) trainer.resume_from(run_dir / "last"), resumed = true;
      if (sync_from_root) sync_from_root();
    }
    if (resumed)
      say(str("train: resumed from ", (run_dir / "last").string(), " at epoch ", trainer.state().epoch + 1,
              ", batch ", trainer.state().batch, ", step ", trainer.state().step));
    if (trainer.state().epoch >= cfg.epochs) {
      say("train: all epochs already done; recalibrating only");
      train::FitResult r;
      r.steps = trainer.state().step;
      return r;
    }
    if (resuming && trainer.early_stopping().should_stop()) {
      say("train: this run already stopped early; recalibrating only");
      train::FitResult r;
      r.steps = trainer.state().step;
      return r;
    }
    return trainer.fit(loader);
  }

  train::FitResult fit_images(Model& model, const RunConfig& cfg, const fs::path& run_dir, const io::FileDataset& train_ds,
                              const io::FileDataset& val_ds, bool resuming) const {
    io::LoaderOptions lo;
    lo.batch_size = static_cast<std::size_t>(cfg.batch);
    lo.workers = workers;
    lo.shuffle = true;
    lo.seed = cfg.seed;
    const std::size_t K = cfg.num_classes();
    auto convert = [K](io::Batch&& b) {
      Tensor2f y = io::multi_hot(b, K);
      return train::XY<Tensor4f, Tensor2f>{std::move(b.images), std::move(y)};
    };
    dist::Communicator& comm = communicator();
    if (comm.size() > 1) {
      // Rank r loads only its block of each global batch; the loader does not shuffle (the plan
      // orders the epoch) and its seed keys this rank's augmentation.
      const dist::ShardPlan plan{train_ds.size(), static_cast<std::size_t>(cfg.batch), cfg.seed, true, false,
                                 comm.rank(), comm.size()};
      dist::ShardedDataset shard(train_ds, plan);
      io::LoaderOptions so = lo;
      so.batch_size = plan.per_rank();
      so.shuffle = false;
      so.seed = plan.loader_seed();
      io::Loader<Transform> shard_loader(shard, train_transform(cfg), so);
      train::SequentialLoaderAdapter shard_adapter(shard_loader, convert);
      dist::ShardedLoader sharded(shard, shard_adapter);
      dist::DataParallel dp(model, comm);
      const std::size_t wk = workers;
      train::ValidationFn<dist::DataParallel<Model>> validate = [&model, &comm, &val_ds, &cfg, wk](auto&, std::int64_t epoch) {
        const Embedded e = embed_sharded(comm, model, val_ds, cfg, wk, false, str("validate epoch ", epoch + 1), 64, true);
        return head_validation(e.logits, e.labels);
      };
      return fit_with(dp, cfg, run_dir, sharded, static_cast<std::int64_t>(plan.batches()), resuming,
                      std::move(validate), [&dp] { dp.sync_from_root(); });
    }
    io::Loader<Transform> loader(train_ds, train_transform(cfg), lo);
    train::SequentialLoaderAdapter adapter(loader, convert);
    const std::size_t wk = workers;
    const bool q = quiet;
    train::ValidationFn<Model> validate = [&val_ds, &cfg, wk, q](Model& m, std::int64_t epoch) {
      const Embedded e = embed_dataset(m, val_ds, cfg, wk, false, str("validate epoch ", epoch + 1), 64, true);
      (void)q;
      return head_validation(e.logits, e.labels);
    };
    return fit_with(model, cfg, run_dir, adapter, adapter.num_batches(0), resuming, std::move(validate));
  }

  /// Backbone embeddings of `ds` through the embedding cache in RUN/cache/.
  Tensor2f cached_embeddings(Model& model, const RunConfig& cfg, const fs::path& run_dir, const io::FileDataset& ds,
                             const std::string& what) const {
    train::EmbeddingCacheKey key;
    key.transform = eval_transform_text(cfg);
    key.weights_hash = train::weights_hash<float>(model.backbone().params(), model.backbone().buffers());
    key.content_hashes.reserve(ds.size());
    for (const auto& s : ds.samples()) key.content_hashes.push_back(train::fnv1a64(io::read_file(s.path, 64u << 20)));
    train::EmbeddingCache<float> cache(run_dir / "cache");
    std::optional<ProgressLine> progress;
    if (!quiet) progress.emplace(what);
    dist::Communicator& comm = communicator();
    // Embeddings of samples [b, e): with several ranks a collective (each embeds a block).
    auto embed = [&](std::size_t b, std::size_t e) {
      std::vector<io::FileSample> part(ds.samples().begin() + static_cast<std::ptrdiff_t>(b),
                                       ds.samples().begin() + static_cast<std::ptrdiff_t>(e));
      const io::FileDataset sub(std::move(part));
      Embedded r = embed_sharded(comm, model, sub, cfg, workers, false, what, 64, true);
      if (progress) (*progress)(e, ds.size());
      return std::move(r.embeddings);
    };
    if (comm.size() > 1) return cached_embeddings_ranks(comm, cache, key, embed, what);
    Tensor2f emb = cache.get_or_compute(key, 1024, embed);
    say(str(what, ": ", cache.last_was_hit() ? "from the cache " : "computed and cached in ",
            cache.path_for(key).string()));
    return emb;
  }

  /// The cache with several ranks: rank 0 owns the file. On a miss it announces each chunk
  /// [b, e) it needs and all ranks embed their shares of it together; after rank 0 has written
  /// the file (or found it), it says so and the others read it. Collective.
  template <class F>
  Tensor2f cached_embeddings_ranks(dist::Communicator& comm, train::EmbeddingCache<float>& cache,
                                   const train::EmbeddingCacheKey& key, F& embed, const std::string& what) const {
    std::array<std::int64_t, 3> msg{};  // {1, b, e}: embed chunk [b, e); {0, 0, 0}: done
    if (comm.rank() == 0) {
      auto announce = [&](std::size_t b, std::size_t e) {
        msg = {1, static_cast<std::int64_t>(b), static_cast<std::int64_t>(e)};
        comm.broadcast(std::span<std::int64_t>(msg), 0, "embedding cache chunk");
        return embed(b, e);
      };
      Tensor2f emb = cache.get_or_compute(key, 1024, announce);
      msg = {0, 0, 0};
      comm.broadcast(std::span<std::int64_t>(msg), 0, "embedding cache chunk");
      say(str(what, ": ", cache.last_was_hit() ? "from the cache " : "computed and cached in ",
              cache.path_for(key).string()));
      return emb;
    }
    for (;;) {
      comm.broadcast(std::span<std::int64_t>(msg), 0, "embedding cache chunk");
      if (msg[0] == 0) break;
      (void)embed(static_cast<std::size_t>(msg[1]), static_cast<std::size_t>(msg[2]));
    }
    return cache.get_or_compute(key, 1024, [&](std::size_t, std::size_t) -> Tensor2f {
      fail(what, ": ", comm.who(), " cannot read the embedding cache ", cache.path_for(key).string(),
           " that rank 0 wrote (is RUN/ on a filesystem every rank shares?)");
    });
  }

  train::FitResult fit_cached(Model& model, const RunConfig& cfg, const fs::path& run_dir, const io::FileDataset& train_ds,
                              const io::FileDataset& val_ds, bool resuming) const {
    say("train: frozen backbone, no augmentation: training the head on cached embeddings");
    model.set_training(false);
    if (resuming && fs::exists(run_dir / "last")) load_weights(model, run_dir / "last");  // backbone as cached
    const Tensor2f xtr = cached_embeddings(model, cfg, run_dir, train_ds, "embed train images");
    const Tensor2f xva = cached_embeddings(model, cfg, run_dir, val_ds, "embed validation images");
    const std::size_t K = cfg.num_classes(), N = train_ds.size();
    Tensor2f ytr = xt::zeros<float>({N, K});
    for (std::size_t i = 0; i < N; ++i) {
      const auto l = train_ds.samples()[i].labels.at(0);
      if (l >= 0) ytr(i, static_cast<std::size_t>(l)) = 1.0f;
    }
    std::vector<std::int64_t> yva;
    for (const auto& s : val_ds.samples()) yva.push_back(s.labels.at(0));
    CachedHead head(model);
    dist::Communicator& comm = communicator();
    if (comm.size() > 1) {
      // The same epoch order as InMemoryLoader (same seed), each rank taking its block of every batch.
      const dist::ShardPlan plan{N, static_cast<std::size_t>(cfg.batch), cfg.seed, true, false, comm.rank(),
                                 comm.size()};
      dist::ShardedInMemoryLoader<float, 2, float, 2> sharded(xtr, std::move(ytr), plan);
      dist::DataParallel dp(head, comm);
      train::ValidationFn<dist::DataParallel<CachedHead>> validate = [&model, &xva, yva](auto&, std::int64_t) {
        model.dropout().set_training(false);
        const Tensor2f logits = model.head().forward(model.dropout().forward(xva));
        return head_validation(logits, yva);
      };
      return fit_with(dp, cfg, run_dir, sharded, static_cast<std::int64_t>(plan.batches()), resuming,
                      std::move(validate), [&dp] { dp.sync_from_root(); });
    }
    train::InMemoryLoader<float, 2, float, 2> loader(xtr, std::move(ytr), static_cast<std::size_t>(cfg.batch), cfg.seed);
    train::ValidationFn<CachedHead> validate = [&model, &xva, yva](CachedHead&, std::int64_t) {
      model.dropout().set_training(false);
      const Tensor2f logits = model.head().forward(model.dropout().forward(xva));
      return head_validation(logits, yva);
    };
    return fit_with(head, cfg, run_dir, loader, loader.num_batches(0), resuming, std::move(validate));
  }
};

}  // namespace sieve::cli
