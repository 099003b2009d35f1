// Datasets, the epoch sampler, the loader (determinism across worker counts, resume, error
// policies, shutdown) and the Fashion-MNIST reader.
#include <doctest/doctest.h>

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "sieve/augment/augment.hpp"
#include "sieve/io/decoded_dataset.hpp"
#include "sieve/io/fashion_mnist.hpp"
#include "sieve/io/file.hpp"
#include "sieve/io/image_stats.hpp"
#include "sieve/io/loader.hpp"

namespace fs = std::filesystem;
using sieve::Image;
using namespace sieve::io;
using namespace sieve::augment;

namespace {
// Built with += : GCC 12 warns falsely (-Wrestrict, PR105651) on "literal" + std::string.
std::string numbered(const char* prefix, std::size_t i) {
  std::string s = prefix;
  s += std::to_string(i);
  return s;
}

Image synthetic(std::size_t h, std::size_t w, unsigned seed) {
  Image img(h, w);
  unsigned s = seed * 2654435761u + 1;
  for (std::size_t y = 0; y < h; ++y)
    for (std::size_t x = 0; x < w; ++x) {
      s = s * 1664525u + 1013904223u;
      for (std::size_t c = 0; c < 3; ++c)
        img.at(y, x, c) = static_cast<std::uint8_t>((x * 9 + y * 5 + c * 60 + seed * 13 + (s >> 28)) & 255);
    }
  return img;
}

MemoryDataset make_dataset(std::size_t n) {
  MemoryDataset ds;
  for (std::size_t i = 0; i < n; ++i)
    ds.add(numbered("s", i), synthetic(20 + i % 7, 24 + (i * 3) % 11, static_cast<unsigned>(i)),
           {static_cast<std::int32_t>(i % 5) - 1});
  return ds;
}

auto train_transform() {
  return RandomResizedCrop{16} | RandomHorizontalFlip{} | ColorJitter{0.3, 0.3, 0.3} | ToTensor{} | Normalize{};
}
using TrainT = decltype(train_transform());

std::vector<Batch> run_epoch(const Dataset& ds, LoaderOptions opt, std::uint64_t epoch, std::size_t first = 0) {
  Loader<TrainT> loader(ds, train_transform(), opt);
  loader.start(epoch, first);
  std::vector<Batch> out;
  while (auto b = loader.next()) out.push_back(std::move(*b));
  return out;
}

void check_same(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    CHECK(a[i].index == b[i].index);
    CHECK(a[i].indices == b[i].indices);
    CHECK(a[i].labels == b[i].labels);
    REQUIRE(a[i].images.shape() == b[i].images.shape());
    CHECK(std::memcmp(a[i].images.data(), b[i].images.data(), a[i].images.size() * sizeof(float)) == 0);
  }
}

void write_gz(const fs::path& p, const std::vector<std::uint8_t>& bytes) {
  gzFile f = gzopen(p.c_str(), "wb");
  REQUIRE(f != nullptr);
  if (!bytes.empty()) gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
}

std::vector<std::uint8_t> idx_header(std::uint32_t magic, std::vector<std::uint32_t> dims) {
  std::vector<std::uint8_t> b;
  for (std::uint32_t v : std::vector<std::uint32_t>{magic}) dims.insert(dims.begin(), v);
  for (std::uint32_t v : dims)
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<std::uint8_t>(v >> s));
  return b;
}
}  // namespace

TEST_CASE("sampler: seeded permutations") {
  EpochSampler s{100, 7, true};
  const auto p0 = s.order(0), p1 = s.order(1);
  CHECK(std::set<std::size_t>(p0.begin(), p0.end()).size() == 100);
  CHECK(p0 == s.order(0));
  CHECK(p0 != p1);
  CHECK(p0 != EpochSampler{100, 8, true}.order(0));
  const auto id = EpochSampler{5, 7, false}.order(3);
  CHECK(id == std::vector<std::size_t>{0, 1, 2, 3, 4});
}

