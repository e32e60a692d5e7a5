// Naive reference kernels of matmul and conv2d (straightforward loops, f32 and f64, double
// accumulation). Tests compare the fast kernels against these; f64 CPU kernels call them.
#pragma once

#include "kernels/cpu/dense_params.h"

namespace tg::cpu {

template <typename T>
void MatmulRef(const MatmulParams& p, const T* a, const T* b, T* out);

template <typename T>
void Conv2dForwardRef(const Conv2dParams& p, const T* x, const T* w, T* y);
// dx from dy and w.
template <typename T>
void Conv2dBackwardInputRef(const Conv2dParams& p, const T* dy, const T* w, T* dx);
// dw from dy and x.
template <typename T>
void Conv2dBackwardWeightRef(const Conv2dParams& p, const T* dy, const T* x, T* dw);

}  // namespace tg::cpu
