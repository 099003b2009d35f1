// Every xtensor / xtensor-blas header sieve uses, compiled with the project's flags, and a
// quick check that each does what we rely on.
#include <doctest/doctest.h>

#include <xtensor-blas/xlinalg.hpp>

#include "sieve/core/xt.hpp"
#include "sieve/kernels/gemm.hpp"

TEST_CASE("xtensor fixed-rank basics used by sieve") {
  sieve::Tensor2f a = {{1.f, 2.f, 3.f}, {4.f, 5.f, 6.f}};
  CHECK(a.shape()[0] == 2);
  CHECK(a(1, 2) == 6.f);
  auto col = xt::view(a, xt::all(), 1);
  CHECK(col(1) == 5.f);
  CHECK(xt::sum(a)() == doctest::Approx(21.f));
  sieve::Tensor4f t;
  sieve::ensure_shape(t, {2, 3, 4, 5});
  CHECK(t.size() == 120);
  float* p = t.data();
  sieve::ensure_shape(t, {2, 3, 4, 5});
  CHECK(t.data() == p);  // same shape: the buffer is kept
  std::vector<float> raw(6, 1.f);
  auto adapted = xt::adapt(raw, std::array<std::size_t, 2>{2, 3});
  CHECK(xt::sum(adapted)() == doctest::Approx(6.f));
}

TEST_CASE("xtensor-blas dot agrees with sieve's gemm wrapper") {
  sieve::Tensor2<double> a = {{1, 2, 3}, {4, 5, 6}};
  sieve::Tensor2<double> b = {{7, 8}, {9, 10}, {11, 12}};
  sieve::Tensor2<double> ref = xt::linalg::dot(a, b);
  sieve::Tensor2<double> c = xt::zeros<double>({2, 2});
  sieve::kernels::gemm(sieve::kernels::Trans::no, sieve::kernels::Trans::no, 2, 2, 3, 1.0, a.data(), b.data(), 0.0,
                       c.data());
  CHECK(c(0, 0) == 58);
  CHECK(c(1, 1) == 154);
  CHECK(xt::allclose(c, ref));
  // Transposes: C = A^T * A  ([3,2] x [2,3])
  sieve::Tensor2<double> ata = xt::zeros<double>({3, 3});
  sieve::kernels::gemm(sieve::kernels::Trans::yes, sieve::kernels::Trans::no, 3, 3, 2, 1.0, a.data(), a.data(), 0.0,
                       ata.data());
  sieve::Tensor2<double> ref2 = xt::linalg::dot(xt::transpose(a), a);
  CHECK(xt::allclose(ata, ref2));
  // beta = 1 accumulates.
  sieve::kernels::gemm(sieve::kernels::Trans::yes, sieve::kernels::Trans::no, 3, 3, 2, 1.0, a.data(), a.data(), 1.0,
                       ata.data());
  CHECK(ata(0, 0) == doctest::Approx(2 * ref2(0, 0)));
  // A^T B^T case: C[2,2] = (B^T ... ) use B[3,2] as op=T -> [2,3], A[2,3] as op=T -> [3,2]
  sieve::Tensor2<double> btat = xt::zeros<double>({2, 2});
  sieve::kernels::gemm(sieve::kernels::Trans::yes, sieve::kernels::Trans::yes, 2, 2, 3, 1.0, b.data(), a.data(), 0.0,
                       btat.data());
  sieve::Tensor2<double> ref3 = xt::linalg::dot(xt::transpose(b), xt::transpose(a));
  CHECK(xt::allclose(btat, ref3));
}
