// Losses, optimizers and LR schedules against PyTorch 1.13 fixtures.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "fixtures.hpp"
#include "sieve/core/rng.hpp"
#include "sieve/loss/bce_with_logits.hpp"
#include "sieve/loss/cross_entropy.hpp"
#include "sieve/optim/adamw.hpp"
#include "sieve/optim/schedule.hpp"
#include "sieve/optim/sgd.hpp"

using namespace sieve;
using sieve_test::train_fixtures;
using sieve_test::vec;

namespace {
Tensor2<float> tensor2(const std::vector<float>& v, std::size_t N, std::size_t K) {
  Tensor2<float> t = xt::zeros<float>(Shape<2>{N, K});
  std::copy(v.begin(), v.end(), t.begin());
  return t;
}
}  // namespace

TEST_CASE("bce_with_logits matches torch (plain, pos_weight, mean, sum, all-zero row)") {
  const auto& f = train_fixtures()["bce"];
  const std::size_t N = f["N"], K = f["K"];
  const auto x = tensor2(vec<float>(f["x"]), N, K), y = tensor2(vec<float>(f["y"]), N, K);
  const auto pw = vec<float>(f["pos_weight"]);
  for (const char* name : {"plain", "pos_weight"}) {
    const bool use_pw = std::string(name) == "pos_weight";
    // per-element values (reduction none in torch)
    const auto none = vec<float>(f[std::string(name) + "_none"]);
    for (std::size_t i = 0; i < N * K; ++i) {
      const float l = loss::bce_with_logits_element(x.data()[i], y.data()[i], use_pw ? pw[i % K] : 1.0f);
      CHECK(l == doctest::Approx(none[i]).epsilon(1e-6));
    }
    for (const char* red : {"mean", "sum"}) {
      const auto r = std::string(red) == "mean" ? loss::Reduction::mean : loss::Reduction::sum;
      loss::BCEWithLogitsLoss<float> bce(r, use_pw ? pw : std::vector<float>{});
      const double l = bce.forward(x, y);
      const std::string key = std::string(name) + "_" + red;
      CAPTURE(key);
      CHECK(l == doctest::Approx(f[key + "_loss"].get<double>()).epsilon(1e-6));
      const auto g = vec<float>(f[key + "_grad"]);
      // torch's float gradient carries ~1e-8 absolute rounding (e.g. 4e-8 where the exact
      // value is -4e-18); sieve evaluates in double, so allow that much beside 1e-6 relative.
      const double abs_scale = std::string(red) == "mean" ? 0.1 / static_cast<double>(N * K) : 0.1;
      for (std::size_t i = 0; i < N * K; ++i)
        CHECK(bce.backward().data()[i] == doctest::Approx(g[i]).epsilon(1e-6).scale(abs_scale));
    }
  }
}

TEST_CASE("bce_with_logits: extremes stay finite, gradient matches central differences in double") {
  for (double xv : {-800.0, -40.0, -1e-3, 0.0, 2.5, 800.0}) {
    for (double yv : {0.0, 1.0, 0.3}) {
      const double l = loss::bce_with_logits_element(xv, yv, 1.0);
      REQUIRE(std::isfinite(l));
      CHECK(l >= 0.0);
      const double h = 1e-6;
      const double num = (loss::bce_with_logits_element(xv + h, yv, 2.0) - loss::bce_with_logits_element(xv - h, yv, 2.0)) / (2 * h);
      CHECK(loss::bce_with_logits_element_grad(xv, yv, 2.0) == doctest::Approx(num).epsilon(1e-6).scale(1e-6));
    }
  }
  Tensor2<float> x = xt::zeros<float>(Shape<2>{2, 3}), y = xt::zeros<float>(Shape<2>{2, 4});
  loss::BCEWithLogitsLoss<float> bce;
  CHECK_THROWS_WITH_AS(bce.forward(x, y), doctest::Contains("BCEWithLogitsLoss: logits [2,3] but targets [2,4]"), Error);
  loss::BCEWithLogitsLoss<float> bad(loss::Reduction::mean, {1.0f, 2.0f});
  CHECK_THROWS_AS(bad.forward(x, xt::zeros<float>(Shape<2>{2, 3})), Error);
}

