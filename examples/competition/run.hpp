#pragma once
/// The run folder shared by `sieve train`, `predict`, `embed` and `report`: its configuration
/// (RUN/config.json), the classifier built from it as a compile-time Pipeline of stages, the
/// library's input transforms and embedding pass set up from it (augment/input.hpp,
/// retrieval/embed.hpp), the validation calibration file (RUN/calibration.json; the methods and
/// their calibration are retrieval/calibration.hpp) and the embeddings files.
///
///   RUN/config.json                    RunConfig (written by train)
///   RUN/last/, RUN/best/               train::checkpoint directories; model.safetensors holds
///                                      the backbone + `fc.*` under torchvision's names
///   RUN/calibration.json               Calibration (written by train, on best/, on validation)
///   RUN/train_embeddings.safetensors   EmbeddingsFile of the train images (written by train)
///
/// Every failure is a sieve::Error naming the file and the problem.

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "progress.hpp"
#include "sieve/augment/input.hpp"
#include "sieve/augment/tta.hpp"
#include "sieve/core/check.hpp"
#include "sieve/core/param.hpp"
#include "sieve/core/pipeline.hpp"
#include "sieve/core/rng.hpp"
#include "sieve/core/xt.hpp"
#include "sieve/io/dataset.hpp"
#include "sieve/io/file.hpp"
#include "sieve/io/image.hpp"
#include "sieve/io/loader.hpp"
#include "sieve/io/safetensors.hpp"
#include "sieve/nn/activation.hpp"
#include "sieve/nn/backbone.hpp"
#include "sieve/nn/classifier.hpp"
#include "sieve/nn/linear.hpp"
#include "sieve/nn/resnet.hpp"
#include "sieve/retrieval/calibration.hpp"
#include "sieve/retrieval/embed.hpp"
#include "sieve/retrieval/scores.hpp"
#include "sieve/retrieval/threshold.hpp"
#include "sieve/train/checkpoint.hpp"
#include "sieve/train/weights.hpp"

// calibration.json's per-method object; nlohmann finds these by argument-dependent lookup, so
// they sit in the type's namespace.
namespace sieve::retrieval {
inline void to_json(nlohmann::json& j, const MethodCalibration& m) {
  j = nlohmann::json{{"threshold", m.threshold}, {"val_map5", m.val_map5}, {"sweep", m.sweep}};
  if (!m.map5_known.empty())
    j["by_group"] = {{"map5_known", m.map5_known},
                     {"map5_distractor", m.map5_distractor},
                     {"first_known", m.first_known},
                     {"first_distractor", m.first_distractor}};
  if (m.weight) j["weight"] = *m.weight, j["weight_sweep"] = m.weight_sweep;
}
inline void from_json(const nlohmann::json& j, MethodCalibration& m) {
  m.threshold = j.at("threshold").get<double>();
  m.val_map5 = j.at("val_map5").get<double>();
  m.sweep = j.at("sweep").get<std::vector<std::array<double, 2>>>();
  if (j.contains("by_group")) {  // absent in calibrations written before 2026-12-07
    const auto& g = j.at("by_group");
    m.map5_known = g.at("map5_known").get<std::vector<double>>();
    m.map5_distractor = g.at("map5_distractor").get<std::vector<double>>();
    m.first_known = g.at("first_known").get<std::vector<double>>();
    m.first_distractor = g.at("first_distractor").get<std::vector<double>>();
  }
  if (j.contains("weight")) m.weight = j.at("weight").get<double>();
  if (j.contains("weight_sweep")) m.weight_sweep = j.at("weight_sweep").get<std::vector<std::array<double, 2>>>();
}
}  // namespace sieve::retrieval

