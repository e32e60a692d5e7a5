// conv2d's shape rules, shared by conv.cc (conv2d and its backward ops) and
// conv_epilogue.cc (conv2d_epilogue, made by the fuse-conv-epilogue pass).
#pragma once

#include <string>

#include "ir/attr.h"
#include "ir/tensor_type.h"
#include "kernels/cpu/dense_params.h"
#include "kernels/cpu/onednn_kernels.h"
#include "ops/registry.h"

namespace tg {

// Validates x [N,C,H,W] against w [O,C/groups,kh,kw] and the attributes (stride, padding,
// dilation, groups); the output size is PyTorch's floor((H + 2p - d(k-1) - 1) / s) + 1.
cpu::Conv2dParams ConvParams(const Shape& x, const Shape& w, const AttrMap& attrs,
                             const std::string& op);

// The layout attributes src_blocked / dst_blocked (absent: false) of a convolution node:
// its x side (x, or dx for conv2d_backward_input) and y side (y, or dy for both backward
// ops) in oneDNN's channel-blocked layout (kernels/cpu/channel_blocking.h), set by
// block-conv-layout. Checks that the blocked side has whole blocks of 16 channels.
cpu::ConvLayout ConvLayoutOf(const AttrMap& attrs, const cpu::Conv2dParams& p,
                             const std::string& op);

// [N, O, oh, ow].
Shape ConvOutShape(const cpu::Conv2dParams& p);

// 2 x the multiply-adds of a convolution (the same in its forward and both backward passes).
inline double ConvFlops(const cpu::Conv2dParams& p) {
  return 2.0 * static_cast<double>(p.n * p.o * p.oh * p.ow) *
         static_cast<double>(p.c / p.groups * p.kh * p.kw);
}

// The implicit GEMM of a convolution pass, per group: forward and backward-input multiply
// [N*oh*ow, C/g*kh*kw] (resp. [N*oh*ow, O/g*kh*kw]) by the weights; backward-weight multiplies
// dy^T [O/g, N*oh*ow] by the unfolded input. Each has ConvFlops / 2 multiply-adds.
GemmShape ConvGemm(const cpu::Conv2dParams& p, const std::string& op);

}  // namespace tg
