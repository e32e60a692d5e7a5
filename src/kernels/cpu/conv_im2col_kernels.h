// Convolutions over im2col columns and as GEMMs, where oneDNN's kernels do worse for the
// shape (each class below says where and by how much): backward-weight of single-channel
// inputs with our own dot products, backward-weight as one GEMM over columns, and bf16
// forward / backward-input as GEMMs on NCHW buffers.
//
// conv2d backward-weight over im2col columns, for single-channel inputs (the first layer of
// greyscale image networks). oneDNN's kernels pad the input channels to the vector width (8
// or 16) and do that much more work there; this unrolls each image into its kh*kw shifted
// copies and takes dot products with dy. Measured on 2 AVX2 cores (the MNIST main job's first
// conv, 16x1x28x28, 32 3x3 filters): oneDNN 0.48 ms, this 0.11 ms. With 3 input channels
// oneDNN was 2x faster than this, hence the single-channel rule.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/cpu/activation.h"
#include "kernels/cpu/dense_params.h"
#include "kernels/cpu/dense_matmul.h"

namespace tg::cpu {

// Whether Conv2dBackwardWeightIm2col is the kernel for `p`: one input channel, groups 1.
bool PreferIm2colBackwardWeight(const Conv2dParams& p);

// dw[o, c, kh, kw] = sum over n, oy, ox of dy[n, o, oy, ox] * x[n, c, iy, ix] (zero padding,
// stride, dilation; groups must be 1; any c, though only c == 1 is preferred). cols[n][tap][q]
// (tap = (c, ky, kx), q = (oy, ox)) lives in a buffer the kernel owns, allocated on first use.
class Conv2dBackwardWeightIm2col {
 public:
  explicit Conv2dBackwardWeightIm2col(const Conv2dParams& p);
  void Run(const float* dy, const float* x, float* dw) const;

 private:
  Conv2dParams p_;
  // Shared by copies of the kernel (a kernel runs on one thread at a time).
  std::shared_ptr<std::vector<float>> cols_ = std::make_shared<std::vector<float>>();
};

// conv2d backward-weight as one GEMM over im2col columns, for convolutions with few output
// positions in the whole batch (n * oh * ow <= 64): ResNet's last stage at small inputs (2x2
// maps, batch 8: a contraction of 32), where oneDNN 2.6's backward-weight kernels ran at 63-76
// GFLOP/s against 110-125 for the same network's larger maps (this: 130-150).
// dw [o, c*kh*kw] = dy^T [o, n*oh*ow] x cols [n*oh*ow, c*kh*kw] on oneDNN's matmul (columns
// built transposed, so the matmul reads them with trans_b); dy and x NCHW. In bf16 (`type`
// kBF16) also every 1x1 convolution and maps up to 256 positions (measured, see the .cc).
bool PreferGemmBackwardWeight(const Conv2dParams& p, DenseType type);

class Conv2dBackwardWeightGemm {
 public:
  // `type`: kF32 or kBF16 (dy, x and dw all of it; bf16 as uint16 bits, the GEMM on oneDNN's
  // bf16 kernels with f32 accumulation).
  explicit Conv2dBackwardWeightGemm(const Conv2dParams& p, DenseType type = DenseType::kF32);
  void Run(const void* dy, const void* x, void* dw) const;

