// Augmentation stages: torchvision parity fixtures (tools/gen_image_fixtures.py), pipelines,
// randomness keyed by the per-sample Rng.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "sieve/augment/augment.hpp"
#include "sieve/core/pipeline.hpp"

namespace fs = std::filesystem;
using sieve::Image;
using sieve::Rng;
using sieve::Tensor3f;
using namespace sieve::augment;

namespace {
const fs::path fixtures = fs::path(SIEVE_TEST_DATA) / "images";

nlohmann::json manifest() {
  std::ifstream in(fixtures / "fixtures.json");
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

Image load(const std::string& name) { return sieve::io::read_image(fixtures / name); }

std::vector<float> load_f32(const std::string& name) {
  std::ifstream in(fixtures / name, std::ios::binary);
  REQUIRE(in.good());
  std::vector<char> raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<float> out(raw.size() / 4);
  std::memcpy(out.data(), raw.data(), out.size() * 4);
  return out;
}

// Fraction of bytes equal to the reference (catches systematic rounding errors that a
// +-1 tolerance alone would let through).
double exact_fraction(const Image& a, const Image& b) {
  std::size_t same = 0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) same += a.pixels[i] == b.pixels[i];
  return double(same) / double(std::max<std::size_t>(a.size(), 1));
}

int max_abs_diff(const Image& a, const Image& b) {
  REQUIRE(a.height == b.height);
  REQUIRE(a.width == b.width);
  int worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(int(a.pixels[i]) - int(b.pixels[i])));
  return worst;
}

Image ramp(std::size_t h, std::size_t w) {
  Image img(h, w);
  for (std::size_t y = 0; y < h; ++y)
    for (std::size_t x = 0; x < w; ++x)
      for (std::size_t c = 0; c < 3; ++c) img.at(y, x, c) = static_cast<std::uint8_t>((x * 7 + y * 3 + c * 50) % 256);
  return img;
}
}  // namespace

TEST_CASE("augment: torchvision parity on every fixture") {
  const auto m = manifest();
  std::set<std::string> ops_seen;
  std::size_t n = 0;
  double worst_exact = 1.0;
  for (const auto& c : m["cases"]) {
    const std::string op = c["op"];
    const std::string input = c["input"];
    CAPTURE(op);
    CAPTURE(input);
    CAPTURE(c["expected"].get<std::string>());
    const Image x = load(input);
    if (op == "decode") continue;  // test_decode.cpp
    ops_seen.insert(op);
    ++n;
    if (op == "resize") {
      const bool aa = c["antialias"];
      Image y;
      if (c["size"].is_array()) {
        Resize r({c["size"][0].get<std::size_t>(), c["size"][1].get<std::size_t>()}, aa);
        y = r.forward(x);
      } else {
        Resize r(c["size"].get<std::size_t>(), aa);
        y = r.forward(x);
      }
      const Image want = load(c["expected"]);
      CHECK(max_abs_diff(y, want) <= 1);  // within 1/255 per pixel
      const double exact = exact_fraction(y, want);
      worst_exact = std::min(worst_exact, exact);
      CHECK(exact >= 0.99);
    } else if (op == "center_crop") {
      CenterCrop cc({c["size"][0].get<std::size_t>(), c["size"][1].get<std::size_t>()});
      CHECK(cc.forward(x) == load(c["expected"]));
    } else if (op == "hflip") {
      Image y;
      hflip_image(x, y);
      CHECK(y == load(c["expected"]));
    } else if (op == "grayscale3") {
      Grayscale3 g;
      CHECK(g.forward(x) == load(c["expected"]));
    } else if (op == "brightness" || op == "contrast" || op == "saturation") {
      Image y = x;
      const double f = c["factor"];
      if (op == "brightness") adjust_brightness(y, f);
      if (op == "contrast") adjust_contrast(y, f);
      if (op == "saturation") adjust_saturation(y, f);
      const Image want = load(c["expected"]);
      CHECK(max_abs_diff(y, want) <= 1);
      CHECK(exact_fraction(y, want) >= 0.97);
    } else if (op == "to_tensor" || op == "normalize") {
      ToTensor t;
      Tensor3f v = t.forward(x);
      if (op == "normalize") {
        Normalize nz({c["mean"][0].get<float>(), c["mean"][1].get<float>(), c["mean"][2].get<float>()},
                     {c["std"][0].get<float>(), c["std"][1].get<float>(), c["std"][2].get<float>()});
        v = nz.forward(v);
      }
      const auto want = load_f32(c["expected"]);
      REQUIRE(want.size() == v.size());
      CHECK(v.shape()[0] == 3);
      CHECK(v.shape()[1] == c["shape"][1].get<std::size_t>());
      float worst = 0;
      for (std::size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::abs(want[i] - v.data()[i]));
      CHECK(worst <= 1e-6f);
    } else {
      FAIL("unknown fixture op " << op);
    }
  }
  CHECK(n >= 40);
  CHECK(ops_seen.size() == 9);
  MESSAGE("resize parity: worst fixture has ", worst_exact * 100, "% of bytes bit-exact (rest within 1)");
}

