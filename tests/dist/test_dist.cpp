// Data-parallel backend. Without arguments: single-process tests (sharding, bucketing, the
// wrapper is transparent on one rank). Under `mpirun -np 2 test_dist --mpi`: collectives and
// the equivalence of 2 ranks x B/2 with 1 rank x B. `--fail=throw|stall|exit`: failure drills that
// run_mpi.py checks end the job with a clear message, fast.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <iostream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "sieve/augment/tensor.hpp"
#include "sieve/dist/dist.hpp"
#include "sieve/io/loader.hpp"
#include "sieve/train/loader_adapter.hpp"
#include "sieve/loss/bce_with_logits.hpp"
#include "sieve/optim/schedule.hpp"
#include "sieve/optim/sgd.hpp"
#include "sieve/train/memory_loader.hpp"
#include "sieve/train/trainer.hpp"
#include "train/small_net.hpp"

using namespace sieve;

namespace {
dist::Communicator* g_comm = nullptr;

// SmallNet with BN kept in eval mode: batch statistics would make the per-rank batches differ
// from the global one, so equivalence is defined with frozen BN.
struct FrozenBnNet {
  using input_type = Tensor4<float>;
  using output_type = Tensor2<float>;
  sieve_test::SmallNet<float> net;
  explicit FrozenBnNet(std::uint64_t seed) : net({{1, 1}, 4, 3}, 3, seed, 0.0) { net.backbone.set_training(false); }
  const Tensor2<float>& forward(const Tensor4<float>& x) { return net.forward(x); }
  const Tensor4<float>& backward(const Tensor2<float>& dy) { return net.backward(dy); }
  std::vector<ParamRef<float>> params() { return net.params(); }
  std::vector<BufferRef<float>> buffers() { return net.buffers(); }
  void zero_grad() { net.zero_grad(); }
  void set_training(bool t) {
    net.set_training(t);
    net.backbone.set_training(false);
  }
};

struct Data {
  Tensor4<float> x;
  Tensor2<float> y;
};
Data make_data(std::size_t n) {
  Rng rng(5, 1);
  Data d{xt::zeros<float>(Shape<4>{n, 3, 12, 12}), xt::zeros<float>(Shape<2>{n, 3})};
  for (auto& v : d.x) v = static_cast<float>(rng.normal());
  for (std::size_t i = 0; i < n; ++i) d.y(i, i % 3) = 1.0f;
  return d;
}

// Train with `comm` (data-parallel when wrap) on this rank's share; returns final params.
std::vector<float> train_run(dist::Communicator& comm, std::size_t global_batch, std::size_t n, bool wrap,
                             std::int64_t epochs = 2) {
  const Data d = make_data(n);
  dist::ShardPlan plan{n, global_batch, 13, true, false, comm.rank(), comm.size()};
  dist::ShardedInMemoryLoader<float, 4, float, 2> loader(d.x, d.y, plan);
  // Each rank starts from a different seed: the broadcast from rank 0 must fix that.
  FrozenBnNet model(100 + static_cast<std::uint64_t>(wrap ? comm.rank() : 0));
  loss::BCEWithLogitsLoss<float> loss;
  optim::ConstantLR sched{0.05};
  const train::TrainerOptions o{.epochs = epochs, .max_grad_norm = 1.0, .seed = 13, .progress = train::Progress::off};
  std::vector<float> out;
  auto collect = [&](auto& m) {
    for (const auto& p : m.params()) out.insert(out.end(), p.value.begin(), p.value.end());
  };
  if (wrap) {
    dist::DataParallel dp(model, comm);
    optim::Sgd<float> opt(dp.params(), {.momentum = 0.9, .weight_decay = 1e-4});
    train::Trainer tr(dp, loss, opt, sched, o);
    tr.fit(loader);
    collect(dp);
  } else {
    optim::Sgd<float> opt(model.params(), {.momentum = 0.9, .weight_decay = 1e-4});
    train::Trainer tr(model, loss, opt, sched, o);
    tr.fit(loader);
    collect(model);
  }
  return out;
}

double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, std::abs(double(a[i]) - double(b[i])) / (1e-3 + std::abs(double(b[i]))));
  return worst;
}