TEST_CASE("cross_entropy with label smoothing matches torch") {
  const auto& f = train_fixtures()["ce"];
  const std::size_t N = f["N"], C = f["C"];
  const auto x = tensor2(vec<float>(f["x"]), N, C);
  Tensor1<std::int64_t> t = xt::zeros<std::int64_t>(Shape<1>{N});
  for (std::size_t i = 0; i < N; ++i) t(i) = f["target"][i].get<std::int64_t>();
  for (double ls : {0.0, 0.1}) {
    for (const char* red : {"mean", "sum"}) {
      const auto r = std::string(red) == "mean" ? loss::Reduction::mean : loss::Reduction::sum;
      loss::CrossEntropyLoss<float> ce(ls, r);
      const std::string key = std::string("ls") + (ls == 0.0 ? "0.0" : "0.1") + "_" + red;
      CAPTURE(key);
      CHECK(ce.forward(x, t) == doctest::Approx(f[key + "_loss"].get<double>()).epsilon(1e-6));
      const auto g = vec<float>(f[key + "_grad"]);
      for (std::size_t i = 0; i < N * C; ++i) CHECK(ce.backward().data()[i] == doctest::Approx(g[i]).epsilon(1e-5).scale(1e-7));
    }
  }
  t(0) = 6;
  loss::CrossEntropyLoss<float> ce;
  CHECK_THROWS_WITH_AS(ce.forward(x, t), doctest::Contains("target[0]=6 outside [0, C=6)"), Error);
}

TEST_CASE("OtherClassCrossEntropyLoss: one-hot rows train their class, all-zero rows the 'other' column") {
  // The torch fixture's logits as K+1 = 6 columns; BCE-style targets over the first 5.
  const auto& f = train_fixtures()["ce"];
  const std::size_t N = f["N"], C = f["C"];
  REQUIRE(C == 6);
  const auto x = tensor2(vec<float>(f["x"]), N, C);
  Tensor2<float> y = xt::zeros<float>(Shape<2>{N, C - 1});
  Tensor1<std::int64_t> t = xt::zeros<std::int64_t>(Shape<1>{N});
  for (std::size_t i = 0; i < N; ++i) {
    t(i) = f["target"][i].get<std::int64_t>();
    if (t(i) < static_cast<std::int64_t>(C - 1)) y(i, static_cast<std::size_t>(t(i))) = 1.0f;  // t == 5: all zero
  }
  bool has_other = false;
  for (std::size_t i = 0; i < N; ++i) has_other = has_other || t(i) == static_cast<std::int64_t>(C - 1);
  REQUIRE(has_other);  // the case that maps an all-zero row to "other" is exercised
  for (double ls : {0.0, 0.1}) {
    loss::OtherClassCrossEntropyLoss<float> oc(ls);
    loss::CrossEntropyLoss<float> ce(ls);
    CHECK(oc.forward(x, y, 0.5) == ce.forward(x, t, 0.5));
    for (std::size_t i = 0; i < N * C; ++i) CHECK(oc.backward().data()[i] == ce.backward().data()[i]);
  }
  loss::OtherClassCrossEntropyLoss<float> oc;
  y(0, 0) = 1.0f, y(0, 1) = 1.0f;
  CHECK_THROWS_WITH_AS(oc.forward(x, y), doctest::Contains("target row 0 has 2 classes"), Error);
  y(0, 1) = 0.5f;
  CHECK_THROWS_WITH_AS(oc.forward(x, y), doctest::Contains("target[0,1]=0.5"), Error);
  CHECK_THROWS_WITH_AS(oc.forward(x, xt::zeros<float>(Shape<2>{N, C})), doctest::Contains("need targets"), Error);
}

