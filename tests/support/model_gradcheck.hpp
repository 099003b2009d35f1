#pragma once
// The end-to-end gradient check of a classifier `backbone | Dropout | Linear` under
// BCE-with-logits in double, shared by the network tests (ResNet, PoolNet): the input gradient
// and every parameter's, in train or eval mode, each parameter's gradient required nonzero (a
// zero one would make its check vacuous).

#include <doctest/doctest.h>

#include <cstddef>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "sieve/core/rng.hpp"
#include "sieve/core/xt.hpp"
#include "support/gradcheck.hpp"
#include "support/naive.hpp"

namespace sieve::test {

struct ClassifierGradcheck {
  std::size_t checked = 0;  // parameter elements checked
  std::size_t retried = 0;  // elements (input and parameters) that matched only at eps/10
  std::string worst;        // report of the parameter with the largest excess
};

// model: a Pipeline<backbone, Dropout, Linear> in double with input gradients on, classes
// outputs. Draws from rng, in this order: a 0.2-sigma perturbation of the batch-norm affine
// parameters (names holding "bn" or "downsample.1"), the input [xs], 15 warm-up training passes
// on other inputs when !train (realistic running statistics), the multi-hot targets. Then checks
// the input gradient at 40 elements and each parameter's at samples(name).
template <class Model>
ClassifierGradcheck check_classifier_gradients(Model& model, const Shape<4>& xs, std::size_t classes, bool train,
                                               Rng& rng, const std::function<std::size_t(const std::string&)>& samples) {
  for (auto& p : model.params())
    if (p.name.find("bn") != std::string::npos || p.name.find("downsample.1") != std::string::npos)
      for (auto& v : p.value) v += 0.2 * rng.normal();
  Tensor4<double> x(xs);
  fill_randn(x, rng);
  if (!train) {
    Tensor4<double> warm(xs);
    for (int i = 0; i < 15; ++i) {
      fill_randn(warm, rng);
      model.template get<0>().forward(warm);
    }
  }
  model.set_training(train);
  Tensor2<double> target({xs[0], classes});
  for (auto& v : target) v = rng.bernoulli(0.4) ? 1.0 : 0.0;
  Tensor2<double> dz({xs[0], classes});
  auto loss = [&] {
    model.template get<1>().set_step(7);  // the same dropout mask on every evaluation
    const auto& z = model.forward(x);
    return naive_bce_with_logits(z.data(), target.data(), z.size(), dz.data());
  };
  loss();
  model.zero_grad();
  const Tensor4<double> dx = model.backward(dz);
  REQUIRE(dx.shape() == xs);
  auto r = check_gradient("input", std::span<double>(x.data(), x.size()),
                          std::span<const double>(dx.data(), dx.size()), loss, rng, 40);
  CHECK_MESSAGE(r.ok(), r.report());
  ClassifierGradcheck out;
  out.retried = r.retried;
  double worst = -1e300;
  for (auto& p : model.params()) {
    std::vector<double> g(p.grad.begin(), p.grad.end());
    double norm = 0;
    for (double v : g) norm += v * v;
    CHECK_MESSAGE(norm > 0, p.name, " has an all-zero gradient: the check would be vacuous");
    auto rp = check_gradient(p.name, p.value, g, loss, rng, samples(p.name));
    CHECK_MESSAGE(rp.ok(), rp.report());
    out.checked += rp.checked;
    out.retried += rp.retried;
    if (rp.worst_excess > worst) worst = rp.worst_excess, out.worst = rp.report();
  }
  return out;
}

}  // namespace sieve::test
