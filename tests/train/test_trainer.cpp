// The trainer with a tiny MLP and an in-memory loader: learning, exact resume (also
// mid-epoch), determinism, the non-finite guard, accumulation, clipping, early stopping with
// best weights, progress output, metrics.jsonl; and the embedding cache.
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "sieve/loss/bce_with_logits.hpp"
#include "sieve/optim/adamw.hpp"
#include "sieve/optim/schedule.hpp"
#include "sieve/optim/sgd.hpp"
#include "sieve/train/embedding_cache.hpp"
#include "sieve/train/loader_adapter.hpp"
#include "sieve/train/memory_loader.hpp"
#include "sieve/train/metrics_log.hpp"
#include "sieve/train/trainer.hpp"
#include "tiny_model.hpp"
#include "support/temp_dir.hpp"

namespace fs = std::filesystem;
using sieve_test::TempDir;
using namespace sieve;
using sieve_test::TinyMlp;

namespace {
constexpr std::size_t kIn = 12, kHidden = 16, kClasses = 3, kSamples = 40;

// Inputs [M,2,3,2]; multi-hot targets from a fixed random teacher (one row all-zero).
std::pair<Tensor4<float>, Tensor2<float>> make_data() {
  Rng rng(5, 1);
  Tensor4<float> x = xt::zeros<float>(Shape<4>{kSamples, 2, 3, 2});
  for (auto& v : x) v = static_cast<float>(rng.normal());
  std::vector<double> teacher(kClasses * kIn);
  for (auto& t : teacher) t = rng.normal();
  Tensor2<float> y = xt::zeros<float>(Shape<2>{kSamples, kClasses});
  for (std::size_t n = 0; n < kSamples; ++n)
    for (std::size_t k = 0; k < kClasses; ++k) {
      double s = 0;
      for (std::size_t i = 0; i < kIn; ++i) s += teacher[k * kIn + i] * x.data()[n * kIn + i];
      y(n, k) = n == 7 ? 0.0f : (s > 0.3 ? 1.0f : 0.0f);
    }
  return {x, y};
}

using Loader = train::InMemoryLoader<float, 4, float, 2>;

// Replaces the input of chosen (epoch, batch) pairs by NaN.
struct PoisonLoader {
  Loader inner;
  std::set<std::pair<std::int64_t, std::int64_t>> poison;
  bool poison_all = false;
  std::int64_t epoch = 0, batch = 0;
  Loader::Batch b{};
  std::int64_t num_batches(std::int64_t e) const { return inner.num_batches(e); }
  void start_epoch(std::int64_t e, std::int64_t first) {
    inner.start_epoch(e, first);
    epoch = e;
    batch = first;
  }
  const Loader::Batch& next_batch() {
    b = inner.next_batch();
    if (poison_all || poison.count({epoch, batch})) b.x.fill(std::nanf(""));
    ++batch;
    return b;
  }
};

struct Setup {
  TinyMlp<float> model;
  loss::BCEWithLogitsLoss<float> loss;
  optim::AdamW<float> opt;
  optim::WarmupCosineLR sched;
  Loader loader;
  train::Trainer<TinyMlp<float>, loss::BCEWithLogitsLoss<float>, optim::AdamW<float>, optim::WarmupCosineLR> trainer;

  Setup(train::TrainerOptions o, std::size_t batch_size = 6, double dropout = 0.25)
      : model(kIn, kHidden, kClasses, 42, dropout), opt(model.params(), {0.9, 0.999, 1e-8, 0.01}, {{"fc2.", 3.0}}),
        sched{0.02, 3, 40, 0.1, 1e-4}, loader(make_data().first, make_data().second, batch_size, o.seed),
        trainer(model, loss, opt, sched, with_defaults(std::move(o))) {}

  static train::TrainerOptions with_defaults(train::TrainerOptions o) {
    o.progress = train::Progress::off;
    return o;
  }

  double data_loss() {
    auto [x, y] = make_data();
    model.set_training(false);
    Rng rng(0);
    const double l = loss.forward(model.forward(x, rng), y);
    model.set_training(true);
    return l;
  }
};

std::vector<std::byte> file_bytes(const fs::path& p) { return io::read_file(p); }
}  // namespace

