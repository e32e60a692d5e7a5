// Automatic mixed precision: an f32 graph rewritten so that the ops of a policy (matmul,
// convolution, attention by default) compute in a half dtype. Their f32 operands are rounded
// to the half dtype, the op runs in it (inputs and result in half; half-widened kernels
// accumulate in f32, see ops/half_widening.h), and its results return to f32 for every other
// op, so softmax, norms, losses, reductions and the optimizer stay in f32. Weights stay f32
// variables (master weights) and the optimizer state f32: the standard AMP recipe. Runs on the
// forward graph before autodiff, so the backward is the gradient of the mixed graph (the
// casts' gradients round the incoming gradients of half ops the same way). Back-to-back half
// ops share the value: a half result cast to f32 and back is the half result itself.
#pragma once

#include <set>
#include <string>

#include "ir/graph.h"

namespace tg {

struct MixedPrecisionPolicy {
  DType half = DType::kBF16;  // f16 or bf16
  std::set<std::string> half_ops = {"matmul", "conv2d", "attention"};
  // Depthwise convolutions (groups == input channels > 1) stay f32 unless this is set: they
  // are memory bound and have no native half kernels here (they run widened), so in half
  // they only add the casts on each side (EfficientNet-B0's bf16 training step on an AMX
  // Xeon, 2 threads: 0.126 s with them in bf16, 0.108 s without).
  bool depthwise_in_half = false;
  // Matmuls and convolutions with fewer result rows than this (rows: the result's elements
  // over its output channels / columns, N x H x W for a convolution) stay f32: a
  // squeeze-excite block's 1 x 1 convolutions on [N, C, 1, 1], a classifier at a small
  // batch. Their time is the casts on each side, not the product. 0: every one in half.
  // TILEGRAPH_AMP_MIN_ROWS overrides it (for measurements). Measured (bf16, AMX Xeon, 2
  // threads, batch 8, the same process alternating): EfficientNet-B0 training 0.084 ->
  // 0.077 s and inference 0.0123 -> 0.0117 s with 32; ResNet-50 and BERT-Base unchanged
  // within noise (64 made ResNet-50 20% slower: its 2 x 2-map convolutions, 32 rows at
  // batch 8, are weight-bound and gain from bf16).
  int64_t min_rows = 32;
  // Matmuls and convolutions summing fewer products than this per result element (a
  // convolution's C / groups x kh x kw, a matmul's contracted dimension) stay f32: a stem
  // convolution on 3 channels, EfficientNet's 16- to 40-channel 1 x 1 convolutions on large
  // maps. Memory bound, they gain nothing from half products and pay for the casts and
  // oneDNN's layout reorders. 0: every one in half. TILEGRAPH_AMP_MIN_DEPTH overrides it.
  // Measured (bf16, AMX Xeon, 2 threads, the suite's batch 8 at 64x64, the same process
  // alternating 0 / 48 / 64): EfficientNet-B0 inference 0.0141 -> 0.0120 s, training 0.088 ->
  // 0.081 s; ResNet-50 inference 0.033 -> 0.030 s, training 0.167 -> 0.162 s (its stem only);
  // BERT-Base unchanged (no contraction under 64). 48 and 64 measured alike.
  int64_t min_depth = 64;
};

// Rewrites `graph` in place; returns how many nodes now compute in the half dtype.
int ApplyMixedPrecision(Graph& graph, const MixedPrecisionPolicy& policy);

}  // namespace tg
