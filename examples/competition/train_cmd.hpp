#pragma once
/// `sieve train --data DIR --out RUN [...]`: train the classifier (ResNet | Dropout | Linear),
/// then calibrate the -1 threshold of every ranking method on validation with the best (else
/// the last) weights. Two recipes set the defaults:
///   fast (default): input size, channels, mean and std from the images; PoolNet (3x3
///     convolutions widening before 2x2 max pools, nn/pool_net.hpp; global max pool);
///     softmax over the classes plus "other" (trained on the outside images not held for
///     validation), label smoothing; Nesterov SGD; a warmup + cosine schedule ending at 0
///     (with --max-minutes planned so the whole command fits: see train/budget.hpp); no early
///     stopping; flip test-time augmentation.
///   seed: the seed solution's: ResNet50 at 224 px, ImageNet statistics, BCE-with-logits on
///     one-hot targets, AdamW, warmup + cosine, early stopping on validation MAP@5.
/// Writes RUN/config.json, split.json, metrics.jsonl, last/, best/ (early stopping),
/// calibration.json and train_embeddings.safetensors. `--resume RUN` continues from RUN/last/
/// exactly (a planned run keeps its plan; metrics.jsonl is cut back to that checkpoint).
/// Crash safety: the run folder is locked (RUN/.lock, flock) while a train uses it; last/ is
/// also saved every --checkpoint-minutes; the first SIGINT/SIGTERM stops at the next step
/// boundary with last/ saved and exits 130/143, a second exits at once (one process only).
///
/// Validation: a seeded stratified `--val-frac` of each class of train.csv, plus outside
/// images making up `--outside-frac` of the validation set (labelled -1). With negatives (fast:
/// by default) the remaining outside images train as "other" (or as all-zero BCE targets).
/// `--freeze backbone --augment none` takes the embedding-cache fast path: backbone features
/// are computed once (cached under RUN/cache/) and only the head trains.
///
/// Under `mpirun -np N` (built with -Dmpi=enabled) training is data-parallel: --batch is the
/// global batch (a multiple of N; each rank takes batch/N of every batch, drawn from the same
/// seeded epoch order one process uses), gradients are averaged over the ranks, validation,
/// calibration embeddings and a missing embedding cache are computed in shards, and rank 0
/// alone writes RUN/ and prints. --max-minutes is refused (the ranks' clocks would stop them at
/// different steps); use --max-steps or --epochs. With N = 1 nothing changes.

#include <CLI/CLI.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "flags.hpp"
#include "parallel.hpp"
#include "run.hpp"
#include "stop_signal.hpp"
#include "sieve/dist/dist.hpp"
#include "sieve/io/data_folder.hpp"
#include "sieve/io/decoded_dataset.hpp"
#include "sieve/io/file.hpp"
#include "sieve/io/image_stats.hpp"
#include "sieve/kernels/gemm.hpp"
#include "sieve/loss/bce_with_logits.hpp"
#include "sieve/loss/cross_entropy.hpp"
#include "sieve/nn/state_dict.hpp"
#include "sieve/optim/adamw.hpp"
#include "sieve/optim/schedule.hpp"
#include "sieve/optim/sgd.hpp"
#include "sieve/retrieval/scores.hpp"
#include "sieve/retrieval/threshold.hpp"
#include "sieve/train/cached_head.hpp"
#include "sieve/train/embedding_cache.hpp"
#include "sieve/train/loader_adapter.hpp"
#include "sieve/train/memory_loader.hpp"
#include "sieve/train/run_lock.hpp"
#include "sieve/train/split.hpp"
#include "sieve/train/trainer.hpp"

namespace sieve::cli {

using train::TrainSplit;

using CachedHead = train::CachedHead<float>;

/// Validation MAP@5 of the head with the -1 threshold swept (the early-stopping metric; at
/// `share` distractors when given), and the known-class top-1 of the held-out train images
/// (among the K classes, never "other").
inline std::map<std::string, double> head_validation(const Tensor2f& logits, const std::vector<std::int64_t>& truth,
                                                     retrieval::HeadKind head, std::optional<double> share) {
  const auto sweep = retrieval::sweep_threshold(retrieval::head_class_scores(logits, head), truth,
                                                retrieval::threshold_grid(Method::head, head), 5, share);
  const std::size_t N = logits.shape()[0], L = logits.shape()[1];
  const std::size_t K = head == retrieval::HeadKind::softmax_other ? L - 1 : L;
  std::size_t known = 0, hit = 0;
  for (std::size_t i = 0; i < N; ++i) {
    if (truth[i] < 0) continue;
    ++known;
    const float* r = logits.data() + i * L;
    hit += static_cast<std::int64_t>(std::max_element(r, r + K) - r) == truth[i];
  }
  return {{"val_map5", sweep.best_map5},
          {"val_threshold", sweep.best_threshold},
          {"val_top1", known ? static_cast<double>(hit) / static_cast<double>(known) : 0.0}};
}

struct TrainCommand {
  CLI::App* app = nullptr;
  std::string data, out, resume, weights, recipe = "fast", arch, blocks, fit, augment, freeze = "none", head,
                                                 optimizer, tta, distractor_share, global_pool;
  std::vector<float> mean, stdev;
  std::size_t image_size = 0, width = 0, channels = 0, workers = 2;
  std::int64_t epochs = 0, batch = 0, patience = 0, validate_every = 1, max_steps = -1;
  double lr = 0, weight_decay = 0, dropout = 0, outside_frac = 0.3, val_frac = 0.1, warmup_epochs = 1.0,
         label_smoothing = 0, momentum = 0.9, max_minutes = 0.0, checkpoint_minutes = 10.0, clip_grad_norm = 0.0;
  std::uint64_t seed = 0;
  bool negatives = false, quiet = false;
  int threads = 0;