// Pretends to be rank 0 of 2 whose peer holds the same values: sums double every element.
// Records message sizes.
struct MirrorComm final : dist::Communicator {
  std::vector<std::size_t> sizes;
  int rank() const override { return 0; }
  int size() const override { return 2; }
  std::size_t start_allreduce_sum(void* data, std::size_t count, dist::DType t, std::string) override {
    REQUIRE(t == dist::DType::f32);
    auto* f = static_cast<float*>(data);
    for (std::size_t i = 0; i < count; ++i) f[i] *= 2;
    sizes.push_back(count);
    return sizes.size();
  }
  void wait(std::size_t) override {}
  void broadcast(void*, std::size_t, int, std::string_view) override {}
  std::vector<std::byte> allgather_bytes(std::span<const std::byte> m, std::vector<std::size_t>& c,
                                         std::string_view) override {
    c.assign(1, m.size());
    return {m.begin(), m.end()};
  }
  void barrier(std::string_view) override {}
  [[noreturn]] void abort(int code) noexcept override { std::exit(code); }
};
}  // namespace

TEST_SUITE("single") {
  TEST_CASE("shard plan: ranks' shares partition every global batch, in the single-process order") {
    for (std::size_t n : {23, 24, 25}) {
      const auto whole = io::EpochSampler{n, 9, true}.order(3);
      for (int ranks : {1, 2, 3}) {
        std::vector<std::vector<std::size_t>> got;
        for (int r = 0; r < ranks; ++r) got.push_back(dist::ShardPlan{n, 6, 9, true, false, r, ranks}.indices(3));
        const dist::ShardPlan p0{n, 6, 9, true, false, 0, ranks};
        const std::size_t rest = n % 6;
        CHECK(p0.batches() == n / 6 + (rest >= static_cast<std::size_t>(ranks) ? 1 : 0));
        std::vector<std::size_t> cursor(static_cast<std::size_t>(ranks), 0);
        std::size_t pos = 0;
        for (std::size_t b = 0; b < p0.batches(); ++b)
          for (int r = 0; r < ranks; ++r) {
            const auto [lo, hi] = dist::ShardPlan{n, 6, 9, true, false, r, ranks}.positions(b);
            CHECK(lo == pos);
            CHECK(hi > lo);
            for (std::size_t k = lo; k < hi; ++k) CHECK(got[r][cursor[r]++] == whole[pos++]);
          }
        for (int r = 0; r < ranks; ++r) CHECK(cursor[r] == got[r].size());
      }
    }
    CHECK_THROWS_WITH_AS(dist::ShardPlan({10, 5, 0, true, false, 0, 2}).indices(0),
                         doctest::Contains("multiple of the 2 ranks"), Error);
  }

  TEST_CASE("RangeDataset: a slice of the base dataset") {
    io::MemoryDataset base;
    for (int i = 0; i < 5; ++i) base.add(sieve::str("s", i), Image{}, {i});
    const dist::RangeDataset part(base, dist::shard_range(5, 1, 2));
    REQUIRE(part.size() == 3);
    CHECK(part.id(0) == "s2");
    CHECK(part.labels(2)[0] == 4);
    CHECK_THROWS_WITH_AS(part.id(3), doctest::Contains("out of range"), Error);
    CHECK_THROWS_AS(dist::RangeDataset(base, {4, 6}), Error);
  }

  TEST_CASE("shard_range blocks concatenate to [0, n)") {
    for (std::size_t n : {0, 1, 7, 10})
      for (int s : {1, 2, 3, 4}) {
        std::size_t next = 0;
        for (int r = 0; r < s; ++r) {
          const auto [lo, hi] = dist::shard_range(n, r, s);
          CHECK(lo == next);
          next = hi;
        }
        CHECK(next == n);
      }
  }

  TEST_CASE("ShardedDataset shows this rank's samples of the epoch; ShardedLoader re-points it per epoch") {
    io::MemoryDataset base;
    for (int i = 0; i < 10; ++i) base.add(sieve::str("s", i), Image{}, {i});
    const dist::ShardPlan plan{10, 4, 2, true, false, 1, 2};
    dist::ShardedDataset ds(base, plan);
    const auto idx0 = plan.indices(0), idx1 = plan.indices(1);
    REQUIRE(ds.size() == idx0.size());
    CHECK(ds.size() == 5);  // 2 + 2 + 1 (last global batch of 2 split 1/1)
    for (std::size_t i = 0; i < ds.size(); ++i) CHECK(ds.id(i) == sieve::str("s", idx0[i]));
    CHECK(idx0 != idx1);
    ds.set_epoch(1);
    for (std::size_t i = 0; i < ds.size(); ++i) CHECK(ds.labels(i)[0] == static_cast<std::int32_t>(idx1[i]));
  }

  TEST_CASE("io::Loader over a ShardedDataset, via ShardedLoader, yields this rank's share of each global batch") {
    io::MemoryDataset base;
    for (int i = 0; i < 11; ++i) base.add(sieve::str("s", i), Image(1, 1, static_cast<std::uint8_t>(i)), {i});
    const dist::ShardPlan plan{11, 4, 6, true, false, 1, 2};
    dist::ShardedDataset ds(base, plan);
    io::Loader loader(ds, augment::ToTensor{}, {.batch_size = plan.per_rank(), .workers = 1, .shuffle = false,
                                                .seed = plan.loader_seed()});
    auto convert = [](io::Batch&& b) { return train::XY<Tensor4f, std::vector<std::string>>{std::move(b.images), b.ids}; };
    train::SequentialLoaderAdapter adapter(loader, convert);
    dist::ShardedLoader sharded(ds, adapter);
    CHECK(sharded.num_batches(0) == 3);  // 4 + 4 + 3
    for (std::int64_t epoch : {0, 1}) {
      const auto order = io::EpochSampler{11, 6, true}.order(static_cast<std::uint64_t>(epoch));
      sharded.start_epoch(epoch, 0);
      for (std::size_t b = 0; b < 3; ++b) {
        const auto& xy = sharded.next_batch();
        const auto [lo, hi] = plan.positions(b);
        REQUIRE(xy.y.size() == hi - lo);
        for (std::size_t k = 0; k < hi - lo; ++k) {
          CHECK(xy.y[k] == sieve::str("s", order[lo + k]));
          CHECK(xy.x(k, 0, 0, 0) == doctest::Approx(static_cast<float>(order[lo + k]) / 255.0f));
        }
      }
    }
  }

  TEST_CASE("gradient allreduce: buckets of the configured size, every trainable element once, frozen skipped") {
    FrozenBnNet m(1);
    Rng rng(4);
    std::vector<float> before;
    for (auto& p : m.params())
      for (auto& g : p.grad) before.push_back(g = static_cast<float>(rng.normal()));
    std::size_t total = 0, frozen_elems = 0;
    for (auto& p : m.params()) total += p.grad.size();
    auto params = m.params();
    *params[0].frozen = true;  // conv1.weight
    frozen_elems = params[0].grad.size();
    for (auto& g : params[0].grad) g = 7.0f;
    MirrorComm comm;
    dist::GradientAllreducer<float> red(comm, m.params(), {.bucket_bytes = 4000});
    red.reduce(3.0);
    const std::size_t sent = total - frozen_elems + 1;
    CHECK(red.elements_sent() == sent);
    CHECK(comm.sizes.size() == (sent + 999) / 1000);
    for (std::size_t i = 0; i + 1 < comm.sizes.size(); ++i) CHECK(comm.sizes[i] == 1000);
    // Both "ranks" hold g with weight 3: the weighted mean is g again (up to float rounding).
    std::size_t k = 0;
    for (auto& p : m.params())
      for (auto g : p.grad) {
        if (p.name == "conv1.weight") CHECK(g == 7.0f);
        else CHECK(g == doctest::Approx(before[k]).epsilon(1e-6));
        ++k;
      }
  }

  TEST_CASE("DataParallel on one process trains exactly like the bare model") {
    dist::SingleProcess one;
    const auto a = train_run(one, 4, 14, true), b = train_run(one, 4, 14, false);
    CHECK(a == b);
  }

  TEST_CASE("run_guarded: exit code of the body, or 1 with the error printed") {
    dist::SingleProcess one;
    std::ostringstream err;
    CHECK(dist::run_guarded(one, "sieve", [] { return 7; }, err) == 7);
    CHECK(dist::run_guarded(one, "sieve", []() -> int { throw Error("train: bad flag"); }, err) == 1);
    CHECK(err.str() == "sieve: error: train: bad flag\n");
  }

  TEST_CASE("share_host_cores: ranks on one host split the threads unless OMP_NUM_THREADS chose") {
    const int saved = sieve::threads();
    const char* omp = std::getenv("OMP_NUM_THREADS");
    const std::string omp_saved = omp ? omp : "";
    const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    const std::string local_saved = local ? local : "";
    MirrorComm two;  // size 2
    dist::SingleProcess one;
    ::unsetenv("OMP_NUM_THREADS");
    ::setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2", 1);
    sieve::set_threads(4);
    CHECK(dist::share_host_cores(one) == 4);  // one process: nothing to share
    CHECK(dist::share_host_cores(two) == 2);
    ::setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "3", 1);
    CHECK(dist::share_host_cores(two) == 1);  // at least one thread
    sieve::set_threads(4);
    ::setenv("OMP_NUM_THREADS", "4", 1);
    CHECK(dist::share_host_cores(two) == 4);  // the user's choice stands
    ::unsetenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    ::unsetenv("OMP_NUM_THREADS");
    CHECK(dist::share_host_cores(two) == 4);  // no launcher information
    if (omp) ::setenv("OMP_NUM_THREADS", omp_saved.c_str(), 1);
    if (local) ::setenv("OMPI_COMM_WORLD_LOCAL_SIZE", local_saved.c_str(), 1);
    sieve::set_threads(saved);
  }

  TEST_CASE("DataParallel refuses gradient accumulation") {
    dist::SingleProcess one;
    FrozenBnNet m(1);
    dist::DataParallel dp(m, one);
    const Data d = make_data(2);
    const auto& out = dp.forward(d.x);
    Tensor2<float> dy = xt::ones_like(out);
    dp.backward(dy);
    CHECK_THROWS_WITH_AS(dp.backward(dy), doctest::Contains("accum_steps > 1"), Error);
  }
}

