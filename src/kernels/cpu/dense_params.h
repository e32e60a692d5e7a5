// Plain parameter structs of the dense kernels (matmul, conv, pooling, norms). Kernels take
// raw pointers plus one of these; the op files fill them from node types and attributes.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace tg::cpu {

// out[batch..., m, n] = op(a)[batch..., m, k] * op(b)[batch..., k, n]. a_batch / b_batch are
// the operands' batch dims left-padded with 1 to batch.size(); a 1 broadcasts.
// a is stored [..., m, k] ([..., k, m] when trans_a); b is [..., k, n] ([..., n, k] if trans_b).
struct MatmulParams {
  std::vector<int64_t> batch, a_batch, b_batch;
  int64_t m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
};

// The same product as one GEMM where that is possible: a batch of row-major a's times one b
// shared by every batch ([B..., M, K] x [K, N]) is [B * M, K] x [K, N] on the same bytes,
// and its result [B * M, N] is the batched result's layout. One GEMM streams b once; B
// GEMMs of M rows each read all of b every time (nn.MultiheadAttention's in-projection,
// [seq, batch, E] x [E, 3E]: 197 products of 2 rows, 46 ms instead of 4).
inline MatmulParams FoldSharedB(MatmulParams p) {
  const bool one_b = std::all_of(p.b_batch.begin(), p.b_batch.end(),
                                 [](int64_t d) { return d == 1; });
  if (p.trans_a || !one_b || p.a_batch != p.batch) return p;
  for (int64_t d : p.batch) p.m *= d;
  p.batch.clear();
  p.a_batch.clear();
  p.b_batch.clear();
  return p;
}

// conv2d: x [n, c, h, w], w [o, c / groups, kh, kw], y [n, o, oh, ow] (no bias).
struct Conv2dParams {
  int64_t n = 0, c = 0, h = 0, w = 0;
  int64_t o = 0, kh = 0, kw = 0, oh = 0, ow = 0;
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1;
  int64_t groups = 1;
};

// 2-d pooling over planes: x [planes, h, w] -> y [planes, oh, ow] (planes = n * c).
struct Pool2dParams {
  int64_t planes = 0, h = 0, w = 0, oh = 0, ow = 0;
  int64_t kh = 1, kw = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  int64_t dil_h = 1, dil_w = 1;
  bool count_include_pad = true;
  int64_t divisor_override = 0;
  // max pooling: 0 for [planes, h, w] buffers; B for oneDNN's channel-blocked nChw<B>c
  // (channel_blocking.h; planes = N * C, C divisible by B), set by block-conv-layout.
  int64_t block = 0;
  // With a block: C when the layout is NHWC instead (channels last: one block of all C
  // channels; the kernels still take B channels of a position at a time), else 0.
  int64_t channels_last = 0;
};

// batch norm: x viewed as [n, c, s] (s = product of the dims after 1), statistics per c.
struct BatchNormParams {
  int64_t n = 0, c = 0, s = 0;
  double eps = 1e-5;
  // batch_norm_backward: recompute the batch statistics from x in double (with eps) instead
  // of reading the saved, T-rounded mean / invstd.
  bool recompute_stats = false;
  // 0: x (and y, dy, dx) NCHW; B: oneDNN's channel-blocked nChw<B>c (channel_blocking.h),
  // the layout block-conv-layout hands between convolutions (batch_norm_train / _backward).
  int64_t block = 0;
};

// layer norm: x viewed as [rows, d], statistics per row, weight / bias of size d.
enum class Activation;  // kernels/cpu/activation.h

struct LayerNormParams {
  int64_t rows = 0, d = 0;
  double eps = 1e-5;
  Activation activation{};  // applied to y as it is written (kNone: none)
};

}  // namespace tg::cpu