namespace sieve::cli {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Configuration

/// Everything `train` decided, so that later subcommands rebuild the same model and inputs.
struct RunConfig {
  std::string data;                          ///< data folder, absolute
  std::vector<std::string> classes;          ///< class id -> label text
  std::string recipe = "seed";               ///< "seed" (the seed solution's) | "fast" (see train_cmd.hpp)
  // model
  std::string arch = "resnet50";             ///< "resnet50" or "custom" (blocks/width given)
  std::vector<std::size_t> blocks{3, 4, 6, 3};
  std::size_t width = 64;
  /// "bottleneck" | "basic" (ResNets) | "pool" (nn::PoolNet: one stage per entry of blocks,
  /// each 1; the CIFAR stem)
  std::string block = "bottleneck";
  std::string stem = "imagenet";             ///< "imagenet" (7x7/2 + max pool) | "cifar" (3x3/1)
  std::string global_pool = "avg";           ///< "avg" | "max" (PoolNet only)
  double dropout = 0.2;
  /// "bce": sigmoid per class, BCE on one-hot targets (outside images all-zero); "softmax-other":
  /// softmax over the K classes plus one "other" class that outside images train, -1 ranked by
  /// log(p_class / p_other) (retrieval::other_class_scores).
  std::string head = "bce";
  double label_smoothing = 0.0;              ///< softmax-other only
  // input
  std::size_t in_channels = 3;               ///< 3 (RGB) or 1 (gray)
  std::size_t image_size = 224;
  std::string fit = "resize";                ///< "resize" (shorter edge + centre crop) | "pad" (letterbox)
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f};
  std::array<float, 3> std{0.229f, 0.224f, 0.225f};
  std::string augment = "crop-flip";         ///< "crop-flip" | "none"
  std::size_t crop_padding = 0;              ///< RandomCrop padding (crop-flip); 0 = image_size / 8
  // optimisation
  std::string optimizer = "adamw";           ///< "adamw" | "sgd" (Nesterov momentum)
  double lr = 1e-3;
  double weight_decay = 1e-4;
  double momentum = 0.9;                     ///< sgd only
  double max_grad_norm = 0.0;                ///< > 0: clip the global gradient norm to this
  std::string tta = "none";                  ///< TTA of predict and calibration (augment::tta_modes)
  std::string schedule = "warmup-cosine";
  double warmup_epochs = 1.0;                ///< linear warmup length, in epochs (capped at total/10)
  std::int64_t epochs = 30;
  /// > 0: the run was planned to end within this many minutes (fast recipe, --max-minutes): the
  /// schedule spans the planned steps (train::TimeBudget) and resume continues that plan.
  double budget_minutes = 0.0;
  std::int64_t batch = 64;
  std::int64_t patience = 6;                 ///< early stopping on val_map5
  std::int64_t validate_every = 1;           ///< validation during training after every k-th epoch
  std::uint64_t seed = 0;
  std::string freeze = "none";               ///< "none" | "stem" | "backbone"
  bool negatives = false;
  double outside_frac = 0.3;
  double val_frac = 0.1;
  /// The share of distractors the -1 thresholds are chosen for (retrieval::sweep_threshold);
  /// none (the default): the validation set's own share (outside_frac).
  std::optional<double> distractor_share;
  std::optional<std::string> weights;        ///< pretrained weights file (absolute), or none