  // Flags that define the run; with --resume they come from RUN/config.json instead.
  static const std::vector<std::string>& config_flags() {
    static const std::vector<std::string> f{
        "--data",     "--out",     "--weights",       "--recipe",       "--arch",       "--blocks",   "--width",
        "--channels", "--image-size", "--fit",        "--mean",         "--std",        "--augment",  "--freeze",
        "--epochs",   "--batch",   "--lr",            "--weight-decay", "--dropout",    "--warmup-epochs",
        "--patience", "--seed",    "--negatives",     "--outside-frac", "--val-frac",   "--head",
        "--label-smoothing", "--optimizer", "--momentum", "--tta", "--distractor-share",
        "--global-pool", "--validate-every", "--clip-grad-norm"};
    return f;
  }

  void add_to(CLI::App& parent) {
    app = parent.add_subcommand("train", "Train a classifier on a data folder, then calibrate the -1 threshold of "
                                         "every ranking method on validation. Two recipes: fast (default: a small "
                                         "network for the images' own size (PoolNet), softmax with an 'other' class "
                                         "trained on outside images, SGD) and seed (ResNet50, BCE, AdamW, 224 px)");
    app->add_option("--data", data, "data folder (train.csv, train/, optional outside/; see 'sieve validate')")
        ->type_name("DIR");
    app->add_option("--out", out, "run folder to create (must not already hold a run)")->type_name("RUN");
    app->add_option("--resume", resume, "continue the run in this folder from its last/ checkpoint (its "
                                        "config.json fixes every setting; only --max-minutes, --max-steps, "
                                        "--checkpoint-minutes, --threads, --workers may be given)")
        ->type_name("RUN");
    app->add_option("--recipe", recipe, "defaults of every setting below: fast (input size, channels, mean and std "
                                        "from the images; poolnet; softmax-other head, label smoothing 0.1; "
                                        "SGD lr 0.2 batch 256; outside images as negatives; flip-translate TTA) or "
                                        "seed (resnet50 at 224 px, ImageNet statistics, BCE, AdamW lr 1e-3 batch 64)")
        ->check(CLI::IsMember({"fast", "seed"}))
        ->capture_default_str();
    app->add_option("--weights", weights, "start from pretrained weights (.safetensors, torchvision or timm names; "
                                          "the head is re-initialised when its class count differs)")
        ->type_name("FILE");
    app->add_option("--arch", arch, "backbone: resnet50 (bottleneck 3,4,6,3, ImageNet stem), resnet26, resnet101, "
                                    "tiny (bottleneck 1,1,1,1 width 16); cifar-resnet8/10/14/20 (basic blocks "
                                    "1,1,1 / 1,1,1,1 / 2,2,2 / 3,3,3, 3x3 stem, width 16), cifar-resnet18 (basic "
                                    "2,2,2,2, width 64); poolnet (plain 3x3 convolutions widening before each 2x2 "
                                    "max pool, 3 stages, width 16: 16-32-64-128); --blocks/--width override. "
                                    "Default: fast poolnet, seed resnet50")
        ->check(CLI::IsMember({"resnet26", "resnet50", "resnet101", "tiny", "cifar-resnet8", "cifar-resnet10",
                               "cifar-resnet14", "cifar-resnet20", "cifar-resnet18", "poolnet"}));
    app->add_option("--global-pool", global_pool, "the embedding: avg (global average pool) or max (global max "
                                                  "pool, poolnet only). Default: fast poolnet max, else avg")
        ->check(CLI::IsMember({"avg", "max"}));
    app->add_option("--blocks", blocks, "residual blocks per stage, comma-separated, 1-4 stages (e.g. 1,1)");
    app->add_option("--width", width, "stem width; the embedding has width*2^(stages-1) dims (times 4 with "
                                      "bottleneck blocks)")
        ->check(CLI::Range(std::size_t{1}, std::size_t{512}));
    app->add_option("--channels", channels, "input channels: 1 (gray) or 3 (RGB). Default: fast: 1 when every "
                                            "image looked at is gray; seed: 3")
        ->check(CLI::IsMember({1, 3}));
    app->add_option("--image-size", image_size, "network input size S (S x S). Default: fast: the images' larger "
                                                "side up to 64; seed: 224")
        ->check(CLI::Range(std::size_t{8}, std::size_t{4096}));
    app->add_option("--fit", fit, "resize: shorter edge to S + centre crop; pad: letterbox to S x S (zero padding, "
                                  "shrinking larger images). Default: fast: pad when the images fit; seed: resize")
        ->check(CLI::IsMember({"resize", "pad"}));
    app->add_option("--mean", mean, "per-channel mean (1 or 3 values). Default: fast: the training images'; "
                                    "seed: ImageNet's")
        ->expected(1, 3);
    app->add_option("--std", stdev, "per-channel std (1 or 3 values). Default: fast: the training images'; "
                                    "seed: ImageNet's")
        ->expected(1, 3);
    app->add_option("--augment", augment, "crop-flip: random crop (padding S/14 fast, S/8 seed) + horizontal "
                                          "flip; none")
        ->check(CLI::IsMember({"crop-flip", "none"}));
    app->add_option("--freeze", freeze, "backbone: train only the head (with --augment none: embedding-cache fast "
                                        "path); stem: freeze conv1/bn1; none")
        ->check(CLI::IsMember({"none", "stem", "backbone"}))
        ->capture_default_str();
    app->add_option("--head", head, "bce (sigmoid per class, one-hot targets; seed) or softmax-other (softmax "
                                    "over the classes plus 'other' for outside images; fast)")
        ->check(CLI::IsMember({"bce", "softmax-other"}));
    app->add_option("--label-smoothing", label_smoothing, "softmax-other label smoothing (fast: 0.1)")
        ->check(finite_number & CLI::Range(0.0, 0.99));
    app->add_option("--optimizer", optimizer, "sgd (Nesterov momentum; fast) or adamw (seed)")
        ->check(CLI::IsMember({"sgd", "adamw"}));
    app->add_option("--momentum", momentum, "SGD momentum")
        ->check(finite_number & CLI::Range(0.01, 0.999))
        ->capture_default_str();
    app->add_option("--epochs", epochs, "epochs (fast: 30, seed: at most 30 with early stopping); ignored with "
                                        "--max-minutes, whose plan decides the steps")
        ->check(CLI::Range(1, 100000));
    app->add_option("--batch", batch, "batch size (fast: 256, seed: 64)")->check(CLI::Range(1, 65536));
    app->add_option("--lr", lr, "peak learning rate of the schedule (fast: 0.2 SGD, seed: 1e-3 AdamW)")
        ->check(finite_number & CLI::PositiveNumber);
    app->add_option("--weight-decay", weight_decay, "weight decay, not on BN and biases (fast: 5e-4 coupled, "
                                                    "seed: 1e-4 decoupled)")
        ->check(finite_number & CLI::NonNegativeNumber);
    app->add_option("--dropout", dropout, "dropout before the head (fast: 0, seed: 0.2)")
        ->check(finite_number & CLI::Range(0.0, 0.99));
    app->add_option("--warmup-epochs", warmup_epochs, "linear warmup length in epochs (at most a tenth of all "
                                                      "steps), then cosine to 0; with --max-minutes the warmup "
                                                      "is a fixed share of the planned steps")
        ->check(finite_number & CLI::NonNegativeNumber)
        ->capture_default_str();
    app->add_option("--patience", patience, "early stopping (seed recipe): epochs without a better validation "
                                            "MAP@5 (seed: 6); the fast recipe anneals to the end and keeps it")
        ->check(CLI::NonNegativeNumber);
    app->add_option("--validate-every", validate_every,
                    "validate after every N-th epoch during training (metrics.jsonl's val_* and the report's "
                    "curves; calibration after training always runs). Default: fast 4 (a --max-minutes run spends "
                    "the time saved on steps), seed 1 (early stopping needs every epoch)")
        ->check(CLI::Range(std::int64_t{1}, std::int64_t{100000}));
    app->add_option("--seed", seed, "seed of initialisation, split, order, augmentation and dropout")
        ->capture_default_str();
    app->add_flag("--negatives,!--no-negatives", negatives, "train on the outside images not used for validation "
                                                             "(as 'other', or all-zero BCE targets). Default: fast "
                                                             "yes, seed no");
    app->add_option("--outside-frac", outside_frac, "fraction of the validation set made of outside images")
        ->check(finite_number & CLI::Range(0.0, 0.95))
        ->capture_default_str();
    app->add_option("--val-frac", val_frac, "fraction of each class held out for validation")
        ->check(finite_number & CLI::Range(0.001, 0.9))
        ->capture_default_str();
    app->add_option("--tta", tta, "test-time augmentation calibrated here and used by predict: " + tta_help +
                                      ". Default: fast flip-translate, seed none")
        ->check(CLI::IsMember({"none", "flip", "flip-translate"}));
    app->add_option("--distractor-share", distractor_share,
                    "share of distractors the -1 thresholds are chosen for (validation MAP@5 reweighted to it): "
                    "a number in [0, 1]; data: the data folder's outside images among all its images; none "
                    "(default): the validation set's own share (--outside-frac)")
        ->check(share_or({"data", "none"}));
    app->add_option("--max-minutes", max_minutes, "fast recipe: plan the whole run (training, validation, "
                                                  "calibration) to end within this many minutes, the learning "
                                                  "rate annealed to 0 at the last step; seed recipe: stop (saving "
                                                  "last/) after this much training time")
        ->check(finite_number & CLI::NonNegativeNumber);
    app->add_option("--max-steps", max_steps, "stop (saving last/) after this many optimizer steps in this "
                                              "invocation; calibration still runs")
        ->check(CLI::PositiveNumber);
    app->add_option("--checkpoint-minutes", checkpoint_minutes, "also save last/ mid-epoch when this many minutes "
                                                                "passed since the last save (0 = only at epoch "
                                                                "ends and stops); resuming from it is exact")
        ->check(finite_number & CLI::NonNegativeNumber)
        ->capture_default_str();
    app->add_option("--threads", threads, "compute threads (0 = OMP_NUM_THREADS or all cores)")
        ->check(CLI::Range(0, 4096));
    app->add_option("--workers", workers, "image loading threads (0 = load on the training thread; fewer run "
                                          "when their worst-case decodes would exceed half the memory)")
        ->check(CLI::Range(std::size_t{0}, std::size_t{64}))
        ->capture_default_str();
    app->add_flag("--quiet", quiet, "no progress lines (errors and the final summary only)");
    app->add_option("--clip-grad-norm", clip_grad_norm, "clip the global gradient norm to this before each "
                                                         "optimizer step (0: off)")
        ->check(finite_number & CLI::NonNegativeNumber)
        ->capture_default_str();
    // --help lists the options under these headings (CLI11 groups, in order of first use).
    static const std::vector<std::pair<const char*, std::vector<const char*>>> groups{
        {"Data and run folder", {"--data", "--out", "--resume", "--recipe", "--weights"}},
        {"Model", {"--arch", "--global-pool", "--blocks", "--width", "--head", "--label-smoothing", "--dropout",
                   "--freeze"}},
        {"Input and augmentation", {"--channels", "--image-size", "--fit", "--mean", "--std", "--augment", "--tta"}},
        {"Optimisation", {"--optimizer", "--momentum", "--epochs", "--batch", "--lr", "--weight-decay",
                          "--warmup-epochs", "--patience", "--seed", "--clip-grad-norm"}},
        {"Validation and calibration", {"--negatives", "--outside-frac", "--val-frac", "--validate-every",
                                        "--distractor-share"}},
        {"Budget, checkpoints and resources", {"--max-minutes", "--max-steps", "--checkpoint-minutes", "--threads",
                                               "--workers", "--quiet"}}};
    for (const auto& [heading, names] : groups)
      for (const char* name : names) app->get_option(name)->group(heading);
  }

