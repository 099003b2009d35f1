// e2e helper: train a ResNet([1,1,1,1]) + Dropout + fc model two steps with the Trainer into
// RUN (argv[1]), then write RUN/probe.safetensors with an input batch and the model's
// eval-mode logits. torch_load_e2e.py checks that torchvision loads RUN/last/model.safetensors
// strictly and reproduces those logits.
#include <cstdio>
#include <exception>

#include "sieve/io/safetensors.hpp"
#include "sieve/kernels/gemm.hpp"
#include "sieve/loss/bce_with_logits.hpp"
#include "sieve/optim/adamw.hpp"
#include "sieve/optim/schedule.hpp"
#include "sieve/train/memory_loader.hpp"
#include "sieve/train/trainer.hpp"
#include "small_net.hpp"

int main(int argc, char** argv) try {
  using namespace sieve;
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s RUN_DIR\n", argv[0]);
    return 2;
  }
  set_threads(1);
  sieve_test::SmallNet<float> net(nn::ResNetConfig{{1, 1, 1, 1}, 64, 3}, 5, 123, 0.2);
  loss::BCEWithLogitsLoss<float> loss;
  optim::AdamW<float> opt(net.params(), {}, {{"fc.", 10.0}});
  optim::WarmupCosineLR sched{1e-3, 1, 4, 0.5, 0.0};
  Rng rng(9, 9);
  Tensor4<float> x = xt::zeros<float>(Shape<4>{4, 3, 32, 32});
  for (auto& v : x) v = static_cast<float>(rng.normal());
  Tensor2<float> y = xt::zeros<float>(Shape<2>{4, 5});
  y(0, 1) = y(1, 3) = y(2, 0) = y(2, 4) = 1.0f;  // sample 3: all-zero (distractor)
  train::InMemoryLoader<float, 4, float, 2> loader(x, y, 2, 5);
  train::Trainer tr(net, loss, opt, sched,
                    {.run_dir = argv[1], .epochs = 1, .seed = 5, .progress = train::Progress::plain,
                     .config = {{"model", "resnet[1,1,1,1]+dropout+fc"}}});
  tr.fit(loader);
  net.set_training(false);
  const auto& logits = net.forward(x);
  io::SafeTensorsWriter w;
  w.add("input", {4, 3, 32, 32}, std::span<const float>(x.data(), x.size()));
  w.add("logits", {4, 5}, std::span<const float>(logits.data(), logits.size()));
  w.write(std::filesystem::path(argv[1]) / "probe.safetensors");
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "torch_load_e2e: error: %s\n", e.what());
  return 1;
}