  nn::ResNetConfig resnet() const {
    nn::ResNetConfig c;
    c.blocks = blocks;
    c.width = width;
    c.in_channels = in_channels;
    c.block = block == "basic" ? nn::BlockKind::basic : nn::BlockKind::bottleneck;
    c.stem = stem == "cifar" ? nn::StemKind::cifar : nn::StemKind::imagenet;
    return c;
  }
  nn::PoolNetConfig pool_net() const { return {width, blocks.size(), in_channels, global_pool == "max"}; }
  /// The backbone this configuration names, initialised from seed.
  nn::Backbone<float> backbone() const {
    if (block == "pool") return nn::Backbone<float>(nn::PoolNet<float>(pool_net(), seed));
    return nn::Backbone<float>(nn::ResNet<float>(resnet(), seed));
  }
  std::size_t num_classes() const { return classes.size(); }
  bool other_class() const { return head == "softmax-other"; }
  retrieval::HeadKind head_kind() const {
    return other_class() ? retrieval::HeadKind::softmax_other : retrieval::HeadKind::sigmoid;
  }
  /// The network's input as the library's transforms take it.
  augment::InputSpec input_spec() const {
    return {image_size, augment::parse_fit_mode(fit), in_channels, mean, std};
  }
  /// Outputs of the linear head: the K classes, plus "other" for softmax-other.
  std::size_t head_outputs() const { return classes.size() + (other_class() ? 1 : 0); }
  std::size_t effective_crop_padding() const { return crop_padding > 0 ? crop_padding : image_size / 8; }
  /// The seed recipe stops early on validation MAP@5; the fast recipe anneals to its last step
  /// and keeps that model, unless patience > 0 asks for early stopping.
  bool early_stopping() const { return recipe == "seed" || patience > 0; }

  /// Requires nothing. Ensures: throws naming `where` and the field when a value is unusable.
  void validate(const std::string& where) const {
    SIEVE_CHECK(!classes.empty(), where, ": 'classes' is empty (a run needs at least one class)");
    SIEVE_CHECK(!blocks.empty() && blocks.size() <= 4, where, ": model.blocks has ", blocks.size(),
                " stages; 1 to 4 are supported");
    for (auto b : blocks) SIEVE_CHECK(b >= 1, where, ": model.blocks has a stage with 0 blocks");
    SIEVE_CHECK(width >= 1, where, ": model.width must be >= 1");
    SIEVE_CHECK(dropout >= 0.0 && dropout < 1.0, where, ": model.dropout=", dropout, " must be in [0, 1)");
    SIEVE_CHECK(image_size >= 8 && image_size <= 4096, where, ": input.image_size=", image_size,
                " must be in [8, 4096]");
    SIEVE_CHECK(fit == "resize" || fit == "pad", where, ": input.fit='", fit, "' must be 'resize' or 'pad'");
    for (float s : std) SIEVE_CHECK(s > 0.0f && std::isfinite(s), where, ": input.std values must be > 0");
    for (float m : mean) SIEVE_CHECK(std::isfinite(m), where, ": input.mean values must be finite");
    SIEVE_CHECK(augment == "crop-flip" || augment == "none", where, ": augment='", augment,
                "' must be 'crop-flip' or 'none'");
    SIEVE_CHECK(freeze == "none" || freeze == "stem" || freeze == "backbone", where, ": freeze='", freeze,
                "' must be none, stem or backbone");
    SIEVE_CHECK(recipe == "seed" || recipe == "fast", where, ": recipe='", recipe, "' must be seed or fast");
    SIEVE_CHECK(block == "bottleneck" || block == "basic" || block == "pool", where, ": model.block='", block,
                "' must be bottleneck, basic or pool");
    if (block == "pool") {
      for (auto b : blocks)
        SIEVE_CHECK(b == 1, where, ": model.block 'pool' takes one unit per stage (model.blocks all 1), got ", b);
      SIEVE_CHECK(stem == "cifar", where, ": model.block 'pool' needs model.stem 'cifar', got '", stem, "'");
    }
    SIEVE_CHECK(global_pool == "avg" || global_pool == "max", where, ": model.global_pool='", global_pool,
                "' must be avg or max");
    SIEVE_CHECK(global_pool == "avg" || block == "pool", where, ": model.global_pool 'max' needs model.block "
                "'pool' (the ResNets pool by average)");
    SIEVE_CHECK(stem == "imagenet" || stem == "cifar", where, ": model.stem='", stem, "' must be imagenet or cifar");
    SIEVE_CHECK(head == "bce" || head == "softmax-other", where, ": model.head='", head,
                "' must be bce or softmax-other");
    SIEVE_CHECK(label_smoothing >= 0.0 && label_smoothing < 1.0, where, ": label_smoothing=", label_smoothing,
                " must be in [0, 1)");
    SIEVE_CHECK(in_channels == 1 || in_channels == 3, where, ": input.channels=", in_channels, " must be 1 or 3");
    SIEVE_CHECK(std::ranges::find(augment::tta_modes, tta) != augment::tta_modes.end(), where, ": tta='", tta,
                "' must be none, flip or flip-translate");
    SIEVE_CHECK(optimizer == "adamw" || optimizer == "sgd", where, ": optimizer='", optimizer,
                "' must be adamw or sgd");
    SIEVE_CHECK(momentum > 0.0 && momentum < 1.0, where, ": momentum=", momentum, " must be in (0, 1)");
    SIEVE_CHECK(max_grad_norm >= 0.0 && std::isfinite(max_grad_norm), where, ": optimizer.max_grad_norm=",
                max_grad_norm, " must be a finite number >= 0");
    SIEVE_CHECK(schedule == "warmup-cosine", where, ": schedule='", schedule, "' (only warmup-cosine is supported)");
    SIEVE_CHECK(lr > 0.0 && std::isfinite(lr), where, ": lr=", lr, " must be > 0");
    SIEVE_CHECK(weight_decay >= 0.0, where, ": weight_decay=", weight_decay, " must be >= 0");
    SIEVE_CHECK(warmup_epochs >= 0.0, where, ": warmup_epochs=", warmup_epochs, " must be >= 0");
    SIEVE_CHECK(epochs >= 1, where, ": epochs=", epochs, " must be >= 1");
    SIEVE_CHECK(budget_minutes >= 0.0 && std::isfinite(budget_minutes), where, ": budget_minutes=", budget_minutes,
                " must be >= 0");
    SIEVE_CHECK(batch >= 1, where, ": batch=", batch, " must be >= 1");
    SIEVE_CHECK(patience >= 0, where, ": patience=", patience, " must be >= 0");
    SIEVE_CHECK(validate_every >= 1, where, ": validate_every=", validate_every, " must be >= 1");
    SIEVE_CHECK(!early_stopping() || validate_every == 1, where, ": validate_every=", validate_every,
                " with early stopping (", recipe == "seed" ? "the seed recipe" : "patience > 0",
                "): its patience counts epochs, so every epoch must validate");
    SIEVE_CHECK(val_frac > 0.0 && val_frac < 1.0, where, ": val_frac=", val_frac, " must be in (0, 1)");
    SIEVE_CHECK(outside_frac >= 0.0 && outside_frac < 1.0, where, ": outside_frac=", outside_frac,
                " must be in [0, 1)");
    if (distractor_share)
      SIEVE_CHECK(*distractor_share >= 0.0 && *distractor_share <= 1.0, where, ": distractor_share=",
                  *distractor_share, " must be in [0, 1] (or null: the validation set's own share)");
  }
};