  bool given(const char* flag) const { return app->count(flag) > 0; }

  std::chrono::steady_clock::time_point start_{};  ///< when run() began: a budget counts from it
  std::function<double()> reserve_estimate_;       ///< seconds calibration will take (budgeted runs)

  /// Configuration from the command line (a fresh run): the recipe's defaults, then every flag
  /// given. Input settings the fast recipe takes from the images are filled by input_from_data.
  RunConfig config_from_flags() const {
    RunConfig c;
    usage_check(!data.empty(), "train: --data DIR is required (or --resume RUN)");
    usage_check(!out.empty(), "train: --out RUN is required (or --resume RUN)");
    c.data = fs::absolute(data).lexically_normal().string();
    c.recipe = recipe;
    const bool fast = recipe == "fast";
    if (fast) {
      // The best test MAP@5 per minute measured (benchmarks/README.md, "Quality per CPU-minute").
      c.arch = "poolnet", c.block = "pool", c.stem = "cifar", c.blocks = {1, 1, 1}, c.width = 16;
      c.global_pool = "max";
      c.head = "softmax-other", c.label_smoothing = 0.1, c.dropout = 0.0;
      c.optimizer = "sgd", c.lr = 0.2, c.weight_decay = 5e-4, c.batch = 256, c.epochs = 30, c.patience = 0;
      c.negatives = true, c.tta = "flip-translate", c.fit = "pad", c.validate_every = 4;
    }
    const std::string a = given("--arch") ? arch : c.arch;
    if (given("--arch")) {
      c.arch = a;
      const bool cifar = a.rfind("cifar-", 0) == 0 || a == "poolnet";
      c.block = a == "poolnet" ? "pool" : cifar ? "basic" : "bottleneck", c.stem = cifar ? "cifar" : "imagenet";
      c.width = a == "cifar-resnet18" ? 64 : cifar || a == "tiny" ? 16 : 64;
      c.global_pool = a == "poolnet" && fast ? "max" : "avg";
      if (a == "resnet50") c.blocks = {3, 4, 6, 3};
      else if (a == "resnet26") c.blocks = {2, 2, 2, 2};
      else if (a == "resnet101") c.blocks = {3, 4, 23, 3};
      else if (a == "tiny") c.blocks = {1, 1, 1, 1};
      else if (a == "cifar-resnet8") c.blocks = {1, 1, 1};
      else if (a == "cifar-resnet10") c.blocks = {1, 1, 1, 1};
      else if (a == "cifar-resnet14") c.blocks = {2, 2, 2};
      else if (a == "cifar-resnet20") c.blocks = {3, 3, 3};
      else if (a == "cifar-resnet18") c.blocks = {2, 2, 2, 2};
      else if (a == "poolnet") c.blocks = {1, 1, 1};
    }
    if (!blocks.empty()) {
      c.blocks.clear();
      std::size_t pos = 0;
      while (pos <= blocks.size()) {
        const auto comma = std::min(blocks.find(',', pos), blocks.size());
        const std::string part = blocks.substr(pos, comma - pos);
        usage_check(!part.empty() && part.size() <= 3 && part.find_first_not_of("0123456789") == std::string::npos &&
                        std::stoul(part) >= 1,
                    "train: --blocks '", blocks, "': '", part, "' is not a positive block count (e.g. --blocks 1,1,1,1)");
        c.blocks.push_back(std::stoul(part));
        pos = comma + 1;
      }
      usage_check(c.blocks.size() <= 4, "train: --blocks '", blocks, "' has ", c.blocks.size(),
                  " stages; 1 to 4 are supported");
      c.arch = "custom";
    }
    if (given("--width")) c.width = width, c.arch = "custom";
    if (given("--global-pool")) c.global_pool = global_pool;
    if (given("--channels")) c.in_channels = channels;
    if (given("--image-size")) c.image_size = image_size;
    if (given("--fit")) c.fit = fit;
    auto triple = [](const std::vector<float>& v, const char* flag) {
      usage_check(v.size() == 1 || v.size() == 3, "train: ", flag, " takes 1 or 3 values, got ", v.size());
      return v.size() == 1 ? std::array<float, 3>{v[0], v[0], v[0]} : std::array<float, 3>{v[0], v[1], v[2]};
    };
    if (!mean.empty()) c.mean = triple(mean, "--mean");
    if (!stdev.empty()) c.std = triple(stdev, "--std");
    if (given("--augment")) c.augment = augment;
    if (fast && c.augment == "crop-flip") c.crop_padding = 0;  // resolved with the image size (input_from_data)
    if (given("--epochs")) c.epochs = epochs;
    if (given("--batch")) c.batch = batch;
    if (given("--optimizer")) c.optimizer = optimizer;
    if (given("--lr")) c.lr = lr;
    else if (given("--optimizer")) c.lr = optimizer == "sgd" ? 0.2 : 1e-3;
    if (given("--weight-decay")) c.weight_decay = weight_decay;
    else if (given("--optimizer")) c.weight_decay = optimizer == "sgd" ? 5e-4 : 1e-4;
    c.momentum = momentum;
    if (given("--dropout")) c.dropout = dropout;
    if (given("--head")) c.head = head;
    if (given("--label-smoothing")) c.label_smoothing = label_smoothing;
    else if (given("--head")) c.label_smoothing = head == "softmax-other" ? 0.1 : 0.0;
    if (given("--tta")) c.tta = tta;
    c.warmup_epochs = warmup_epochs;
    c.max_grad_norm = clip_grad_norm;
    if (given("--patience")) c.patience = patience;
    if (given("--validate-every")) c.validate_every = validate_every;
    else if (c.early_stopping()) c.validate_every = 1;
    c.seed = seed;
    c.freeze = freeze;
    if (given("--negatives") || given("--no-negatives")) c.negatives = negatives;
    c.outside_frac = outside_frac;
    if (given("--distractor-share") && distractor_share != "data" && distractor_share != "none")
      c.distractor_share = std::strtod(distractor_share.c_str(), nullptr);  // checked by the option
    c.val_frac = val_frac;
    if (fast && max_minutes > 0.0) c.budget_minutes = max_minutes;  // planned; seed: a cut-off
    if (!weights.empty()) {
      SIEVE_CHECK(fs::is_regular_file(weights), "train: --weights ", weights, ": no such file");
      c.weights = fs::absolute(weights).lexically_normal().string();
    }
    return c;
  }

