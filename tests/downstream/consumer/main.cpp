// A user's program: a small pipeline, seeded randomness and a GEMM through sieve.
#include <sieve/sieve.hpp>

#include <cstdio>

struct Square {
  using input_type = double;
  using output_type = double;
  double forward(const double& x) const { return x * x; }
};
struct AddNoise {
  using input_type = double;
  using output_type = double;
  double forward(const double& x, sieve::Rng& rng) const { return x + rng.uniform(0.0, 0.5); }
};

int main() {
  using sieve::operator|;
  auto p = Square{} | AddNoise{};
  sieve::Rng rng(1, 2);
  const double y = p.forward(3.0, rng);
  float a[4] = {1, 2, 3, 4}, b[4] = {1, 0, 0, 1}, c[4] = {};
  sieve::kernels::gemm(sieve::kernels::Trans::no, sieve::kernels::Trans::no, 2, 2, 2, 1.0f, a, b, 0.0f, c);
  const bool ok = y >= 9.0 && y < 9.5 && c[0] == 1 && c[3] == 4;
  std::printf("consumer: y=%.4f gemm=%g %g %g %g %s\n", y, c[0], c[1], c[2], c[3], ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}
