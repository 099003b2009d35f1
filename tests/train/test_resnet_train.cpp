// The trainer on a real (small) ResNet + Dropout + Linear head: exact resume mid-epoch with
// BN running statistics, nn::Dropout's step counter and AdamW state; frozen-backbone training.
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>

#include "sieve/kernels/gemm.hpp"
#include "sieve/loss/bce_with_logits.hpp"
#include "sieve/nn/freeze.hpp"
#include "sieve/optim/adamw.hpp"
#include "sieve/optim/schedule.hpp"
#include "sieve/train/memory_loader.hpp"
#include "sieve/train/trainer.hpp"
#include "small_net.hpp"

namespace fs = std::filesystem;
using namespace sieve;

namespace {
struct Run {
  sieve_test::SmallNet<float> net{{{1, 1}, 4, 3}, 3, 77, 0.3};
  loss::BCEWithLogitsLoss<float> loss;
  optim::AdamW<float> opt{net.params(), {}, {{"fc.", 5.0}}};
  optim::WarmupCosineLR sched{0.01, 2, 12, 0.2, 0.0};
  train::InMemoryLoader<float, 4, float, 2> loader;
  train::Trainer<sieve_test::SmallNet<float>, loss::BCEWithLogitsLoss<float>, optim::AdamW<float>, optim::WarmupCosineLR> tr;

  static train::InMemoryLoader<float, 4, float, 2> data() {
    Rng rng(3, 3);
    Tensor4<float> x = xt::zeros<float>(Shape<4>{10, 3, 12, 12});
    for (auto& v : x) v = static_cast<float>(rng.normal());
    Tensor2<float> y = xt::zeros<float>(Shape<2>{10, 3});
    for (std::size_t n = 0; n < 10; ++n) y(n, n % 3) = n == 9 ? 0.0f : 1.0f;  // sample 9: a distractor
    return {x, y, 4, 21};
  }
  Run(const fs::path& dir, std::int64_t stop_after)
      : loader(data()),
        tr(net, loss, opt, sched,
           {.run_dir = dir, .epochs = 3, .accum_steps = 2, .max_grad_norm = 5.0, .stop_after_steps = stop_after,
            .seed = 21, .progress = train::Progress::off}) {}
};
}  // namespace

TEST_CASE("small ResNet: k steps + stop + resume + k steps is bit-identical to 2k straight (BN, Dropout, AdamW)") {
  set_threads(1);
  const fs::path a = fs::temp_directory_path() / ("sieve_train_resnet_a_" + std::to_string(::getpid()));
  const fs::path b = fs::temp_directory_path() / ("sieve_train_resnet_b_" + std::to_string(::getpid()));
  fs::remove_all(a);
  fs::remove_all(b);
  // 3 batches/epoch (4,4,2) with accumulation 2 -> 2 steps per epoch, 6 in all; stop at 3 = mid-epoch 2.
  Run straight(a, -1);
  const auto before = straight.net.snapshot();
  straight.tr.fit(straight.loader);
  const auto want = straight.net.snapshot();
  CHECK(want != before);
  {
    Run first(b, 3);
    CHECK(first.tr.fit(first.loader).stopped_by_limit);
  }
  Run second(b, -1);
  REQUIRE(second.tr.resume());
  CHECK(second.tr.state().epoch == 1);
  CHECK(second.tr.state().batch == 2);
  second.tr.fit(second.loader);
  const auto got = second.net.snapshot();
  REQUIRE(got.size() == want.size());
  std::size_t differing = 0;
  for (std::size_t i = 0; i < got.size(); ++i) differing += got[i] != want[i];
  CHECK_MESSAGE(differing == 0, differing, " of ", got.size(), " weights/buffers differ");
  CHECK(io::read_file(a / "last" / "model.safetensors") == io::read_file(b / "last" / "model.safetensors"));
  // model.safetensors is in torchvision order with num_batches_tracked as I64.
  const auto st = io::SafeTensors::load(a / "last" / "model.safetensors");
  const auto names = st.names();
  REQUIRE(names.size() >= 6);
  CHECK(names[0] == "conv1.weight");
  CHECK(names[1] == "bn1.weight");
  CHECK(names[3] == "bn1.running_mean");
  CHECK(names[5] == "bn1.num_batches_tracked");
  CHECK(names.back() == "fc.bias");
  CHECK(st.ints("bn1.num_batches_tracked") == std::vector<std::int64_t>{9});  // 3 epochs x 3 train forwards
  fs::remove_all(a);
  fs::remove_all(b);
}

TEST_CASE("small ResNet: frozen backbone parameters stay bit-identical while the head trains") {
  Run r({}, -1);
  nn::freeze_all_but(r.net, {"fc."});
  auto frozen_before = r.net.backbone.params();
  std::vector<float> bb;
  for (const auto& p : frozen_before) bb.insert(bb.end(), p.value.begin(), p.value.end());
  const std::vector<float> head_before(r.net.fc.params()[0].value.begin(), r.net.fc.params()[0].value.end());
  r.tr.fit(r.loader);
  std::vector<float> bb_after;
  for (const auto& p : r.net.backbone.params()) bb_after.insert(bb_after.end(), p.value.begin(), p.value.end());
  CHECK(bb_after == bb);
  const std::vector<float> head_after(r.net.fc.params()[0].value.begin(), r.net.fc.params()[0].value.end());
  CHECK(head_after != head_before);
}