/// float -> double with the float's shortest decimal (0.485f is written 0.485, not 0.48500001).
inline std::array<double, 3> short_floats(const std::array<float, 3>& v) {
  std::array<double, 3> out{};
  for (std::size_t i = 0; i < 3; ++i) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(v[i]));
    for (int digits = 1; digits <= 9; ++digits) {
      std::snprintf(buf, sizeof buf, "%.*g", digits, static_cast<double>(v[i]));
      if (std::strtof(buf, nullptr) == v[i]) break;
    }
    out[i] = std::strtod(buf, nullptr);
  }
  return out;
}

inline void to_json(json& j, const RunConfig& c) {
  j = json{{"format", "sieve.run v1"},
           {"data", c.data},
           {"classes", c.classes},
           {"recipe", c.recipe},
           {"model",
            {{"arch", c.arch},
             {"blocks", c.blocks},
             {"width", c.width},
             {"block", c.block},
             {"stem", c.stem},
             {"global_pool", c.global_pool},
             {"dropout", c.dropout},
             {"head", c.head},
             {"label_smoothing", c.label_smoothing}}},
           {"input",
            {{"channels", c.in_channels},
             {"image_size", c.image_size},
             {"fit", c.fit},
             {"mean", short_floats(c.mean)},
             {"std", short_floats(c.std)}}},
           {"augment", c.augment},
           {"crop_padding", c.effective_crop_padding()},
           {"optimizer",
            {{"name", c.optimizer},
             {"lr", c.lr},
             {"weight_decay", c.weight_decay},
             {"momentum", c.momentum},
             {"max_grad_norm", c.max_grad_norm}}},
           {"tta", c.tta},
           {"schedule", {{"name", c.schedule}, {"warmup_epochs", c.warmup_epochs}}},
           {"epochs", c.epochs},
           {"budget_minutes", c.budget_minutes},
           {"batch", c.batch},
           {"patience", c.patience},
           {"validate_every", c.validate_every},
           {"seed", c.seed},
           {"freeze", c.freeze},
           {"negatives", c.negatives},
           {"outside_frac", c.outside_frac},
           {"val_frac", c.val_frac},
           {"distractor_share", c.distractor_share ? json(*c.distractor_share) : json(nullptr)},
           {"weights", c.weights ? json(*c.weights) : json(nullptr)}};
}