 private:
  Conv2dParams p_;
  DenseType type_;
  std::shared_ptr<DenseMatmul> gemm_;
  // dy^T then the columns, shared by copies of the kernel (as Conv2dBackwardWeightIm2col's).
  std::shared_ptr<std::vector<unsigned char>> scratch_ =
      std::make_shared<std::vector<unsigned char>>();
};

// A 1x1 convolution: stride 1, no padding, groups 1.
bool IsPointwiseConv(const Conv2dParams& p);

// Forward and backward-input convolutions as GEMMs on NCHW buffers, for bf16 passes (f32
// ones keep activations channel-blocked between convolutions instead, block-conv-layout).
// oneDNN's convolutions want NHWC or channel-blocked activations and their own weight
// layout, so on NCHW operands every call reorders x (dy), w and y (dx); in bf16 those
// reorders cost 3-6x the AMX convolution itself (ResNet-50's 1x1 shapes at batch 8 and 32,
// AMX Xeon, 2 threads: reorders + convolution 0.08-8.4 ms, the GEMM 0.02-3.0 ms). Forms:
//  - batched, for 1x1 convolutions on planes of >= kBatchedMinPlane positions: y[n] (o x hw)
//    = w (o x c) . x[n] (c x hw) and dx[n] = w^T . dy[n], w broadcast over the batch, no copy;
//  - gathered: forward, for 1x1 convolutions on smaller planes and any convolution with at
//    most 256 output positions in the batch, one GEMM over the batch's im2col columns (for
//    1x1 the planes side by side), scattered back to NCHW; backward-input, with at most 128
//    positions, the columns' gradient (dy^T)^T . w in f32 (the weight read as stored, the
//    right operand), summed into dx (col2im) and rounded once.
//    The batched form reads w once per image, which on small planes (ResNet-50's 2x2 and 4x4
//    stages: 0.5-2 MB weights, 4-16 positions) cost 1.2-1.6 ms per convolution, ~10x this.
// PreferGemm: whether `pass` of `p` (bf16) takes these GEMMs (backward-weight:
// Conv2dBackwardWeightGemm), else oneDNN's convolution.
bool PreferGemm(const Conv2dParams& p, ConvPass pass);

class Conv2dGemm {
 public:
  // `pass`: kForward or kBackwardInput, where PreferGemm; `type`: kF32 or kBF16 for every
  // buffer.
  Conv2dGemm(const Conv2dParams& p, ConvPass pass, DenseType type);
  // in0: x (forward) or dy (backward-input); in1: w; out: y or dx.
  void Run(const void* in0, const void* in1, void* out) const;

  static constexpr int64_t kBatchedMinPlane = 64;

 private:
  Conv2dParams p_;
  ConvPass pass_;
  DenseType type_;
  bool batched_ = false;
  std::shared_ptr<DenseMatmul> gemm_;
  // Columns / gathered rows and the GEMM's result, shared by copies of the kernel.
  std::shared_ptr<std::vector<unsigned char>> scratch_ =
      std::make_shared<std::vector<unsigned char>>();
};

// Mixed precision's conv2d_epilogue (ops/conv_epilogue.cc) as one GEMM over the batch's im2col
// columns, where PreferGemmEpilogue: y = act(w . x + shift[o]), x and the folded weight in
// bf16, y in f32, x and y NCHW or channel-blocked (channel_blocking.h); the GEMM writes f32
// sums, then one pass adds the shift, applies the activation and writes y's layout. oneDNN's
// mixed convolution reorders x and y on every call (its AMX kernels want NHWC), which on
// ResNet-50's 2x2 stage (inference, batch 8, 64x64 inputs: 32 positions, 2 threads on an AMX
// Xeon) took 0.9 ms per 3x3 convolution; this 0.5. On its 4x4 stage (128 positions) and 1x1
// convolutions on larger planes oneDNN's blocked kernels were 1.7-2.8x faster than these GEMMs.
bool PreferGemmEpilogue(const Conv2dParams& p);

class Conv2dGemmEpilogue {
 public:
  Conv2dGemmEpilogue(const Conv2dParams& p, ConvLayout layout, Activation activation);
  // x: bf16 bits in `layout`'s src layout; w: the weight's bf16 bits [o][c * kh * kw]
  // (64-byte aligned: the GEMM reads it in place); shift: [o]; y: f32 in the dst layout.
  void Run(const uint16_t* x, const uint16_t* w, const float* shift, float* y) const;

 private:
  Conv2dParams p_;
  ConvLayout layout_;
  Activation activation_;
  std::shared_ptr<DenseMatmul> gemm_;
  // x's NCHW copy, the columns and the GEMM's f32 result, shared by copies of the kernel.
  std::shared_ptr<std::vector<unsigned char>> scratch_ =
      std::make_shared<std::vector<unsigned char>>();
};

}  // namespace tg::cpu
