// Random fill kernels (see random_kernels.h).
#include "kernels/cpu/random_kernels.h"

#include <cmath>
#include <vector>

#include "kernels/cpu/float16.h"

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/philox.h"

namespace tg::cpu {
namespace {

constexpr int64_t kGroupsPerTask = 4096;

// Runs fn(group) for groups [0, groups), in parallel or serially.
template <typename Fn>
void ForGroups(int64_t groups, bool parallel, Fn&& fn) {
  auto body = [&](int64_t b, int64_t e) {
    for (int64_t g = b; g < e; ++g) fn(g);
  };
  if (parallel) {
    ParallelFor(groups, kGroupsPerTask, body);
  } else {
    body(0, groups);
  }
}

// Uniforms in [0, 1): 4 per Philox block for float, 2 for double.
template <typename T>
constexpr int kPerBlock = sizeof(T) == 4 ? 4 : 2;

template <typename T>
inline void BlockUniforms(const Philox4x32::Block& r, T* u) {
  if constexpr (sizeof(T) == 4) {
    for (int j = 0; j < 4; ++j) u[j] = UniformFloat(r[j]);
  } else {
    u[0] = UniformDouble(r[0], r[1]);
    u[1] = UniformDouble(r[2], r[3]);
  }
}

}  // namespace

template <typename T>
void FillUniform(T* out, int64_t n, double low, double high, const RngParams& rng, bool parallel) {
  Philox4x32 gen(rng.seed, rng.key);
  constexpr int per = kPerBlock<T>;
  ForGroups((n + per - 1) / per, parallel, [&](int64_t g) {
    T u[4];
    BlockUniforms<T>(gen(rng.step, static_cast<uint64_t>(g)), u);
    for (int j = 0; j < per && g * per + j < n; ++j) {
      T v = static_cast<T>(low + (high - low) * static_cast<double>(u[j]));
      out[g * per + j] = v < static_cast<T>(high) || high <= low ? v : static_cast<T>(low);
    }
  });
}

template <typename T>
void FillNormal(T* out, int64_t n, double mean, double std, const RngParams& rng, bool parallel) {
  Philox4x32 gen(rng.seed, rng.key);
  // Four normals per block (two Box-Muller pairs from 32-bit uniforms).
  ForGroups((n + 3) / 4, parallel, [&](int64_t g) {
    Philox4x32::Block r = gen(rng.step, static_cast<uint64_t>(g));
    double z[4];
    BoxMuller(UniformOpenZero(r[0]), UniformOpenZero(r[1]), &z[0], &z[1]);
    BoxMuller(UniformOpenZero(r[2]), UniformOpenZero(r[3]), &z[2], &z[3]);
    for (int j = 0; j < 4 && g * 4 + j < n; ++j) out[g * 4 + j] = static_cast<T>(mean + std * z[j]);
  });
}

template <typename T>
void Dropout(const T* x, T* y, T* mask, int64_t n, double p, const RngParams& rng, bool parallel) {
  Philox4x32 gen(rng.seed, rng.key);
  // The keep decision uses a 24-bit uniform for every dtype, so f32 and f64 agree.
  const float keep = static_cast<float>(1.0 - p);
  const T scale = p >= 1.0 ? T(0) : static_cast<T>(1.0 / (1.0 - p));
  ForGroups((n + 3) / 4, parallel, [&](int64_t g) {
    Philox4x32::Block r = gen(rng.step, static_cast<uint64_t>(g));
    for (int j = 0; j < 4 && g * 4 + j < n; ++j) {
      int64_t i = g * 4 + j;
      T m = UniformFloat(r[j]) < keep ? scale : T(0);
      mask[i] = m;
      y[i] = x[i] * m;
    }
  });
}

void StochasticRound(const float* x, uint16_t* out, int64_t n, bool bf16, const RngParams& rng,
                     bool parallel) {
  std::vector<float> u(n);
  FillUniform(u.data(), n, 0.0, 1.0, rng, parallel);
  auto to_bits = [bf16](float f) { return bf16 ? FloatToBFloat16Bits(f) : FloatToHalfBits(f); };
  auto to_float = [bf16](uint16_t b) { return bf16 ? BFloat16BitsToFloat(b) : HalfBitsToFloat(b); };
  for (int64_t i = 0; i < n; ++i) {
    uint16_t nearest = to_bits(x[i]);
    float v = to_float(nearest);
    if (v == x[i] || !std::isfinite(v) || !std::isfinite(x[i])) {
      out[i] = nearest;
      continue;
    }
    // The other neighbour: one step up in magnitude when the nearest is below |x|, else down
    // (the sign bit is untouched; x and its nearest share the sign).
    uint16_t other = std::fabs(v) < std::fabs(x[i]) ? nearest + 1 : nearest - 1;
    float w = to_float(other);
    if (!std::isfinite(w)) {  // beyond the largest finite value: keep the nearest
      out[i] = nearest;
      continue;
    }
    float p_other = std::fabs(x[i] - v) / std::fabs(w - v);
    out[i] = u[i] < p_other ? other : nearest;
  }
}

template void FillUniform<float>(float*, int64_t, double, double, const RngParams&, bool);
template void FillUniform<double>(double*, int64_t, double, double, const RngParams&, bool);
template void FillNormal<float>(float*, int64_t, double, double, const RngParams&, bool);
template void FillNormal<double>(double*, int64_t, double, double, const RngParams&, bool);
template void Dropout<float>(const float*, float*, float*, int64_t, double, const RngParams&, bool);
template void Dropout<double>(const double*, double*, double*, int64_t, double, const RngParams&,
                              bool);

}  // namespace tg::cpu