TEST_CASE("loader: batches are bit-identical for 0, 1, 2 and 4 workers") {
  const auto ds = make_dataset(37);
  LoaderOptions opt;
  opt.batch_size = 8;
  opt.seed = 1234;
  opt.workers = 0;
  const auto ref = run_epoch(ds, opt, 3);
  REQUIRE(ref.size() == 5);
  CHECK(ref.back().size() == 5);
  CHECK(ref[0].images.shape()[0] == 8);
  CHECK(ref[0].images.shape()[1] == 3);
  CHECK(ref[0].images.shape()[2] == 16);
  std::set<std::size_t> seen;
  for (const auto& b : ref) seen.insert(b.indices.begin(), b.indices.end());
  CHECK(seen.size() == 37);
  for (std::size_t w : {1, 2, 4}) {
    CAPTURE(w);
    opt.workers = w;
    opt.prefetch = w == 4 ? 1 : 3;
    check_same(ref, run_epoch(ds, opt, 3));
  }
  // Another epoch (or seed) gives other batches.
  opt.workers = 2;
  const auto other = run_epoch(ds, opt, 4);
  CHECK(other[0].indices != ref[0].indices);
  // drop_last
  opt.drop_last = true;
  CHECK(run_epoch(ds, opt, 3).size() == 4);
}

TEST_CASE("loader: a sample's augmentation never depends on batch size or order") {
  const auto ds = make_dataset(23);
  LoaderOptions opt;
  opt.seed = 77;
  opt.workers = 2;
  auto per_sample = [&](std::size_t batch_size, bool shuffle) {
    opt.batch_size = batch_size;
    opt.shuffle = shuffle;
    std::map<std::size_t, std::vector<float>> out;
    for (const auto& b : run_epoch(ds, opt, 6)) {
      const std::size_t per = b.images.size() / b.size();
      for (std::size_t k = 0; k < b.size(); ++k)
        out[b.indices[k]] = std::vector<float>(b.images.data() + k * per, b.images.data() + (k + 1) * per);
    }
    return out;
  };
  const auto a = per_sample(8, true);
  REQUIRE(a.size() == 23);
  CHECK(a == per_sample(5, true));
  CHECK(a == per_sample(3, false));
}

TEST_CASE("loader: resuming at (epoch, batch) equals the uninterrupted run") {
  const auto ds = make_dataset(30);
  LoaderOptions opt;
  opt.batch_size = 4;
  opt.seed = 99;
  opt.workers = 2;
  const auto full = run_epoch(ds, opt, 2);
  const auto resumed = run_epoch(ds, opt, 2, 5);
  REQUIRE(resumed.size() == full.size() - 5);
  check_same(std::vector<Batch>(full.begin() + 5, full.end()), resumed);
  CHECK(resumed[0].index == 5);
  // The same loader restarted mid-epoch.
  Loader<TrainT> loader(ds, train_transform(), opt);
  loader.start(2);
  (void)loader.next();
  loader.start(2, 6);
  auto b = loader.next();
  REQUIRE(b);
  check_same({full[6]}, {*b});
}

TEST_CASE("loader: a bad sample fails with its id and file, or is skipped and counted") {
  const fs::path dir = fs::temp_directory_path() / "sieve_test_loader_files";
  fs::create_directories(dir);
  std::vector<FileSample> files;
  for (int i = 0; i < 10; ++i) {
    const auto p = dir / (numbered("img", static_cast<std::size_t>(i)) + ".png");
    write_png(p, synthetic(18, 18, static_cast<unsigned>(i)));
    files.push_back({numbered("img", static_cast<std::size_t>(i)), p, {i % 3}});
  }
  write_file_atomic(dir / "img4.png", std::string_view("not an image at all"));
  files.push_back({"gone", dir / "missing.png", {-1}});
  FileDataset ds(files);
  LoaderOptions opt;
  opt.batch_size = 3;
  opt.workers = 2;
  opt.seed = 5;
  {
    Loader<TrainT> loader(ds, train_transform(), opt);
    loader.start(0);
    std::string err;
    try {
      while (loader.next()) {
      }
    } catch (const sieve::Error& e) {
      err = e.what();
    }
    CHECK(err.find("loader: epoch 0 batch") != std::string::npos);
    const bool names_img4 = err.find("sample 'img4'") != std::string::npos && err.find("img4.png") != std::string::npos;
    const bool names_gone = err.find("sample 'gone'") != std::string::npos && err.find("missing.png") != std::string::npos;
    CHECK((names_img4 || names_gone));
  }
  opt.on_error = OnError::skip;
  for (std::size_t w : {0, 2}) {
    opt.workers = w;
    Loader<TrainT> loader(ds, train_transform(), opt);
    loader.start(1);
    std::size_t delivered = 0;
    while (auto b = loader.next()) {
      delivered += b->size();
      CHECK(b->images.shape()[0] == b->size());
    }
    CHECK(delivered == 9);
    REQUIRE(loader.skipped().size() == 2);
    std::set<std::string> ids{loader.skipped()[0].id, loader.skipped()[1].id};
    CHECK(ids == std::set<std::string>{"img4", "gone"});
    CHECK(loader.summary().find("2 sample(s) skipped") == 0);
    CHECK(loader.summary().find("not a JPEG or PNG") != std::string::npos);
  }
  fs::remove_all(dir);
}