TEST_CASE("resize: exact values on a hand-checked case") {
  // 1x4 -> 1x2 plain bilinear: src = (o+0.5)*2-0.5 = 0.5, 2.5 -> averages of neighbours.
  Image x(1, 4);
  const std::uint8_t v[4] = {0, 100, 200, 250};
  for (std::size_t i = 0; i < 4; ++i)
    for (std::size_t c = 0; c < 3; ++c) x.at(0, i, c) = v[i];
  Resize plain(std::array<std::size_t, 2>{1, 2}, false);
  const Image& y = plain.forward(x);
  CHECK(y.at(0, 0, 0) == 50);
  CHECK(y.at(0, 1, 0) == 225);
  // Antialiased (scale 2, support 2): output 0 centred at 1.0 reads inputs 0..2 with triangle
  // weights (0.75, 0.75, 0.25)/1.75 -> 71.4; output 1 reads 1..3 with (0.25, 0.75, 0.75)/1.75 -> 207.1.
  Resize aa(std::array<std::size_t, 2>{1, 2}, true);
  const Image& z = aa.forward(x);
  CHECK(z.at(0, 0, 0) == 71);
  CHECK(z.at(0, 1, 0) == 207);
  // Same size: identity.
  Resize same(std::array<std::size_t, 2>{1, 4}, true);
  CHECK(same.forward(x) == x);
  CHECK_THROWS_AS(Resize(std::array<std::size_t, 2>{0, 3}), sieve::Error);
}

TEST_CASE("center crop: torchvision rounding and padding") {
  CHECK(center_crop_origin(37, 20) == 8);   // round(8.5) = 8 (half to even)
  CHECK(center_crop_origin(53, 24) == 14);  // round(14.5) = 14
  CHECK(center_crop_origin(9, 4) == 2);     // round(2.5) = 2
  CHECK(center_crop_origin(7, 2) == 2);     // round(2.5) = 2
  CHECK(center_crop_origin(11, 4) == 4);    // round(3.5) = 4
  CHECK(center_crop_origin(7, 10) == -1);   // pad (10-7)//2 = 1 before
}

TEST_CASE("random resized crop: windows respect scale and ratio, fall back centrally") {
  Rng rng(42);
  std::size_t fits = 0;
  for (int t = 0; t < 200; ++t) {
    const auto b = random_resized_crop_box(300, 400, {0.08, 1.0}, {3.0 / 4.0, 4.0 / 3.0}, rng);
    REQUIRE(b.top + b.height <= 300);
    REQUIRE(b.left + b.width <= 400);
    const double area = double(b.height * b.width) / (300.0 * 400.0);
    const double ratio = double(b.width) / double(b.height);
    fits += area >= 0.07 && area <= 1.01 && ratio > 0.7 && ratio < 1.4;
  }
  CHECK(fits >= 195);
  // Impossible request (scale > 1 never fits): fallback = whole image clamped to the ratio range.
  const auto f = random_resized_crop_box(100, 400, {2.0, 3.0}, {0.5, 2.0}, rng);
  CHECK(f == CropBox{0, 100, 100, 200});
  const auto g = random_resized_crop_box(100, 150, {2.0, 3.0}, {0.5, 2.0}, rng);
  CHECK(g == CropBox{0, 0, 100, 150});
  RandomResizedCrop rrc(32);
  Rng r2(7);
  const Image& out = rrc.forward(ramp(50, 70), r2);
  CHECK(out.height == 32);
  CHECK(out.width == 32);
}