TEST_CASE("trainer: loss goes down; checkpoints and metrics.jsonl are written") {
  TempDir run("trainer_learn");
  Setup s({.run_dir = run.path, .epochs = 10, .accum_steps = 1, .seed = 3});
  const double before = s.data_loss();
  const auto r = s.trainer.fit(s.loader);
  const double after = s.data_loss();
  MESSAGE("tiny MLP BCE on its training set: ", before, " -> ", after, " after ", r.steps, " steps");
  CHECK(after < 0.6 * before);
  CHECK(r.steps == 10 * 7);
  CHECK(r.epochs_completed == 10);
  CHECK(train::checkpoint_is_valid(run.path / "last"));
  std::ifstream m(run.path / "metrics.jsonl");
  std::string line;
  int lines = 0;
  double first_loss = 0, last_loss = 0;
  while (std::getline(m, line)) {
    const auto j = nlohmann::json::parse(line);
    for (const char* k : {"epoch", "step", "lr", "loss", "images_per_sec", "wall_time_s"}) CHECK(j.contains(k));
    CHECK(j["epoch"].get<int>() == lines + 1);
    (lines == 0 ? first_loss : last_loss) = j["loss"].get<double>();
    ++lines;
  }
  CHECK(lines == 10);
  CHECK(last_loss < first_loss);
  // The model file is plain safetensors with torchvision-style names and the counter as I64.
  const auto st = io::SafeTensors::load(run.path / "last" / "model.safetensors");
  CHECK(st.contains("fc1.weight"));
  CHECK(st.info("fc1.weight").shape == std::vector<std::size_t>{kHidden, kIn});
  CHECK(st.ints("bn.num_batches_tracked") == std::vector<std::int64_t>{70});
}

TEST_CASE("trainer: exact resume — k steps, stop, resume, k more == 2k straight (mid-epoch, accumulation, dropout)") {
  // 7 batches/epoch with accumulation 2 -> 4 optimizer steps per epoch (the last one short).
  auto straight = [&](const fs::path& dir) {
    Setup s({.run_dir = dir, .epochs = 3, .accum_steps = 2, .max_grad_norm = 1.0, .seed = 11});
    s.trainer.fit(s.loader);
    return s.model.snapshot();
  };
  TempDir a("resume_a");
  const auto want = straight(a.path);
  {
    TempDir a2("resume_a2");
    CHECK(straight(a2.path) == want);  // same seed, same bits
  }
  for (std::vector<std::int64_t> stops : {std::vector<std::int64_t>{5}, {4}, {3, 9}, {1, 2, 7, 11}}) {
    CAPTURE(stops.size());
    CAPTURE(stops.front());
    TempDir b("resume_b");
    for (const auto k : stops) {
      Setup s({.run_dir = b.path, .epochs = 3, .accum_steps = 2, .max_grad_norm = 1.0, .stop_after_steps = k, .seed = 11});
      s.trainer.resume();
      const auto r = s.trainer.fit(s.loader);
      CHECK(r.stopped_by_limit);
      CHECK(r.steps == k);
    }
    Setup s({.run_dir = b.path, .epochs = 3, .accum_steps = 2, .max_grad_norm = 1.0, .seed = 11});
    REQUIRE(s.trainer.resume());
    s.trainer.fit(s.loader);
    const auto got = s.model.snapshot();
    REQUIRE(got.size() == want.size());
    std::size_t differing = 0;
    for (std::size_t i = 0; i < got.size(); ++i) differing += got[i] != want[i];
    CHECK_MESSAGE(differing == 0, differing, " of ", got.size(), " values differ from the straight run");
    CHECK(file_bytes(b.path / "last" / "model.safetensors") == file_bytes(a.path / "last" / "model.safetensors"));
    CHECK(file_bytes(b.path / "last" / "optimizer.safetensors") == file_bytes(a.path / "last" / "optimizer.safetensors"));
    // Epoch losses logged by the interrupted run equal the straight run's.
    auto losses = [](const fs::path& p) {
      std::vector<double> out;
      std::ifstream f(p / "metrics.jsonl");
      for (std::string line; std::getline(f, line);) out.push_back(nlohmann::json::parse(line)["loss"].get<double>());
      return out;
    };
    CHECK(losses(b.path) == losses(a.path));
  }
  // A different seed changes dropout masks and the shuffle, hence the weights.
  TempDir c("resume_c");
  Setup other({.run_dir = c.path, .epochs = 3, .accum_steps = 2, .max_grad_norm = 1.0, .seed = 12});
  other.trainer.fit(other.loader);
  CHECK(other.model.snapshot() != want);
  // Resuming a run with another seed is refused (it could not be exact).
  Setup wrong({.run_dir = a.path, .epochs = 3, .seed = 99});
  CHECK_THROWS_WITH_AS(wrong.trainer.resume(), doctest::Contains("trained with seed 11 but this run has seed 99"), Error);
}

