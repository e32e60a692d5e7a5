// Depthwise conv2d backward-weight (one filter per channel: groups == c == o) as direct
// loops. oneDNN 2.6's depthwise backward-weight JIT kernel does not take every shape: for
// the small planes of a network's last stages (EfficientNet-B0's 1152-channel 5x5 depthwise
// convolutions on 2x2 planes) it falls back to a GEMM per group ("gemm:jit"), measured at
// 3.8 ms for [8, 1152, 2, 2] with 5x5 filters on 2 AVX-512 cores, 0.5 GFLOP/s. The conv2d
// kernel factory uses these loops exactly where oneDNN made that choice. They read x and dy
// in NCHW or in the channel-blocked layout block-conv-layout hands between convolutions
// (kernels/cpu/channel_blocking.h), so a blocked network needs no NCHW copies here.
#pragma once

#include "kernels/cpu/dense_params.h"

namespace tg::cpu {

// One filter per channel and one output channel per group (a depth multiplier of 1).
bool IsDepthwise(const Conv2dParams& p);

// dw[c, 0, kh, kw] = sum over n, oy, ox of dy[n, c, oy, ox] * x[n, c, iy, ix] (zero
// padding, stride, dilation). Blocks of 16 channels in parallel, vectorized across the
// block's channels; each sum in a fixed order (f32), so runs repeat bit for bit, whatever
// the layouts. `x_block` / `dy_block`: 0 for NCHW, else the channel block (8 or 16) of that
// operand's nChw<block>c layout (p.c divisible by it). dw is [c, 1, kh, kw].
class Conv2dBackwardWeightDepthwise {
 public:
  explicit Conv2dBackwardWeightDepthwise(const Conv2dParams& p, int64_t x_block = 0,
                                         int64_t dy_block = 0);
  void Run(const float* dy, const float* x, float* dw) const;

 private:
  Conv2dParams p_;
  int64_t x_block_ = 0, dy_block_ = 0;
};

}  // namespace tg::cpu
