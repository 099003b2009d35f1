// Images benchmarks: decode (28x28 PNG, 500x375 JPEG), the 224-px train augmentation chain,
// and loader throughput with 1 and 2 workers. Compare with benchmarks/torch_images.py
// (same inputs through PIL/torchvision); results in benchmarks/images.md.
// Inputs come from tests/data/images (set SIEVE_DATA to that folder if run from elsewhere).
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>

#include "sieve/augment/augment.hpp"
#include "sieve/io/loader.hpp"

namespace fs = std::filesystem;
using namespace sieve;
using namespace sieve::augment;

namespace {
fs::path data_dir() {
  if (const char* env = std::getenv("SIEVE_DATA")) return env;
  for (fs::path p : {fs::path(__FILE__).parent_path().parent_path() / "tests/data/images",
                     fs::path("tests/data/images"), fs::path("../tests/data/images")})
    if (fs::exists(p / "bench_500x375.jpg")) return p;
  throw Error("bench_images: cannot find tests/data/images; set SIEVE_DATA");
}

auto train_chain() {
  return RandomResizedCrop{224} | RandomHorizontalFlip{} | ColorJitter{0.4, 0.4, 0.4} | ToTensor{} | Normalize{};
}
}  // namespace

// Decodes reuse one Image, as DecodeRgb and the loader's workers do.
static void BM_DecodePng28(benchmark::State& state) {
  const auto bytes = io::read_file(data_dir() / "fmnist_t10k_0.png");
  Image img;
  for (auto _ : state) {
    io::decode_image_into(bytes, img);
    benchmark::DoNotOptimize(img.pixels.data());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_DecodePng28);

static void BM_DecodeJpeg500x375(benchmark::State& state) {
  const auto bytes = io::read_file(data_dir() / "bench_500x375.jpg");
  Image img;
  for (auto _ : state) {
    io::decode_image_into(bytes, img);
    benchmark::DoNotOptimize(img.pixels.data());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_DecodeJpeg500x375)->Unit(benchmark::kMicrosecond);

static void BM_TrainChain224(benchmark::State& state) {
  const Image img = io::read_image(data_dir() / "bench_500x375.jpg");
  auto chain = train_chain();
  std::uint64_t i = 0;
  for (auto _ : state) {
    Rng rng = Rng::for_sample(1, 0, i++);
    benchmark::DoNotOptimize(chain.forward(img, rng).data());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_TrainChain224)->Unit(benchmark::kMicrosecond);

// Decode + train chain + collate, batch 32, over 256 samples (the JPEG file repeated).
static void BM_Loader(benchmark::State& state) {
  std::vector<io::FileSample> files;
  const fs::path jpg = data_dir() / "bench_500x375.jpg";
  for (int i = 0; i < 256; ++i) files.push_back({std::to_string(i), jpg, {i % 10}});
  io::FileDataset ds(files);
  io::LoaderOptions opt;
  opt.batch_size = 32;
  opt.workers = static_cast<std::size_t>(state.range(0));
  std::uint64_t epoch = 0;
  std::size_t images = 0;
  for (auto _ : state) {
    io::Loader<decltype(train_chain())> loader(ds, train_chain(), opt);
    loader.start(epoch++);
    while (auto b = loader.next()) images += b->size();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(images));
}
BENCHMARK(BM_Loader)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