TEST_SUITE("mpi") {
  TEST_CASE("collectives: sum, broadcast, gather in rank order") {
    auto& c = *g_comm;
    REQUIRE(c.size() >= 2);
    std::vector<double> v{1.0 * c.rank(), 2.0};
    c.allreduce_sum(std::span(v), "test");
    const double n = c.size();
    CHECK(v[0] == n * (n - 1) / 2);
    CHECK(v[1] == 2 * n);
    std::vector<std::int64_t> b{c.rank() == 0 ? 42 : -1};
    c.broadcast(std::span(b), 0, "test");
    CHECK(b[0] == 42);
    Tensor2<float> mine = xt::zeros<float>(Shape<2>{static_cast<std::size_t>(c.rank() + 1), 2});
    mine.fill(static_cast<float>(c.rank()));
    const auto all = dist::allgather_rows(c, mine, "rows");
    REQUIRE(all.shape()[0] == static_cast<std::size_t>(c.size() * (c.size() + 1) / 2));
    CHECK(all(0, 0) == 0.0f);
    CHECK(all(all.shape()[0] - 1, 1) == static_cast<float>(c.size() - 1));
    const auto labels = dist::allgather_values(c, std::vector<std::int64_t>(static_cast<std::size_t>(c.rank()) + 1, c.rank()), "labels");
    REQUIRE(labels.size() == static_cast<std::size_t>(c.size() * (c.size() + 1) / 2));
    CHECK(labels[0] == 0);
    CHECK(labels[1] == 1);
    CHECK(labels.back() == c.size() - 1);
    const auto ids = dist::allgather_strings(c, {"r" + std::to_string(c.rank()), "x"}, "ids");
    REQUIRE(ids.size() == 2 * static_cast<std::size_t>(c.size()));
    CHECK(ids[2] == "r1");
  }

  TEST_CASE("equivalence: N ranks x B/N take the optimizer steps of 1 rank x B (BN frozen)") {
    auto& c = *g_comm;
    const std::size_t B = 4 * static_cast<std::size_t>(c.size()), n = 5 * B + 3;  // 3: a short last batch
    const auto dp = train_run(c, B, n, true);
    dist::SingleProcess one;
    const auto ref = train_run(one, B, n, false);
    // Without the allreduce each rank follows its own shards: far from the reference.
    const auto alone = train_run(c, B, n, false);
    const double d_dp = max_rel_diff(dp, ref), d_alone = max_rel_diff(alone, ref);
    MESSAGE("rank ", c.rank(), ": max relative difference to 1 rank x B: data-parallel ", d_dp, ", no allreduce ",
            d_alone);
    CHECK(d_dp < 1e-4);
    CHECK(d_alone > 1e-2);
    // Every rank holds bit-identical weights.
    const auto all = dist::allgather_rows(c, Tensor1<float>(xt::adapt(dp, {dp.size()})), "weights");
    for (int r = 1; r < c.size(); ++r)
      CHECK(std::memcmp(all.data(), all.data() + r * dp.size(), dp.size() * sizeof(float)) == 0);
  }
}