  /// The fast recipe's input settings from the training images, for those not given as flags:
  /// channels (1 when every image looked at is gray), size (the larger side up to 64, letterboxed
  /// when the images fit), mean and std, and the crop padding (S/14, at least 1).
  void input_from_data(RunConfig& c, const io::DataFolder& df) const {
    if (c.recipe != "fast") return;
    const io::FileDataset ds(df.train);
    const io::ImageStats st = io::image_stats(ds, 2048, c.seed);
    const std::size_t side = std::max(st.max_height, st.max_width);
    if (!given("--channels")) c.in_channels = st.gray ? 1 : 3;
    if (!given("--image-size")) c.image_size = std::clamp<std::size_t>(side, 8, 64);
    if (!given("--fit")) c.fit = side <= c.image_size ? "pad" : "resize";
    const bool gray = c.in_channels == 1;
    for (std::size_t k = 0; k < 3; ++k) {
      if (mean.empty()) c.mean[k] = static_cast<float>(gray ? st.gray_mean : st.mean[k]);
      if (stdev.empty()) c.std[k] = static_cast<float>(std::max(gray ? st.gray_std : st.std[k], 1e-3));
    }
    if (c.augment == "crop-flip" && c.crop_padding == 0)
      c.crop_padding = std::max<std::size_t>(1, (c.image_size + 7) / 14);
    say(str("train: recipe fast; input from ", st.count, " of ", ds.size(), " training images (", st.min_height,
            "-", st.max_height, " x ", st.min_width, "-", st.max_width, " px, ", st.gray ? "gray" : "colour",
            "): ", c.in_channels, " channel(s), ", c.image_size, " px (", c.fit, "), mean ", c.mean[0], " std ",
            c.std[0], gray ? "" : " (R; G, B in config.json)", ", crop padding ", c.effective_crop_padding()));
  }