namespace {
// Copy into existing storage: ParamRef spans point into these vectors.
void assign(std::vector<float>& dst, const std::vector<float>& src) {
  REQUIRE(dst.size() == src.size());
  std::copy(src.begin(), src.end(), dst.begin());
}
// Three parameters mirroring the fixture's torch groups.
struct OptFixtureModel {
  std::vector<std::string> names{"backbone.weight", "backbone.bias", "fc.weight"};
  std::vector<std::vector<float>> value, grad;
  std::vector<std::vector<std::size_t>> shapes;
  bool frozen = false;
  explicit OptFixtureModel(const nlohmann::json& f) {
    for (const auto& n : names) {
      value.push_back(vec<float>(f["init"][n]));
      grad.emplace_back(value.back().size(), 0.0f);
      shapes.push_back(f["shapes"][n].get<std::vector<std::size_t>>());
    }
  }
  std::vector<ParamRef<float>> params() {
    std::vector<ParamRef<float>> out;
    for (std::size_t i = 0; i < names.size(); ++i)
      out.push_back({names[i], shapes[i], std::span<float>(value[i]), std::span<float>(grad[i]), names[i] != "backbone.bias",
                     names[i] == "fc.weight" ? nullptr : &frozen});
    return out;
  }
};

template <class Opt>
std::int64_t run_against_fixture(const nlohmann::json& f, const nlohmann::json& c, OptFixtureModel& m, Opt& opt) {
  std::int64_t worst = 0;
  const auto lrs = vec<double>(f["lrs"]);
  for (std::size_t s = 0; s < lrs.size(); ++s) {
    for (std::size_t i = 0; i < m.names.size(); ++i) assign(m.grad[i], vec<float>(f["grads"][s][m.names[i]]));
    opt.step(lrs[s]);
    for (std::size_t i = 0; i < m.names.size(); ++i) {
      const auto want = vec<float>(c["traj"][s][m.names[i]]);
      for (std::size_t j = 0; j < want.size(); ++j) {
        const auto d = sieve_test::ulp_distance(m.value[i][j], want[j]);
        worst = std::max(worst, d);
        CHECK(m.value[i][j] == doctest::Approx(want[j]).epsilon(2e-6).scale(1e-6));
      }
    }
  }
  return worst;
}
}  // namespace

TEST_CASE("SGD (plain, momentum + decay, Nesterov) and AdamW match torch.optim step by step") {
  const auto& f = train_fixtures()["optim"];
  const std::vector<optim::GroupRule> groups{{"fc.", 10.0}};
  for (const auto& [name, c] : f["cases"].items()) {
    CAPTURE(name);
    OptFixtureModel m(f);
    std::int64_t worst = 0;
    if (c["kind"] == "sgd") {
      optim::Sgd<float> opt(m.params(), {c["momentum"].get<double>(), 0.0, c["weight_decay"].get<double>(), c["nesterov"].get<bool>()}, groups);
      worst = run_against_fixture(f, c, m, opt);
    } else {
      optim::AdamW<float> opt(m.params(), {c["beta1"].get<double>(), c["beta2"].get<double>(), c["eps"].get<double>(), c["weight_decay"].get<double>()}, groups);
      worst = run_against_fixture(f, c, m, opt);
    }
    MESSAGE(name, ": worst distance to torch after 6 steps = ", worst, " ulp");
    CHECK(worst == 0);  // bit-identical to torch 1.13 on x86-64 (see the FMA note in sgd.hpp)
  }
}

TEST_CASE("AdamW: the 8-lane update gives the scalar update's bits") {
  // 1003 elements: vector blocks and a tail; values spanning tiny to large, zero gradients too.
  Rng rng(7, static_cast<std::uint64_t>(RngPurpose::init));
  const std::size_t n = 1003;
  std::vector<float> g(n), w(n), m(n), v(n);
  for (std::size_t j = 0; j < n; ++j) {
    const double scale = std::pow(10.0, rng.uniform(-6.0, 2.0));
    g[j] = j % 17 == 0 ? 0.0f : static_cast<float>(rng.normal() * scale);
    w[j] = static_cast<float>(rng.normal());
    m[j] = static_cast<float>(rng.normal() * scale * 0.1);
    v[j] = static_cast<float>(rng.uniform_double() * scale * scale);
  }
  const auto w0 = w;
  auto w1 = w, m1 = m, v1 = v;
  const optim::detail::AdamWScalars<float> k{0.99999f, 0.9f, 0.999f, 0.1f, 0.001f, 0.0316f, 1e-8f, -0.0123f};
  optim::detail::adamw_update(k, g.data(), w.data(), m.data(), v.data(), 0, n);
  for (std::size_t j = 0; j < n; ++j) optim::detail::adamw_update(k, g.data(), w1.data(), m1.data(), v1.data(), j, j + 1);
  std::size_t differ = 0;
  for (std::size_t j = 0; j < n; ++j) differ += w[j] != w1[j] || m[j] != m1[j] || v[j] != v1[j];
  CHECK(differ == 0);
  std::size_t moved = 0;  // the update did something
  for (std::size_t j = 0; j < n; ++j) moved += w[j] != w0[j];
  CHECK(moved > n / 2);
}