// `--bench=W,IMG,B,STEPS[,MB]`: data-parallel train steps of a ResNet(blocks 1,1,1,1, width W)
// + Linear on random IMGxIMG images, global batch B shared by the ranks; prints per-step compute
// and allreduce time (rank 0). With MB > 0 it also times one allreduce of MB megabytes (a
// ResNet50's gradients are ~100 MB). Thread count: OPENBLAS_NUM_THREADS. Not a test.
int bench(dist::Communicator& c, const std::string& spec) {
  std::vector<double> a;
  std::size_t from = 0;
  while (from <= spec.size()) {
    const auto to = std::min(spec.find(',', from), spec.size());
    a.push_back(std::stod(spec.substr(from, to - from)));
    from = to + 1;
  }
  SIEVE_CHECK(a.size() >= 4, "--bench=W,IMG,B,STEPS[,MB]");
  const auto W = static_cast<std::size_t>(a[0]), img = static_cast<std::size_t>(a[1]);
  const auto B = static_cast<std::size_t>(a[2]);
  const int steps = static_cast<int>(a[3]);
  const std::size_t local = B / static_cast<std::size_t>(c.size());
  sieve_test::SmallNet<float> net({{1, 1, 1, 1}, W, 3}, 10, 7, 0.0);
  dist::GradientAllreducer<float> red(c, net.params());
  dist::broadcast_params(c, net.params());
  optim::Sgd<float> opt(net.params(), {.momentum = 0.9});
  loss::BCEWithLogitsLoss<float> loss;
  Rng rng(11, static_cast<std::uint64_t>(c.rank()));
  Tensor4<float> x = xt::zeros<float>(Shape<4>{local, 3, img, img});
  for (auto& v : x) v = static_cast<float>(rng.normal());
  Tensor2<float> y = xt::zeros<float>(Shape<2>{local, 10});
  for (std::size_t i = 0; i < local; ++i) y(i, i % 10) = 1.0f;
  std::size_t grads = 0;
  for (const auto& p : net.params()) grads += p.grad.size();
  using clock = std::chrono::steady_clock;
  double compute = 0, comm = 0, total = 0;
  for (int s = -1; s < steps; ++s) {  // step -1 warms up
    c.barrier("bench step");
    const auto t0 = clock::now();
    net.zero_grad();
    loss.forward(net.forward(x), y);
    net.backward(loss.backward());
    const auto t1 = clock::now();
    red.reduce(static_cast<double>(local));
    const auto t2 = clock::now();
    opt.step(0.01);
    const auto t3 = clock::now();
    if (s < 0) continue;
    compute += std::chrono::duration<double>(t1 - t0 + (t3 - t2)).count();
    comm += std::chrono::duration<double>(t2 - t1).count();
    total += std::chrono::duration<double>(t3 - t0).count();
  }
  std::vector<double> sums{compute, comm, total};
  c.allreduce_sum(std::span(sums), "bench times");
  const double r = c.size();
  if (c.rank() == 0)
    std::printf("ranks %d  width %zu  image %zu  global batch %zu  params %zu (%.2f MB)  per step: %.1f ms (compute "
                "%.1f ms, allreduce %.2f ms)  %.1f img/s\n",
                c.size(), W, img, B, grads, grads * 4.0 / 1e6, 1e3 * sums[2] / r / steps, 1e3 * sums[0] / r / steps,
                1e3 * sums[1] / r / steps, static_cast<double>(B) * steps / (sums[2] / r));
  if (a.size() >= 5 && a[4] > 0) {
    std::vector<float> g(static_cast<std::size_t>(a[4] * 1e6 / 4), 1.0f);
    dist::GradientAllreducer<float> big(c, {ParamRef<float>{"g", {g.size()}, g, g}});
    big.reduce(1.0);
    c.barrier("bench allreduce");
    const auto t0 = clock::now();
    for (int i = 0; i < 3; ++i) big.reduce(1.0);
    const double secs = std::chrono::duration<double>(clock::now() - t0).count() / 3;
    if (c.rank() == 0)
      std::printf("allreduce of %.0f MB of gradients (%zu buckets): %.1f ms\n", a[4], big.buckets_last_reduce(),
                  1e3 * secs);
  }
  return 0;
}