TEST_CASE("loader: stopping early never deadlocks; shape mismatches are reported") {
  const auto ds = make_dataset(64);
  LoaderOptions opt;
  opt.batch_size = 2;
  opt.workers = 4;
  opt.prefetch = 2;
  for (int rep = 0; rep < 20; ++rep) {
    Loader<TrainT> loader(ds, train_transform(), opt);
    loader.start(static_cast<std::uint64_t>(rep));
    (void)loader.next();
  }  // destructor joins with workers blocked on the full queue
  Loader<TrainT> never_started(ds, train_transform(), opt);
  CHECK_THROWS_AS(never_started.next(), sieve::Error);

  auto no_resize = ToTensor{} | Normalize{};
  Loader<decltype(no_resize)> bad(ds, no_resize, opt);
  bad.start(0);
  CHECK_THROWS_WITH_AS(bad.next(), doctest::Contains("add a Resize/CenterCrop"), sieve::Error);
}

namespace {
// A dataset whose loads declare `peak` bytes and record how many run at once.
class CountingDataset final : public Dataset {
 public:
  CountingDataset(const Dataset& base, std::uint64_t peak) : base_(base), peak_(peak) {}
  std::size_t size() const override { return base_.size(); }
  std::string id(std::size_t i) const override { return base_.id(i); }
  std::string source(std::size_t i) const override { return base_.source(i); }
  std::vector<std::int32_t> labels(std::size_t i) const override { return base_.labels(i); }
  void load(std::size_t i, Image& out) const override {
    const int now = ++running_;
    int seen = most_;
    while (now > seen && !most_.compare_exchange_weak(seen, now)) {
    }
    ::usleep(2000);  // long enough for every worker to be inside a load at once
    base_.load(i, out);
    --running_;
  }
  std::uint64_t peak_load_bytes() const override { return peak_; }
  int most() const { return most_; }

 private:
  const Dataset& base_;
  std::uint64_t peak_;
  mutable std::atomic<int> running_{0}, most_{0};
};
}  // namespace

TEST_CASE("loader: the memory budget bounds how many loads run at once") {
  const auto mem = make_dataset(48);
  LoaderOptions opt;
  opt.batch_size = 1;  // one sample per batch: each worker runs one load at a time
  opt.workers = 8;
  opt.prefetch = 16;
  SUBCASE("a budget for 2 of the dataset's worst-case loads: 2 workers, never 3 loads at once") {
    CountingDataset ds(mem, 100);
    opt.memory_budget = 250;
    Loader<TrainT> loader(ds, train_transform(), opt);
    CHECK(loader.workers() == 2);
    loader.start(0);
    while (loader.next()) {
    }
    CHECK(ds.most() >= 1);
    CHECK(ds.most() <= 2);
  }
  SUBCASE("room for all: the requested workers run (and do overlap)") {
    CountingDataset ds(mem, 100);
    opt.memory_budget = 100 * 8;
    Loader<TrainT> loader(ds, train_transform(), opt);
    CHECK(loader.workers() == 8);
    loader.start(0);
    while (loader.next()) {
    }
    CHECK(ds.most() > 2);
  }
  SUBCASE("a budget below one load still runs one worker; 0 workers stay 0; in-memory samples are free") {
    CountingDataset ds(mem, 100);
    CHECK(loader_workers(ds, 8, 10) == 1);
    CHECK(loader_workers(ds, 0, 10) == 0);
    CHECK(loader_workers(mem, 8, 10) == 8);
    CHECK(loader_workers(ds, 8, 0) == std::min<std::uint64_t>(8, default_loader_memory_budget() / 100));
  }
  SUBCASE("file datasets declare their limits' peak; views forward it") {
    DecodeLimits lim;
    lim.max_bytes = 10;
    lim.max_decoded_bytes = 100;
    CHECK(lim.peak_bytes() == 210);
    const FileDataset files({}, lim);
    CHECK(files.peak_load_bytes() == 210);
    CHECK(RangeDataset(files, {0, 0}).peak_load_bytes() == 210);
    CHECK(DecodeLimits{}.peak_bytes() == (std::uint64_t{320} << 20));
  }
}