namespace {
// The "epoch" and "loss" of every line of RUN/metrics.jsonl (every line must parse).
std::vector<std::pair<int, double>> epoch_losses(const fs::path& run) {
  std::vector<std::pair<int, double>> out;
  std::ifstream f(run / "metrics.jsonl");
  for (std::string line; std::getline(f, line);) {
    const auto j = nlohmann::json::parse(line);
    out.emplace_back(j["epoch"].get<int>(), j["loss"].get<double>());
  }
  return out;
}
void append_text(const fs::path& p, const std::string& text) {
  std::ofstream f(p, std::ios::app);
  f << text;
}
}  // namespace

TEST_CASE("trainer: resume cuts metrics.jsonl back to the checkpoint (lines logged after it, a torn last line)") {
  // 7 batches per epoch; a kill between an epoch's metrics line and its last/ save leaves a line
  // the resumed run writes again. Simulated: stop at a step, append what the killed run had logged.
  TempDir a("metrics_straight");
  {
    Setup s({.run_dir = a.path, .epochs = 3, .seed = 4});
    s.trainer.fit(s.loader);
  }
  const auto want = epoch_losses(a.path);
  REQUIRE(want.size() == 3);
  // Stops: mid-epoch 2 (step 10); the last step of epoch 1 (step 7: last/ is at batch 7 of 7 with
  // the epoch end still to run, so a line with step 7 is after the checkpoint: a step rule fails).
  for (const std::int64_t stop : {10, 7}) {
    CAPTURE(stop);
    TempDir b("metrics_resumed");
    {
      Setup s({.run_dir = b.path, .epochs = 3, .stop_after_steps = stop, .seed = 4});
      s.trainer.fit(s.loader);
    }
    const int completed = stop == 10 ? 1 : 0;
    REQUIRE(epoch_losses(b.path).size() == static_cast<std::size_t>(completed));
    append_text(b.path / "metrics.jsonl", str("{\"epoch\": ", completed + 1, ", \"step\": 7, \"loss\": 9.5}\n{\"epo"));
    std::ostringstream said;
    Setup s({.run_dir = b.path, .epochs = 3, .seed = 4, .out = &said});
    REQUIRE(s.trainer.resume());
    CHECK(said.str().find("1 logged after it dropped, a torn last line dropped") != std::string::npos);
    CHECK(epoch_losses(b.path).size() == static_cast<std::size_t>(completed));
    s.trainer.fit(s.loader);
    CHECK(epoch_losses(b.path) == want);
  }
}

TEST_CASE("trainer: stop_requested stops at the step boundary with last/ saved; resuming gives the straight run") {
  TempDir a("stop_straight");
  std::vector<float> want;
  {
    Setup s({.run_dir = a.path, .epochs = 3, .accum_steps = 2, .seed = 6});
    s.trainer.fit(s.loader);
    want = s.model.snapshot();
  }
  // 4 steps per epoch; polled after each step and each epoch end: the 3rd poll follows step 3
  // (mid-epoch 1), the 5th the end of epoch 1 (step 4), the 7th step 6 (mid-epoch 2).
  for (const auto& [last_poll, at] : std::vector<std::pair<std::int64_t, std::int64_t>>{{3, 3}, {5, 4}, {7, 6}}) {
    CAPTURE(last_poll);
    TempDir b("stop_resumed");
    std::int64_t polls = 0;
    {
      Setup s({.run_dir = b.path, .epochs = 3, .accum_steps = 2,
               .stop_requested = [&] { return ++polls >= last_poll; }, .seed = 6});
      const auto r = s.trainer.fit(s.loader);
      CHECK(r.stopped_by_request);
      CHECK_FALSE(r.stopped_by_limit);
      CHECK(r.steps == at);
      CHECK(s.trainer.state().step == at);
    }
    Setup s({.run_dir = b.path, .epochs = 3, .accum_steps = 2, .seed = 6});
    REQUIRE(s.trainer.resume());
    CHECK(s.trainer.state().step == at);  // last/ is the stop's step
    const auto r = s.trainer.fit(s.loader);
    CHECK_FALSE(r.stopped_by_request);
    CHECK(s.model.snapshot() == want);
    CHECK(file_bytes(b.path / "last" / "model.safetensors") == file_bytes(a.path / "last" / "model.safetensors"));
    CHECK(epoch_losses(b.path) == epoch_losses(a.path));
  }
}

