// 2-d pooling kernels (max, avg, adaptive avg; forward and backward) over [planes, h, w]
// buffers, f32 and f64, with PyTorch's exact window rules. `parallel` splits the planes over
// threads (the CPU kernel); the reference kernel runs the same loops on one thread.
#pragma once

#include "kernels/cpu/dense_params.h"

namespace tg::cpu {

// Windows: start = o * stride - pad, taps start + k * dil inside the input; the max of a
// window is its first maximal element (NaN wins), like PyTorch.
template <typename T>
void MaxPool2dForward(const Pool2dParams& p, const T* x, T* y, bool parallel);
// dx[argmax of each window] += dy (argmax recomputed from x).
template <typename T>
void MaxPool2dBackward(const Pool2dParams& p, const T* dy, const T* x, T* dx, bool parallel);

// The same two over the channel-blocked layout (p.block channels per block, 8 or 16): a
// window's taps are p.block contiguous channels each, so every window is lane-parallel
// vector code (pool_blocked.cc). Same window rules and argmax order as above.
template <typename T>
void MaxPool2dForwardBlocked(const Pool2dParams& p, const T* x, T* y, bool parallel);
template <typename T>
void MaxPool2dBackwardBlocked(const Pool2dParams& p, const T* dy, const T* x, T* dx,
                              bool parallel);

// Average over the window clipped to the input (dil must be 1); the divisor is
// divisor_override, else the window clipped to input+padding (count_include_pad) or to the
// input.
template <typename T>
void AvgPool2dForward(const Pool2dParams& p, const T* x, T* y, bool parallel);
template <typename T>
void AvgPool2dBackward(const Pool2dParams& p, const T* dy, T* dx, bool parallel);

// Adaptive average: output cell i covers [floor(i*h/oh), ceil((i+1)*h/oh)); only planes, h,
// w, oh, ow of `p` are used.
template <typename T>
void AdaptiveAvgPool2dForward(const Pool2dParams& p, const T* x, T* y, bool parallel);
template <typename T>
void AdaptiveAvgPool2dBackward(const Pool2dParams& p, const T* dy, T* dx, bool parallel);

}  // namespace tg::cpu