TEST_CASE("random crop: padding is zero, windows are uniform and deterministic") {
  const Image x = ramp(8, 8);
  RandomCrop rc(8, 2);
  std::set<std::pair<int, int>> seen;
  bool saw_zero_border = false;
  for (std::uint64_t i = 0; i < 400; ++i) {
    Rng rng = Rng::for_sample(9, 0, i);
    const Image& y = rc.forward(x, rng);
    REQUIRE(y.height == 8);
    // find the offset: pixel (2,2) of the padded image is x(0,0)
    saw_zero_border = saw_zero_border || (y.at(0, 0, 2) == 0 && y.at(7, 7, 2) != 0);
    Rng again = Rng::for_sample(9, 0, i);
    const auto i0 = again.below(5), j0 = again.below(5);
    seen.insert({int(i0), int(j0)});
    const Image copy = y;
    Rng rng2 = Rng::for_sample(9, 0, i);
    CHECK(rc.forward(x, rng2) == copy);
    Image want;
    crop_image(x, std::ptrdiff_t(i0) - 2, std::ptrdiff_t(j0) - 2, 8, 8, want);
    CHECK(copy == want);
  }
  CHECK(seen.size() == 25);
  CHECK(saw_zero_border);
  RandomCrop small(10, 0, true);
  Rng rng(1);
  CHECK(small.forward(x, rng).height == 10);
  RandomCrop too_big(10);
  CHECK_THROWS_AS(too_big.forward(x, rng), sieve::Error);
}

TEST_CASE("RandomCrop::fixed translates by (padding - top, padding - left) with zero fill and draws nothing") {
  const Image x = ramp(6, 9);
  for (const auto& [dy, dx] : {std::pair{1, 1}, std::pair{-1, -1}, std::pair{2, -1}, std::pair{0, 0}}) {
    const std::size_t p = 2;
    RandomCrop rc = RandomCrop::fixed(6, p, p - dy, p - dx);  // a 6x6 window of a 6x9 image
    Rng rng(7);
    const Rng before = rng;
    const Image& y = rc.forward(x, rng);
    CHECK(rng.next_u64() == Rng(before).next_u64());  // the Rng was not drawn from
    REQUIRE(y.height == 6);
    REQUIRE(y.width == 6);
    for (std::size_t r = 0; r < 6; ++r)
      for (std::size_t c = 0; c < 6; ++c)
        for (std::size_t ch = 0; ch < 3; ++ch) {
          const long sr = long(r) - dy, sc = long(c) - dx;  // content moved down by dy, right by dx
          const bool inside = sr >= 0 && sr < 6 && sc >= 0 && sc < 9;
          CHECK(y.at(r, c, ch) == (inside ? x.at(std::size_t(sr), std::size_t(sc), ch) : 0));
        }
  }
  CHECK_THROWS_AS(RandomCrop::fixed(6, 1, 3, 0), sieve::Error);  // origin past 2 * padding
  RandomCrop wide = RandomCrop::fixed(10, 1, 2, 2);                // window past the padded 8x11 image
  Rng rng(1);
  CHECK_THROWS_AS(wide.forward(x, rng), sieve::Error);
}

