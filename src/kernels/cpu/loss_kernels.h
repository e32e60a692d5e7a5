// Negative log-likelihood loss kernels over logp [n, c] and integer targets [n]:
//   reduction none: out[i] = -logp[i, t_i] (0 where t_i == ignore_index);
//   sum: the sum of those; mean: the sum divided by the number of non-ignored targets.
// The backward writes -go (scaled by 1/count for mean) at [i, t_i] and zeros elsewhere.
// Targets outside [0, c) other than ignore_index raise a Runtime error. T is float or double;
// I is int32_t or int64_t.
#pragma once

#include <cstdint>

namespace tg::cpu {

enum class LossReduction { kNone, kMean, kSum };

struct NllLossParams {
  int64_t n = 0, c = 0;
  LossReduction reduction = LossReduction::kMean;
  int64_t ignore_index = -100;
};

template <typename T, typename I>
void NllLoss(const T* logp, const I* target, T* out, const NllLossParams& p);
template <typename T, typename I>
void NllLossRef(const T* logp, const I* target, T* out, const NllLossParams& p);
// go is [n] for reduction none, a scalar otherwise; grad is [n, c].
template <typename T, typename I>
void NllLossBackward(const T* go, const I* target, T* grad, const NllLossParams& p);
template <typename T, typename I>
void NllLossBackwardRef(const T* go, const I* target, T* grad, const NllLossParams& p);

}  // namespace tg::cpu