TEST_CASE("optimizers: frozen parameters are skipped, group multipliers resolve by longest prefix") {
  CHECK(optim::lr_multiplier("fc.weight", {{"fc.", 10.0}, {"fc.w", 3.0}, {"", 0.5}}) == 3.0);
  CHECK(optim::lr_multiplier("layer1.0.conv1.weight", {{"fc.", 10.0}}) == 1.0);
  CHECK(optim::lr_multiplier("layer1.0.conv1.weight", {{"fc.", 10.0}, {"", 0.5}}) == 0.5);
  const auto& f = train_fixtures()["optim"];
  OptFixtureModel m(f);
  m.frozen = true;  // backbone frozen, head trains
  const auto before = m.value;
  optim::AdamW<float> opt(m.params(), {});
  for (auto& g : m.grad) std::fill(g.begin(), g.end(), 0.5f);
  opt.step(0.1);
  CHECK(m.value[0] == before[0]);
  CHECK(m.value[1] == before[1]);
  CHECK(m.value[2] != before[2]);
  for (const auto& s : opt.state())
    if (s.name == "step.backbone.weight") CHECK(*s.count == 0);
    else if (s.name == "step.fc.weight") CHECK(*s.count == 1);
}

TEST_CASE("optimizer state round-trips: export, import into a fresh optimizer, identical continuation") {
  const auto& f = train_fixtures()["optim"];
  OptFixtureModel a(f), b(f);
  optim::AdamW<float> oa(a.params(), {}, {{"fc.", 10.0}});
  for (int s = 0; s < 3; ++s) {
    for (std::size_t i = 0; i < 3; ++i) assign(a.grad[i], vec<float>(f["grads"][s][a.names[i]]));
    oa.step(0.05);
  }
  for (std::size_t i = 0; i < 3; ++i) assign(b.value[i], a.value[i]);
  optim::AdamW<float> ob(b.params(), {}, {{"fc.", 10.0}});
  auto sa = oa.state(), sb = ob.state();
  REQUIRE(sa.size() == sb.size());
  for (std::size_t i = 0; i < sa.size(); ++i) {
    REQUIRE(sa[i].name == sb[i].name);
    if (sa[i].is_count()) *sb[i].count = *sa[i].count;
    else std::copy(sa[i].value.begin(), sa[i].value.end(), sb[i].value.begin());
  }
  for (std::size_t i = 0; i < 3; ++i) {
    assign(a.grad[i], vec<float>(f["grads"][4][a.names[i]]));
    assign(b.grad[i], a.grad[i]);
  }
  oa.step(0.05);
  ob.step(0.05);
  CHECK(a.value == b.value);
}

TEST_CASE("LR schedules equal PyTorch's SequentialLR(LinearLR, CosineAnnealingLR) and StepLR at every step") {
  const auto& f = train_fixtures()["schedule"];
  for (const auto& [name, c] : f.items()) {
    CAPTURE(name);
    const auto want = vec<double>(c["lrs"]);
    for (std::size_t s = 0; s < want.size(); ++s) {
      double got = 0;
      if (name == "step")
        got = optim::StepDecayLR{c["base"], c["step_size"], c["gamma"]}.lr(static_cast<std::int64_t>(s));
      else
        got = optim::WarmupCosineLR{c["base"], c["warmup"], c["total"], c["start_factor"], c["eta_min"]}.lr(
            static_cast<std::int64_t>(s));
      CAPTURE(s);
      CHECK(got == doctest::Approx(want[s]).epsilon(1e-12).scale(1e-15));
    }
  }
  CHECK(optim::ConstantLR{0.3}.lr(1000) == 0.3);
  CHECK(optim::WarmupCosineLR{0.1, 2, 10, 0.5, 0.01}.lr(10) == 0.01);
  CHECK_THROWS_AS(optim::WarmupCosineLR({0.1, 10, 10}).lr(0), Error);
  static_assert(optim::Schedule<optim::WarmupCosineLR> && optim::Schedule<optim::StepDecayLR>);
}