TEST_CASE("multi_hot: labels to BCE targets, -1 = none") {
  Batch b;
  b.ids = {"a", "b", "c"};
  b.indices = {0, 1, 2};
  b.labels = {{2}, {-1}, {0, 3}};
  const auto t = multi_hot(b, 4);
  CHECK(t(0, 2) == 1.0f);
  CHECK(xt::sum(xt::view(t, 1, xt::all()))() == 0.0f);
  CHECK(t(2, 0) == 1.0f);
  CHECK(t(2, 3) == 1.0f);
  CHECK(xt::sum(t)() == 3.0f);
  b.labels[0] = {4};
  CHECK_THROWS_AS(multi_hot(b, 4), sieve::Error);
}

TEST_CASE("fashion-mnist: Debian's files load and validate") {
  const char* env = std::getenv("SIEVE_FASHION_MNIST");
  const fs::path dir = env ? env : "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(dir / "t10k-images-idx3-ubyte.gz")) {
    MESSAGE("Fashion-MNIST not installed at " << dir << "; skipping the real-data part");
    return;
  }
  FashionMnist test(dir, "t10k");
  CHECK(test.size() == 10000);
  CHECK(test.id(17) == "t10k:17");
  CHECK(test.label(0) == 9);  // the first test image is an ankle boot
  std::vector<int> counts(10, 0);
  for (std::size_t i = 0; i < test.size(); ++i) ++counts[static_cast<std::size_t>(test.label(i))];
  for (int c : counts) CHECK(c == 1000);
  Image img;
  test.load(0, img);
  CHECK(img == read_image(fs::path(SIEVE_TEST_DATA) / "images" / "fmnist_t10k_0.png"));
  CHECK_THROWS_AS(FashionMnist(dir, "valid"), sieve::Error);
}

TEST_CASE("fashion-mnist: malformed IDX files give clear errors") {
  const fs::path dir = fs::temp_directory_path() / "sieve_test_idx";
  fs::create_directories(dir);
  auto err = [&](auto&& f) -> std::string {
    try {
      f();
    } catch (const sieve::Error& e) {
      return e.what();
    }
    return "";
  };
  auto img = idx_header(0x803, {2, 28, 28});
  img.resize(img.size() + 2 * 784, 7);
  auto lab = idx_header(0x801, {2});
  lab.push_back(3);
  lab.push_back(9);
  write_gz(dir / "train-images-idx3-ubyte.gz", img);
  write_gz(dir / "train-labels-idx1-ubyte.gz", lab);
  FashionMnist ok(dir, "train");
  CHECK(ok.size() == 2);
  CHECK(ok.label(1) == 9);

  auto bad_magic = img;
  bad_magic[3] = 0x01;
  write_gz(dir / "m.gz", bad_magic);
  CHECK(err([&] { read_idx_images(dir / "m.gz"); }).find("m.gz: bad IDX image magic 0x801") != std::string::npos);
  auto truncated = img;
  truncated.resize(truncated.size() - 100);
  write_gz(dir / "t.gz", truncated);
  CHECK(err([&] { read_idx_images(dir / "t.gz"); }).find("t.gz: IDX image file truncated") != std::string::npos);
  write_gz(dir / "e.gz", {});
  CHECK(err([&] { read_idx_images(dir / "e.gz"); }).find("0 bytes, header needs 16") != std::string::npos);
  auto big_label = lab;
  big_label.back() = 10;
  write_gz(dir / "l.gz", big_label);
  CHECK(err([&] { read_idx_labels(dir / "l.gz"); }).find("label 10 of sample 1 is not below 10") != std::string::npos);
  auto short_labels = idx_header(0x801, {3});
  short_labels.push_back(1);
  write_gz(dir / "s.gz", short_labels);
  CHECK(err([&] { read_idx_labels(dir / "s.gz"); }).find("declares 3 labels but holds 1") != std::string::npos);
  // count mismatch between the two files
  auto lab3 = idx_header(0x801, {3});
  lab3.insert(lab3.end(), {1, 2, 3});
  write_gz(dir / "train-labels-idx1-ubyte.gz", lab3);
  CHECK(err([&] { FashionMnist(dir, "train"); }).find("holds 2 images but") != std::string::npos);
  // a corrupt gzip stream
  std::vector<std::byte> junk{std::byte{0x1f}, std::byte{0x8b}, std::byte{8}, std::byte{0}, std::byte{1},
                              std::byte{2},    std::byte{3},    std::byte{4}, std::byte{5}, std::byte{6}};
  write_file_atomic(dir / "j.gz", junk);
  CHECK(!err([&] { read_idx_images(dir / "j.gz"); }).empty());
  CHECK(err([&] { read_idx_images(dir / "nope.gz"); }).find("nope.gz: cannot open") != std::string::npos);
  fs::remove_all(dir);
}

