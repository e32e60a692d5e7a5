// Random fill kernels on the Philox generator (philox.h): uniform, normal and dropout masks.
// Element i of a tensor uses counter (step, i / per_block) only, so the result does not depend
// on how the work is split across threads. `parallel=false` runs the same math serially
// (reference kernels).
#pragma once

#include <cstdint>

namespace tg::cpu {

struct RngParams {
  uint64_t seed = 0;
  uint64_t key = 0;   // the node's rng_key
  uint64_t step = 0;
};

template <typename T>
void FillUniform(T* out, int64_t n, double low, double high, const RngParams& rng, bool parallel);
template <typename T>
void FillNormal(T* out, int64_t n, double mean, double std, const RngParams& rng, bool parallel);
// mask[i] = keep ? 1/(1-p) : 0 with keep probability 1-p; y[i] = x[i] * mask[i].
template <typename T>
void Dropout(const T* x, T* y, T* mask, int64_t n, double p, const RngParams& rng, bool parallel);

// Stochastic rounding of f32 values to f16 (`bf16` false) or bf16 (true) bits: each value
// rounds to one of its two neighbours in the format with probability proportional to
// closeness, so the rounding is unbiased (E[round(x)] = x). Draws as FillUniform.
void StochasticRound(const float* x, uint16_t* out, int64_t n, bool bf16, const RngParams& rng,
                     bool parallel);

}  // namespace tg::cpu