TEST_CASE("test-time views: the modes, their weights and padding") {
  CHECK(tta_views("none").size() == 1);
  const auto flip = tta_views("flip");
  REQUIRE(flip.size() == 2);
  CHECK((!flip[0].mirrored && flip[1].mirrored));
  const auto six = tta_views("flip-translate");
  REQUIRE(six.size() == 6);
  for (const auto& mode : tta_modes) {
    double sum = 0.0;
    for (const auto& v : tta_views(mode)) sum += v.weight;
    CHECK(sum == doctest::Approx(1.0));
  }
  // flip-translate: each translation comes with its mirror, at equal weight; the untranslated
  // pair holds half the weight; the translations are opposite, so the views average to no shift.
  int sy = 0, sx = 0;
  for (std::size_t i = 0; i < six.size(); i += 2) {
    CHECK((six[i].dy == six[i + 1].dy && six[i].dx == six[i + 1].dx));
    CHECK((!six[i].mirrored && six[i + 1].mirrored));
    CHECK(six[i].weight == six[i + 1].weight);
    sy += six[i].dy;
    sx += six[i].dx;
  }
  CHECK((sy == 0 && sx == 0));
  CHECK(six[0].weight + six[1].weight == doctest::Approx(0.5));
  CHECK(tta_padding(six[0]) == 0);
  CHECK(tta_padding(six[4]) == 1);
  CHECK(tta_padding(TtaView{-3, 2, false, 1.0}) == 3);
  CHECK_THROWS_AS(tta_views("flip-shift"), sieve::Error);
}

TEST_CASE("flip and colour jitter draw from the per-sample Rng only") {
  const Image x = ramp(6, 9);
  RandomHorizontalFlip flip(0.5);
  int flips = 0;
  for (std::uint64_t i = 0; i < 1000; ++i) {
    Rng rng = Rng::for_sample(3, 1, i);
    const Image& y = flip.forward(x, rng);
    if (flip.last_flipped()) {
      ++flips;
      CHECK(y.at(2, 0, 1) == x.at(2, 8, 1));
    } else {
      CHECK(y == x);
    }
  }
  CHECK(flips > 430);
  CHECK(flips < 570);
  ColorJitter cj(0.4, 0.4, 0.4);
  Rng a = Rng::for_sample(5, 0, 17), b = Rng::for_sample(5, 0, 17), c = Rng::for_sample(5, 0, 18);
  const Image ya = cj.forward(x, a);
  CHECK(cj.forward(x, b) == ya);
  CHECK(!(cj.forward(x, c) == ya));
  ColorJitter none(0, 0, 0);
  Rng d(1);
  CHECK(none.forward(x, d) == x);
}

TEST_CASE("pipelines: train and eval chains compose and link-check") {
  static_assert(sieve::Chainable<DecodeRgb, Resize>);
  static_assert(sieve::Chainable<CenterCrop, ToTensor>);
  static_assert(sieve::Chainable<ToTensor, Normalize>);
  static_assert(!sieve::Chainable<Normalize, ToTensor>);
  static_assert(!sieve::Chainable<DecodeRgb, Normalize>);
  static_assert(sieve::RandomForward<RandomResizedCrop>);
  static_assert(sieve::PlainForward<CenterCrop>);

  const Image img = ramp(40, 60);
  ImageSource src{"ramp", {}, sieve::io::encode_png(img)};
  auto eval = DecodeRgb{} | Resize{36} | CenterCrop{32} | ToTensor{} | Normalize{};
  const Tensor3f& t = eval.forward(src);
  CHECK(t.shape()[0] == 3);
  CHECK(t.shape()[1] == 32);
  CHECK(t.shape()[2] == 32);
  auto train = DecodeRgb{} | RandomResizedCrop{24} | RandomHorizontalFlip{} | ColorJitter{0.2, 0.2, 0.2} |
               ToTensor{} | Normalize{};
  Rng r1 = Rng::for_sample(11, 2, 5), r2 = Rng::for_sample(11, 2, 5);
  const Tensor3f a = train.forward(src, r1);
  CHECK(train.forward(src, r2) == a);
  CHECK(a.shape()[1] == 24);

  ImageSource missing{"sample-7", "/nonexistent/x.jpg", {}};
  CHECK_THROWS_WITH_AS(eval.forward(missing), doctest::Contains("sample 'sample-7': /nonexistent/x.jpg: cannot open"),
                       sieve::Error);
}

