#pragma once
// Shared helpers for the train tests: PyTorch fixtures (tools/gen_train_fixtures.py).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sieve_test {

inline const nlohmann::json& train_fixtures() {
  static const nlohmann::json j = [] {
    std::ifstream f(std::string(SIEVE_TRAIN_DATA_DIR) + "/fixtures.json");
    if (!f) throw std::runtime_error("cannot open " SIEVE_TRAIN_DATA_DIR "/fixtures.json");
    return nlohmann::json::parse(f);
  }();
  return j;
}

template <class T>
std::vector<T> vec(const nlohmann::json& j) {
  std::vector<T> out;
  for (const auto& v : j) out.push_back(static_cast<T>(v.get<double>()));
  return out;
}

/// Distance in units in the last place between two floats (0 = identical bits).
inline std::int64_t ulp_distance(float a, float b) {
  std::int32_t ia, ib;
  std::memcpy(&ia, &a, 4);
  std::memcpy(&ib, &b, 4);
  if (ia < 0) ia = static_cast<std::int32_t>(0x80000000u - static_cast<std::uint32_t>(ia));
  if (ib < 0) ib = static_cast<std::int32_t>(0x80000000u - static_cast<std::uint32_t>(ib));
  return std::llabs(static_cast<std::int64_t>(ia) - ib);
}

}  // namespace sieve_test