TEST_CASE("trainer: checkpoint_every_minutes saves last/ mid-epoch on the clock") {
  // A crash (the loader throws) at batch 6 of epoch 1; the clock advances 10 s per batch served.
  struct CrashingLoader {
    Loader& inner;
    std::int64_t& served;
    std::int64_t crash_at;
    std::int64_t num_batches(std::int64_t e) const { return inner.num_batches(e); }
    void start_epoch(std::int64_t e, std::int64_t first) { inner.start_epoch(e, first); }
    const Loader::Batch& next_batch() {
      if (served == crash_at) throw std::runtime_error("simulated crash");
      ++served;
      return inner.next_batch();
    }
  };
  for (const double minutes : {0.0, 0.5}) {
    CAPTURE(minutes);
    TempDir d("ckpt_minutes");
    std::int64_t served = 0;
    Setup s({.run_dir = d.path, .epochs = 2, .checkpoint_every_minutes = minutes, .seed = 2,
             .now_seconds = [&] { return 10.0 * static_cast<double>(served); }});
    CrashingLoader crashing{s.loader, served, 5};
    CHECK_THROWS_WITH(s.trainer.fit(crashing), "simulated crash");
    if (minutes == 0.0) {
      CHECK_FALSE(fs::exists(d.path / "last"));  // epoch-end checkpoints only: nothing yet
      continue;
    }
    // 30 s between saves: after step 3 (30 s); the next would follow step 6, whose batch crashes.
    Setup r({.run_dir = d.path, .epochs = 2, .seed = 2});
    REQUIRE(r.trainer.resume());
    CHECK(r.trainer.state().step == 3);
    CHECK(r.trainer.state().batch == 3);
  }
  CHECK_THROWS_WITH_AS(Setup({.checkpoint_every_minutes = std::nan("")}), doctest::Contains("checkpoint_every_minutes=nan"),
                       Error);
}

TEST_CASE("truncate_metrics_log: keeps the checkpoint's epochs, leaves a clean log untouched, refuses a corrupt line") {
  TempDir d("metrics_log", true);
  const fs::path p = d.path / "metrics.jsonl";
  CHECK_FALSE(train::truncate_metrics_log(p, 3).changed());  // no log yet: nothing to do
  CHECK_FALSE(fs::exists(p));
  const std::string clean = "{\"epoch\": 1, \"loss\": 0.5}\n{\"note\": \"no epoch\"}\n{\"epoch\": 2, \"loss\": 0.25}\n";
  append_text(p, clean);
  auto r = train::truncate_metrics_log(p, 2);
  CHECK((r.kept == 3 && r.dropped == 0 && !r.torn));
  CHECK(io::read_file(p).size() == clean.size());
  append_text(p, "{\"epoch\": 3, \"loss\": 0.125}\n{\"epoch\": 4, \"lo");
  r = train::truncate_metrics_log(p, 1);
  CHECK((r.kept == 2 && r.dropped == 2 && r.torn));
  const auto kept = io::read_file(p);
  CHECK(std::string(reinterpret_cast<const char*>(kept.data()), kept.size()) ==
        "{\"epoch\": 1, \"loss\": 0.5}\n{\"note\": \"no epoch\"}\n");
  // Corruption in the middle is not a crash artefact: refused, naming the file and the line.
  append_text(p, "{not json\n{\"epoch\": 2}\n");
  CHECK_THROWS_WITH_AS(train::truncate_metrics_log(p, 5), doctest::Contains("metrics.jsonl:3: malformed JSON"), Error);
  const auto split = train::split_metrics_log("a\nb\nc");
  CHECK((split.lines.size() == 2 && split.lines[1] == "b" && split.torn == "c"));
}

TEST_CASE("trainer: a corrupted last/ is refused on resume, naming the file") {
  TempDir run("trainer_corrupt");
  {
    Setup s({.run_dir = run.path, .epochs = 1, .seed = 1});
    s.trainer.fit(s.loader);
  }
  const fs::path f = run.path / "last" / "optimizer.safetensors";
  auto b = io::read_file(f);
  b[b.size() - 3] ^= std::byte{1};
  io::write_file_atomic(f, b);
  Setup s({.run_dir = run.path, .epochs = 2, .seed = 1});
  CHECK_THROWS_WITH_AS(s.trainer.resume(), doctest::Contains("optimizer.safetensors is corrupted"), Error);
}