// ---------------------------------------------------------------------------------------------
// Decoded datasets, subsets and image statistics (the fast recipe's data path)

namespace {
Image flat_image(std::size_t h, std::size_t w, std::uint8_t r, std::uint8_t g, std::uint8_t b) {
  Image im(h, w);
  for (std::size_t p = 0; p < h * w; ++p) im.pixels[3 * p] = r, im.pixels[3 * p + 1] = g, im.pixels[3 * p + 2] = b;
  return im;
}
}  // namespace

TEST_CASE("DecodedDataset: every sample as the source decodes it, ids, sources and labels kept") {
  const auto dir = fs::temp_directory_path() / numbered("sieve_decoded_", static_cast<std::size_t>(::getpid()));
  fs::create_directories(dir);
  std::vector<FileSample> files;
  for (std::size_t i = 0; i < 5; ++i) {
    Image im = flat_image(3 + i, 4, static_cast<std::uint8_t>(10 * i), 7, 200);
    im.at(0, 0, 1) = static_cast<std::uint8_t>(i);  // each image differs in one pixel too
    const auto path = dir / numbered("im", i);
    write_file(fs::path(path.string() + ".png"), encode_png(im));
    files.push_back({numbered("id", i), fs::path(path.string() + ".png"), {static_cast<std::int32_t>(i % 2)}});
  }
  const FileDataset base(files);
  std::size_t calls = 0, last = 0;
  const auto d = DecodedDataset::decode(base, 1 << 20, [&](std::size_t k, std::size_t n) { ++calls, last = k + 10 * n; });
  REQUIRE(d.has_value());
  CHECK(calls >= 1);
  CHECK(last == 5 + 10 * 5);  // the last call says all 5 of 5 are done
  CHECK(d->size() == 5);
  std::uint64_t bytes = 0;
  for (std::size_t i = 0; i < 5; ++i) {
    Image a, b;
    base.load(i, a), d->load(i, b);
    CHECK(a == b);
    bytes += a.size();
    CHECK(d->id(i) == base.id(i));
    CHECK(d->source(i) == base.source(i));
    CHECK(d->labels(i) == base.labels(i));
  }
  CHECK(d->bytes() == bytes);
  // Over the byte budget: nothing kept, the caller reads files.
  CHECK_FALSE(DecodedDataset::decode(base, bytes - 1).has_value());
  // Broken files are all named in one error, by decode and by check_all (which keeps nothing).
  CHECK_NOTHROW(DecodedDataset::check_all(base));
  write_file_atomic(files[3].path, std::string_view("not an image"));
  write_file_atomic(files[1].path, std::string_view(""));
  for (int pass = 0; pass < 2; ++pass) {
    std::string what;
    try {
      if (pass == 0)
        (void)DecodedDataset::decode(base, 1 << 20);
      else
        DecodedDataset::check_all(base);
    } catch (const sieve::Error& e) {
      what = e.what();
    }
    CHECK(what.rfind("2 of 5 images cannot be decoded:\n  sample 'id1': ", 0) == 0);
    CHECK(what.find("im1.png: empty file") != std::string::npos);
    CHECK(what.find("\n  sample 'id3': ") != std::string::npos);
    CHECK(what.find("im3.png: not a JPEG or PNG file") != std::string::npos);
  }
  fs::remove_all(dir);
}