  int run() {
    try {
      return run_train();
    } catch (...) {
      // A fresh run that failed before its first checkpoint holds nothing to resume: remove
      // what it wrote, so the same command works again once the problem is fixed (a half-made
      // folder would be refused as not empty). A folder with a checkpoint stays: it resumes.
      if (created_run_ != 0 && train::remove_unfinished_run(out, created_run_ == 2))
        std::cerr << "train: removed the unfinished run folder " << out << " (no checkpoint was saved)\n";
      throw;
    }
  }

 private:
  int created_run_ = 0;  ///< 0: this process created no run folder; 1: filled an empty one; 2: made it

 public:
  int run_train() {
    start_ = std::chrono::steady_clock::now();
    if (threads > 0) sieve::set_threads(threads);
    dist::Communicator& comm = communicator();
    const int ranks = comm.size();
    const bool root = comm.rank() == 0;
    if (!root) quiet = true;  // progress and notes from rank 0 only
    if (ranks > 1)
      usage_check(max_minutes <= 0.0, "train: --max-minutes cannot be used with ", ranks, " MPI ranks: each rank "
                  "would stop on its own clock, at different steps; use --max-steps");
    RunConfig cfg;
    fs::path run_dir;
    std::optional<train::RunLock> lock;  // rank 0 holds the run folder until the command ends
    const bool resuming = !resume.empty();
    if (resuming) {
      for (const auto& f : config_flags())
        usage_check(app->count(f) == 0, "train: ", f, " cannot be combined with --resume (the run's config.json "
                                        "fixes it; start a new run with --out to change it)");
      run_dir = resume;
      cfg = load_config(run_dir);
      if (root) {
        lock.emplace(run_dir);  // before anything reads last/ or metrics.jsonl
        io::remove_stale_atomic_temps(run_dir);  // a kill mid-write left them; we are the one writer
      }
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
        SIEVE_CHECK(train::RunLock::folder_is_empty(run_dir), "train: --out ", run_dir.string(),
                    " is not empty; continue that run with --resume ", run_dir.string(), " or choose a new folder");
      }
    }

