#pragma once
/// `sieve forward`: run torchvision's resnet50 once on a batch stored in safetensors, for
/// people who port or debug models. Writes logits and the pooled embedding; with a target, the
/// BCE-with-logits loss and every trainable parameter's gradient; with --train, BN uses batch
/// statistics and the updated running statistics are written too.

#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>

#include "common.hpp"
#include "sieve/kernels/gemm.hpp"
#include "sieve/loss/bce_with_logits.hpp"

namespace sieve::cli {

struct ForwardCommand {
  CLI::App* app = nullptr;
  std::string weights, input, out, target, save_weights;
  bool train = false, use_double = false;
  int threads = 0;

  void add_to(CLI::App& parent) {
    app = parent.add_subcommand("forward", "Run resnet50 on one batch: logits, embedding, and optionally loss, "
                                           "gradients and BN statistics (for porting and debugging models)");
    app->add_option("--weights", weights, "torchvision resnet50 state dict (.safetensors); the class count K "
                                          "comes from fc.weight [K,2048]")
        ->required();
    app->add_option("--input", input, "safetensors file with tensor 'input' [N,3,H,W] (float)")->required();
    app->add_option("--out", out, "output safetensors: 'logits' [N,K], 'embedding' [N,2048], and with --target "
                                  "'loss' (rank 0) and 'grad.<param>'; with --train the BN running statistics")
        ->required();
    app->add_option("--target", target, "safetensors file with tensor 'target' [N,K] multi-hot (float): adds the "
                                         "BCE-with-logits loss (mean over N*K) and parameter gradients");
    app->add_flag("--train", train, "BatchNorm in train mode (batch statistics); writes the updated running_mean, "
                                    "running_var and num_batches_tracked under their names");
    app->add_option("--save-weights", save_weights, "also write the model's state dict after the step "
                                                    "(torchvision layout; loads with torchvision's load_state_dict)");
    app->add_flag("--double", use_double, "compute in float64 (outputs F64): separates float32 rounding from "
                                          "real discrepancies when comparing with another framework");
    app->add_option("--threads", threads, "compute threads (0 = OMP_NUM_THREADS or all cores)")
        ->check(CLI::Range(0, 4096));
  }

  int run() {
    if (threads > 0) sieve::set_threads(threads);
    return use_double ? run_as<double>() : run_as<float>();
  }

  template <class T>
  int run_as() {
    const auto wst = io::SafeTensors::load(weights);
    const std::size_t K = head_classes(wst);
    Classifier<T> model(K, /*seed*/ 0);
    nn::load_state_dict(model, wst);  // strict: every tensor present, same shapes

    const auto ist = io::SafeTensors::load(input);
    const Tensor4<T> x = read_tensor<T, 4>(ist, "input");
    const std::size_t N = x.shape()[0];
    SIEVE_CHECK(N > 0 && x.shape()[1] == 3 && x.shape()[2] > 0 && x.shape()[3] > 0, input,
                ": tensor 'input' has shape [", N, ", ", x.shape()[1], ", ", x.shape()[2], ", ", x.shape()[3],
                "], expected [N, 3, H, W] with N, H, W > 0");
    std::optional<Tensor2<T>> y;
    if (!target.empty()) {
      const auto tst = io::SafeTensors::load(target);
      y = read_tensor<T, 2>(tst, "target");
      SIEVE_CHECK(y->shape()[0] == N && y->shape()[1] == K, target, ": tensor 'target' has shape [", y->shape()[0],
                  ", ", y->shape()[1], "] but the batch has N=", N, " and the head K=", K);
    }

    model.set_training(train);
    model.zero_grad();
    const Tensor2<T>& emb = model.net.forward(x);
    const Tensor2<T>& logits = model.fc.forward(emb);

    io::SafeTensorsWriter w;
    std::optional<double> loss_value;
    add_tensor(w, "logits", logits);
    add_tensor(w, "embedding", emb);
    if (y) {
      loss::BCEWithLogitsLoss<T> bce;
      loss_value = bce.forward(logits, *y);
      const T lt = static_cast<T>(*loss_value);
      w.add("loss", {}, std::span<const T>(&lt, 1));
      const Tensor2<T>& demb = model.fc.backward(bce.backward());
      model.net.backward(demb);
      for (const auto& p : model.params()) {
        if (p.is_frozen()) continue;
        w.add("grad." + p.name, p.shape, std::span<const T>(p.grad.data(), p.grad.size()));
      }
    }
    if (train) {
      for (const auto& b : model.buffers()) {
        if (b.is_count()) {
          const std::int64_t c = *b.count;
          w.add(b.name, b.shape, std::span<const std::int64_t>(&c, 1));
        } else {
          w.add(b.name, b.shape, std::span<const T>(b.value.data(), b.value.size()));
        }
      }
    }
    w.set_metadata("producer", "sieve forward");
    w.set_metadata("mode", train ? "train" : "eval");
    w.set_metadata("precision", std::is_same_v<T, float> ? "float32" : "float64");
    w.write(out);
    // Weights are saved as F32 whatever the precision: the file is for torchvision.
    if (!save_weights.empty())
      nn::save_state_dict(model, save_weights, {{"producer", "sieve forward"}}, io::DType::F32);
    std::cout << "sieve forward: N=" << N << " K=" << K << " " << (train ? "train" : "eval") << " mode";
    if (loss_value) std::cout << ", loss " << *loss_value;
    std::cout << " -> " << out << "\n";
    return 0;
  }
};

}  // namespace sieve::cli
