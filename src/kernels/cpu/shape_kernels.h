// Data-movement kernels for shape ops (reshape copy, permute, expand, slice and its backward,
// concat, fill). Dtype-agnostic: elements are moved as opaque elem_size-byte words, so one
// kernel serves every dtype. Raw pointers and plain parameter structs only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace tg::cpu {

// A strided view over a buffer: element at multi-index idx (over `shape`, row-major) lives at
// `offset + sum_d idx[d] * strides[d]` (in elements; a stride of 0 broadcasts).
struct StridedView {
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;
  int64_t offset = 0;
  size_t elem_size = 4;
};

// Merges adjacent dimensions that are contiguous with respect to each other and drops
// size-1 dimensions; the iteration order (row-major over shape) is unchanged.
StridedView Coalesce(const StridedView& v);

void CopyBytes(const void* in, void* out, size_t bytes);

// out (contiguous, row-major over v.shape) = the elements of `in` seen through v.
void StridedGather(const StridedView& v, const void* in, void* out);
void StridedGatherRef(const StridedView& v, const void* in, void* out);

// out (out_numel elements) = 0, then the elements of the strided view over `out` take the
// contiguous `in` values in order. Used by slice_backward.
void StridedScatter(const StridedView& v, const void* in, void* out, int64_t out_numel);
void StridedScatterRef(const StridedView& v, const void* in, void* out, int64_t out_numel);

// Concatenation along one axis: every input is [outer, chunk_bytes[i]] bytes; the output is
// [outer, sum(chunk_bytes)].
struct ConcatParams {
  int64_t outer = 1;
  std::vector<int64_t> chunk_bytes;
};
void Concat(const ConcatParams& p, const void* const* ins, void* out);
void ConcatRef(const ConcatParams& p, const void* const* ins, void* out);

// Writes n copies of the elem_size-byte `pattern` to out.
void Fill(void* out, int64_t n, const void* pattern, size_t elem_size);

}  // namespace tg::cpu
