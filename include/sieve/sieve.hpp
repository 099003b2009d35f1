#pragma once
/// The umbrella header: everything sieve offers. Examples include this; tests include what
/// they use (each area's headers are also usable on their own).

// core: tensors, errors, counter-based RNG, stage concepts, pipelines
#include "sieve/core/core.hpp"

// kernels (stateless) and stages (own parameters): conv, batch norm, pooling, ResNet, heads
#include "sieve/kernels/kernels.hpp"
#include "sieve/nn/nn.hpp"
#include "sieve/nn/state_dict.hpp"

// files, images, data sets, loaders, safetensors, CSV, submissions
#include "sieve/io/csv.hpp"
#include "sieve/io/data_folder.hpp"
#include "sieve/io/dataset.hpp"
#include "sieve/io/fashion_mnist.hpp"
#include "sieve/io/file.hpp"
#include "sieve/io/fmnist_d.hpp"
#include "sieve/io/image.hpp"
#include "sieve/io/image_stats.hpp"
#include "sieve/io/loader.hpp"
#include "sieve/io/safetensors.hpp"
#include "sieve/io/submission.hpp"

// augmentation stages
#include "sieve/augment/augment.hpp"

// training: losses, optimizers, schedules, the validation split, trainer, checkpoints, embedding cache
#include "sieve/loss/bce_with_logits.hpp"
#include "sieve/loss/cross_entropy.hpp"
#include "sieve/optim/adamw.hpp"
#include "sieve/optim/param_groups.hpp"
#include "sieve/optim/schedule.hpp"
#include "sieve/optim/sgd.hpp"
#include "sieve/train/cached_head.hpp"
#include "sieve/train/checkpoint.hpp"
#include "sieve/train/early_stopping.hpp"
#include "sieve/train/embedding_cache.hpp"
#include "sieve/train/loader_adapter.hpp"
#include "sieve/train/memory_loader.hpp"
#include "sieve/train/split.hpp"
#include "sieve/train/trainer.hpp"
#include "sieve/train/weights.hpp"

// evaluation and retrieval: the embedding pass, MAP@5, -1 thresholds, kNN / centroid / fusion
// ranking and their calibration
#include "sieve/metrics/map_at_k.hpp"
#include "sieve/metrics/summary.hpp"
#include "sieve/retrieval/calibration.hpp"
#include "sieve/retrieval/embed.hpp"
#include "sieve/retrieval/scores.hpp"
#include "sieve/retrieval/threshold.hpp"

// reports: SVG plots, HTML pages, UMAP, PCA
#include "sieve/viz/html.hpp"
#include "sieve/viz/pca.hpp"
#include "sieve/viz/svg.hpp"
#include "sieve/viz/umap.hpp"
