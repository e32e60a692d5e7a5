// Normal(0, 1) test values, reproducible from a seed (kernel tests against references).
#pragma once

#include <random>
#include <vector>

namespace tg::testing {

inline std::vector<float> RandomNormal(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

}  // namespace tg::testing
