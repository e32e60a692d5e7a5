// Synthetic data shared by the C++ MLP examples: uniform random weights, and Gaussian points
// of `in` features labelled by a fixed random linear "teacher" into `classes` classes.
#pragma once

#include <random>

#include "ir/host_tensor.h"

namespace tg::examples {

inline HostTensor RandomTensor(TensorType type, double scale, std::mt19937& rng) {
  HostTensor t(type);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int64_t i = 0; i < type.numel(); ++i) t.as<float>()[i] = static_cast<float>(scale) * u(rng);
  return t;
}

// xs [steps, batch, in] and labels ys [steps, batch]: argmax over classes of x @ teacher.
inline void MakeBatches(int64_t steps, int64_t batch, int64_t in, int64_t classes,
                        const HostTensor& teacher, std::mt19937& rng, HostTensor& xs,
                        HostTensor& ys) {
  xs = HostTensor({DType::kF32, {steps, batch, in}});
  ys = HostTensor({DType::kI64, {steps, batch}});
  std::normal_distribution<float> n(0.0f, 1.0f);
  for (int64_t r = 0; r < steps * batch; ++r) {
    float* x = xs.as<float>() + r * in;
    for (int64_t i = 0; i < in; ++i) x[i] = n(rng);
    int64_t best = 0;
    double best_score = -1e30;
    for (int64_t c = 0; c < classes; ++c) {
      double score = 0;
      for (int64_t i = 0; i < in; ++i) score += x[i] * teacher.as<float>()[i * classes + c];
      if (score > best_score) best_score = score, best = c;
    }
    ys.as<int64_t>()[r] = best;
  }
}

}  // namespace tg::examples