TEST_CASE("image_stats: sizes, gray, per-channel and gray mean/std, hand-computed") {
  MemoryDataset m;
  m.add("a", flat_image(2, 3, 0, 0, 0), {0});        // 6 black pixels
  m.add("b", flat_image(1, 2, 255, 255, 255), {0});  // 2 white pixels
  auto s = image_stats(m);
  CHECK(s.count == 2);
  CHECK(s.min_height == 1);
  CHECK(s.max_height == 2);
  CHECK(s.min_width == 2);
  CHECK(s.max_width == 3);
  CHECK(s.gray);
  // Pixels 0 (x6) and 1 (x2): mean 1/4, std sqrt(1/4 - 1/16) = sqrt(3)/4.
  for (std::size_t c = 0; c < 3; ++c) {
    CHECK(s.mean[c] == doctest::Approx(0.25).epsilon(1e-12));
    CHECK(s.std[c] == doctest::Approx(std::sqrt(3.0) / 4).epsilon(1e-12));
  }
  CHECK(s.gray_mean == doctest::Approx(0.25).epsilon(1e-12));
  CHECK(s.gray_std == doctest::Approx(std::sqrt(3.0) / 4).epsilon(1e-12));
  // One colour pixel makes the set colour; its gray value is ITU-R 601 luma.
  m.add("c", flat_image(1, 1, 255, 0, 0), {1});
  s = image_stats(m);
  CHECK_FALSE(s.gray);
  CHECK(s.mean[0] == doctest::Approx(3.0 / 9).epsilon(1e-12));
  CHECK(s.mean[1] == doctest::Approx(2.0 / 9).epsilon(1e-12));
  CHECK(s.gray_mean == doctest::Approx((2.0 + 0.299) / 9).epsilon(1e-12));
  // Any channel differing makes a pixel colour, also when R = G.
  MemoryDataset rg;
  rg.add("d", flat_image(1, 1, 10, 10, 200), {0});
  CHECK_FALSE(image_stats(rg).gray);
  // A sample of max_images: seeded, without repetition, the same for the same seed.
  MemoryDataset big;
  for (std::size_t i = 0; i < 100; ++i) big.add(numbered("x", i), flat_image(1, 1, static_cast<std::uint8_t>(i), static_cast<std::uint8_t>(i), static_cast<std::uint8_t>(i)), {0});
  const auto s1 = image_stats(big, 10, 5), s2 = image_stats(big, 10, 5), s3 = image_stats(big, 10, 6);
  CHECK(s1.count == 10);
  CHECK(s1.mean[0] == s2.mean[0]);
  CHECK(s1.mean[0] != s3.mean[0]);
  CHECK(image_stats(big, 1000).mean[0] == doctest::Approx(49.5 / 255).epsilon(1e-12));
  CHECK_THROWS_AS(image_stats(MemoryDataset{}), sieve::Error);
}

TEST_CASE("ToTensor(1): gray pixels are their value, colour pixels luma; Normalize takes 1 channel") {
  Image im = flat_image(1, 2, 51, 51, 51);
  im.at(0, 1, 0) = 255, im.at(0, 1, 1) = 0, im.at(0, 1, 2) = 0;
  ToTensor gray(1);
  const auto& t = gray.forward(im);
  REQUIRE(t.shape()[0] == 1);
  CHECK(t(0, 0, 0) == 51.0f / 255.0f);  // exactly what to_tensor gives PIL's "L" image
  CHECK(t(0, 0, 1) == doctest::Approx(0.299).epsilon(1e-6));
  Normalize nz({0.2f, 0.9f, 0.9f}, {0.5f, 9.0f, 9.0f});
  const auto& n = nz.forward(t);
  REQUIRE(n.shape()[0] == 1);
  CHECK(n(0, 0, 0) == (51.0f / 255.0f - 0.2f) / 0.5f);
  CHECK(ToTensor{}.forward(im).shape()[0] == 3);
  CHECK_THROWS_AS(ToTensor(2), sieve::Error);
  sieve::Tensor3f two(sieve::Shape<3>{2, 1, 1});
  CHECK_THROWS_WITH_AS(nz.forward(two), doctest::Contains("2 channels"), sieve::Error);
}
