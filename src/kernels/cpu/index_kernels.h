// Indexing kernels: gather / scatter_add (torch.gather semantics along one axis),
// index_select / index_add (whole slices picked by a 1-D index; embedding is index_select on
// axis 0) and embedding_backward. Every kernel validates its indices first and throws a
// Runtime error ("index 7 out of range [0, 5)") instead of reading out of bounds. Pure data
// movement takes opaque elem_size-byte elements; accumulating kernels take T (float, double,
// int32_t, int64_t). I is the index type (int32_t or int64_t).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace tg::cpu {

template <typename I> void CheckIndices(const I* index, int64_t n, int64_t limit);

// index_wrap: out[i] = index[i] + size when index[i] < 0, else index[i] (torch's negative
// indices); an index outside [-size, size) throws "index 7 is out of bounds for dimension 1
// with size 5", torch's message. Checks each dimension of an advanced index on its own.
template <typename I>
void WrapIndices(const I* index, int64_t* out, int64_t n, int64_t size, int64_t dim);
template <typename I>
void WrapIndicesRef(const I* index, int64_t* out, int64_t n, int64_t size, int64_t dim);

// gather: out[m] = x[m with m[axis] replaced by index[m]], out shaped like index;
// index_shape[d] <= x_shape[d] for d != axis. scatter_add is its adjoint onto `base`.
struct GatherParams {
  std::vector<int64_t> x_shape;
  std::vector<int64_t> index_shape;
  int64_t axis = 0;
  size_t elem_size = 4;
};
template <typename I> void Gather(const void* x, const I* index, void* out, const GatherParams& p);
template <typename I>
void GatherRef(const void* x, const I* index, void* out, const GatherParams& p);
template <typename T, typename I>
void ScatterAdd(const T* base, const I* index, const T* src, T* out, const GatherParams& p);
template <typename T, typename I>
void ScatterAddRef(const T* base, const I* index, const T* src, T* out, const GatherParams& p);
// scatter_max: out = base, then out[pos] = max(out[pos], src[m]) for every write (NaN wins,
// as in torch's scatter_reduce "amax" with include_self).
template <typename T, typename I>
void ScatterMax(const T* base, const I* index, const T* src, T* out, const GatherParams& p);
template <typename T, typename I>
void ScatterMaxRef(const T* base, const I* index, const T* src, T* out, const GatherParams& p);
// The same with each src multiplied into its position (scatter_reduce "prod", include_self).
template <typename T, typename I>
void ScatterMul(const T* base, const I* index, const T* src, T* out, const GatherParams& p);
template <typename T, typename I>
void ScatterMulRef(const T* base, const I* index, const T* src, T* out, const GatherParams& p);

// index_select: x is [outer, dim, inner], index has n entries, out is [outer, n, inner].
// index_add is its adjoint onto `base` (duplicates accumulate).
struct IndexSelectParams {
  int64_t outer = 1, dim = 1, inner = 1, n = 0;
  size_t elem_size = 4;
};
template <typename I>
void IndexSelect(const void* x, const I* index, void* out, const IndexSelectParams& p);
template <typename I>
void IndexSelectRef(const void* x, const I* index, void* out, const IndexSelectParams& p);
template <typename T, typename I>
void IndexAdd(const T* base, const I* index, const T* src, T* out, const IndexSelectParams& p);
template <typename T, typename I>
void IndexAddRef(const T* base, const I* index, const T* src, T* out, const IndexSelectParams& p);

// gw [num_weights, dim] = sum over the n rows of go [n, dim] into row index[k], skipping
// rows whose index equals padding_idx (use a negative padding_idx for none).
struct EmbeddingBackwardParams {
  int64_t n = 0, num_weights = 0, dim = 0, padding_idx = -1;
};
template <typename T, typename I>
void EmbeddingBackward(const T* go, const I* index, T* gw, const EmbeddingBackwardParams& p);
template <typename T, typename I>
void EmbeddingBackwardRef(const T* go, const I* index, T* gw, const EmbeddingBackwardParams& p);

}  // namespace tg::cpu
