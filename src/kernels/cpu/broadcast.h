// Broadcast iteration for elementwise kernels: numpy-style broadcast strides, dimension
// coalescing and a segment walker that visits a flat range of the output as runs along the
// innermost (coalesced) dimension. Raw shapes and strides only; no IR types.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace tg::cpu {

using Dims = std::vector<int64_t>;

// Strides (in elements) of a contiguous operand of shape `in` read as if broadcast to `out`:
// 0 on broadcast (and missing leading) dimensions.
Dims BroadcastStrides(const Dims& in, const Dims& out);

// An iteration plan over an output shape for several operands, with dimensions of extent 1
// dropped and adjacent dimensions merged where every operand allows it.
struct BroadcastPlan {
  Dims shape;                  // coalesced output shape (may be empty for a scalar)
  std::vector<Dims> strides;   // per operand, same rank as `shape`
  int64_t numel = 1;
};
BroadcastPlan MakeBroadcastPlan(const Dims& out, const std::vector<Dims>& in_shapes);

// Calls fn(const int64_t* offsets, const int64_t* inner_strides, int64_t count) for runs of
// output positions covering the flat range [begin, end): operand k reads element
// offsets[k] + j * inner_strides[k] for j in [0, count). Output offset = the run's flat start,
// which the caller tracks (runs are visited in order and are contiguous in the output).
template <typename Fn>
void ForEachRun(const BroadcastPlan& plan, int64_t begin, int64_t end, Fn&& fn) {
  const int rank = static_cast<int>(plan.shape.size());
  const size_t k = plan.strides.size();
  int64_t offsets[8];
  int64_t inner[8];
  int64_t index[16];
  if (rank == 0) {
    for (size_t o = 0; o < k; ++o) offsets[o] = 0, inner[o] = 0;
    if (begin < end) fn(offsets, inner, end - begin);
    return;
  }
  // Unravel `begin`.
  int64_t rem = begin;
  for (int d = rank - 1; d >= 0; --d) {
    index[d] = rem % plan.shape[d];
    rem /= plan.shape[d];
  }
  for (size_t o = 0; o < k; ++o) {
    offsets[o] = 0;
    for (int d = 0; d < rank; ++d) offsets[o] += index[d] * plan.strides[o][d];
    inner[o] = plan.strides[o][rank - 1];
  }
  const int64_t last = plan.shape[rank - 1];
  int64_t pos = begin;
  while (pos < end) {
    int64_t count = std::min<int64_t>(last - index[rank - 1], end - pos);
    fn(offsets, inner, count);
    pos += count;
    if (pos >= end) break;
    // Advance to the start of the next run (index[rank-1] wraps to 0 with a carry).
    for (size_t o = 0; o < k; ++o) offsets[o] -= index[rank - 1] * inner[o];
    index[rank - 1] = 0;
    for (int d = rank - 2; d >= 0; --d) {
      ++index[d];
      for (size_t o = 0; o < k; ++o) offsets[o] += plan.strides[o][d];
      if (index[d] < plan.shape[d]) break;
      for (size_t o = 0; o < k; ++o) offsets[o] -= index[d] * plan.strides[o][d];
      index[d] = 0;
    }
  }
}

}  // namespace tg::cpu
