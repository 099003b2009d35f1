// libFuzzer harness for sieve's safetensors reader: any bytes must give a validated file or a
// sieve::Error, never a crash, a sanitizer report or an abort. Accepted files must satisfy the
// format's invariants and survive a write/read round trip. Run: tools/fuzz.sh safetensors 60
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <vector>

#include "sieve/io/safetensors.hpp"

namespace {
void require(bool ok) {
  if (!ok) __builtin_trap();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace sieve::io;
  std::vector<std::byte> bytes(size);
  if (size) std::memcpy(bytes.data(), data, size);
  std::optional<SafeTensors> st;
  try {
    st.emplace(SafeTensors::parse(std::move(bytes), "<fuzz>"));
  } catch (const sieve::Error&) {
    return 0;
  }
  // Invariants of an accepted file: contiguous from 0, sizes matching shapes.
  std::size_t expect = 0;
  SafeTensorsWriter w;
  for (const auto& name : st->names()) {
    const TensorInfo& i = st->info(name);
    require(i.begin == expect && i.end >= i.begin);
    require(i.end - i.begin == i.numel() * dtype_size(i.dtype));
    expect = i.end;
    if (i.dtype == DType::I64) {
      const auto v = st->ints(name);
      require(v.size() == i.numel());
      w.add(name, i.shape, std::span<const std::int64_t>(v));
    } else if (i.dtype == DType::F64) {
      const auto v = st->doubles(name);
      require(v.size() == i.numel());
      w.add(name, i.shape, std::span<const double>(v));
    } else {
      const auto v = st->floats(name);
      require(v.size() == i.numel());
      w.add(name, i.shape, std::span<const float>(v), i.dtype);
    }
  }
  for (const auto& [k, v] : st->metadata()) w.set_metadata(k, v);
  // Round trip: same names, shapes, dtypes, metadata; same bytes except NaN payloads.
  const SafeTensors back = SafeTensors::parse(w.to_bytes(), "<fuzz round trip>");
  require(back.names() == st->names());
  require(back.metadata() == st->metadata());
  for (const auto& name : st->names()) {
    const TensorInfo& a = st->info(name);
    const TensorInfo& b = back.info(name);
    require(a.dtype == b.dtype && a.shape == b.shape);
    if (a.dtype == DType::I64) {
      require(back.ints(name) == st->ints(name));
    } else {
      const auto x = st->doubles(name), y = back.doubles(name);
      for (std::size_t k = 0; k < x.size(); ++k)
        require((std::isnan(x[k]) && std::isnan(y[k])) || std::memcmp(&x[k], &y[k], sizeof(double)) == 0);
    }
  }
  return 0;
}