    const io::DataFolder df = io::open_data_folder(cfg.data, /*require_test*/ false);
    if (resuming) {
      SIEVE_CHECK(df.classes == cfg.classes, "train --resume: the classes of ", cfg.data, " (", df.classes.size(),
                  ") differ from the run's config.json (", cfg.classes.size(), "): the data folder changed");
    } else {
      cfg.classes = df.classes;
      input_from_data(cfg, df);
      // Not the fast recipe's default: on a folder whose outside/ lacks a distractor class the
      // test holds (FMNIST-D 8,9 with outside/ = class 8), the folder's share (11%) understates the
      // test's (20%) and the lower thresholds cost 0.005 MAP@5 (benchmarks/README.md).
      if (given("--distractor-share") && distractor_share == "data" && !df.outside.empty()) {
        cfg.distractor_share = df.outside_share();
        say(str("train: -1 thresholds chosen for ", 100.0 * *cfg.distractor_share, "% distractors (", df.outside.size(),
                " outside of ", df.train.size() + df.outside.size(), " images in ", cfg.data,
                "; validation holds ", 100.0 * cfg.outside_frac, "%; --distractor-share)"));
      }
    }
    // Settings from flags that do not go together are usage errors; a resumed run's config.json
    // was checked when it was read (load_config names the file).
    try {
      cfg.validate("train");
    } catch (const Error& e) {
      if (resuming) throw;
      throw UsageError(e.what());
    }
    usage_check(cfg.batch % ranks == 0, "train: --batch ", cfg.batch, " is the global batch under MPI and must be a "
                "multiple of the ", ranks, " ranks (each rank takes batch / ranks samples of every batch)");
    const std::size_t K = cfg.num_classes();
    const TrainSplit split = train::make_split(df, {cfg.seed, cfg.val_frac, cfg.outside_frac, cfg.negatives});
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
    // Datasets: train (labelled + negatives), validation (held out + outside as -1).
    std::vector<io::FileSample> tr, va, tr_labelled;
    for (auto i : split.train) tr.push_back(df.train[i]), tr_labelled.push_back(df.train[i]);
    for (auto i : split.negatives) tr.push_back(with_label(df.outside[i], -1));
    for (auto i : split.val) va.push_back(df.train[i]);
    for (auto i : split.val_outside) va.push_back(with_label(df.outside[i], -1));
    const io::FileDataset train_ds(tr), val_ds(va), train_labelled_ds(tr_labelled);
    // Every image the run will read passes its header's checks before anything is created: a
    // bad one found mid-epoch would end hours of training (no pixel is decoded here).
    {
      std::optional<ProgressLine> progress;
      if (!quiet) progress.emplace("check image headers");
      std::vector<std::string> bad;
      for (const io::FileDataset* ds : {&train_ds, &val_ds}) {
        const std::size_t before = ds == &val_ds ? train_ds.size() : 0, all = train_ds.size() + val_ds.size();
        for (auto& p : ds->header_problems([&](std::size_t k, std::size_t) {
               if (progress) (*progress)(before + k, all);
             }))
          bad.push_back(std::move(p));
      }
      SIEVE_CHECK(bad.empty(), "train: ", bad.size(), " image(s) of ", cfg.data, " cannot be used (sieve validate ",
                  cfg.data, " lists every problem):", join_problems(bad, 10));
    }
    // Every rank has checked its inputs (and, for a fresh run, that --out is empty) before
    // rank 0 creates anything.
    if (ranks > 1) comm.barrier("train: inputs checked on every rank");
    if (!resuming && root) {
      // Two trains into one --out both saw it empty: the first to lock it writes the run.
      created_run_ = !fs::exists(run_dir) ? 2 : 1;
      fs::create_directories(run_dir);
      lock.emplace(run_dir);
      SIEVE_CHECK(train::RunLock::folder_is_empty(run_dir), "train: --out ", run_dir.string(),
                  " was filled by another process since it was checked; continue that run with --resume ",
                  run_dir.string(), " or choose a new folder");
      save_config(run_dir, cfg);
      write_json_file(run_dir / "split.json", split_json);
    }
    say(str("train: ", df.train.size(), " labelled images in ", K, " classes; training on ", split.train.size(),
            split.negatives.empty() ? std::string() : str(" + ", split.negatives.size(), " negatives"),
            "; validation ", split.val.size(), " held out + ", split.val_outside.size(), " outside images"));
    if (split.val_outside.empty())
      say("train: note: no outside images in validation, so the -1 threshold is tuned without distractors");

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
    // Small images are decoded once and kept (io::DecodedDataset): reading and decoding ~50,000
    // files every epoch (and again to calibrate) costs more than training on 28x28 images.
    constexpr std::uint64_t keep_bytes = std::uint64_t{1} << 30;
    auto decoded = [&](const io::Dataset& ds, const char* what) -> std::optional<io::DecodedDataset> {
      if (cached) return std::nullopt;  // the embedding cache reads each image once anyway
      std::optional<ProgressLine> progress;
      if (!quiet) progress.emplace(str("decode ", what, " images"));
      auto d = io::DecodedDataset::decode(ds, keep_bytes, [&](std::size_t k, std::size_t n) {
        if (progress) (*progress)(k, n);
      });
      if (!d) say(str("train: the ", what, " images take over ", keep_bytes >> 20, " MiB decoded; reading files "
                      "every epoch instead, after one pass that decodes each (a bad one is named now, not mid-epoch)"));
      return d;
    };
    auto check_all = [&](const io::Dataset& ds, const char* what) {
      std::optional<ProgressLine> progress;
      if (!quiet) progress.emplace(str("check ", what, " images"));
      io::DecodedDataset::check_all(ds, [&](std::size_t k, std::size_t n) {
        if (progress) (*progress)(k, n);
      });
    };
    const auto train_mem = decoded(train_ds, "training");
    if (!train_mem && !cached) check_all(train_ds, "training");
    const auto val_mem = train_mem ? decoded(val_ds, "validation") : std::nullopt;
    if (!val_mem && !cached) check_all(val_ds, "validation");
    const io::Dataset& train_src = train_mem ? static_cast<const io::Dataset&>(*train_mem) : train_ds;
    const io::Dataset& val_src = val_mem ? static_cast<const io::Dataset&>(*val_mem) : val_ds;
    // train_ds lists the labelled images first, then the negatives.
    const io::RangeDataset train_labelled_src(train_src, {0, tr_labelled.size()});

