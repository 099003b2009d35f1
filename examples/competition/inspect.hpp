#pragma once
/// `sieve inspect FILE.safetensors`: validate a safetensors file and list its tensors (name,
/// dtype, shape, byte offsets) and metadata; `--values N` also prints the first N values.

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstddef>
#include <iostream>
#include <string>

#include "sieve/io/safetensors.hpp"

namespace sieve::cli {

struct InspectCommand {
  CLI::App* app = nullptr;
  std::string file;
  std::size_t values = 0;

  void add_to(CLI::App& parent) {
    app = parent.add_subcommand("inspect", "Validate a safetensors file (every safety rule) and list its tensors "
                                           "and metadata");
    app->add_option("file", file, "the .safetensors file")->required();
    app->add_option("--values", values, "also print the first N values of each tensor");
  }

  int run() {
    const auto st = io::SafeTensors::load(file);
    for (const auto& [k, v] : st.metadata()) std::cout << "__metadata__ " << k << " = " << v << "\n";
    std::size_t bytes = 0;
    for (const auto& name : st.names()) {
      const auto& i = st.info(name);
      std::cout << name << " " << io::dtype_name(i.dtype) << " " << io::shape_text(i.shape) << " [" << i.begin << ", "
                << i.end << ")";
      if (values > 0 && i.numel() > 0) {
        const std::size_t n = std::min(values, i.numel());
        std::cout << " :";
        if (i.dtype == io::DType::I64) {
          const auto v = st.ints(name);
          for (std::size_t k = 0; k < n; ++k) std::cout << " " << v[k];
        } else {
          const auto v = st.doubles(name);
          for (std::size_t k = 0; k < n; ++k) std::cout << " " << v[k];
        }
        if (n < i.numel()) std::cout << " ...";
      }
      std::cout << "\n";
      bytes += i.end - i.begin;
    }
    std::cout << st.size() << " tensors, " << bytes << " data bytes: valid\n";
    return 0;
  }
};

}  // namespace sieve::cli
