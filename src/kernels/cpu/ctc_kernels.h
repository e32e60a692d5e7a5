// Connectionist temporal classification (CTC) loss kernels, reduction none, with PyTorch's
// layout: log_probs [t, b, c] (time-major), padded targets [b, s], input_lengths [b] and
// target_lengths [b]. Sample i uses its first input_lengths[i] frames and first
// target_lengths[i] labels; its loss is -log p(target | log_probs), the alpha recursion run in
// log space over the extended labels l' = (blank, l1, blank, l2, ..., blank) of length
// 2 * target_length + 1 (a jump s-2 -> s is allowed when l'(s) != blank and l'(s) != l'(s-2)).
// An infeasible sample has loss +inf (0 with zero_infinity).
//
// The backward is the true gradient of the loss w.r.t. log_probs (log_probs need not be
// normalized), recomputing alpha and beta (both include the emission at t):
//   grad[t, i, c] = -go[i] * exp(logsumexp_{s: l'(s) = c} (alpha_t(s) + beta_t(s)) + nll_i
//                                - log_probs[t, i, c])          for t < input_lengths[i],
// 0 for later frames. Where the logsumexp is empty or -inf (class c on no path at t, or
// log_probs[t, i, c] = -inf) the gradient is 0 rather than exp(-inf + inf) = NaN; where the
// loss is infinite the whole gradient of that sample is 0 (zero_infinity or not: the loss is
// +inf on a neighbourhood, PyTorch would give NaN there without zero_infinity). After a
// log_softmax this equals PyTorch's ctc_loss_backward (its extra exp(log_probs) term sums to 1
// per frame, as ours sums to -go, so log_softmax's backward maps both to the same gradient).
//
// Lengths outside [0, t] / [0, s], and used labels outside [0, c) or equal to blank, raise a
// Runtime error. T is float or double (arithmetic in double); integers are i32 or i64.
#pragma once

#include <cstdint>

#include "kernels/cpu/int_view.h"

namespace tg::cpu {

// log(exp(a) + exp(b)), -inf when both are.
double LogAdd(double a, double b);

struct CtcParams {
  int64_t t = 0, b = 0, c = 0;  // log_probs [t, b, c]
  int64_t s = 0;                // targets [b, s]
  int64_t blank = 0;
  bool zero_infinity = false;
  const char* op = "ctc_loss";  // names the op in errors
};

struct CtcInputs {
  IntView targets, input_lengths, target_lengths;
};

// out [b]: per-sample negative log-likelihood.
template <typename T>
void CtcLoss(const T* log_probs, const CtcInputs& in, T* out, const CtcParams& p);
template <typename T>
void CtcLossRef(const T* log_probs, const CtcInputs& in, T* out, const CtcParams& p);
// go [b] (the gradient of the per-sample losses); grad [t, b, c].
template <typename T>
void CtcLossBackward(const T* go, const T* log_probs, const CtcInputs& in, T* grad,
                     const CtcParams& p);
template <typename T>
void CtcLossBackwardRef(const T* go, const T* log_probs, const CtcInputs& in, T* grad,
                        const CtcParams& p);

}  // namespace tg::cpu