    // A budgeted run keeps time for calibration: embedding validation (times the TTA views) and
    // the labelled train images, at the inference speed timed on a few validation batches.
    const std::size_t calib_images = val_ds.size() * augment::tta_views(cfg.tta).size() + tr_labelled.size();
    reserve_estimate_ = [&, calib_images]() {
      const io::RangeDataset sample(val_src, {0, std::min<std::size_t>(1024, val_src.size())});
      const auto t0 = std::chrono::steady_clock::now();
      (void)embed_dataset(model, sample, cfg, workers, "none", "time calibration", 256, true);  // modes kept
      const double per = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() /
                         static_cast<double>(sample.size());
      // Loading the best weights, the kNN scores and the sweeps: a few seconds on 50,000 images.
      return 1.25 * per * static_cast<double>(calib_images) + 5.0;
    };
    train::FitResult fr;
    std::string checkpoint_used;
    {
      // One process: SIGINT/SIGTERM stop at a step boundary with last/ saved. Under MPI the
      // ranks would see a signal at different steps and stop apart: the defaults stay.
      std::optional<StopOnSignal> on_signal;
      if (ranks == 1) on_signal.emplace();
      if (cached) {
        fr = fit_cached(model, cfg, run_dir, train_ds, val_ds, resuming);
      } else {
        fr = fit_images(model, cfg, run_dir, train_src, val_src, resuming);
      }
      if (const int sig = StopOnSignal::received(); ranks == 1 && sig != 0) {
        std::cerr << "sieve train: stopped by " << (sig == SIGINT ? "SIGINT" : "SIGTERM") << " after step "
                  << fr.steps << "; " << (run_dir / "last").string() << " saved (exactly resumable). Continue with: "
                  << "sieve train --resume " << run_dir.string() << "\n" << std::flush;
        return 128 + sig;
      }
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
      // Validation with the test-time augmentation predict will use (cfg.tta), so the thresholds
      // fit its scores; the kNN database of train embeddings without (half the cost).
      val = embed_sharded(comm, best, val_src, cfg, workers, cfg.tta, "calibrate: validation", 256, quiet);
      trn = embed_sharded(comm, best, train_labelled_src, cfg, workers, "none", "calibrate: train embeddings", 256,
                          quiet);
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
    cal.distractor_share = cfg.distractor_share;
    double best_map = -1.0;
    for (const auto& name : method_names()) {
      cal.methods[name] = retrieval::calibrate(parse_method(name), val, {db.embedding, db.label}, K, cfg.head_kind(),
                                              cfg.distractor_share);
      if (cal.methods[name].val_map5 > best_map) best_map = cal.methods[name].val_map5, cal.recommended = name;
    }
    write_embeddings(run_dir / "train_embeddings.safetensors", db,
                     {{"producer", "sieve train"}, {"checkpoint", cal.checkpoint}, {"normalised", "no"}});
    write_json_file(run_dir / "calibration.json", json(cal));
    std::cout << "sieve train: run " << run_dir.string() << " (weights from " << cal.checkpoint << "/)";
    if (cal.distractor_share)
      std::cout << "; -1 thresholds for " << 100.0 * *cal.distractor_share << "% distractors (validation holds "
                << 100.0 * static_cast<double>(cal.n_val_outside) / static_cast<double>(cal.n_val) << "%)";
    std::cout << "\n";
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
    o.checkpoint_every_minutes = checkpoint_minutes;
    if (communicator().size() == 1) o.stop_requested = [] { return StopOnSignal::received() != 0; };
    o.throughput_scale = static_cast<double>(communicator().size());  // equal shards per rank
    o.progress = quiet ? train::Progress::off : train::Progress::automatic;
    if (cfg.early_stopping())
      o.early_stopping = train::EarlyStoppingOptions{"val_map5", train::Mode::max, cfg.patience, 0.0};
    o.validate_every_epochs = cfg.validate_every;
    o.max_grad_norm = cfg.max_grad_norm;
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
    auto with_loss = [&](auto& loss) {
      if constexpr (is_data_parallel<M>) {
        RankMeanLoss<std::remove_reference_t<decltype(loss)>> global(loss, communicator());
        return fit_optimizer(m, global, cfg, run_dir, loader, steps_per_epoch, resuming, std::move(validate),
                             sync_from_root);
      } else {
        return fit_optimizer(m, loss, cfg, run_dir, loader, steps_per_epoch, resuming, std::move(validate),
                             sync_from_root);
      }
    };
    // Both heads take the loader's one-hot / all-zero targets (see OtherClassCrossEntropyLoss).
    if (cfg.other_class()) {
      loss::OtherClassCrossEntropyLoss<float> ce(cfg.label_smoothing);
      return with_loss(ce);
    }
    loss::BCEWithLogitsLoss<float> bce;
    return with_loss(bce);
  }

  template <class M, class Loss, class L>
  train::FitResult fit_optimizer(M& m, Loss& loss, const RunConfig& cfg, const fs::path& run_dir, L& loader,
                                 std::int64_t steps_per_epoch, bool resuming, train::ValidationFn<M> validate,
                                 const std::function<void()>& sync_from_root) const {
    if (cfg.optimizer == "sgd") {
      optim::SgdOptions so;
      so.momentum = cfg.momentum;
      so.nesterov = true;
      so.weight_decay = cfg.weight_decay;
      optim::Sgd<float> opt(m.params(), so);
      return fit_trainer(m, loss, opt, cfg, run_dir, loader, steps_per_epoch, resuming, std::move(validate),
                         sync_from_root);
    }
    optim::AdamWOptions ao;
    ao.weight_decay = cfg.weight_decay;
    optim::AdamW<float> opt(m.params(), ao);
    return fit_trainer(m, loss, opt, cfg, run_dir, loader, steps_per_epoch, resuming, std::move(validate),
                       sync_from_root);
  }