inline void from_json(const json& j, RunConfig& c) {
  c.data = j.at("data").get<std::string>();
  c.classes = j.at("classes").get<std::vector<std::string>>();
  // Fields added with the fast recipe default to what runs written before it did.
  c.recipe = j.value("recipe", std::string("seed"));
  const auto& m = j.at("model");
  c.arch = m.value("arch", std::string("custom"));
  c.blocks = m.at("blocks").get<std::vector<std::size_t>>();
  c.width = m.at("width").get<std::size_t>();
  c.block = m.value("block", std::string("bottleneck"));
  c.stem = m.value("stem", std::string("imagenet"));
  c.global_pool = m.value("global_pool", std::string("avg"));
  c.dropout = m.at("dropout").get<double>();
  c.head = m.value("head", std::string("bce"));
  c.label_smoothing = m.value("label_smoothing", 0.0);
  const auto& in = j.at("input");
  c.in_channels = in.value("channels", std::size_t{3});
  c.image_size = in.at("image_size").get<std::size_t>();
  c.fit = in.at("fit").get<std::string>();
  c.mean = in.at("mean").get<std::array<float, 3>>();
  c.std = in.at("std").get<std::array<float, 3>>();
  c.augment = j.at("augment").get<std::string>();
  c.crop_padding = j.value("crop_padding", std::size_t{0});
  const auto& o = j.at("optimizer");
  c.optimizer = o.at("name").get<std::string>();
  c.lr = o.at("lr").get<double>();
  c.weight_decay = o.at("weight_decay").get<double>();
  c.momentum = o.value("momentum", 0.9);
  c.max_grad_norm = o.value("max_grad_norm", 0.0);
  c.tta = j.value("tta", std::string("none"));
  const auto& s = j.at("schedule");
  c.schedule = s.at("name").get<std::string>();
  c.warmup_epochs = s.at("warmup_epochs").get<double>();
  c.epochs = j.at("epochs").get<std::int64_t>();
  c.budget_minutes = j.value("budget_minutes", 0.0);
  c.batch = j.at("batch").get<std::int64_t>();
  c.patience = j.value("patience", std::int64_t{6});
  c.validate_every = j.value("validate_every", std::int64_t{1});
  c.seed = j.at("seed").get<std::uint64_t>();
  c.freeze = j.at("freeze").get<std::string>();
  c.negatives = j.at("negatives").get<bool>();
  c.outside_frac = j.at("outside_frac").get<double>();
  c.val_frac = j.at("val_frac").get<double>();
  if (j.contains("distractor_share") && !j.at("distractor_share").is_null())
    c.distractor_share = j.at("distractor_share").get<double>();
  const auto& w = j.at("weights");
  c.weights = w.is_null() ? std::nullopt : std::optional<std::string>(w.get<std::string>());
}

