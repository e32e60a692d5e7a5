// Softmax kernels over one axis of a tensor viewed as [outer, dim, inner]: numerically stable
// softmax / log_softmax (max subtracted, sums in double) and their backward passes from the
// forward output y:
//   softmax_backward:     gx = y * (go - sum(go * y))
//   log_softmax_backward: gx = go - exp(y) * sum(go)
// T is float or double.
#pragma once

#include <cstdint>

namespace tg::cpu {

struct SoftmaxDims {
  int64_t outer = 1, dim = 1, inner = 1;
};

template <typename T> void Softmax(const T* x, T* y, const SoftmaxDims& d, bool log);
template <typename T> void SoftmaxRef(const T* x, T* y, const SoftmaxDims& d, bool log);
template <typename T>
void SoftmaxBackward(const T* go, const T* y, T* gx, const SoftmaxDims& d, bool log);
template <typename T>
void SoftmaxBackwardRef(const T* go, const T* y, T* gx, const SoftmaxDims& d, bool log);

}  // namespace tg::cpu