TEST_CASE("trainer: non-finite guard skips poisoned steps, and stops after N in a row with a clear message") {
  SUBCASE("one poisoned batch") {
    Setup s({.epochs = 1, .seed = 2});
    PoisonLoader pl{s.loader, {{0, 3}}};
    const auto r = s.trainer.fit(pl);
    CHECK(r.nonfinite_skipped == 1);
    CHECK(r.steps == 7);
    for (const float v : s.model.snapshot()) REQUIRE(std::isfinite(v));  // incl. the running-mean buffer
  }
  SUBCASE("every batch poisoned") {
    Setup s({.epochs = 1, .max_nonfinite_in_row = 3, .seed = 2});
    const auto before = s.model.snapshot();
    PoisonLoader pl{s.loader, {}, true};
    CHECK_THROWS_WITH_AS(s.trainer.fit(pl), doctest::Contains("3 optimizer steps in a row had a non-finite loss"), Error);
    CHECK(s.model.snapshot() == before);  // weights and buffers untouched
  }
  SUBCASE("a run shorter than max_nonfinite_in_row with every step skipped is an error, not a trained model") {
    Setup s({.epochs = 1, .max_nonfinite_in_row = 100, .seed = 2});
    PoisonLoader pl{s.loader, {}, true};
    CHECK_THROWS_WITH_AS(s.trainer.fit(pl), doctest::Contains("all 7 optimizer steps were skipped"), Error);
  }
  SUBCASE("one applied step is training: no error") {
    Setup s({.epochs = 1, .max_nonfinite_in_row = 100, .seed = 2});
    PoisonLoader pl{s.loader, {{0, 0}, {0, 1}, {0, 2}, {0, 3}, {0, 4}, {0, 5}}};
    const auto r = s.trainer.fit(pl);
    CHECK((r.steps == 7 && r.nonfinite_skipped == 6));
  }
}

TEST_CASE("trainer: accumulating 2 micro-batches of 3 equals one batch of 6 (no shuffle, no dropout)") {
  auto one_step = [](std::size_t bs, std::int64_t accum) {
    TinyMlp<float> model(kIn, kHidden, kClasses, 42, 0.0);
    loss::BCEWithLogitsLoss<float> loss;
    optim::Sgd<float> opt(model.params(), {0.9, 0.0, 0.0, false});
    optim::ConstantLR sched{0.5};
    auto [x, y] = make_data();
    Loader loader(x, y, bs, 0, /*shuffle=*/false);
    train::Trainer tr(model, loss, opt, sched, {.epochs = 1, .accum_steps = accum, .stop_after_steps = 1, .progress = train::Progress::off});
    tr.fit(loader);
    return model.snapshot();
  };
  const auto a = one_step(6, 1), b = one_step(3, 2), c = one_step(3, 1);
  double worst = 0, moved = 0;
  const auto init = TinyMlp<float>(kIn, kHidden, kClasses, 42, 0.0).snapshot();
  const std::size_t n_weights = kHidden * kIn + kHidden + kClasses * kHidden + kClasses;  // not the buffers
  for (std::size_t i = 0; i < n_weights; ++i) {
    worst = std::max(worst, std::abs(double(a[i]) - b[i]));
    moved = std::max(moved, std::abs(double(a[i]) - init[i]));
  }
  CHECK(moved > 1e-3);
  CHECK(worst < 1e-6);
  CHECK(a != c);  // one batch of 3 alone is a different step
}

TEST_CASE("gradient clipping scales to the global norm like torch.nn.utils.clip_grad_norm_") {
  std::vector<float> v1{1, 1}, g1{3, 0}, v2{1}, g2{4};
  bool frozen = true;
  std::vector<float> v3{1}, g3{100};
  std::vector<ParamRef<float>> ps{{"a", {2}, v1, g1}, {"b", {1}, v2, g2}, {"c", {1}, v3, g3, true, &frozen}};
  CHECK(optim::global_grad_norm(ps) == doctest::Approx(5.0));  // frozen "c" is ignored
  const double before = optim::clip_grad_norm(ps, 1.0);
  CHECK(before == doctest::Approx(5.0));
  CHECK(g1[0] == doctest::Approx(0.6).epsilon(1e-6));
  CHECK(g2[0] == doctest::Approx(0.8).epsilon(1e-6));
  CHECK(g3[0] == 100.0f);
  optim::clip_grad_norm(ps, 10.0);  // already below: unchanged
  CHECK(g1[0] == doctest::Approx(0.6).epsilon(1e-6));
}

TEST_CASE("early stopping: Lightning semantics for max/min, patience and min_delta") {
  train::EarlyStopping es({"m", train::Mode::max, 2, 0.05});
  CHECK(es.update(0.5, 0));
  CHECK_FALSE(es.update(0.54, 1));  // not more than min_delta better
  CHECK_FALSE(es.should_stop());
  CHECK(es.update(0.56, 2));
  CHECK(es.wait() == 0);
  CHECK_FALSE(es.update(std::nan(""), 3));
  CHECK_FALSE(es.update(0.1, 4));
  CHECK(es.should_stop());
  CHECK(es.best() == 0.56);
  CHECK(es.best_epoch() == 2);
  train::EarlyStopping mn({"loss", train::Mode::min, 0, 0.0});
  CHECK(mn.update(1.0, 0));
  CHECK_FALSE(mn.should_stop());  // patience 0 stops only on a non-improvement
  CHECK(mn.update(0.9, 1));
  CHECK_FALSE(mn.update(0.9, 2));
  CHECK(mn.should_stop());
  CHECK_THROWS_AS(train::EarlyStopping({"x", train::Mode::min, -1, 0.0}), Error);
}

