#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/core/param.hpp"
#include "sieve/core/pipeline.hpp"

namespace {

struct AddOne {
  using input_type = int;
  using output_type = int;
  int forward(const int& x) const { return x + 1; }
};

struct Half {
  using input_type = int;
  using output_type = double;
  double forward(const int& x) const { return x / 2.0; }
};

// Draws one uniform per call: the pipeline must hand it the Rng.
struct Jitter {
  using input_type = double;
  using output_type = double;
  double forward(const double& x, sieve::Rng& rng) const { return x + rng.uniform_double(); }
};

// Returns a reference to its own buffer, as model stages do.
struct Show {
  using input_type = double;
  using output_type = std::string;
  std::string buf;
  const std::string& forward(const double& x) {
    buf = std::to_string(x);
    return buf;
  }
};

// A trainable y = w * x with one named parameter, to check backward and params().
struct Mul {
  using input_type = double;
  using output_type = double;
  double w = 2.0, gw = 0.0, x_ = 0.0, dx_ = 0.0, y_ = 0.0;
  bool training = false;
  const double& forward(const double& x) {
    x_ = x;
    y_ = w * x;
    return y_;
  }
  const double& backward(const double& dy) {
    gw += dy * x_;  // parameter gradients accumulate
    dx_ = dy * w;   // input gradients are assigned
    return dx_;
  }
  std::vector<sieve::ParamRef<double>> params() { return {{"w", {1}, {&w, 1}, {&gw, 1}}}; }
  double running = 0.5;
  std::uint64_t random_step = 0;
  std::vector<sieve::BufferRef<double>> buffers() { return {{"running", {1}, {&running, 1}}}; }
  void set_random_step(std::uint64_t s) { random_step = s; }
  void zero_grad() { gw = 0.0; }
  void set_training(bool t) { training = t; }
};

struct NotAStage {
  int forward(int x) { return x; }
};

}  // namespace

using sieve::Chainable;
using sieve::Pipeline;
using sieve::Stage;
using sieve::TrainableStage;
using sieve::operator|;  // the test stages live outside namespace sieve, so ADL cannot find it

// Positive and negative concept checks.
static_assert(Stage<AddOne> && Stage<Half> && Stage<Jitter> && Stage<Show> && Stage<Mul>);
static_assert(sieve::RandomForward<Jitter> && !sieve::PlainForward<Jitter>);
static_assert(TrainableStage<Mul> && !TrainableStage<AddOne>);
static_assert(!Stage<NotAStage> && !Stage<int>);
static_assert(Chainable<AddOne, Half> && Chainable<Half, Jitter> && Chainable<Jitter, Show>);
static_assert(!Chainable<Half, AddOne>);   // double does not feed int
static_assert(!Chainable<Show, Half>);     // string does not feed int
static_assert(Stage<Pipeline<AddOne, Half>>);
static_assert(std::is_same_v<Pipeline<AddOne, Half, Jitter, Show>::output_type, std::string>);
static_assert(TrainableStage<Pipeline<Mul, Mul>> && !TrainableStage<Pipeline<Jitter, Mul>>);
// A pipeline of plain stages offers forward(x); one with a random stage needs forward(x, rng).
static_assert(sieve::PlainForward<Pipeline<AddOne, Half>>);
static_assert(!sieve::PlainForward<Pipeline<AddOne, Half, Jitter>>);

TEST_CASE("pipeline runs stages in order") {
  auto p = sieve::pipeline(AddOne{}, AddOne{}, Half{});
  CHECK(p.forward(3) == doctest::Approx(2.5));
  CHECK(decltype(p)::size == 3);

  auto q = AddOne{} | Half{} | Show{};
  static_assert(std::is_same_v<decltype(q), Pipeline<AddOne, Half, Show>>);  // flat, not nested
  CHECK(q.forward(4) == std::to_string(2.5));
  CHECK(&q.forward(4) == &q.get<2>().buf);  // a stage's const& output passes through untouched
}

TEST_CASE("random stages draw from the caller's Rng, reproducibly") {
  auto p = AddOne{} | Half{} | Jitter{};
  sieve::Rng r1(11, 4), r2(11, 4), r3(11, 5);
  const double a = p.forward(1, r1), b = p.forward(1, r2), c = p.forward(1, r3);
  CHECK(a == b);
  CHECK(a != c);
  CHECK(a >= 1.0);
  CHECK(a < 2.0);
  CHECK(r1.position() == 2);  // one uniform_double = two words
}

TEST_CASE("pipelines nest and splice") {
  auto inner = sieve::pipeline(AddOne{}, Half{});
  auto nested = sieve::pipeline(AddOne{}, inner, Jitter{});  // inner stays one stage
  static_assert(decltype(nested)::size == 3);
  static_assert(Stage<decltype(nested)>);
  sieve::Rng r(0);
  CHECK(nested.forward(1, r) >= 1.5);

  auto spliced = inner | Jitter{} | Show{};  // a pipeline on the left is spliced flat
  static_assert(std::is_same_v<decltype(spliced), Pipeline<AddOne, Half, Jitter, Show>>);
  auto both = inner | sieve::pipeline(Jitter{}, Show{});
  static_assert(std::is_same_v<decltype(both), Pipeline<AddOne, Half, Jitter, Show>>);
}

TEST_CASE("trainable pipeline: backward in reverse, params in order, zero_grad, modes") {
  Mul a, b;
  b.w = 3.0;
  auto p = sieve::pipeline(a, b);
  CHECK(p.forward(5.0) == doctest::Approx(30.0));
  CHECK(p.backward(1.0) == doctest::Approx(6.0));  // d(6x)/dx
  auto ps = p.params();
  REQUIRE(ps.size() == 2);
  CHECK(ps[0].grad[0] == doctest::Approx(15.0));  // dy/dw0 = w1 * x
  CHECK(ps[1].grad[0] == doctest::Approx(10.0));  // dy/dw1 = w0 * x
  p.backward(1.0);
  CHECK(ps[0].grad[0] == doctest::Approx(30.0));  // accumulates
  p.zero_grad();
  CHECK(ps[0].grad[0] == 0.0);
  p.set_training(true);
  CHECK(p.get<0>().training);
  CHECK(p.get<1>().training);

  auto bs = p.buffers();  // every stage's buffers, in order, so checkpoints keep them
  REQUIRE(bs.size() == 2);
  CHECK(bs[1].value.data() == &p.get<1>().running);
  p.set_random_step(42);
  CHECK(p.get<0>().random_step == 42);
  CHECK(p.get<1>().random_step == 42);

  auto named = sieve::prefixed(ps, "head.");
  CHECK(named[1].name == "head.w");
}

TEST_CASE("SIEVE_CHECK names the operation, the sizes and the condition") {
  const std::size_t C = 3, K = 4;
  try {
    SIEVE_CHECK(C == K, "conv2d: x has C=", C, " but weight expects ", K);
    FAIL("SIEVE_CHECK did not throw");
  } catch (const sieve::Error& e) {
    const std::string msg = e.what();
    CHECK(msg.find("conv2d: x has C=3 but weight expects 4") == 0);
    CHECK(msg.find("C == K") != std::string::npos);
  }
  CHECK_NOTHROW(SIEVE_CHECK(C < K, "never shown"));
}
