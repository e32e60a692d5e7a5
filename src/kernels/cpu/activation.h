// The activations a fused epilogue applies to a matmul's or convolution's output (oneDNN
// eltwise post-ops where oneDNN runs them; ours where it cannot): their IR names, the
// reference in double, and a vectorizable per-channel epilogue for our own fallback path.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "kernels/cpu/vector_math.h"

namespace tg::cpu {

enum class Activation { kNone, kRelu, kGeluErf, kGeluTanh, kSilu, kSigmoid, kHardswish };

// The IR's name ("none", "relu", "gelu", "gelu_tanh", "silu", "sigmoid", "hardswish"); false
// when `name` is none of them.
inline bool ActivationFromName(const std::string& name, Activation* out) {
  static const struct {
    const char* name;
    Activation act;
  } kNames[] = {{"none", Activation::kNone},       {"relu", Activation::kRelu},
                {"gelu", Activation::kGeluErf},    {"gelu_tanh", Activation::kGeluTanh},
                {"silu", Activation::kSilu},       {"sigmoid", Activation::kSigmoid},
                {"hardswish", Activation::kHardswish}};
  for (const auto& n : kNames) {
    if (name == n.name) {
      *out = n.act;
      return true;
    }
  }
  return false;
}

// act(x) in double, as PyTorch defines it (the reference kernels, and empty contractions).
inline double ApplyActivation(Activation act, double x) {
  switch (act) {
    case Activation::kNone: return x;
    case Activation::kRelu: return x > 0 ? x : (x != x ? x : 0.0);
    case Activation::kGeluErf: return 0.5 * x * (1.0 + std::erf(x * M_SQRT1_2));
    case Activation::kGeluTanh: {
      const double inner = std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x);
      return 0.5 * x * (1.0 + std::tanh(inner));
    }
    case Activation::kSilu: return x / (1.0 + std::exp(-x));
    case Activation::kSigmoid: return 1.0 / (1.0 + std::exp(-x));
    case Activation::kHardswish: return x * std::fmin(std::fmax(x + 3.0, 0.0), 6.0) / 6.0;
  }
  return x;
}

// y[i] = act(y[i] + bias) for one channel's run of values, vectorized per activation.
template <Activation A>
inline void BiasActivateRun(float* y, int64_t n, float bias) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = y[i] + bias;
    if constexpr (A == Activation::kNone) y[i] = v;
    if constexpr (A == Activation::kRelu) y[i] = v > 0.0f ? v : (vmath::IsNan(v) ? v : 0.0f);
    if constexpr (A == Activation::kSilu) y[i] = v / (1.0f + vmath::Exp(-v));
    if constexpr (A == Activation::kSigmoid) y[i] = 1.0f / (1.0f + vmath::Exp(-v));
    if constexpr (A == Activation::kGeluErf) {
      y[i] = 0.5f * v * (1.0f + vmath::ErfFast(v * 0.70710678f));
    }
    if constexpr (A == Activation::kGeluTanh) {
      const float inner = 0.7978845608f * (v + 0.044715f * v * v * v);
      y[i] = 0.5f * v * (1.0f + vmath::Tanh(inner));
    }
    if constexpr (A == Activation::kHardswish) {
      y[i] = v * vmath::Lesser(vmath::Greater(v + 3.0f, 0.0f), 6.0f) * (1.0f / 6.0f);
    }
  }
}

inline void BiasActivate(Activation act, float* y, int64_t n, float bias) {
  switch (act) {
    case Activation::kNone: return BiasActivateRun<Activation::kNone>(y, n, bias);
    case Activation::kRelu: return BiasActivateRun<Activation::kRelu>(y, n, bias);
    case Activation::kGeluErf:
      return BiasActivateRun<Activation::kGeluErf>(y, n, bias);
    case Activation::kGeluTanh:
      return BiasActivateRun<Activation::kGeluTanh>(y, n, bias);
    case Activation::kSilu: return BiasActivateRun<Activation::kSilu>(y, n, bias);
    case Activation::kSigmoid:
      return BiasActivateRun<Activation::kSigmoid>(y, n, bias);
    case Activation::kHardswish:
      return BiasActivateRun<Activation::kHardswish>(y, n, bias);
  }
}

}  // namespace tg::cpu
