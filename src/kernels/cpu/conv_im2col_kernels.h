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

#include "kernels/cpu/dense_params.h"
#include "kernels/cpu/onednn_kernels.h"

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
  std::shared_ptr<OnednnMatmul> gemm_;
  // dy^T then the columns, shared by copies of the kernel (as Conv2dBackwardWeightIm2col's).
  std::shared_ptr<std::vector<unsigned char>> scratch_ =
      std::make_shared<std::vector<unsigned char>>();
};

}  // namespace tg::cpu