int main(int argc, char** argv) {
  bool mpi = false;
  std::string fail_mode, bench_spec;
  std::vector<char*> rest{argv[0]};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--mpi") mpi = true;
    else if (a.rfind("--fail=", 0) == 0) fail_mode = a.substr(7);
    else if (a.rfind("--bench=", 0) == 0) bench_spec = a.substr(8);
    else rest.push_back(argv[i]);
  }
  std::unique_ptr<dist::Communicator> comm;
  try {
    if (mpi || !fail_mode.empty() || (!bench_spec.empty() && dist::launched_by_mpirun())) {
#ifdef SIEVE_WITH_MPI
      comm = std::make_unique<dist::MpiCommunicator>();
#else
      std::cerr << "test_dist: built without MPI\n";
      return 2;
#endif
    } else {
      comm = std::make_unique<dist::SingleProcess>();
    }
    g_comm = comm.get();
    if (!bench_spec.empty()) return bench(*comm, bench_spec);
    if (!fail_mode.empty()) {
      // Drill: rank 1 fails after the first collective; every rank then enters a gradient-sized
      // allreduce, which only a timeout or the launcher can end.
      std::vector<float> g(1000, 1.0f);
      comm->allreduce_sum(std::span(g), "warm-up");
      if (comm->rank() == 1) {
        if (fail_mode == "throw") throw Error("rank 1: simulated failure (decode error in batch 3)");
        if (fail_mode == "stall") std::this_thread::sleep_for(std::chrono::seconds(120));
        if (fail_mode == "exit") std::_Exit(5);  // a crash: no message, no MPI_Abort
      }
      comm->allreduce_sum(std::span(g), "gradient bucket 0");
      std::cerr << "unexpected: rank " << comm->rank() << " completed the allreduce\n";
      return 3;
    }
    doctest::Context ctx(static_cast<int>(rest.size()), rest.data());
    ctx.addFilter("test-suite", mpi ? "mpi" : "single");
    const int rc = ctx.run();
    if (mpi) {
      // A rank whose tests failed must fail the job: combine the verdicts.
      std::vector<std::int64_t> bad{rc != 0 ? 1 : 0};
      comm->allreduce_sum(std::span(bad), "verdict");
      return bad[0] != 0 ? 1 : 0;
    }
    return rc;
  } catch (const dist::CommError& e) {
    std::cerr << e.what() << std::endl;  // already names the rank
    comm->abort(1);
  } catch (const std::exception& e) {
    std::cerr << "sieve: " << (comm ? comm->who() : std::string("rank ?")) << ": error: " << e.what() << std::endl;
    if (comm && comm->size() > 1) comm->abort(1);
    return 1;
  }
}
