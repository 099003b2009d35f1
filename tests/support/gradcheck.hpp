#pragma once
// Central-difference gradient checks in double, reporting the worst element.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <numeric>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "sieve/core/rng.hpp"
#include "sieve/core/shuffle.hpp"
#include "sieve/core/xt.hpp"

namespace sieve::test {

// Every element of t from N(0, scale^2).
template <class T, std::size_t R>
void fill_randn(Tensor<T, R>& t, Rng& rng, double scale = 1.0) {
  for (auto& v : t) v = static_cast<T>(rng.normal() * scale);
}

struct GradCheck {
  std::string name;
  std::size_t checked = 0;
  std::size_t worst_index = 0;  // index into the tensor of the worst element
  double worst_excess = -1e300;  // |a-n| - (atol + rtol*|n|): > 0 means a failure
  double worst_analytic = 0, worst_numeric = 0;
  double rel = 0;  // ||a - n|| / ||a + n|| over the checked elements
  std::size_t retried = 0;  // elements that matched only with the smaller step (a kink was near)
  bool ok() const { return worst_excess <= 0 && checked > 0; }
  std::string report() const {
    std::ostringstream os;
    os << name << ": " << checked << " elements, worst [" << worst_index << "] analytic " << worst_analytic
       << " numeric " << worst_numeric << " excess " << worst_excess << ", ||a-n||/||a+n|| = " << rel << ", " << retried << " matched only at eps/10";
    return os.str();
  }
};

// Compare `analytic` (d loss / d value) against central differences of loss() over value.
// loss() must recompute the loss from the current contents of value. An element that fails
// is retried once with eps/10: a ReLU or max-pool kink within eps of the point spoils one step
// size but not both, while a wrong gradient fails at every step size.
inline GradCheck check_gradient(const std::string& name, std::span<double> value, std::span<const double> analytic,
                                const std::function<double()>& loss, Rng& rng, std::size_t max_samples = 200,
                                double eps = 1e-6, double rtol = 1e-3, double atol = 1e-5) {
  GradCheck r;
  r.name = name;
  double dn = 0, sn = 0;
  for (std::size_t i : sieve::sample_indices(value.size(), max_samples, rng)) {  // all when few
    const double v = value[i], a = analytic[i];
    auto numeric = [&](double h) {
      value[i] = v + h;
      const double lp = loss();
      value[i] = v - h;
      const double lm = loss();
      value[i] = v;
      return (lp - lm) / (2 * h);
    };
    double num = numeric(eps);
    double excess = std::abs(a - num) - (atol + rtol * std::abs(num));
    if (excess > 0) {
      const double num2 = numeric(eps / 10);
      const double excess2 = std::abs(a - num2) - (atol + rtol * std::abs(num2));
      if (excess2 <= 0) ++r.retried;
      if (excess2 < excess) num = num2, excess = excess2;
    }
    if (excess > r.worst_excess) {
      r.worst_excess = excess;
      r.worst_index = i;
      r.worst_analytic = a;
      r.worst_numeric = num;
    }
    dn += (a - num) * (a - num);
    sn += (a + num) * (a + num);
    ++r.checked;
  }
  r.rel = sn > 0 ? std::sqrt(dn / sn) : std::sqrt(dn);
  return r;
}

// ||a - b|| / ||b||.
template <class A, class B>
double rel_err(const A& a, const B& b, std::size_t n) {
  double d = 0, s = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double x = static_cast<double>(a[i]), y = static_cast<double>(b[i]);
    d += (x - y) * (x - y);
    s += y * y;
  }
  return s > 0 ? std::sqrt(d / s) : std::sqrt(d);
}

}  // namespace sieve::test
