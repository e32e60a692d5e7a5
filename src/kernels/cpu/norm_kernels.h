// Batch norm and layer norm kernels (forward and backward), f32 and f64. Batch norm's
// statistics are sums in double (as PyTorch's CPU batch norm), its f32 normalization in float;
// f32 layer norm computes in float with blocked sums (as PyTorch's), f64 in double.
// `parallel` splits channels / rows over threads (the CPU kernel); the reference kernel runs
// the same loops on one thread.
#pragma once

#include <cstdint>

#include "kernels/cpu/dense_params.h"

namespace tg::cpu {

// A double mean as two floats, hi + lo: (x - hi) - lo is x - mean to float precision even
// where |mean| >> sigma (x - hi is exact near the mean). Batch norm's f32 normalization.
struct SplitMean {
  float hi, lo;
  explicit SplitMean(double m) : hi(static_cast<float>(m)), lo(static_cast<float>(m - hi)) {}
};

// Batch statistics per channel: mean, biased var, invstd = 1/sqrt(var+eps);
// y = (x - mean) * invstd * w + b.
template <typename T>
void BatchNormTrain(const BatchNormParams& p, const T* x, const T* w, const T* b, T* y, T* mean,
                    T* invstd, T* var, bool parallel);
// y = (x - running_mean) / sqrt(running_var + eps) * w + b.
template <typename T>
void BatchNormInference(const BatchNormParams& p, const T* x, const T* w, const T* b,
                        const T* running_mean, const T* running_var, T* y, bool parallel);
// Gradients of BatchNormTrain's y with batch statistics: mean, invstd as saved, or (with
// p.recompute_stats) recomputed from x in double exactly as the forward computed them.
template <typename T>
void BatchNormBackward(const BatchNormParams& p, const T* dy, const T* x, const T* w,
                       const T* mean, const T* invstd, T* dx, T* dw, T* db, bool parallel);

// Mixed precision (an f32 model whose activations are half): x and dx in f16 (bf16 false) or
// bf16, everything else f32, NCHW. The same numbers as widening x to f32 for the f32 kernels
// and rounding their dx to x's dtype, to nearest even, without those copies.
void BatchNormTrainHalfX(const BatchNormParams& p, const uint16_t* x, bool bf16, const float* w,
                         const float* b, float* y, float* mean, float* invstd, float* var,
                         bool parallel);
void BatchNormBackwardHalfX(const BatchNormParams& p, const float* dy, const uint16_t* x,
                            bool bf16, const float* w, const float* mean, const float* invstd,
                            uint16_t* dx, float* dw, float* db, bool parallel);

// The same two on x, y, dy, dx in the channel-blocked layout of p.block channels per block
// (8 or 16; batch_norm_blocked.cc): the statistics' sums in double, the normalization in T,
// as above; `parallel` splits the channel blocks over threads. Called by the two above when
// p.block > 1.
template <typename T>
void BlockedBatchNormTrain(const BatchNormParams& p, const T* x, const T* w, const T* b, T* y,
                           T* mean, T* invstd, T* var, bool parallel);
template <typename T>
void BlockedBatchNormBackward(const BatchNormParams& p, const T* dy, const T* x, const T* w,
                              const T* mean, const T* invstd, T* dx, T* dw, T* db,
                              bool parallel);

// Per row: mean, rstd = 1/sqrt(biased var + eps); y = act((x - mean) * rstd * w + b), act =
// p.activation (none unless fused).
template <typename T>
void LayerNormForward(const LayerNormParams& p, const T* x, const T* w, const T* b, T* y,
                      T* mean, T* rstd, bool parallel);
template <typename T>
void LayerNormBackward(const LayerNormParams& p, const T* dy, const T* x, const T* w,
                       const T* mean, const T* rstd, T* dx, T* dw, T* db, bool parallel);

}  // namespace tg::cpu