  template <class M, class Loss, class Opt, class L>
  train::FitResult fit_trainer(M& m, Loss& loss, Opt& opt, const RunConfig& cfg, const fs::path& run_dir, L& loader,
                               std::int64_t steps_per_epoch, bool resuming, train::ValidationFn<M> validate,
                               const std::function<void()>& sync_from_root) const {
    auto options = trainer_options(cfg, run_dir);
    if (communicator().rank() != 0) options.run_dir.clear();  // only rank 0 writes checkpoints and metrics
    if (cfg.budget_minutes > 0.0) {
      // The whole train command fits in the budget: what ran before fit() (reading and decoding
      // the data) is already spent, calibration is the reserve (estimated after the probe).
      train::TimeBudget b;
      const double spent = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
      b.seconds = std::max(1.0, cfg.budget_minutes * 60.0 - spent);
      if (reserve_estimate_) b.reserve = reserve_estimate_;
      options.budget = b;
      options.max_minutes = 0.0;  // the plan ends the run
      const optim::PlannedWarmupCosineLR sched{.base = cfg.lr};
      return run_trainer(m, loss, opt, sched, options, cfg, run_dir, loader, resuming, std::move(validate),
                         sync_from_root);
    }
    if (cfg.recipe == "fast") {  // the same curve as a budgeted run, over the given epochs
      const std::int64_t total = std::max<std::int64_t>(3, cfg.epochs * steps_per_epoch);
      const optim::PlannedWarmupCosineLR base{.base = cfg.lr};
      const auto sched = base.with_plan(0, base.warmup_for(0, total), total);
      return run_trainer(m, loss, opt, sched, options, cfg, run_dir, loader, resuming, std::move(validate),
                         sync_from_root);
    }
    return run_trainer(m, loss, opt, schedule(cfg, steps_per_epoch), options, cfg, run_dir, loader, resuming,
                       std::move(validate), sync_from_root);
  }

  template <class M, class Loss, class Opt, class S, class L>
  train::FitResult run_trainer(M& m, Loss& loss, Opt& opt, const S& sched, const train::TrainerOptions& options,
                               const RunConfig& cfg, const fs::path& run_dir, L& loader, bool resuming,
                               train::ValidationFn<M> validate, const std::function<void()>& sync_from_root) const {
    dist::Communicator& comm = communicator();
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
    if (!options.budget && trainer.state().epoch >= cfg.epochs) {
      say("train: all epochs already done; recalibrating only");
      train::FitResult r;
      r.steps = trainer.state().step;
      return r;
    }
    if (resuming && !options.budget && trainer.early_stopping().should_stop()) {
      say("train: this run already stopped early; recalibrating only");
      train::FitResult r;
      r.steps = trainer.state().step;
      return r;
    }
    train::FitResult r = trainer.fit(loader);
    if (r.plan)
      say(str("train: time plan: ", r.plan->total_steps, " steps at ", r.plan->seconds_per_step,
              " s/step, ", r.plan->reserve_seconds, " s kept for calibration", r.plan->over_budget ? " (over budget)" : ""));
    return r;
  }

  train::FitResult fit_images(Model& model, const RunConfig& cfg, const fs::path& run_dir, const io::Dataset& train_ds,
                              const io::Dataset& val_ds, bool resuming) const {
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
        const Embedded e = embed_sharded(comm, model, val_ds, cfg, wk, "none", str("validate epoch ", epoch + 1), 64, true);
        return head_validation(e.logits, e.labels, cfg.head_kind(), cfg.distractor_share);
      };
      return fit_with(dp, cfg, run_dir, sharded, static_cast<std::int64_t>(plan.batches()), resuming,
                      std::move(validate), [&dp] { dp.sync_from_root(); });
    }
    io::Loader<Transform> loader(train_ds, train_transform(cfg), lo);
    if (loader.workers() < workers)
      say(str("train: ", loader.workers(), " loader workers instead of ", workers, ": each may hold ",
              train_ds.peak_load_bytes() >> 20, " MiB while it decodes, and the loader keeps to half the memory"));
    train::SequentialLoaderAdapter adapter(loader, convert);
    const std::size_t wk = workers;
    const bool q = quiet;
    train::ValidationFn<Model> validate = [&val_ds, &cfg, wk, q](Model& m, std::int64_t epoch) {
      const Embedded e = embed_dataset(m, val_ds, cfg, wk, "none", str("validate epoch ", epoch + 1), 64, true);
      (void)q;
      return head_validation(e.logits, e.labels, cfg.head_kind(), cfg.distractor_share);
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
      Embedded r = embed_sharded(comm, model, sub, cfg, workers, "none", what, 64, true);
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
      train::ValidationFn<dist::DataParallel<CachedHead>> validate =
          [&model, &xva, yva, head = cfg.head_kind(), share = cfg.distractor_share](auto&, std::int64_t) {
        model.dropout().set_training(false);
        const Tensor2f logits = model.head().forward(model.dropout().forward(xva));
        return head_validation(logits, yva, head, share);
      };
      return fit_with(dp, cfg, run_dir, sharded, static_cast<std::int64_t>(plan.batches()), resuming,
                      std::move(validate), [&dp] { dp.sync_from_root(); });
    }
    train::InMemoryLoader<float, 2, float, 2> loader(xtr, std::move(ytr), static_cast<std::size_t>(cfg.batch), cfg.seed);
    train::ValidationFn<CachedHead> validate =
        [&model, &xva, yva, head = cfg.head_kind(), share = cfg.distractor_share](CachedHead&, std::int64_t) {
      model.dropout().set_training(false);
      const Tensor2f logits = model.head().forward(model.dropout().forward(xva));
      return head_validation(logits, yva, head, share);
    };
    return fit_with(head, cfg, run_dir, loader, loader.num_batches(0), resuming, std::move(validate));
  }
};

}  // namespace sieve::cli
