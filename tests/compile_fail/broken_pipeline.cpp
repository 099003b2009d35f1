// Must NOT compile: stage 2 (Half) takes int but stage 1 (Half) outputs double.
// tests/compile_fail/run.sh checks the compiler names the link PipelineLink<stage_index<2>, ...>.
#include "sieve/core/pipeline.hpp"

struct AddOne {
  using input_type = int;
  using output_type = int;
  int forward(const int& x) const { return x + 1; }
};
struct Half {
  using input_type = int;
  using output_type = double;
  double forward(const int& x) const { return x / 2.0; }
};

int main() {
  auto p = sieve::pipeline(AddOne{}, Half{}, Half{});
  return static_cast<int>(p.forward(1));
}
