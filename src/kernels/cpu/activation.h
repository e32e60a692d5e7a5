// The activations a fused epilogue applies to a matmul's or convolution's output (oneDNN
// eltwise post-ops where oneDNN runs them; ours where it cannot): their IR names, the
// reference in double, and a vectorizable per-channel epilogue for our own fallback path.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

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

// act(v) in float, vectorizable (vmath), for a loop over values that knows A at compile time.
template <Activation A>
TG_VMATH_INLINE float Activate(float v) {
  if constexpr (A == Activation::kNone) return v;
  if constexpr (A == Activation::kRelu) return v > 0.0f ? v : (vmath::IsNan(v) ? v : 0.0f);
  if constexpr (A == Activation::kSilu) return v * vmath::Sigmoid(v);
  if constexpr (A == Activation::kSigmoid) return vmath::Sigmoid(v);
  if constexpr (A == Activation::kGeluErf) {
    return 0.5f * v * (1.0f + vmath::ErfFast(v * 0.70710678f));
  }
  if constexpr (A == Activation::kGeluTanh) {
    const float inner = 0.7978845608f * (v + 0.044715f * v * v * v);
    return 0.5f * v * (1.0f + vmath::Tanh(inner));
  }
  if constexpr (A == Activation::kHardswish) {
    return v * vmath::Lesser(vmath::Greater(v + 3.0f, 0.0f), 6.0f) * (1.0f / 6.0f);
  }
}

// Calls fn(std::integral_constant<Activation, act>): a loop body instantiated per activation,
// chosen once per call rather than per value.
template <typename Fn>
inline void WithActivation(Activation act, Fn&& fn) {
  using A = Activation;
  switch (act) {
    case A::kNone: return fn(std::integral_constant<A, A::kNone>{});
    case A::kRelu: return fn(std::integral_constant<A, A::kRelu>{});
    case A::kGeluErf: return fn(std::integral_constant<A, A::kGeluErf>{});
    case A::kGeluTanh: return fn(std::integral_constant<A, A::kGeluTanh>{});
    case A::kSilu: return fn(std::integral_constant<A, A::kSilu>{});
    case A::kSigmoid: return fn(std::integral_constant<A, A::kSigmoid>{});
    case A::kHardswish: return fn(std::integral_constant<A, A::kHardswish>{});
  }
}

// y[i] = act(y[i] + bias) for one channel's run of values, vectorized per activation; with
// a residual, act(y[i] + bias + residual[i]) (the sums in that order, as the unfused graph).
inline void BiasActivate(Activation act, float* y, int64_t n, float bias,
                         const float* residual = nullptr) {
  WithActivation(act, [&](auto a) {
    if (residual == nullptr) {
      for (int64_t i = 0; i < n; ++i) y[i] = Activate<decltype(a)::value>(y[i] + bias);
    } else {
      for (int64_t i = 0; i < n; ++i) {
        y[i] = Activate<decltype(a)::value>((y[i] + bias) + residual[i]);
      }
    }
  });
}

}  // namespace tg::cpu