TEST_CASE("trainer: early stopping stops, best/ holds the best epoch's weights and they are restored") {
  TempDir run("trainer_es");
  Setup s({.run_dir = run.path, .epochs = 10, .seed = 4, .early_stopping = train::EarlyStoppingOptions{"val_score", train::Mode::max, 2, 0.0}});
  const std::vector<double> script{0.1, 0.3, 0.29, 0.3, 0.2, 0.9};
  std::vector<float> at_best;
  s.trainer.set_validation([&](TinyMlp<float>& m, std::int64_t epoch) {
    if (epoch == 1) at_best = m.snapshot();
    return std::map<std::string, double>{{"val_score", script.at(static_cast<std::size_t>(epoch))}, {"val_other", 1.0}};
  });
  const auto r = s.trainer.fit(s.loader);
  CHECK(r.early_stopped);
  CHECK(r.epochs_completed == 4);  // 0.29 and 0.3 do not beat 0.3: wait reaches 2 after epoch index 3
  CHECK(s.trainer.early_stopping().best_epoch() == 1);
  CHECK(s.model.snapshot() == at_best);  // restore_best_at_end
  CHECK(train::checkpoint_is_valid(run.path / "best"));
  // last/ resumes into a finished run: nothing more to do, no crash.
  Setup again({.run_dir = run.path, .epochs = 10, .seed = 4, .early_stopping = train::EarlyStoppingOptions{"val_score", train::Mode::max, 2, 0.0}});
  REQUIRE(again.trainer.resume());
  CHECK(again.trainer.early_stopping().wait() == 2);
  CHECK(again.trainer.state().epoch == 4);
  std::ifstream m(run.path / "metrics.jsonl");
  std::string line;
  std::getline(m, line);
  CHECK(nlohmann::json::parse(line)["val_score"].get<double>() == 0.1);
}

namespace {
// Trains the tiny MLP (4 steps per epoch) with these options, writing progress to a string.
std::string progress_of(train::TrainerOptions o) {
  std::ostringstream os;
  TinyMlp<float> model(kIn, kHidden, kClasses, 1, 0.0);
  loss::BCEWithLogitsLoss<float> loss;
  optim::Sgd<float> opt(model.params(), {});
  optim::ConstantLR sched{0.1};
  auto [x, y] = make_data();
  Loader loader(x, y, 10, 0);
  o.out = &os;
  train::Trainer tr(model, loss, opt, sched, o);
  tr.fit(loader);
  return os.str();
}
}  // namespace

TEST_CASE("trainer: progress redraws one line on a terminal, one plain line per epoch otherwise") {
  for (const auto mode : {train::Progress::terminal, train::Progress::plain}) {
    const std::string out = progress_of({.epochs = 2, .progress = mode});
    std::size_t newlines = 0, redraws = 0;
    for (std::size_t i = 0; i < out.size(); ++i) {
      newlines += out[i] == '\n';
      redraws += out.compare(i, 5, "\r\033[2K") == 0;
    }
    CHECK(newlines == 2);
    CHECK(out.find("epoch 2/2") != std::string::npos);
    if (mode == train::Progress::terminal) {
      CHECK(redraws >= 8);  // 4 steps per epoch, each redrawn, plus the epoch lines
      CHECK(out.find("ETA") != std::string::npos);
      CHECK(out.find("img/s") != std::string::npos);
    } else {
      CHECK(redraws == 0);
    }
  }
}

TEST_CASE("trainer: plain progress adds a step line now and then (long epochs in a log)") {
  // Every step after the first is "long enough ago": 8 steps -> 7 step lines + 2 epoch lines.
  const std::string out =
      progress_of({.epochs = 2, .progress = train::Progress::plain, .plain_every_seconds = 1e-12});
  std::size_t newlines = 0, step_lines = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    newlines += out[i] == '\n';
    step_lines += out.compare(i, 6, "epoch ") == 0 && out.find("batch", i) < out.find('\n', i);
  }
  CHECK(out.find('\r') == std::string::npos);
  CHECK(step_lines == 7);
  CHECK(newlines == 9);
  CHECK(out.find("ETA") != std::string::npos);
}

