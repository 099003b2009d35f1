// Kernel tests: hand-computed cases, agreement with naive float64 references (float and
// double), gradient checks of the backward kernels, sentinels, shape errors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "sieve/core/rng.hpp"
#include "sieve/kernels/kernels.hpp"
#include "support/gradcheck.hpp"
#include "support/naive.hpp"

namespace k = sieve::kernels;
using sieve::Rng;
using sieve::test::check_gradient;
using sieve::test::rel_err;

namespace {

std::vector<double> randn(std::size_t n, Rng& rng, double scale = 1.0) {
  std::vector<double> v(n);
  for (auto& x : v) x = rng.normal() * scale;
  return v;
}
template <class T>
std::vector<T> cast(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

struct ConvCase {
  std::size_t N, C, H, W, K, KH, KW, SH, SW, PH, PW, group;
};

const ConvCase conv_cases[] = {
    {2, 3, 7, 6, 4, 3, 3, 1, 1, 1, 1, 0},  // 3x3 same padding, batched group
    {3, 3, 7, 6, 4, 3, 3, 2, 2, 1, 1, 1},  // strided 3x3, one sample per GEMM
    {3, 2, 9, 9, 5, 7, 7, 2, 2, 3, 3, 2},  // the 7x7/2 stem, groups of 2 (last group of 1)
    {2, 4, 5, 5, 6, 1, 1, 1, 1, 0, 0, 1},  // direct 1x1 stride 1 path
    {2, 4, 5, 5, 6, 1, 1, 1, 1, 0, 0, 0},  // 1x1 stride 1 batched
    {3, 4, 7, 5, 6, 1, 1, 2, 2, 0, 0, 0},  // strided 1x1 (downsample)
    {2, 3, 4, 5, 2, 2, 3, 1, 2, 0, 2, 1},  // rectangular kernel, stride and padding
    {2, 2, 1, 1, 3, 3, 3, 1, 1, 1, 1, 0},  // 1x1 spatial with 3x3 padding (layer4 at 32x32)
    {2, 3, 2, 2, 4, 3, 3, 2, 2, 1, 1, 0},  // 2x2 -> 1x1 with stride 2: 4 of 9 taps read input
    {2, 3, 5, 37, 4, 3, 3, 2, 2, 1, 1, 0},  // stride-2 lines of 19 and 18: 8-value blocks, tails
    {1, 2, 7, 40, 3, 7, 7, 2, 2, 3, 3, 0},  // the stem's 7x7/2 on wider lines (20 outputs)
};

k::Conv2dDims dims_of(const ConvCase& c) {
  return k::Conv2dDims{c.N, c.C, c.H, c.W, c.K, {c.KH, c.KW, c.SH, c.SW, c.PH, c.PW}, c.group};
}

template <class T>
void conv_forward_matches_naive(double tol) {
  Rng rng(7);
  for (const auto& c : conv_cases) {
    CAPTURE(c.N); CAPTURE(c.C); CAPTURE(c.H); CAPTURE(c.W); CAPTURE(c.K); CAPTURE(c.KH); CAPTURE(c.SH); CAPTURE(c.PH); CAPTURE(c.group);
    const auto d = dims_of(c);
    const auto x = randn(c.N * c.C * c.H * c.W, rng), w = randn(c.K * c.C * c.KH * c.KW, rng);
    const auto ref = sieve::test::naive_conv2d(x, w, c.N, c.C, c.H, c.W, c.K, c.KH, c.KW, c.SH, c.SW, c.PH, c.PW);
    auto xt = cast<T>(x), wt = cast<T>(w);
    std::vector<T> y(ref.size(), std::numeric_limits<T>::quiet_NaN());
    std::vector<T> ws(k::conv2d_workspace_size(d));
    k::conv2d_forward(xt.data(), wt.data(), y.data(), d, ws.data(), ws.size());
    CHECK(rel_err(y, ref, ref.size()) < tol);
  }
}

// A float product against its float64 truth: the worst |C[i,j] - v| / m over M x N, where
// v = sum_k a(i,k) b(k,j) and m = sum_k |a(i,k) b(k,j)| (rounding only stays far below 1e-5),
// both first passed through finish(i, j, v, m) (an epilogue's effect on value and magnitude).
template <class FA, class FB, class Finish>
double product_worst_rel(std::size_t M, std::size_t N, std::size_t K, FA a, FB b, const float* C, std::size_t ldc,
                         Finish finish) {
  double worst = 0;
  for (std::size_t i = 0; i < M; ++i)
    for (std::size_t j = 0; j < N; ++j) {
      double v = 0, m = 0;
      for (std::size_t kk = 0; kk < K; ++kk) {
        const double p = static_cast<double>(a(i, kk)) * b(kk, j);
        v += p, m += std::abs(p);
      }
      finish(i, j, v, m);
      worst = std::max(worst, std::abs(C[i * ldc + j] - v) / (m + 1e-30));
    }
  return worst;
}

}  // namespace

TEST_CASE("conv2d forward: hand-computed 3x3 with padding") {
  // x = 1..9 in a 3x3 plane, w = all ones: each output sums its padded 3x3 neighbourhood.
  std::vector<double> x{1, 2, 3, 4, 5, 6, 7, 8, 9}, w(9, 1.0), y(9, -1.0);
  k::Conv2dDims d{1, 1, 3, 3, 1, {3, 3, 1, 1, 1, 1}};
  std::vector<double> ws(k::conv2d_workspace_size(d));
  k::conv2d_forward(x.data(), w.data(), y.data(), d, ws.data(), ws.size());
  const std::vector<double> expect{12, 21, 16, 27, 45, 33, 24, 39, 28};
  for (std::size_t i = 0; i < 9; ++i) CHECK(y[i] == expect[i]);
  // stride 2 keeps the corners
  k::Conv2dDims d2{1, 1, 3, 3, 1, {3, 3, 2, 2, 1, 1}};
  std::vector<double> y2(4);
  k::conv2d_forward(x.data(), w.data(), y2.data(), d2, ws.data(), ws.size());
  CHECK(y2 == std::vector<double>{12, 16, 24, 28});
}

TEST_CASE("conv2d forward agrees with the naive reference (float and double)") {
  conv_forward_matches_naive<double>(1e-13);
  conv_forward_matches_naive<float>(1e-6);
}

TEST_CASE("conv2d backward: gradient check of input and weight in double, sentinels") {
  Rng rng(11);
  for (const auto& c : conv_cases) {
    CAPTURE(c.KH); CAPTURE(c.SH); CAPTURE(c.PH); CAPTURE(c.group); CAPTURE(c.H); CAPTURE(c.W);
    const auto d = dims_of(c);
    auto x = randn(c.N * c.C * c.H * c.W, rng), w = randn(c.K * c.C * c.KH * c.KW, rng);
    const std::size_t ny = c.N * c.K * d.OH() * d.OW();
    const auto R = randn(ny, rng);
    std::vector<double> ws(k::conv2d_workspace_size(d)), y(ny);
    auto loss = [&] {
      k::conv2d_forward(x.data(), w.data(), y.data(), d, ws.data(), ws.size());
      double s = 0;
      for (std::size_t i = 0; i < ny; ++i) s += y[i] * R[i];
      return s;
    };
    std::vector<double> dx(x.size(), std::numeric_limits<double>::quiet_NaN());  // must be overwritten
    std::vector<double> dw(w.size(), 0.5);                                        // must end 0.5 + grad
    k::conv2d_backward_input(R.data(), w.data(), dx.data(), d, ws.data(), ws.size());
    k::conv2d_backward_weight(x.data(), R.data(), dw.data(), d, ws.data(), ws.size());
    for (double v : dx) REQUIRE(std::isfinite(v));
    for (auto& v : dw) v -= 0.5;
    const auto gx = check_gradient("conv dx", x, dx, loss, rng);
    const auto gw = check_gradient("conv dw", w, dw, loss, rng);
    CHECK_MESSAGE(gx.ok(), gx.report());
    CHECK_MESSAGE(gw.ok(), gw.report());
  }
}

TEST_CASE("conv2d: float backward agrees with double; workspace and geometry errors") {
  Rng rng(12);
  const ConvCase c{2, 3, 6, 6, 4, 3, 3, 2, 2, 1, 1, 0};
  const auto d = dims_of(c);
  const auto x = randn(c.N * c.C * c.H * c.W, rng), w = randn(c.K * c.C * 9, rng);
  const auto dy = randn(c.N * c.K * d.OH() * d.OW(), rng);
  std::vector<double> wsd(k::conv2d_workspace_size(d)), dxd(x.size()), dwd(w.size(), 0.0);
  k::conv2d_backward_input(dy.data(), w.data(), dxd.data(), d, wsd.data(), wsd.size());
  k::conv2d_backward_weight(x.data(), dy.data(), dwd.data(), d, wsd.data(), wsd.size());
  auto xf = cast<float>(x), wf = cast<float>(w), dyf = cast<float>(dy);
  std::vector<float> wsf(k::conv2d_workspace_size(d)), dxf(x.size()), dwf(w.size(), 0.0f);
  k::conv2d_backward_input(dyf.data(), wf.data(), dxf.data(), d, wsf.data(), wsf.size());
  k::conv2d_backward_weight(xf.data(), dyf.data(), dwf.data(), d, wsf.data(), wsf.size());
  CHECK(rel_err(dxf, dxd, dxd.size()) < 1e-6);
  CHECK(rel_err(dwf, dwd, dwd.size()) < 1e-6);

  std::vector<float> y(c.N * c.K * d.OH() * d.OW());
  CHECK_THROWS_AS(k::conv2d_forward(xf.data(), wf.data(), y.data(), d, wsf.data(), wsf.size() - 1), sieve::Error);
  k::Conv2dDims tiny{1, 1, 2, 2, 1, {5, 5, 1, 1, 1, 1}};
  CHECK_THROWS_WITH_AS(k::conv2d_forward(xf.data(), wf.data(), y.data(), tiny, wsf.data(), wsf.size()),
                       doctest::Contains("smaller than the kernel"), sieve::Error);
}

namespace {
// NCHW [N, C, HW] to the batch-folded CNHW order [C, N, HW].
template <class T>
std::vector<T> to_cnhw(const std::vector<T>& v, std::size_t N, std::size_t C, std::size_t HW) {
  std::vector<T> o(v.size());
  for (std::size_t n = 0; n < N; ++n)
    for (std::size_t c = 0; c < C; ++c)
      for (std::size_t p = 0; p < HW; ++p) o[(c * N + n) * HW + p] = v[(n * C + c) * HW + p];
  return o;
}
}  // namespace

TEST_CASE("conv2d Winograd F(2x2,3x3) and F(4x4,3x3): forward and input gradient against float64, edges, threads") {
  Rng rng(31);
  const int saved = sieve::threads();
  // Odd and even planes (partial tiles at the bottom/right), a 1x1 plane, several samples.
  for (const ConvCase& c : {ConvCase{2, 3, 5, 7, 4, 3, 3, 1, 1, 1, 1, 0}, ConvCase{3, 5, 8, 8, 2, 3, 3, 1, 1, 1, 1, 0},
                           ConvCase{2, 4, 1, 1, 3, 3, 3, 1, 1, 1, 1, 0}, ConvCase{1, 2, 2, 3, 3, 3, 3, 1, 1, 1, 1, 0},
                           ConvCase{2, 3, 9, 6, 5, 3, 3, 1, 1, 1, 1, 0}, ConvCase{1, 2, 12, 13, 3, 3, 3, 1, 1, 1, 1, 0},
                           ConvCase{1, 2, 6, 37, 3, 3, 3, 1, 1, 1, 1, 0}})  // 37 wide: the 8-lane blocks and a tail
  for (const k::Conv2dAlgo algo : {k::Conv2dAlgo::winograd, k::Conv2dAlgo::winograd4}) {
    CAPTURE(c.H);
    CAPTURE(c.W);
    CAPTURE(algo == k::Conv2dAlgo::winograd4);
    auto d = dims_of(c);
    d.algo = algo;
    REQUIRE(k::conv2d_uses_winograd(d));
    const auto x = randn(c.N * c.C * c.H * c.W, rng), w = randn(c.K * c.C * 9, rng);
    const std::size_t ny = c.N * c.K * c.H * c.W;
    const auto dy = randn(ny, rng);
    const auto ref = sieve::test::naive_conv2d(x, w, c.N, c.C, c.H, c.W, c.K, 3, 3, 1, 1, 1, 1);
    std::vector<double> ws(k::conv2d_workspace_size(d)), y(ny, std::nan("")), dx(x.size(), std::nan(""));
    k::conv2d_forward(x.data(), w.data(), y.data(), d, ws.data(), ws.size());
    CHECK(rel_err(y, ref, ny) < 1e-13);
    // The input gradient against im2col's (exact products) in double.
    auto di = d;
    di.algo = k::Conv2dAlgo::im2col;
    std::vector<double> wsi(k::conv2d_workspace_size(di)), dx_ref(x.size());
    k::conv2d_backward_input(dy.data(), w.data(), dx_ref.data(), di, wsi.data(), wsi.size());
    k::conv2d_backward_input(dy.data(), w.data(), dx.data(), d, ws.data(), ws.size());
    CHECK(rel_err(dx, dx_ref, dx.size()) < 1e-13);
    // Kept weights (conv2d_winograd_weights) give the same result as transforming per call.
    std::vector<double> U(k::conv2d_winograd_weights_size(d)), yk(ny, std::nan(""));
    k::conv2d_winograd_weights(w.data(), d, U.data());
    k::conv2d_forward(x.data(), w.data(), yk.data(), d, ws.data(), ws.size(), {}, U.data());
    CHECK(yk == y);
  }
  // Float rounding against float64, beside im2col's, on a ResNet-like shape; 1 and 2 threads.
  const ConvCase c{4, 64, 14, 14, 64, 3, 3, 1, 1, 1, 1, 0};
  auto d = dims_of(c);
  const auto x = randn(c.N * c.C * c.H * c.W, rng), w = randn(c.K * c.C * 9, rng, 0.05);
  const std::size_t ny = c.N * c.K * c.H * c.W;
  const auto dy = randn(ny, rng);
  const auto ref = sieve::test::naive_conv2d(x, w, c.N, c.C, c.H, c.W, c.K, 3, 3, 1, 1, 1, 1);
  auto dd = d;
  std::vector<double> wsd(k::conv2d_workspace_size(dd)), dx_ref(x.size());
  dd.algo = k::Conv2dAlgo::im2col;
  k::conv2d_backward_input(dy.data(), w.data(), dx_ref.data(), dd, wsd.data(), wsd.size());
  const auto xf = cast<float>(x), wf = cast<float>(w), dyf = cast<float>(dy);
  std::vector<float> y1;
  for (int threads : {1, 2}) {
    CAPTURE(threads);
    sieve::set_threads(threads);
    double err[3][2], blas[3];  // [algo][forward, input gradient]; [algo]: the forward through BLAS
    for (int a = 0; a < 3; ++a) {
      d.algo = a == 0 ? k::Conv2dAlgo::im2col : a == 1 ? k::Conv2dAlgo::winograd : k::Conv2dAlgo::winograd4;
      d.fused = false;  // the forward's products through BLAS, then (the default) fused_sgemm's
      std::vector<float> ws(k::conv2d_workspace_size(d)), y(ny), dx(x.size());
      k::conv2d_forward(xf.data(), wf.data(), y.data(), d, ws.data(), ws.size());
      blas[a] = rel_err(y, ref, ny);
      d.fused = true;
      ws.resize(k::conv2d_workspace_size(d));
      k::conv2d_forward(xf.data(), wf.data(), y.data(), d, ws.data(), ws.size());
      k::conv2d_backward_input(dyf.data(), wf.data(), dx.data(), d, ws.data(), ws.size());
      err[a][0] = rel_err(y, ref, ny);
      err[a][1] = rel_err(dx, dx_ref, dx.size());
      if (a == 1 && threads == 1) y1 = y;
      if (a == 1 && threads == 2) CHECK(rel_err(y, std::vector<double>(y1.begin(), y1.end()), ny) < 1e-6);
    }
    MESSAGE("float relative error vs float64, im2col / F(2x2,3x3) / F(4x4,3x3): forward ", err[0][0], " / ",
            err[1][0], " / ", err[2][0], " (through BLAS ", blas[0], " / ", blas[1], " / ", blas[2],
            "), input gradient ", err[0][1], " / ", err[1][1], " / ", err[2][1]);
    CHECK(err[1][0] < 2 * blas[1]);  // the fused product rounds as well as BLAS
    CHECK(err[2][0] < 2 * blas[2]);
    // F(4x4,3x3) multiplies by up to 8 in its transforms: measured 1.5e-6 (5x F(2x2,3x3)'s).
    CHECK(err[2][0] < 5e-6);
    CHECK(err[2][1] < 5e-6);
    // im2col's product into a CNHW output (in NCHW it takes fused_sgemm for one sample only).
    auto dc = d;
    dc.algo = k::Conv2dAlgo::im2col, dc.in = dc.out = k::Layout::cnhw;
    const auto xc = to_cnhw(xf, c.N, c.C, c.H * c.W);
    const auto refc = to_cnhw(ref, c.N, c.K, c.H * c.W);
    double cn[2];  // [fused]
    for (int f = 0; f < 2; ++f) {
      dc.fused = f == 1;
      std::vector<float> ws(k::conv2d_workspace_size(dc)), y(ny);
      k::conv2d_forward(xc.data(), wf.data(), y.data(), dc, ws.data(), ws.size());
      cn[f] = rel_err(y, refc, ny);
    }
    MESSAGE("CNHW im2col: fused ", cn[1], ", BLAS ", cn[0]);
    CHECK(cn[1] < 1e-6);
    CHECK(cn[1] < 2 * cn[0]);
    CHECK(err[1][0] < 1e-6);
    CHECK(err[1][1] < 1e-6);
    CHECK(err[1][0] < 4 * err[0][0]);
    CHECK(err[1][1] < 4 * err[0][1]);
  }
  sieve::set_threads(saved);
  // Automatic choice (the measured thresholds): ResNet's 3x3 stride-1 layers on even-ish
  // planes from 8x8 with enough channels; never for other geometries, which an explicit
  // request refuses.
  CHECK(k::conv2d_uses_winograd(k::Conv2dDims{16, 256, 14, 14, 256, {3, 3, 1, 1, 1, 1}}));
  CHECK(k::conv2d_uses_winograd(k::Conv2dDims{64, 128, 8, 8, 128, {3, 3, 1, 1, 1, 1}}));
  CHECK(!k::conv2d_uses_winograd(k::Conv2dDims{64, 64, 8, 8, 64, {3, 3, 1, 1, 1, 1}}));
  CHECK(!k::conv2d_uses_winograd(k::Conv2dDims{16, 512, 7, 7, 512, {3, 3, 1, 1, 1, 1}}));
  CHECK(!k::conv2d_uses_winograd(k::Conv2dDims{16, 256, 9, 9, 256, {3, 3, 1, 1, 1, 1}}));  // 23% tile padding
  // Taps that read only padding are left out: a 3x3 kernel on a 1x1 plane keeps its centre.
  CHECK(k::conv2d_plan(k::Conv2dDims{8, 256, 1, 1, 256, {3, 3, 1, 1, 1, 1}}).rows == 256);
  CHECK(k::conv2d_plan(k::Conv2dDims{8, 128, 2, 2, 256, {3, 3, 2, 2, 1, 1}}).rows == 128 * 4);
  CHECK(!k::conv2d_plan(k::Conv2dDims{8, 128, 2, 2, 256, {3, 3, 1, 1, 1, 1}}).compact);
  // Small planes with many channels: 4x4 takes it from 256 channels, 2x2 (one tile) never.
  CHECK(k::conv2d_uses_winograd(k::Conv2dDims{64, 256, 4, 4, 256, {3, 3, 1, 1, 1, 1}}));
  CHECK(!k::conv2d_uses_winograd(k::Conv2dDims{64, 128, 4, 4, 128, {3, 3, 1, 1, 1, 1}}));
  CHECK(!k::conv2d_uses_winograd(k::Conv2dDims{64, 64, 4, 4, 64, {3, 3, 1, 1, 1, 1}}));
  CHECK(!k::conv2d_uses_winograd(k::Conv2dDims{64, 512, 2, 2, 512, {3, 3, 1, 1, 1, 1}}));
  // 1x1 stride-1 convolutions multiply each sample in place from 16x16 planes; smaller planes
  // group samples into one wide GEMM.
  CHECK(k::conv2d_group(k::Conv2dDims{64, 256, 16, 16, 64, {1, 1, 1, 1, 0, 0}}) == 1);
  CHECK(k::conv2d_group(k::Conv2dDims{64, 256, 8, 8, 64, {1, 1, 1, 1, 0, 0}}) > 1);
  CHECK(!k::conv2d_uses_winograd(k::Conv2dDims{16, 32, 56, 56, 32, {3, 3, 1, 1, 1, 1}}));
  CHECK(!k::conv2d_uses_winograd(k::Conv2dDims{16, 128, 56, 56, 128, {3, 3, 2, 2, 1, 1}}));
  k::Conv2dDims strided{1, 1, 4, 4, 1, {3, 3, 2, 2, 1, 1}};
  strided.algo = k::Conv2dAlgo::winograd;
  CHECK_THROWS_WITH_AS(k::conv2d_uses_winograd(strided), doctest::Contains("needs a 3x3 kernel, stride 1"),
                       sieve::Error);
  strided.algo = k::Conv2dAlgo::winograd4;
  CHECK_THROWS_WITH_AS(k::conv2d_uses_winograd(strided), doctest::Contains("F(4x4,3x3) needs a 3x3 kernel"),
                       sieve::Error);
  // F(4x4,3x3) automatically only for a forward with no backward after it (weights kept),
  // where its tiles waste at most 35% and its products get 32+ columns (tiles x samples);
  // else F(2x2,3x3) by the same rule; training keeps its own rule (7x7 and 2x2: im2col).
  k::Conv2dDims inf{16, 64, 56, 56, 64, {3, 3, 1, 1, 1, 1}};
  CHECK(k::conv2d_winograd_tile(inf) == 2);
  inf.forward_only = true;
  CHECK(k::conv2d_winograd_tile(inf) == 4);
  inf.H = inf.W = 14, inf.C = inf.K = 256;  // padded to 16x16: 31% waste
  CHECK(k::conv2d_winograd_tile(inf) == 4);
  inf.N = 1;  // 16 columns: too few for F(4x4); F(2x2) has 49
  CHECK(k::conv2d_winograd_tile(inf) == 2);
  inf.H = inf.W = 7, inf.C = inf.K = 512, inf.N = 8;  // 32 columns
  CHECK(k::conv2d_winograd_tile(inf) == 4);
  inf.N = 4;
  CHECK(k::conv2d_winograd_tile(inf) == 2);
  inf.forward_only = false;
  CHECK(k::conv2d_winograd_tile(inf) == 0);
  inf.forward_only = true;
  inf.H = inf.W = 2, inf.N = 32;  // one tile of F(2x2) a sample, none of F(4x4) (300% waste)
  CHECK(k::conv2d_winograd_tile(inf) == 2);
  inf.N = 16;
  CHECK(k::conv2d_winograd_tile(inf) == 0);
  inf.H = inf.W = 1, inf.N = 64;  // 1x1 planes: 300% waste for either
  CHECK(k::conv2d_winograd_tile(inf) == 0);
  inf.H = inf.W = 8, inf.C = 32;  // too few channels
  CHECK(k::conv2d_winograd_tile(inf) == 0);
  CHECK_THROWS_WITH_AS(k::winograd_plan(1, 1, 4, 4, 1, 1, k::Layout::nchw, false, 3),
                       doctest::Contains("2x2 or 4x4, not 3x3"), sieve::Error);
}

TEST_CASE("conv2d groups: every thread gets as many sample groups as the others") {
  // ResNet50's layer2 3x3/2 at 64x64 inputs, batch 64: 28 samples' columns fit the budget;
  // 28 + 28 + 8 left one thread twice the other's work. Also other batches and thread counts.
  const int saved = sieve::threads();
  for (int threads : {1, 2, 3}) {
    sieve::set_threads(threads);
    for (std::size_t N : {64, 61, 7, 1})
      for (const k::Conv2dDims& d0 : {k::Conv2dDims{N, 128, 16, 16, 128, {3, 3, 2, 2, 1, 1}},
                                      k::Conv2dDims{N, 256, 8, 8, 256, {3, 3, 2, 2, 1, 1}},
                                      k::Conv2dDims{N, 64, 8, 8, 64, {3, 3, 1, 1, 1, 1}}}) {
        k::Conv2dDims d = d0;
        d.in = d.out = k::Layout::cnhw;
        const k::Conv2dPlan p = k::conv2d_plan(d);
        CAPTURE(threads);
        CAPTURE(N);
        CAPTURE(d.C);
        CAPTURE(p.G);
        CHECK(p.G * d.CKK() * d.OH() * d.OW() <= k::conv2d_group_budget);  // still within budget
        CHECK(p.groups == (N + p.G - 1) / p.G);
        CHECK((p.groups % p.parts == 0 || p.groups < p.parts));
        CHECK((p.groups - 1) * p.G < N);  // no empty group
      }
  }
  sieve::set_threads(2);
  k::Conv2dDims d{64, 128, 16, 16, 128, {3, 3, 2, 2, 1, 1}};
  d.in = d.out = k::Layout::cnhw;
  CHECK(k::conv2d_group(d) == 16);  // 4 groups of 16
  sieve::set_threads(saved);
}

TEST_CASE("conv2d on 2 threads: split samples, per-thread weight-gradient partials") {
  // Large enough to be split (conv2d_parallel_min_macs per thread): one case with one sample
  // per GEMM (32x32 planes), one with grouped samples (8x8 planes), one on 1x1 planes (the
  // compact plan: centre tap only). Forward and input gradient must equal the 1-thread result
  // bit for bit (the same per-group products; to rounding on 1x1 planes); the weight
  // gradient (partials summed in thread order) must agree to rounding and accumulate onto dw.
  const int saved = sieve::threads();
  Rng rng(21);
  for (const ConvCase& c : {ConvCase{4, 16, 32, 32, 32, 3, 3, 1, 1, 1, 1, 0},
                           ConvCase{8, 64, 8, 8, 64, 3, 3, 1, 1, 1, 1, 0},
                           ConvCase{8, 256, 1, 1, 256, 3, 3, 1, 1, 1, 1, 0}}) {  // centre tap only
    CAPTURE(c.H);
    const auto d = dims_of(c);
    const std::size_t ny = c.N * c.K * d.OH() * d.OW();
    const auto x = cast<float>(randn(c.N * c.C * c.H * c.W, rng));
    const auto w = cast<float>(randn(c.K * c.C * 9, rng, 0.1));
    const auto dy = cast<float>(randn(ny, rng));
    auto run = [&](int threads, std::vector<float>& y, std::vector<float>& dx, std::vector<float>& dw) {
      sieve::set_threads(threads);
      std::vector<float> ws(k::conv2d_workspace_size(d));
      y.assign(ny, 0.f);
      dx.assign(x.size(), 0.f);
      dw.assign(w.size(), 1.0f);  // accumulated onto
      k::conv2d_forward(x.data(), w.data(), y.data(), d, ws.data(), ws.size());
      k::conv2d_backward_input(dy.data(), w.data(), dx.data(), d, ws.data(), ws.size());
      k::conv2d_backward_weight(x.data(), dy.data(), dw.data(), d, ws.data(), ws.size());
      return k::conv2d_plan(d).parts;
    };
    std::vector<float> y1, dx1, dw1, y2, dx2, dw2;
    CHECK(run(1, y1, dx1, dw1) == 1);
    CHECK(run(2, y2, dx2, dw2) == 2);
    if (c.H > 1) {
      CHECK(y1 == y2);
      CHECK(dx1 == dx2);
    } else {  // 1x1 planes: groups of 8 or 4 columns, where BLAS's edge kernels may round differently
      CHECK(rel_err(y2, std::vector<double>(y1.begin(), y1.end()), y1.size()) < 1e-6);
      CHECK(rel_err(dx2, std::vector<double>(dx1.begin(), dx1.end()), dx1.size()) < 1e-6);
    }
    std::vector<double> dw1d(dw1.begin(), dw1.end());
    CHECK(rel_err(dw2, dw1d, dw1d.size()) < 1e-6);
    // Against the naive float64 reference (dw - 1: what was accumulated).
    const auto ref = sieve::test::naive_conv2d(std::vector<double>(x.begin(), x.end()),
                                               std::vector<double>(w.begin(), w.end()), c.N, c.C, c.H, c.W, c.K, 3,
                                               3, 1, 1, 1, 1);
    CHECK(rel_err(y2, ref, ref.size()) < 1e-5);
  }
  sieve::set_threads(saved);
}

TEST_CASE("conv2d epilogue: folded scale/shift, residual, ReLU equal the separate passes bit for bit") {
  // Direct 1x1, im2col with one sample per GEMM, grouped samples, strided 1x1, Winograd (the
  // last case, chosen automatically); 1 and 2 threads; NCHW and batch-folded CNHW, the latter
  // with the fused product of sgemm_fused.hpp (when built with AVX2: 1x1, im2col and Winograd
  // products) and without (BLAS, the epilogue a separate pass over each block).
  const int saved = sieve::threads();
  Rng rng(22);
  for (const ConvCase& c : {ConvCase{3, 16, 8, 8, 24, 1, 1, 1, 1, 0, 0, 0}, ConvCase{2, 8, 33, 33, 8, 3, 3, 1, 1, 1, 1, 0},
                           ConvCase{8, 64, 8, 8, 64, 3, 3, 1, 1, 1, 1, 0}, ConvCase{4, 16, 9, 9, 32, 1, 1, 2, 2, 0, 0, 0},
                           ConvCase{2, 64, 15, 15, 64, 3, 3, 1, 1, 1, 1, 0},
                           ConvCase{4, 64, 16, 16, 70, 1, 1, 1, 1, 0, 0, 0}}) {  // large enough for 2 threads
    for (const int variant : {0, 1, 2}) {  // NCHW; CNHW; CNHW with the fused product off
      const k::Layout layout = variant == 0 ? k::Layout::nchw : k::Layout::cnhw;
      auto d = dims_of(c);
      d.in = d.out = layout;
      d.fused = variant != 2;
      CHECK(k::conv2d_uses_winograd(d) == (c.H == 15));
      const std::size_t P = d.OH() * d.OW(), ny = c.N * c.K * P;
      const auto x = cast<float>(randn(c.N * c.C * c.H * c.W, rng));
      const auto w = cast<float>(randn(c.K * c.C * c.KH * c.KW, rng, 0.1));
      const auto scale = cast<float>(randn(c.K, rng));
      const auto shift = cast<float>(randn(c.K, rng));
      const auto res = cast<float>(randn(ny, rng));
      for (int threads : {1, 2})
        for (int mode = 0; mode < 8; ++mode) {  // bit 0: affine, bit 1: residual, bit 2: ReLU
          CAPTURE(c.H);
          CAPTURE(threads);
          CAPTURE(mode);
          CAPTURE(variant);
          sieve::set_threads(threads);
          std::vector<float> ws(k::conv2d_workspace_size(d)), plain(ny), fused(ny, std::nanf(""));
          k::conv2d_forward(x.data(), w.data(), plain.data(), d, ws.data(), ws.size());
          for (std::size_t o = 0; o < ny; ++o) {
            const std::size_t kk = layout == k::Layout::cnhw ? o / (c.N * P) : o / P % c.K;
            float v = plain[o];
            if (mode & 1) v = v * scale[kk] + shift[kk];
            if (mode & 2) v = v + res[o];
            if (mode & 4) v = v > 0.f ? v : 0.f;
            plain[o] = v;
          }
          const k::Conv2dEpilogue<float> e{(mode & 1) ? scale.data() : nullptr, (mode & 1) ? shift.data() : nullptr,
                                           (mode & 2) ? res.data() : nullptr, (mode & 4) != 0};
          k::conv2d_forward(x.data(), w.data(), fused.data(), d, ws.data(), ws.size(), e);
          CHECK(fused == plain);
        }
    }
  }
  sieve::set_threads(saved);
  const auto d = dims_of(ConvCase{1, 1, 3, 3, 1, 1, 1, 1, 1, 0, 0, 0});
  std::vector<float> x(9), w(1), y(9), ws(k::conv2d_workspace_size(d) + 1), sc(1);
  CHECK_THROWS_WITH_AS(k::conv2d_forward(x.data(), w.data(), y.data(), d, ws.data(), ws.size(),
                                         k::Conv2dEpilogue<float>{sc.data(), nullptr, nullptr, false}),
                       doctest::Contains("scale and shift go together"), sieve::Error);
}

TEST_CASE("fused sgemm: product and row epilogue against float64, cut tiles, K blocks, wider matrices") {
  // Sizes cut the 6x16 tiles at both edges, and K = 600 takes three blocks of the inner
  // dimension (the epilogue only after the last). A, B, C and the residual are column blocks
  // of wider matrices; C starts as NaN (assigned, never read before written) and its padding
  // columns must stay as they were.
  MESSAGE("fused sgemm vector code: ", k::fused_sgemm_available);
  Rng rng(31);
  struct Size { std::size_t M, N, K; };
  // 7x300x300 and 2x11000x3 fill a whole packed block of B (the workspace's size, checked by
  // the address sanitizer build).
  for (const Size z : {Size{6, 16, 8}, Size{7, 17, 5}, Size{13, 40, 600}, Size{64, 100, 64}, Size{1, 3, 257},
                       Size{7, 300, 300}, Size{2, 11000, 3}}) {
    const std::size_t ld = z.N + 5, lda = z.K + 3;  // B, C and residual rows are ld long, A's lda
    const auto A = randn(z.M * lda, rng), B = randn(z.K * ld, rng), R = randn(z.M * ld, rng);
    const auto sc = randn(z.M, rng), sh = randn(z.M, rng);
    const auto Af = cast<float>(A), Bf = cast<float>(B), Rf = cast<float>(R), scf = cast<float>(sc),
               shf = cast<float>(sh);
    std::vector<float> bws(k::fused_sgemm_b_workspace());
    for (int mode = 0; mode < 8; ++mode) {  // bit 0: affine, bit 1: residual, bit 2: ReLU
      CAPTURE(z.M); CAPTURE(z.N); CAPTURE(z.K); CAPTURE(mode);
      std::vector<float> C(z.M * ld, std::nanf(""));
      for (std::size_t i = 0; i < z.M; ++i)
        for (std::size_t j = z.N; j < ld; ++j) C[i * ld + j] = 7.0f;
      const k::RowEpilogue e{(mode & 1) ? scf.data() : nullptr, (mode & 1) ? shf.data() : nullptr,
                             (mode & 2) ? Rf.data() : nullptr, ld, (mode & 4) != 0};
      k::fused_sgemm(z.M, z.N, z.K, Af.data(), lda, Bf.data(), ld, C.data(), ld, e, bws.data());
      const double worst = product_worst_rel(
          z.M, z.N, z.K, [&](std::size_t i, std::size_t kk) { return Af[i * lda + kk]; },
          [&](std::size_t kk, std::size_t j) { return Bf[kk * ld + j]; }, C.data(), ld,
          [&](std::size_t i, std::size_t j, double& v, double& mag) {
            if (mode & 1) v = v * scf[i] + shf[i], mag *= std::abs(scf[i]);
            if (mode & 2) v += Rf[i * ld + j], mag += std::abs(Rf[i * ld + j]);
            if (mode & 4) v = v > 0 ? v : 0;
          });
      std::size_t kept = 0;
      for (std::size_t i = 0; i < z.M; ++i)
        for (std::size_t j = z.N; j < ld; ++j) kept += C[i * ld + j] == 7.0f;
      CHECK(worst < 1e-5);  // relative to the sum of magnitudes: rounding only
      CHECK(kept == z.M * (ld - z.N));
    }
  }
  std::vector<float> A(1), B(16), C(16), bws(k::fused_sgemm_b_workspace()), sc(1);
  CHECK_THROWS_WITH_AS(k::fused_sgemm(1, 16, 1, A.data(), 1, B.data(), 16, C.data(), 16,
                                      k::RowEpilogue{sc.data(), nullptr, nullptr, 0, false}, bws.data()),
                       doctest::Contains("scale and shift go together"), sieve::Error);
}

TEST_CASE("float gemm: every transpose pair, cut tiles, K blocks, alpha and beta, against float64") {
  // On AVX-512 builds these products are sgemm512's, elsewhere BLAS's. Sizes cut the 8x32
  // tiles at both edges and B^T's 16x16 transposes in k; K = 1100 takes 5 blocks of 256;
  // 40x300x300 is split across threads by gemm itself. Every matrix is a block
  // of a wider one; with beta = 0, C starts as NaN (not read), and padding columns stay as set.
  MESSAGE("sieve's AVX-512 product: ", k::sgemm512_available);
  Rng rng(37);
  struct Size { std::size_t M, N, K; };
  for (const Size z : {Size{8, 32, 16}, Size{9, 33, 17}, Size{3, 5, 1100}, Size{40, 300, 300}, Size{1, 1, 1},
                       Size{17, 70, 31}}) {
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb)
        for (const auto& [alpha, beta] : {std::pair{1.0f, 0.0f}, std::pair{1.0f, 1.0f}, std::pair{-0.5f, 0.25f}}) {
          CAPTURE(z.M); CAPTURE(z.N); CAPTURE(z.K); CAPTURE(ta); CAPTURE(tb); CAPTURE(alpha); CAPTURE(beta);
          const std::size_t ar = ta ? z.K : z.M, ac = ta ? z.M : z.K, br = tb ? z.N : z.K, bc = tb ? z.K : z.N;
          const std::size_t lda = ac + 3, ldb = bc + 5, ldc = z.N + 7;
          const auto A = cast<float>(randn(ar * lda, rng)), B = cast<float>(randn(br * ldb, rng)),
                     C0 = cast<float>(randn(z.M * ldc, rng));
          std::vector<float> C = C0;
          for (std::size_t i = 0; i < z.M; ++i)
            for (std::size_t j = 0; j < ldc; ++j)
              C[i * ldc + j] = j >= z.N ? 7.0f : beta == 0 ? std::nanf("") : C0[i * ldc + j];
          k::gemm_ld(ta ? k::Trans::yes : k::Trans::no, tb ? k::Trans::yes : k::Trans::no, z.M, z.N, z.K, alpha,
                     A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
          const double worst = product_worst_rel(
              z.M, z.N, z.K, [&](std::size_t i, std::size_t kk) { return ta ? A[kk * lda + i] : A[i * lda + kk]; },
              [&](std::size_t kk, std::size_t j) { return tb ? B[j * ldb + kk] : B[kk * ldb + j]; }, C.data(), ldc,
              [&](std::size_t i, std::size_t j, double& v, double& mag) {
                const double c0 = C0[i * ldc + j];
                v = alpha * v + beta * c0, mag = std::abs(alpha) * mag + std::abs(beta * c0);
              });
          std::size_t kept = 0;
          for (std::size_t i = 0; i < z.M; ++i)
            for (std::size_t j = z.N; j < ldc; ++j) kept += C[i * ldc + j] == 7.0f;
          CHECK(worst < 1e-5);  // relative to the sum of magnitudes: rounding only
          CHECK(kept == z.M * (ldc - z.N));
        }
  }
}

#if SIEVE_AVX512
TEST_CASE("sgemm512: the row epilogue after the last K block with A^T and with B^T") {
  // fused_sgemm's test covers the epilogue with op(A) = A, op(B) = B; here op(A) = A^T (A's
  // stored rows read in place) and op(B) = B^T (packed through transposes), K over one block
  // boundary.
  Rng rng(41);
  const std::size_t M = 11, N = 37, K = 1030, ld = N + 2;
  for (int tb = 0; tb < 2; ++tb) {
    const int ta = 1 - tb;
    CAPTURE(ta); CAPTURE(tb);
    const auto A = cast<float>(randn(M * K, rng)), B = cast<float>(randn(N * K, rng)),
               R = cast<float>(randn(M * ld, rng)), sc = cast<float>(randn(M, rng)), sh = cast<float>(randn(M, rng));
    const k::RowEpilogue e{sc.data(), sh.data(), R.data(), ld, true};
    std::vector<float> C(M * ld, std::nanf(""));
    k::sgemm512(ta, tb, M, N, K, 1.0f, A.data(), ta ? M : K, B.data(), tb ? K : N, 0.0f, C.data(), ld, &e);
    const double worst = product_worst_rel(
        M, N, K, [&](std::size_t i, std::size_t kk) { return ta ? A[kk * M + i] : A[i * K + kk]; },
        [&](std::size_t kk, std::size_t j) { return tb ? B[j * K + kk] : B[kk * N + j]; }, C.data(), ld,
        [&](std::size_t i, std::size_t j, double& v, double& mag) {
          v = v * sc[i] + sh[i] + R[i * ld + j], mag = mag * std::abs(sc[i]) + std::abs(R[i * ld + j]);
          v = v > 0 ? v : 0;
        });
    CHECK(worst < 1e-5);
  }
  std::vector<float> A(1), B(1), C(1), sc(1);
  const k::RowEpilogue half{sc.data(), nullptr, nullptr, 0, false};
  CHECK_THROWS_WITH_AS(k::sgemm512(false, false, 1, 1, 1, 1.0f, A.data(), 1, B.data(), 1, 0.0f, C.data(), 1, &half),
                       doctest::Contains("scale and shift go together"), sieve::Error);
}
#endif

TEST_CASE("batch norm: hand-computed, naive agreement, running stats as PyTorch") {
  // One channel, values {1, 3}: mean 2, biased var 1, unbiased var 2.
  std::vector<double> x{1, 3}, g{2}, b{0.5}, y(2), sm(1), si(1), rm{0}, rv{1};
  k::BatchNormDims d{2, 1, 1, 1e-5, 0.1};
  k::batch_norm_forward_train(x.data(), g.data(), b.data(), y.data(), sm.data(), si.data(), rm.data(), rv.data(), d);
  const double is = 1 / std::sqrt(1 + 1e-5);
  CHECK(y[0] == doctest::Approx(-2 * is + 0.5).epsilon(1e-14));
  CHECK(y[1] == doctest::Approx(2 * is + 0.5).epsilon(1e-14));
  CHECK(rm[0] == doctest::Approx(0.2).epsilon(1e-15));
  CHECK(rv[0] == doctest::Approx(0.9 + 0.1 * 2).epsilon(1e-15));
  // Eval uses the running statistics.
  k::batch_norm_forward_eval(x.data(), g.data(), b.data(), rm.data(), rv.data(), y.data(), sm.data(), si.data(), d);
  CHECK(y[0] == doctest::Approx((1 - 0.2) / std::sqrt(1.1 + 1e-5) * 2 + 0.5).epsilon(1e-14));

  Rng rng(3);
  const std::size_t N = 3, C = 4, HW = 5;
  const auto xs = randn(N * C * HW, rng, 2.0), gs = randn(C, rng), bs = randn(C, rng);
  std::vector<double> mean, var;
  const auto ref = sieve::test::naive_batch_norm_train(xs, gs, bs, N, C, HW, 1e-5, mean, var);
  auto xf = cast<float>(xs), gf = cast<float>(gs), bf = cast<float>(bs);
  std::vector<float> yf(xs.size()), smf(C), sif(C), rmf(C, 0.0f), rvf(C, 1.0f);
  k::batch_norm_forward_train(xf.data(), gf.data(), bf.data(), yf.data(), smf.data(), sif.data(), rmf.data(),
                              rvf.data(), {N, C, HW, 1e-5, 0.1});
  CHECK(rel_err(yf, ref, ref.size()) < 1e-6);
  for (std::size_t c = 0; c < C; ++c) {
    CHECK(rmf[c] == doctest::Approx(0.1 * mean[c]).epsilon(1e-6));
    CHECK(rvf[c] == doctest::Approx(0.9 + 0.1 * var[c] * 15.0 / 14.0).epsilon(1e-6));
  }
  std::vector<double> one{1, 1}, yy(1);
  CHECK_THROWS_WITH_AS(k::batch_norm_forward_train(one.data(), g.data(), b.data(), yy.data(), sm.data(), si.data(),
                                                   rm.data(), rv.data(), {1, 1, 1}),
                       doctest::Contains("more than 1 value per channel"), sieve::Error);
}

TEST_CASE("batch norm backward: gradient checks in train and eval mode, sentinels") {
  Rng rng(5);
  const std::size_t N = 3, C = 3, HW = 4;
  for (bool train : {true, false}) {
    CAPTURE(train);
    auto x = randn(N * C * HW, rng, 1.5), g = randn(C, rng), b = randn(C, rng);
    const auto R = randn(x.size(), rng);
    std::vector<double> rm0 = randn(C, rng, 0.3), rv0(C);
    for (auto& v : rv0) v = 0.5 + rng.uniform_double();
    std::vector<double> y(x.size()), sm(C), si(C), rm, rv;
    k::BatchNormDims d{N, C, HW};
    auto fwd = [&] {
      rm = rm0, rv = rv0;
      if (train)
        k::batch_norm_forward_train(x.data(), g.data(), b.data(), y.data(), sm.data(), si.data(), rm.data(),
                                    rv.data(), d);
      else
        k::batch_norm_forward_eval(x.data(), g.data(), b.data(), rm.data(), rv.data(), y.data(), sm.data(),
                                   si.data(), d);
      double s = 0;
      for (std::size_t i = 0; i < y.size(); ++i) s += y[i] * R[i];
      return s;
    };
    fwd();
    std::vector<double> dx(x.size(), std::numeric_limits<double>::quiet_NaN()), dg(C, 2.0), db(C, -1.0);
    k::batch_norm_backward(x.data(), R.data(), g.data(), sm.data(), si.data(), train, dx.data(), dg.data(),
                           db.data(), d);
    for (double v : dx) REQUIRE(std::isfinite(v));
    for (auto& v : dg) v -= 2.0;
    for (auto& v : db) v += 1.0;
    auto r1 = check_gradient("bn dx", x, dx, fwd, rng);
    auto r2 = check_gradient("bn dgamma", g, dg, fwd, rng);
    auto r3 = check_gradient("bn dbeta", b, db, fwd, rng);
    CHECK_MESSAGE(r1.ok(), r1.report());
    CHECK_MESSAGE(r2.ok(), r2.report());
    CHECK_MESSAGE(r3.ok(), r3.report());
    // Null outputs are skipped, the others unchanged in value.
    std::vector<double> dx2(x.size());
    k::batch_norm_backward(x.data(), R.data(), g.data(), sm.data(), si.data(), train, dx2.data(), nullptr, nullptr, d);
    CHECK(rel_err(dx2, dx, dx.size()) == 0.0);
  }
}

// dx = k*dy + e*(x - mean) + b takes the deviation first (issue 24). Folded as e*x + b', the
// float error grew with |mean|/std: dx 1.7e-7 / 3.0e-7 from the double result at a mean 30
// standard deviations from zero and 1.3e-6 / 1.7e-6 at 1000 (without / with the ReLU mask);
// taken first, 4e-8 to 7e-8 at every offset. Same inputs (x, dy and the saved statistics) in
// float and in double: only the backward's rounding differs.
TEST_CASE("batch norm backward in float: channels whose mean is far from their spread keep float accuracy") {
  Rng rng(12);
  const std::size_t N = 4, C = 3, HW = 9;
  for (const double offset : {0.0, 30.0, 1000.0}) {
    CAPTURE(offset);
    auto as_float = [](std::vector<double> v) {  // float-representable values
      for (auto& e : v) e = static_cast<float>(e);
      return v;
    };
    auto x = randn(N * C * HW, rng);
    for (auto& v : x) v += offset;
    x = as_float(x);
    const auto dy = as_float(randn(x.size(), rng)), g = as_float(randn(C, rng)), b = as_float(randn(C, rng));
    const k::BatchNormDims d{N, C, HW};
    for (const bool relu : {false, true}) {
      CAPTURE(relu);
      std::vector<float> yf(x.size()), mf(C), sf(C), rmf(C, 0.0f), rvf(C, 1.0f);
      const auto xf = cast<float>(x), dyf = cast<float>(dy), gf = cast<float>(g), bf = cast<float>(b);
      k::batch_norm_forward_train(xf.data(), gf.data(), bf.data(), yf.data(), mf.data(), sf.data(), rmf.data(),
                                  rvf.data(), d, relu);
      std::vector<float> dxf(x.size()), dgf(C, 0.0f), dbf(C, 0.0f);
      k::batch_norm_backward(xf.data(), dyf.data(), gf.data(), mf.data(), sf.data(), true, dxf.data(), dgf.data(),
                             dbf.data(), d, relu ? yf.data() : nullptr);
      const std::vector<double> md(mf.begin(), mf.end()), sd(sf.begin(), sf.end()), yd(yf.begin(), yf.end());
      std::vector<double> dxd(x.size()), dgd(C, 0.0), dbd(C, 0.0);
      k::batch_norm_backward(x.data(), dy.data(), g.data(), md.data(), sd.data(), true, dxd.data(), dgd.data(),
                             dbd.data(), d, relu ? yd.data() : nullptr);
      CHECK(rel_err(dxf, dxd, dxd.size()) <= 2e-7);
      CHECK(rel_err(dgf, dgd, C) <= 2e-7);
      CHECK(rel_err(dbf, dbd, C) <= 2e-7);
    }
  }
}

TEST_CASE("relu and max pool: hand-computed, naive, gradients") {
  std::vector<float> x{-1, 0, 2, -3}, y(4), dy{1, 2, 3, 4}, dx(4);
  k::relu_forward(x.data(), y.data(), 4);
  CHECK(y == std::vector<float>{0, 0, 2, 0});
  k::relu_backward(y.data(), dy.data(), dx.data(), 4);
  CHECK(dx == std::vector<float>{0, 0, 3, 0});

  // 4x4 plane, 3x3/2 pad 1 -> 2x2.
  std::vector<double> p{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 15}, py(4), pdx(16, 7.0);
  std::vector<std::int32_t> am(4);
  const k::Conv2dGeom g{3, 3, 2, 2, 1, 1};
  k::max_pool2d_forward(p.data(), 1, 4, 4, g, py.data(), am.data());
  CHECK(py == std::vector<double>{6, 8, 14, 16});
  CHECK(am == std::vector<std::int32_t>{5, 7, 13, 14});
  std::vector<double> pdy{1, 2, 3, 4};
  k::max_pool2d_backward(pdy.data(), am.data(), 1, 4, 4, 2, 2, pdx.data());
  CHECK(pdx[5] == 1);
  CHECK(pdx[14] == 4);
  CHECK(pdx[0] == 0);  // sentinel 7 overwritten

  Rng rng(9);
  const std::size_t NC = 6, H = 7, W = 6;
  auto xs = randn(NC * H * W, rng);
  const auto ref = sieve::test::naive_max_pool(xs, NC, H, W, 3, 2, 1);
  std::vector<double> ys(ref.size());
  std::vector<std::int32_t> ams(ref.size());
  k::max_pool2d_forward(xs.data(), NC, H, W, g, ys.data(), ams.data());
  CHECK(rel_err(ys, ref, ref.size()) == 0.0);
  // Distinct random values are away from ties, so the max is differentiable there.
  const auto R = randn(ys.size(), rng);
  auto loss = [&] {
    k::max_pool2d_forward(xs.data(), NC, H, W, g, ys.data(), ams.data());
    double s = 0;
    for (std::size_t i = 0; i < ys.size(); ++i) s += ys[i] * R[i];
    return s;
  };
  loss();
  std::vector<double> dxs(xs.size());
  k::max_pool2d_backward(R.data(), ams.data(), NC, H, W, 4, 3, dxs.data());
  auto r = check_gradient("maxpool dx", xs, dxs, loss, rng);
  CHECK_MESSAGE(r.ok(), r.report());
  CHECK_THROWS_AS(k::max_pool2d_forward(xs.data(), NC, H, W, k::Conv2dGeom{3, 3, 2, 2, 2, 2}, ys.data(), ams.data()),
                  sieve::Error);
}

TEST_CASE("global average pool and linear: hand-computed, naive, gradients") {
  std::vector<double> x{1, 2, 3, 6, 0, 0, 0, 4}, y(2), dx(8);
  k::global_avg_pool_forward(x.data(), 1, 2, 4, y.data());
  CHECK(y == std::vector<double>{3, 1});
  std::vector<double> dy{4, 8};
  k::global_avg_pool_backward(dy.data(), 1, 2, 4, dx.data());
  CHECK(dx == std::vector<double>{1, 1, 1, 1, 2, 2, 2, 2});

  std::vector<double> lx{1, 2}, lw{1, 0, 0, 1, 1, 1}, lb{0.5, 0, -1}, ly(3);
  k::linear_forward(lx.data(), lw.data(), lb.data(), ly.data(), 1, 2, 3);
  CHECK(ly == std::vector<double>{1.5, 2, 2});

  Rng rng(13);
  const std::size_t N = 4, In = 5, Out = 3;
  auto xs = randn(N * In, rng), ws = randn(Out * In, rng), bs = randn(Out, rng);
  const auto ref = sieve::test::naive_linear(xs, ws, bs, N, In, Out);
  auto xf = cast<float>(xs), wf = cast<float>(ws), bf = cast<float>(bs);
  std::vector<float> yf(N * Out);
  k::linear_forward(xf.data(), wf.data(), bf.data(), yf.data(), N, In, Out);
  CHECK(rel_err(yf, ref, ref.size()) < 1e-6);
  const auto R = randn(N * Out, rng);
  std::vector<double> ys(N * Out);
  auto loss = [&] {
    k::linear_forward(xs.data(), ws.data(), bs.data(), ys.data(), N, In, Out);
    double s = 0;
    for (std::size_t i = 0; i < ys.size(); ++i) s += ys[i] * R[i];
    return s;
  };
  std::vector<double> dxs(xs.size(), std::numeric_limits<double>::quiet_NaN()), dws(ws.size(), 1.0), dbs(Out, 1.0);
  k::linear_backward_input(R.data(), ws.data(), dxs.data(), N, In, Out);
  k::linear_backward_params(xs.data(), R.data(), dws.data(), dbs.data(), N, In, Out);
  for (auto& v : dws) v -= 1.0;
  for (auto& v : dbs) v -= 1.0;
  auto r1 = check_gradient("linear dx", xs, dxs, loss, rng);
  auto r2 = check_gradient("linear dw", ws, dws, loss, rng);
  auto r3 = check_gradient("linear db", bs, dbs, loss, rng);
  CHECK_MESSAGE(r1.ok(), r1.report());
  CHECK_MESSAGE(r2.ok(), r2.report());
  CHECK_MESSAGE(r3.ok(), r3.report());
}

TEST_CASE("dropout: counter-based mask, scale, keep rate, backward uses the same mask") {
  const std::size_t n = 20000;
  std::vector<float> x(n, 1.0f), y(n), y2(n), dx(n);
  const auto seed = sieve::derive_seed(42, sieve::RngPurpose::dropout);
  k::dropout_forward(x.data(), y.data(), n, 0.25, seed, 3);
  std::size_t kept = 0;
  for (std::size_t i = 0; i < n; ++i) {
    REQUIRE((y[i] == 0.0f || y[i] == doctest::Approx(1.0f / 0.75f)));
    kept += y[i] != 0.0f;
    // element i of step 3 is word i of stream (seed, 3): independent of everything else
    CHECK((y[i] != 0.0f) == k::dropout_keep(Rng::word_at(seed, 3, i), 0.25));
  }
  CHECK(std::abs(static_cast<double>(kept) / n - 0.75) < 0.02);
  k::dropout_forward(x.data(), y2.data(), n, 0.25, seed, 4);
  CHECK(y2 != y);  // a new step, a new mask
  k::dropout_backward(x.data(), dx.data(), n, 0.25, seed, 3);
  CHECK(dx == y);
  k::dropout_forward(x.data(), y2.data(), n, 0.0, seed, 3);
  CHECK(y2 == x);
  CHECK_THROWS_AS(k::dropout_forward(x.data(), y2.data(), n, 1.0, seed, 3), sieve::Error);
}

TEST_CASE("conv2d batch-folded layouts: NCHW->CNHW and CNHW->CNHW give the NCHW results in CNHW order") {
  // Every path (direct, grouped, strided, Winograd, the folded 1x1 product) on 1 and 2 threads,
  // with the full epilogue; double, so a misplaced element cannot hide in rounding.
  const int saved = sieve::threads();
  Rng rng(31);
  std::vector<ConvCase> cases(std::begin(conv_cases), std::end(conv_cases));
  cases.push_back({3, 64, 8, 8, 64, 3, 3, 1, 1, 1, 1, 0});     // Winograd (automatic)
  cases.push_back({6, 128, 4, 4, 256, 1, 1, 1, 1, 0, 0, 0});   // folded 1x1, split across threads
  cases.push_back({4, 64, 16, 16, 64, 1, 1, 1, 1, 0, 0, 0});   // NCHW takes it per sample
  cases.push_back({4, 64, 9, 9, 128, 1, 1, 2, 2, 0, 0, 0});    // downsample, grouped
  cases.push_back({8, 256, 1, 1, 256, 3, 3, 1, 1, 1, 1, 0});   // centre tap only, 2 parts
  cases.push_back({8, 128, 2, 2, 256, 3, 3, 2, 2, 1, 1, 0});   // 4 live taps, 2 parts
  for (int threads : {1, 2}) {
    sieve::set_threads(threads);
    for (const auto& c : cases) {
      CAPTURE(threads); CAPTURE(c.N); CAPTURE(c.C); CAPTURE(c.H); CAPTURE(c.K); CAPTURE(c.KH); CAPTURE(c.SH); CAPTURE(c.group);
      const k::Conv2dDims d = dims_of(c);
      const std::size_t HW = c.H * c.W, P = d.OH() * d.OW();
      const auto x = randn(c.N * c.C * HW, rng), w = randn(c.K * c.C * c.KH * c.KW, rng, 0.2);
      const auto dy = randn(c.N * c.K * P, rng), res = randn(c.N * c.K * P, rng);
      const auto scale = randn(c.K, rng), shift = randn(c.K, rng);
      // The NCHW results.
      std::vector<double> ws(k::conv2d_workspace_size(d));
      std::vector<double> y(dy.size()), dx(x.size()), dw(w.size(), 0.5);
      k::conv2d_forward(x.data(), w.data(), y.data(), d, ws.data(), ws.size(), {scale.data(), shift.data(), res.data(), true});
      k::conv2d_backward_input(dy.data(), w.data(), dx.data(), d, ws.data(), ws.size());
      k::conv2d_backward_weight(x.data(), dy.data(), dw.data(), d, ws.data(), ws.size());
      const auto y_cn = to_cnhw(y, c.N, c.K, P), dy_cn = to_cnhw(dy, c.N, c.K, P), res_cn = to_cnhw(res, c.N, c.K, P);
      for (k::Layout in : {k::Layout::nchw, k::Layout::cnhw}) {
        CAPTURE(k::layout_name(in));
        k::Conv2dDims e = d;
        e.in = in, e.out = k::Layout::cnhw;
        const auto xe = in == k::Layout::cnhw ? to_cnhw(x, c.N, c.C, HW) : x;
        const auto dx_want = in == k::Layout::cnhw ? to_cnhw(dx, c.N, c.C, HW) : dx;
        std::vector<double> wse(k::conv2d_workspace_size(e));
        std::vector<double> ye(y.size(), std::nan("")), dxe(x.size(), std::nan("")), dwe(w.size(), 0.5);
        k::conv2d_forward(xe.data(), w.data(), ye.data(), e, wse.data(), wse.size(),
                          {scale.data(), shift.data(), res_cn.data(), true});
        k::conv2d_backward_input(dy_cn.data(), w.data(), dxe.data(), e, wse.data(), wse.size());
        k::conv2d_backward_weight(xe.data(), dy_cn.data(), dwe.data(), e, wse.data(), wse.size());
        CHECK(rel_err(ye, y_cn, y_cn.size()) < 1e-13);
        CHECK(rel_err(dxe, dx_want, dx_want.size()) < 1e-13);
        CHECK(rel_err(dwe, dw, dw.size()) < 1e-13);
        CHECK(k::conv2d_uses_winograd(e) == (k::conv2d_uses_winograd(d) && in == k::Layout::cnhw));
      }
    }
  }
  sieve::set_threads(saved);
  // A CNHW input with an NCHW output is refused by name.
  k::Conv2dDims bad{1, 2, 3, 3, 2, {1, 1, 1, 1, 0, 0}};
  bad.in = k::Layout::cnhw;
  std::vector<float> buf(64);
  CHECK_THROWS_WITH_AS(k::conv2d_forward(buf.data(), buf.data(), buf.data(), bad, buf.data(), buf.size()),
                       doctest::Contains("CNHW input needs a CNHW output"), sieve::Error);
}

namespace {
// Batch norm forward (train or eval) and backward in NCHW and CNHW on the same data: the CNHW
// runs (one per channel, N*HW long) take whole vector blocks of the float path, the NCHW runs
// of HW = 7 none (every value the scalar loop's), so for float this also checks that the
// vector blocks give the scalar loop's bits; with the ReLU fused and without.
template <class T>
void batch_norm_layouts_agree(std::size_t N, std::size_t C, std::size_t HW) {
  Rng rng(32);
  const auto x = cast<T>(randn(N * C * HW, rng, 1.5)), g = cast<T>(randn(C, rng)), b = cast<T>(randn(C, rng)),
             dy = cast<T>(randn(N * C * HW, rng));
  for (bool train : {true, false})
    for (bool relu : {true, false}) {
      CAPTURE(train);
      CAPTURE(relu);
      std::vector<T> y[2], dx[2], dg[2], db[2], sm[2], si[2], rm[2], rv[2];
      for (int l = 0; l < 2; ++l) {
        const k::Layout lay = l ? k::Layout::cnhw : k::Layout::nchw;
        const k::BatchNormDims d{N, C, HW, 1e-5, 0.1, lay};
        const auto xl = l ? to_cnhw(x, N, C, HW) : x, dyl = l ? to_cnhw(dy, N, C, HW) : dy;
        y[l].assign(x.size(), 0), dx[l].assign(x.size(), 0), dg[l].assign(C, 0), db[l].assign(C, 0);
        sm[l].assign(C, 0), si[l].assign(C, 0), rm[l].assign(C, T(0.1)), rv[l].assign(C, T(0.9));
        if (train)
          k::batch_norm_forward_train(xl.data(), g.data(), b.data(), y[l].data(), sm[l].data(), si[l].data(),
                                      rm[l].data(), rv[l].data(), d, relu);
        else
          k::batch_norm_forward_eval(xl.data(), g.data(), b.data(), rm[l].data(), rv[l].data(), y[l].data(),
                                     sm[l].data(), si[l].data(), d, relu);
        k::batch_norm_backward(xl.data(), dyl.data(), g.data(), sm[l].data(), si[l].data(), train, dx[l].data(),
                               dg[l].data(), db[l].data(), d, relu ? y[l].data() : nullptr);
      }
      CHECK(to_cnhw(y[0], N, C, HW) == y[1]);
      CHECK(to_cnhw(dx[0], N, C, HW) == dx[1]);
      CHECK(dg[0] == dg[1]);
      CHECK(db[0] == db[1]);
      CHECK(rm[0] == rm[1]);
      CHECK(rv[0] == rv[1]);
    }
}
}  // namespace

TEST_CASE("batch norm and global average pool in CNHW equal NCHW in CNHW order, bit for bit") {
  batch_norm_layouts_agree<double>(3, 5, 7);
  batch_norm_layouts_agree<float>(3, 5, 7);
  batch_norm_layouts_agree<float>(9, 3, 7);  // 63 values a channel: 7 blocks and a tail
  Rng rng(33);
  const std::size_t N = 3, C = 5, HW = 7;
  const auto x = randn(N * C * HW, rng, 1.5);
  std::vector<double> p0(N * C), p1(N * C), g0(x.size()), g1(x.size());
  const auto xc = to_cnhw(x, N, C, HW);
  k::global_avg_pool_forward(x.data(), N, C, HW, p0.data());
  k::global_avg_pool_forward(xc.data(), N, C, HW, p1.data(), k::Layout::cnhw);
  CHECK(p0 == p1);  // [N, C] either way
  k::global_avg_pool_backward(p0.data(), N, C, HW, g0.data());
  k::global_avg_pool_backward(p0.data(), N, C, HW, g1.data(), k::Layout::cnhw);
  CHECK(to_cnhw(g0, N, C, HW) == g1);
}

TEST_CASE("global max pool: first maximum, NaN wins, gradient to the argmax, CNHW equals NCHW") {
  // Planes: a tie (first kept), a NaN after the maximum, a maximum at the end.
  std::vector<double> x{1, 5, 5, 2, 3, 7, std::nan(""), 0, -4, -3, -2, -1}, y(3), dx(12);
  std::vector<std::int32_t> am(3);
  k::global_max_pool_forward(x.data(), 1, 3, 4, y.data(), am.data());
  CHECK(y[0] == 5);
  CHECK(am[0] == 1);
  CHECK(std::isnan(y[1]));
  CHECK(am[1] == 2);
  CHECK(y[2] == -1);
  CHECK(am[2] == 3);
  std::vector<double> dy{2, 3, 4};
  std::fill(dx.begin(), dx.end(), 9.0);  // assigned, not accumulated
  k::global_max_pool_backward(dy.data(), am.data(), 1, 3, 4, dx.data());
  CHECK(dx == std::vector<double>{0, 2, 0, 0, 0, 0, 3, 0, 0, 0, 0, 4});

  Rng rng(35);
  const std::size_t N = 3, C = 5, HW = 7;
  const auto xs = randn(N * C * HW, rng, 1.5);
  const auto xc = to_cnhw(xs, N, C, HW);
  std::vector<double> p0(N * C), p1(N * C), g0(xs.size()), g1(xs.size());
  std::vector<std::int32_t> a0(N * C), a1(N * C);
  k::global_max_pool_forward(xs.data(), N, C, HW, p0.data(), a0.data());
  k::global_max_pool_forward(xc.data(), N, C, HW, p1.data(), a1.data(), k::Layout::cnhw);
  CHECK(p0 == p1);  // [N, C] either way
  CHECK(a0 == a1);
  for (std::size_t i = 0; i < N * C; ++i)
    CHECK(p0[i] == *std::max_element(xs.begin() + static_cast<std::ptrdiff_t>(i * HW),
                                     xs.begin() + static_cast<std::ptrdiff_t>((i + 1) * HW)));
  k::global_max_pool_backward(p0.data(), a0.data(), N, C, HW, g0.data());
  k::global_max_pool_backward(p0.data(), a1.data(), N, C, HW, g1.data(), k::Layout::cnhw);
  CHECK(to_cnhw(g0, N, C, HW) == g1);
}

TEST_CASE("batch norm channel sums: the float vector blocks give the scalar loop's double accumulators") {
  // bn_sums over a run from lane 0 takes whole blocks of 8 (AVX2 builds); value by value (count 1,
  // k0 = p) it takes the scalar loop. The accumulators must agree bit for bit before any
  // rounding to float hides a difference.
  namespace kd = k::detail;
  Rng rng(34);
  const std::size_t n = 61;
  const auto x = cast<float>(randn(n, rng, 3.0)), dy = cast<float>(randn(n, rng));
  auto y = cast<float>(randn(n, rng));
  y[5] = std::numeric_limits<float>::quiet_NaN(), y[6] = 0.0f, y[7] = -0.0f;
  const double m = 0.3;
  auto both = [&](auto op_tag, const float* relu_y) {
    constexpr kd::BnSum op = decltype(op_tag)::value;
    double a[kd::kBnLanes] = {}, b[kd::kBnLanes] = {}, a1[kd::kBnLanes] = {}, b1[kd::kBnLanes] = {};
    kd::bn_sums<op, float>(x.data(), dy.data(), relu_y, m, n, 0, a, b);
    for (std::size_t p = 0; p < n; ++p)
      kd::bn_sums<op, float>(x.data() + p, dy.data() + p, relu_y ? relu_y + p : nullptr, m, 1, p, a1, b1);
    for (std::size_t j = 0; j < kd::kBnLanes; ++j) {
      CHECK(a[j] == a1[j]);
      CHECK(b[j] == b1[j]);
    }
    CHECK((a[0] != 0.0 || b[0] != 0.0));
  };
  both(std::integral_constant<kd::BnSum, kd::BnSum::sum_x>{}, nullptr);
  both(std::integral_constant<kd::BnSum, kd::BnSum::sum_sq>{}, nullptr);
  both(std::integral_constant<kd::BnSum, kd::BnSum::sum_grad>{}, nullptr);
  both(std::integral_constant<kd::BnSum, kd::BnSum::sum_grad>{}, y.data());
}

TEST_CASE("max pool: ties and NaN pick the first maximum in scan order, every geometry") {
  // Values from {0, 1, 2} (ties everywhere, as after a ReLU) and some NaNs; the argmax must be
  // the first maximum in row-major window order, a NaN the first NaN: what a scalar scan gives.
  Rng rng(41);
  std::size_t nan_windows = 0, tied = 0;
  for (const k::Conv2dGeom g : {k::Conv2dGeom{3, 3, 2, 2, 1, 1}, k::Conv2dGeom{2, 2, 2, 2, 0, 0},
                                k::Conv2dGeom{3, 3, 1, 1, 1, 1}, k::Conv2dGeom{5, 5, 3, 2, 2, 2},
                                k::Conv2dGeom{3, 2, 1, 3, 0, 1}}) {
    for (const std::size_t H : {5u, 8u, 13u, 21u}) {  // W = H + 3: 2x2/2 rows of 4, 5, 8 and 12 outputs
      const std::size_t W = H + 3, NC = 3;
      CAPTURE(g.kh); CAPTURE(g.kw); CAPTURE(g.sh); CAPTURE(g.sw); CAPTURE(g.ph); CAPTURE(H);
      std::vector<float> x(NC * H * W);
      for (auto& v : x) v = rng.uniform() < 0.03 ? std::numeric_limits<float>::quiet_NaN()
                                                  : static_cast<float>(static_cast<int>(rng.uniform() * 3));
      const std::size_t OH = k::pool_out(H, g.kh, g.sh, g.ph), OW = k::pool_out(W, g.kw, g.sw, g.pw);
      std::vector<float> y(NC * OH * OW);
      std::vector<std::int32_t> am(y.size());
      k::max_pool2d_forward(x.data(), NC, H, W, g, y.data(), am.data());
      for (std::size_t nc = 0; nc < NC; ++nc)
        for (std::size_t oh = 0; oh < OH; ++oh)
          for (std::size_t ow = 0; ow < OW; ++ow) {
            std::int64_t at = -1;
            float best = 0;
            std::size_t count = 0;
            for (std::size_t i = 0; i < g.kh; ++i)
              for (std::size_t j = 0; j < g.kw; ++j) {
                const auto ih = static_cast<std::int64_t>(oh * g.sh + i) - static_cast<std::int64_t>(g.ph);
                const auto iw = static_cast<std::int64_t>(ow * g.sw + j) - static_cast<std::int64_t>(g.pw);
                if (ih < 0 || iw < 0 || ih >= static_cast<std::int64_t>(H) || iw >= static_cast<std::int64_t>(W)) continue;
                const float v = x[nc * H * W + ih * W + iw];
                const bool nan_best = at >= 0 && best != best;
                if (!nan_best && (at < 0 || v > best || v != v)) at = ih * static_cast<std::int64_t>(W) + iw, best = v;
                if (v == best) ++count;
              }
            const std::size_t o = (nc * OH + oh) * OW + ow;
            if (best != best) {
              ++nan_windows;
              CHECK(y[o] != y[o]);
            } else {
              CHECK(y[o] == best);
              tied += count > 1;
            }
            CHECK(am[o] == at);
          }
      // Values only (inference, no argmax): the same outputs bit for bit.
      std::vector<float> y_values(y.size());
      k::max_pool2d_forward(x.data(), NC, H, W, g, y_values.data(), static_cast<std::int32_t*>(nullptr));
      CHECK(std::memcmp(y_values.data(), y.data(), y.size() * sizeof(float)) == 0);
    }
  }
  CHECK(nan_windows > 20);  // the cases the test is about did occur
  CHECK(tied > 200);
}