TEST_CASE("FitImage: pad keeps small images' pixels centred, shrinks large ones by the longer edge; resize crops") {
  const Image x = ramp(28, 28);
  FitImage pad(32, FitMode::pad);
  const Image& y = pad.forward(x);
  REQUIRE(y.height == 32);
  REQUIRE(y.width == 32);
  for (std::size_t r = 0; r < 32; ++r)
    for (std::size_t c = 0; c < 32; ++c) {
      const bool inside = r >= 2 && r < 30 && c >= 2 && c < 30;  // 2 black pixels each side
      CHECK(y.at(r, c, 1) == (inside ? x.at(r - 2, c - 2, 1) : 0));
    }
  // 32 rows x 64 columns is scaled to 16 x 32 (aspect kept), then padded to 32x32: 8 black
  // rows above and below.
  const Image& wide = pad.forward(Image(32, 64, 200));
  REQUIRE(wide.height == 32);
  REQUIRE(wide.width == 32);
  CHECK(wide.at(7, 16, 0) == 0);
  CHECK(wide.at(8, 16, 0) == 200);
  CHECK(wide.at(16, 0, 0) == 200);
  CHECK(wide.at(23, 31, 0) == 200);
  CHECK(wide.at(24, 16, 0) == 0);
  // resize: the shorter edge to 16 (40x20 -> 32x16), then the centre 16x16 rows: 8..24 of 32.
  Image tall(40, 20);
  for (std::size_t r = 0; r < 40; ++r)
    for (std::size_t c = 0; c < 20; ++c)
      for (std::size_t ch = 0; ch < 3; ++ch) tall.at(r, c, ch) = r < 20 ? 10 : 250;
  FitImage resize(16, FitMode::resize);
  const Image& z = resize.forward(tall);
  REQUIRE(z.height == 16);
  REQUIRE(z.width == 16);
  CHECK(z.at(0, 8, 0) == 10);    // source row ~10 of 40
  CHECK(z.at(15, 8, 0) == 250);  // source row ~30 of 40
  CHECK(resize.forward(ramp(16, 16)).pixels == ramp(16, 16).pixels);  // already the size: untouched
  CHECK_THROWS_AS(pad.forward(Image()), sieve::Error);
  CHECK_THROWS_AS(parse_fit_mode("letterbox"), sieve::Error);
  CHECK(parse_fit_mode("pad") == FitMode::pad);
}

TEST_CASE("input transforms: the eval view is the fitted image moved and mirrored; the text names the input") {
  InputSpec spec;
  spec.size = 8;
  spec.fit = FitMode::pad;
  spec.channels = 1;
  spec.mean = {0.5f, 0.5f, 0.5f};
  spec.std = {0.25f, 0.25f, 0.25f};
  const Image x = ramp(6, 6);  // padded to 8x8 with one black pixel each side
  Rng rng(3);
  auto plain = eval_input_transform(spec);
  const Tensor3f a = plain.forward(x, rng);
  REQUIRE(a.shape() == std::array<std::size_t, 3>{1, 8, 8});
  auto moved = eval_input_transform(spec, TtaView{1, -1, true, 1.0});
  const Tensor3f b = moved.forward(x, rng);
  const float black = (0.0f - 0.5f) / 0.25f;
  for (std::size_t r = 0; r < 8; ++r)
    for (std::size_t c = 0; c < 8; ++c) {
      // mirrored after the move: column c shows the moved column 7 - c, i.e. source column 8 - c
      const long sr = long(r) - 1, sc = long(7 - c) + 1;
      const float want = sr >= 0 && sr < 8 && sc >= 0 && sc < 8 ? a(0, std::size_t(sr), std::size_t(sc)) : black;
      CHECK(b(0, r, c) == doctest::Approx(want));
    }
  // training: padding 0 and p = 0 is the eval transform
  auto train = train_input_transform(spec, 0, 0.0);
  const Tensor3f t = train.forward(x, rng);
  for (std::size_t i = 0; i < t.size(); ++i) CHECK(t.data()[i] == a.data()[i]);
  CHECK(input_text(spec) == "fit_pad(8)|to_tensor(gray)|normalize(0.5,0.5,0.5;0.25,0.25,0.25)");
}