TEST_CASE("trainer: throughput_scale multiplies the reported img/s (data-parallel ranks)") {
  auto ips_of = [](double scale) {
    const std::string out =
        progress_of({.epochs = 1, .progress = train::Progress::plain, .throughput_scale = scale});
    const auto end = out.rfind(" img/s");
    REQUIRE(end != std::string::npos);
    const auto begin = out.rfind("  ", end) + 2;
    return std::stod(out.substr(begin, end - begin));
  };
  // 40 images take more than 4 ns (unscaled: below 1e10 img/s) and less than 4000 s (x 1e12: above).
  CHECK(ips_of(1.0) < 1e10);
  CHECK(ips_of(1e12) > 1e10);
}

namespace {
// A linear head on cached embeddings: Tensor2 [N,D] -> Tensor2 [N,K].
struct Head {
  using input_type = Tensor2<float>;
  using output_type = Tensor2<float>;
  std::size_t D, K;
  std::vector<float> w, b, gw, gb;
  Tensor2<float> x, y, dx;
  Head(std::size_t d, std::size_t k) : D(d), K(k), w(d * k, 0.0f), b(k, 0.0f), gw(d * k, 0.0f), gb(k, 0.0f) {}
  const Tensor2<float>& forward(const Tensor2<float>& in) {
    x = in;
    const std::size_t N = in.shape()[0];
    ensure_shape(y, {N, K});
    kernels::gemm(kernels::Trans::no, kernels::Trans::yes, N, K, D, 1.0f, x.data(), w.data(), 0.0f, y.data());
    for (std::size_t n = 0; n < N; ++n)
      for (std::size_t k = 0; k < K; ++k) y(n, k) += b[k];
    return y;
  }
  const Tensor2<float>& backward(const Tensor2<float>& dy) {
    const std::size_t N = dy.shape()[0];
    kernels::gemm(kernels::Trans::yes, kernels::Trans::no, K, D, N, 1.0f, dy.data(), x.data(), 1.0f, gw.data());
    for (std::size_t n = 0; n < N; ++n)
      for (std::size_t k = 0; k < K; ++k) gb[k] += dy(n, k);
    ensure_shape(dx, {N, D});
    kernels::gemm(kernels::Trans::no, kernels::Trans::no, N, D, K, 1.0f, dy.data(), w.data(), 0.0f, dx.data());
    return dx;
  }
  std::vector<ParamRef<float>> params() {
    return {{"fc.weight", {K, D}, std::span<float>(w), std::span<float>(gw)}, {"fc.bias", {K}, std::span<float>(b), std::span<float>(gb), false}};
  }
  void zero_grad() {
    std::fill(gw.begin(), gw.end(), 0.0f);
    std::fill(gb.begin(), gb.end(), 0.0f);
  }
};
static_assert(TrainableStage<Head> && TrainableStage<TinyMlp<float>>);
}  // namespace