/// Read a JSON file (at most 64 MB). Throws naming the file on I/O or syntax errors.
inline json read_json_file(const fs::path& path) {
  SIEVE_CHECK(fs::exists(path), path.string(), ": no such file");
  const auto bytes = io::read_file(path, std::size_t{64} << 20);
  try {
    return json::parse(std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  } catch (const json::exception& e) {
    fail(path.string(), ": invalid JSON: ", e.what());
  }
}

/// Write `j` (indented) atomically.
inline void write_json_file(const fs::path& path, const json& j) { io::write_file_atomic(path, j.dump(1) + "\n"); }

/// RUN/config.json, parsed and validated.
/// Requires: RUN is a run folder written by `sieve train`. Ensures: a usable RunConfig, or a
/// sieve::Error naming config.json and the missing/bad field.
inline RunConfig load_config(const fs::path& run) {
  SIEVE_CHECK(fs::is_directory(run), "run folder ", run.string(), " does not exist (train one with 'sieve train')");
  const auto path = run / "config.json";
  SIEVE_CHECK(fs::exists(path), path.string(), ": missing; ", run.string(),
              " is not a run folder written by 'sieve train'");
  const json j = read_json_file(path);
  RunConfig c;
  try {
    SIEVE_CHECK(j.is_object(), path.string(), ": not a JSON object");
    from_json(j, c);
  } catch (const json::exception& e) {
    fail(path.string(), ": missing or mistyped field: ", e.what());
  }
  c.validate(path.string());
  return c;
}

inline void save_config(const fs::path& run, const RunConfig& c) {
  fs::create_directories(run);
  write_json_file(run / "config.json", json(c));
}

// ---------------------------------------------------------------------------------------------
// Model: the library's classifier (nn/classifier.hpp) built from the run's configuration

/// nn::Classifier<float> (backbone | Dropout | Linear, torchvision names, head `fc.*`) as
/// RUN/config.json describes it.
class Model : public nn::Classifier<float> {
 public:
  /// Requires: cfg valid. Ensures: torchvision initialisation drawn from cfg.seed; the Dropout
  /// stage keyed by `dropout_seed` (cfg.seed unless a data-parallel rank needs its own stream).
  explicit Model(const RunConfig& cfg) : Model(cfg, cfg.seed) {}
  Model(const RunConfig& cfg, std::uint64_t dropout_seed)
      : nn::Classifier<float>(cfg.backbone(), cfg.head_outputs(), cfg.dropout, cfg.seed, dropout_seed) {}
};

/// Apply cfg.freeze ("none", "stem" or "backbone"; nn::FreezeMode).
inline void apply_freeze(Model& m, const std::string& freeze) { nn::apply_freeze(m, nn::parse_freeze_mode(freeze)); }

/// The checkpoint slot predict/embed/report use: best/ if it exists, else last/.
/// Requires: one of them exists. Ensures: the directory path.
inline fs::path weights_dir(const fs::path& run) {
  train::recover_slot(run, "best");
  train::recover_slot(run, "last");
  if (fs::exists(run / "best")) return run / "best";
  if (fs::exists(run / "last")) return run / "last";
  fail("run ", run.string(), ": neither best/ nor last/ exists (training never saved a checkpoint)");
}

/// Load a verified checkpoint's model.safetensors into `m`, strictly (every tensor, same shapes).
inline void load_weights(Model& m, const fs::path& checkpoint_dir) {
  const auto files = train::load_checkpoint_files(checkpoint_dir);
  const auto it = files.find("model.safetensors");
  SIEVE_CHECK(it != files.end(), "checkpoint ", checkpoint_dir.string(), ": no model.safetensors in its manifest");
  const auto st = io::SafeTensors::parse(it->second, (checkpoint_dir / "model.safetensors").string());
  train::tensors_from_safetensors<float>(st, m.params(), m.buffers());
}

/// The run's model with its best (else last) weights, in eval mode.
inline Model load_model(const fs::path& run, const RunConfig& cfg) {
  Model m(cfg);
  load_weights(m, weights_dir(run));
  m.set_training(false);
  return m;
}

// ---------------------------------------------------------------------------------------------
// Input transforms

/// One transform type for training and inference (augment/input.hpp).
using Transform = augment::InputTransform;

/// Training input: with augment crop-flip, random crop (padding) + horizontal flip p=0.5.
inline Transform train_transform(const RunConfig& cfg) {
  return cfg.augment == "crop-flip" ? augment::train_input_transform(cfg.input_spec(), cfg.effective_crop_padding(), 0.5)
                                    : augment::train_input_transform(cfg.input_spec(), 0, 0.0);
}
/// Inference input (deterministic): the image itself, or one test-time view of it (tta.hpp).
inline Transform eval_transform(const RunConfig& cfg, const augment::TtaView& view = {}) {
  return augment::eval_input_transform(cfg.input_spec(), view);
}
/// Text identifying the inference transform (embedding-cache keys, reports).
inline std::string eval_transform_text(const RunConfig& cfg) { return augment::input_text(cfg.input_spec()); }

// ---------------------------------------------------------------------------------------------
// Batched inference

using retrieval::Embedded;

/// retrieval::embed_dataset with the run's input and the views of `tta`, a progress line named
/// `what` unless quiet.
/// Requires: ds.size() >= 1 and every image decodable (errors name the sample).
inline Embedded embed_dataset(Model& model, const io::Dataset& ds, const RunConfig& cfg, std::size_t workers,
                              const std::string& tta, const std::string& what = "embed", std::size_t batch = 64,
                              bool quiet = false) {
  SIEVE_CHECK(ds.size() > 0, what, ": no images to embed");
  const std::vector<augment::TtaView> views = augment::tta_views(tta);
  std::optional<ProgressLine> progress;
  std::size_t shown = views.size();  // the view the progress line is for
  const retrieval::EmbedProgress report = [&](std::size_t v, std::size_t n, std::size_t done, std::size_t total) {
    if (quiet) return;
    if (v != shown) {
      progress.emplace(n > 1 ? str(what, " (view ", v + 1, "/", n, ")") : what);
      shown = v;
    }
    (*progress)(done, total);
  };
  return retrieval::embed_dataset(model, ds, cfg.input_spec(), views, {batch, workers, cfg.seed}, report);
}

// ---------------------------------------------------------------------------------------------
// Embeddings files (RUN/train_embeddings.safetensors, `sieve embed` output)

/// `embedding` [N,D] F32, `label` [N] I64 (-1 = none), ids in __metadata__["ids"] as a JSON
/// array of strings (same order as the rows).
struct EmbeddingsFile {
  Tensor2f embedding;
  std::vector<std::int64_t> label;
  std::vector<std::string> ids;
};

inline void write_embeddings(const fs::path& path, const EmbeddingsFile& e,
                             const std::map<std::string, std::string>& metadata = {}) {
  const std::size_t N = e.embedding.shape()[0];
  SIEVE_CHECK(e.label.size() == N && e.ids.size() == N, "write_embeddings(", path.string(), "): ", N, " rows, ",
              e.label.size(), " labels, ", e.ids.size(), " ids");
  io::SafeTensorsWriter w;
  w.add("embedding", {N, e.embedding.shape()[1]}, std::span<const float>(e.embedding.data(), e.embedding.size()));
  w.add("label", {N}, std::span<const std::int64_t>(e.label.data(), N));
  w.set_metadata("ids", json(e.ids).dump());
  for (const auto& [k, v] : metadata) w.set_metadata(k, v);
  w.write(path);
}

/// Requires: a file written by write_embeddings. Ensures: consistent sizes, or an error naming the file.
inline EmbeddingsFile read_embeddings(const fs::path& path) {
  SIEVE_CHECK(fs::exists(path), path.string(), ": no such file");
  const auto st = io::SafeTensors::load(path);
  EmbeddingsFile e;
  SIEVE_CHECK(st.contains("embedding"), path.string(), ": no tensor 'embedding'");
  const auto& info = st.info("embedding");
  SIEVE_CHECK(info.shape.size() == 2, path.string(), ": 'embedding' has shape ", io::shape_text(info.shape),
              ", expected [N, D]");
  const std::size_t N = info.shape[0];
  e.embedding = xt::zeros<float>({N, info.shape[1]});
  const auto v = st.floats("embedding");
  std::copy(v.begin(), v.end(), e.embedding.data());
  if (st.contains("label")) {
    e.label = st.ints("label");
    SIEVE_CHECK(e.label.size() == N, path.string(), ": 'label' has ", e.label.size(), " values for ", N, " rows");
  } else {
    e.label.assign(N, -1);
  }
  const auto it = st.metadata().find("ids");
  SIEVE_CHECK(it != st.metadata().end(), path.string(), ": no 'ids' in __metadata__");
  try {
    e.ids = json::parse(it->second).get<std::vector<std::string>>();
  } catch (const json::exception& ex) {
    fail(path.string(), ": __metadata__ 'ids' is not a JSON array of strings: ", ex.what());
  }
  SIEVE_CHECK(e.ids.size() == N, path.string(), ": ", e.ids.size(), " ids for ", N, " rows");
  return e;
}

// ---------------------------------------------------------------------------------------------
// Ranking methods and calibration

using retrieval::Method;
using retrieval::MethodCalibration;
using retrieval::method_name;
using retrieval::method_names;
using retrieval::parse_method;

/// RUN/calibration.json: per method, chosen on validation with the best weights.
struct Calibration {
  std::map<std::string, MethodCalibration> methods;
  std::size_t n_val = 0, n_val_outside = 0;
  /// The distractor share the thresholds were chosen for (val_map5 is at that share); none:
  /// the validation set's own, n_val_outside / n_val.
  std::optional<double> distractor_share;
  std::string checkpoint;  ///< "best" or "last": the weights calibrated
  std::string recommended = "head";  ///< method with the highest validation MAP@5

  const MethodCalibration& at(const std::string& method, const fs::path& file) const {
    const auto it = methods.find(method);
    SIEVE_CHECK(it != methods.end(), file.string(), ": no calibration for method '", method, "'");
    return it->second;
  }
};

inline void to_json(json& j, const Calibration& c) {
  j = json{{"format", "sieve.calibration v1"}, {"n_val", c.n_val},         {"n_val_outside", c.n_val_outside},
           {"checkpoint", c.checkpoint},        {"recommended", c.recommended}, {"methods", c.methods},
           {"distractor_share", c.distractor_share ? json(*c.distractor_share) : json(nullptr)}};
}
inline void from_json(const json& j, Calibration& c) {
  c.n_val = j.at("n_val").get<std::size_t>();
  c.n_val_outside = j.at("n_val_outside").get<std::size_t>();
  if (j.contains("distractor_share") && !j.at("distractor_share").is_null())
    c.distractor_share = j.at("distractor_share").get<double>();
  c.checkpoint = j.at("checkpoint").get<std::string>();
  c.recommended = j.value("recommended", std::string("head"));
  c.methods = j.at("methods").get<std::map<std::string, MethodCalibration>>();
}

/// RUN/calibration.json. Requires: written by `sieve train`.
inline Calibration load_calibration(const fs::path& run) {
  const auto path = run / "calibration.json";
  SIEVE_CHECK(fs::exists(path), path.string(), ": missing (training writes it when it ends; was it interrupted? "
              "resume with 'sieve train --resume ", run.string(), "')");
  const json j = read_json_file(path);
  Calibration c;
  try {
    from_json(j, c);
  } catch (const json::exception& e) {
    fail(path.string(), ": missing or mistyped field: ", e.what());
  }
  return c;
}

}  // namespace sieve::cli

