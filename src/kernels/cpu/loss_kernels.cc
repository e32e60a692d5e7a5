// Negative log-likelihood loss kernels; see loss_kernels.h.
#include "kernels/cpu/loss_kernels.h"

#include <cstring>

#include "kernels/cpu/parallel.h"
#include "support/error.h"

namespace tg::cpu {
namespace {

// Validates the targets; returns the number of non-ignored ones.
template <typename I>
int64_t CheckTargets(const I* target, const NllLossParams& p) {
  int64_t count = 0;
  for (int64_t i = 0; i < p.n; ++i) {
    int64_t t = static_cast<int64_t>(target[i]);
    if (t == p.ignore_index) continue;
    TG_CHECK(t >= 0 && t < p.c, kRuntime, "nll_loss: target index ", t, " out of range [0, ",
             p.c, ")");
    ++count;
  }
  return count;
}

}  // namespace

template <typename T, typename I>
void NllLoss(const T* logp, const I* target, T* out, const NllLossParams& p) {
  int64_t count = CheckTargets(target, p);
  if (p.reduction == LossReduction::kNone) {
    ParallelFor(p.n, 1 << 14, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        int64_t t = static_cast<int64_t>(target[i]);
        out[i] = t == p.ignore_index ? T(0) : -logp[i * p.c + t];
      }
    });
    return;
  }
  double sum = 0;
  for (int64_t i = 0; i < p.n; ++i) {
    int64_t t = static_cast<int64_t>(target[i]);
    if (t != p.ignore_index) sum -= logp[i * p.c + t];
  }
  // mean over zero targets is 0/0 = NaN, like PyTorch.
  out[0] = static_cast<T>(p.reduction == LossReduction::kMean ? sum / count : sum);
}

template <typename T, typename I>
void NllLossRef(const T* logp, const I* target, T* out, const NllLossParams& p) {
  int64_t count = CheckTargets(target, p);
  double sum = 0;
  for (int64_t i = 0; i < p.n; ++i) {
    int64_t t = static_cast<int64_t>(target[i]);
    double v = t == p.ignore_index ? 0.0 : -static_cast<double>(logp[i * p.c + t]);
    if (p.reduction == LossReduction::kNone) out[i] = static_cast<T>(v);
    sum += v;
  }
  if (p.reduction == LossReduction::kSum) out[0] = static_cast<T>(sum);
  if (p.reduction == LossReduction::kMean) out[0] = static_cast<T>(sum / count);
}

template <typename T, typename I>
void NllLossBackward(const T* go, const I* target, T* grad, const NllLossParams& p) {
  int64_t count = CheckTargets(target, p);
  std::memset(grad, 0, static_cast<size_t>(p.n * p.c) * sizeof(T));
  T scale = p.reduction == LossReduction::kMean ? static_cast<T>(1.0 / count) : T(1);
  ParallelFor(p.n, 1 << 14, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      int64_t t = static_cast<int64_t>(target[i]);
      if (t == p.ignore_index) continue;
      T g = p.reduction == LossReduction::kNone ? go[i] : go[0];
      grad[i * p.c + t] = -g * scale;
    }
  });
}

template <typename T, typename I>
void NllLossBackwardRef(const T* go, const I* target, T* grad, const NllLossParams& p) {
  int64_t count = CheckTargets(target, p);
  for (int64_t i = 0; i < p.n; ++i) {
    int64_t t = static_cast<int64_t>(target[i]);
    for (int64_t j = 0; j < p.c; ++j) {
      double g = 0;
      if (j == t && t != p.ignore_index) {
        g = -static_cast<double>(p.reduction == LossReduction::kNone ? go[i] : go[0]);
        if (p.reduction == LossReduction::kMean) g /= static_cast<double>(count);
      }
      grad[i * p.c + j] = static_cast<T>(g);
    }
  }
}

#define TG_INSTANTIATE(T, I)                                                            \
  template void NllLoss<T, I>(const T*, const I*, T*, const NllLossParams&);            \
  template void NllLossRef<T, I>(const T*, const I*, T*, const NllLossParams&);         \
  template void NllLossBackward<T, I>(const T*, const I*, T*, const NllLossParams&);    \
  template void NllLossBackwardRef<T, I>(const T*, const I*, T*, const NllLossParams&);
TG_INSTANTIATE(float, int32_t)
TG_INSTANTIATE(float, int64_t)
TG_INSTANTIATE(double, int32_t)
TG_INSTANTIATE(double, int64_t)
#undef TG_INSTANTIATE

}  // namespace tg::cpu