TEST_CASE("embedding cache: miss computes and stores, hit reads back, changed weights or transform miss; head trains on it") {
  TempDir dir("emb_cache");
  auto [x, y] = make_data();
  TinyMlp<float> backbone(kIn, kHidden, kClasses, 8, 0.0);
  backbone.set_training(false);
  std::size_t embed_calls = 0;
  // The "backbone embedding": the MLP's logits stand in for pooled features here.
  auto embed = [&](std::size_t b, std::size_t e) {
    ++embed_calls;
    Tensor4<float> xb = xt::view(x, xt::range(b, e), xt::all(), xt::all(), xt::all());
    Rng rng(0);
    return Tensor2<float>(backbone.forward(xb, rng));
  };
  train::EmbeddingCacheKey key;
  for (std::size_t i = 0; i < kSamples; ++i) {
    const auto row = std::as_bytes(std::span<const float>(x.data() + i * kIn, kIn));
    key.content_hashes.push_back(train::fnv1a64(row));
  }
  key.transform = "identity";
  key.weights_hash = train::weights_hash(backbone.params(), backbone.buffers());
  train::EmbeddingCache<float> cache(dir.path);
  const auto first = cache.get_or_compute(key, 16, embed);
  CHECK_FALSE(cache.last_was_hit());
  CHECK(embed_calls == 3);  // 40 items in batches of 16
  const auto second = cache.get_or_compute(key, 16, embed);
  CHECK(cache.last_was_hit());
  CHECK(embed_calls == 3);
  CHECK(first == second);

  auto other = key;
  other.transform = "resize(32)";
  cache.get_or_compute(other, 16, embed);
  CHECK_FALSE(cache.last_was_hit());
  backbone.params()[0].value[0] += 1e-3f;  // any weight change is a different key
  auto changed = key;
  changed.weights_hash = train::weights_hash(backbone.params(), backbone.buffers());
  CHECK(changed.weights_hash != key.weights_hash);
  const auto third = cache.get_or_compute(changed, 16, embed);
  CHECK_FALSE(cache.last_was_hit());
  CHECK(third != first);
  auto reordered = key;
  std::swap(reordered.content_hashes[0], reordered.content_hashes[1]);
  cache.get_or_compute(reordered, 16, embed);
  CHECK_FALSE(cache.last_was_hit());
  // A damaged cache file is a miss, recomputed and overwritten.
  backbone.params()[0].value[0] -= 1e-3f;
  auto bytes = io::read_file(cache.path_for(key));
  bytes.resize(bytes.size() - 8);
  io::write_file_atomic(cache.path_for(key), bytes);
  const auto fourth = cache.get_or_compute(key, 16, embed);
  CHECK_FALSE(cache.last_was_hit());
  CHECK(fourth == first);
  cache.get_or_compute(key, 16, embed);
  CHECK(cache.last_was_hit());

  // The head trains on the cached embeddings through the same Trainer.
  Head head(kClasses, kClasses);
  loss::BCEWithLogitsLoss<float> loss;
  optim::AdamW<float> opt(head.params(), {});
  optim::ConstantLR sched{0.2};
  train::InMemoryLoader<float, 2, float, 2> loader(first, y, 8, 0);
  train::Trainer tr(head, loss, opt, sched, {.epochs = 30, .progress = train::Progress::off});
  const double before = loss.forward(head.forward(first), y);
  tr.fit(loader);
  const double after = loss.forward(head.forward(first), y);
  MESSAGE("head on cached embeddings: BCE ", before, " -> ", after);
  CHECK(after < 0.93 * before);  // 3-d random features of a random MLP: a modest fit is the best possible
}

namespace {
// A sequential loader shaped like io::Loader: batches_per_epoch(), start(), next() -> optional.
struct SequentialFake {
  Loader inner;
  std::size_t left = 0;
  std::size_t batches_per_epoch() const { return static_cast<std::size_t>(inner.num_batches(0)); }
  void start(std::uint64_t epoch, std::size_t first) {
    inner.start_epoch(static_cast<std::int64_t>(epoch), static_cast<std::int64_t>(first));
    left = batches_per_epoch() - first;
  }
  std::optional<Loader::Batch> next() {
    if (left == 0) return std::nullopt;
    --left;
    return inner.next_batch();
  }
};
}  // namespace

TEST_CASE("SequentialLoaderAdapter: an io::Loader-shaped loader trains and resumes exactly like the direct one") {
  auto [x, y] = make_data();
  auto run = [&](bool adapted, const fs::path& dir, std::int64_t stop) {
    TinyMlp<float> model(kIn, kHidden, kClasses, 42, 0.25);
    loss::BCEWithLogitsLoss<float> loss;
    optim::Sgd<float> opt(model.params(), {0.9, 0.0, 1e-4, true});
    optim::StepDecayLR sched{0.05, 5, 0.5};
    train::Trainer tr(model, loss, opt, sched, {.run_dir = dir, .epochs = 2, .stop_after_steps = stop, .seed = 8, .progress = train::Progress::off});
    tr.resume();
    if (adapted) {
      SequentialFake fake{Loader(x, y, 6, 8)};
      auto conv = [](Loader::Batch&& b) { return train::XY<Tensor4<float>, Tensor2<float>>{std::move(b.x), std::move(b.y)}; };
      train::SequentialLoaderAdapter ad(fake, conv);
      tr.fit(ad);
    } else {
      Loader direct(x, y, 6, 8);
      tr.fit(direct);
    }
    return model.snapshot();
  };
  TempDir a("adapter_a"), b("adapter_b");
  const auto want = run(false, a.path, -1);
  run(true, b.path, 5);
  CHECK(run(true, b.path, -1) == want);
  SequentialFake short_loader{Loader(x, y, 6, 8)};
  auto conv = [](Loader::Batch&& bt) { return train::XY<Tensor4<float>, Tensor2<float>>{std::move(bt.x), std::move(bt.y)}; };
  train::SequentialLoaderAdapter ad(short_loader, conv);
  ad.start_epoch(0, 6);
  ad.next_batch();
  CHECK_THROWS_WITH_AS(ad.next_batch(), doctest::Contains("ended the epoch before"), Error);
}
