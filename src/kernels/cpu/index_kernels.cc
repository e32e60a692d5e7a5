// Indexing kernels; see index_kernels.h.
#include "kernels/cpu/index_kernels.h"

#include <cstring>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/shape_kernels.h"
#include "support/error.h"

namespace tg::cpu {
namespace {

constexpr int64_t kGrain = 1 << 14;

int64_t Numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<int64_t> Strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> s(shape.size(), 1);
  for (int64_t i = static_cast<int64_t>(shape.size()) - 2; i >= 0; --i) {
    s[i] = s[i + 1] * shape[i + 1];
  }
  return s;
}

// Index shape split around the axis as [A, K, B], with the x offsets of every prefix
// position a (dims < axis) and every suffix position b (dims > axis).
struct GatherLayout {
  int64_t A = 1, K = 1, B = 1, x_axis_stride = 1;
  std::vector<int64_t> pre, suf;
};

std::vector<int64_t> OffsetsOf(const std::vector<int64_t>& shape, const std::vector<int64_t>& xs,
                               size_t begin, size_t end) {
  std::vector<int64_t> offs = {0};
  for (size_t d = begin; d < end; ++d) {
    std::vector<int64_t> next;
    next.reserve(offs.size() * shape[d]);
    for (int64_t o : offs) {
      for (int64_t i = 0; i < shape[d]; ++i) next.push_back(o + i * xs[d]);
    }
    offs = std::move(next);
  }
  return offs;
}

GatherLayout LayoutOf(const GatherParams& p) {
  GatherLayout l;
  std::vector<int64_t> xs = Strides(p.x_shape);
  size_t axis = static_cast<size_t>(p.axis), rank = p.index_shape.size();
  if (rank == 0) {  // a scalar gather: one element
    l.pre = l.suf = {0};
    return l;
  }
  l.K = p.index_shape[axis];
  l.x_axis_stride = xs[axis];
  l.pre = OffsetsOf(p.index_shape, xs, 0, axis);
  l.suf = OffsetsOf(p.index_shape, xs, axis + 1, rank);
  l.A = static_cast<int64_t>(l.pre.size());
  l.B = static_cast<int64_t>(l.suf.size());
  return l;
}

int64_t AxisSize(const GatherParams& p) {
  return p.x_shape.empty() ? 1 : p.x_shape[p.axis];
}

template <typename Fn>
void ByElemSize(size_t elem_size, Fn&& fn) {
  switch (elem_size) {
    case 1: fn(uint8_t{}); break;
    case 2: fn(uint16_t{}); break;
    case 4: fn(uint32_t{}); break;
    default: fn(uint64_t{}); break;
  }
}

// x offset of output element `flat` of a gather, the reference way (full unravel).
template <typename I>
int64_t GatherOffsetRef(const GatherParams& p, const I* index, int64_t flat) {
  std::vector<int64_t> xs = Strides(p.x_shape);
  int64_t off = 0, rest = flat;
  for (int64_t d = static_cast<int64_t>(p.index_shape.size()) - 1; d >= 0; --d) {
    int64_t m = rest % p.index_shape[d];
    rest /= p.index_shape[d];
    off += (d == p.axis ? static_cast<int64_t>(index[flat]) : m) * xs[d];
  }
  return off;
}

}  // namespace

template <typename I>
void CheckIndices(const I* index, int64_t n, int64_t limit) {
  for (int64_t i = 0; i < n; ++i) {
    int64_t v = static_cast<int64_t>(index[i]);
    TG_CHECK(v >= 0 && v < limit, kRuntime, "index ", v, " out of range [0, ", limit, ")");
  }
}

namespace {
[[noreturn]] void IndexOutOfBounds(int64_t v, int64_t size, int64_t dim) {
  Fail(ErrorKind::kRuntime, "index ", v, " is out of bounds for dimension ", dim, " with size ",
       size);
}
}  // namespace

template <typename I>
void WrapIndices(const I* index, int64_t* out, int64_t n, int64_t size, int64_t dim) {
  bool ok = true;
  for (int64_t i = 0; i < n; ++i) {  // branch-free wrap; one check after the loop
    int64_t v = static_cast<int64_t>(index[i]);
    ok &= (v >= -size) & (v < size);
    out[i] = v + (v < 0 ? size : 0);
  }
  if (ok) return;
  for (int64_t i = 0; i < n; ++i) {
    int64_t v = static_cast<int64_t>(index[i]);
    if (v < -size || v >= size) IndexOutOfBounds(v, size, dim);
  }
}

template <typename I>
void WrapIndicesRef(const I* index, int64_t* out, int64_t n, int64_t size, int64_t dim) {
  for (int64_t i = 0; i < n; ++i) {
    int64_t v = static_cast<int64_t>(index[i]);
    if (v < -size || v >= size) IndexOutOfBounds(v, size, dim);
    out[i] = v < 0 ? v + size : v;
  }
}

template <typename I>
void Gather(const void* x, const I* index, void* out, const GatherParams& p) {
  CheckIndices(index, Numel(p.index_shape), AxisSize(p));
  GatherLayout l = LayoutOf(p);
  ByElemSize(p.elem_size, [&](auto w) {
    using W = decltype(w);
    const W* src = static_cast<const W*>(x);
    W* dst = static_cast<W*>(out);
    int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(1, l.K * l.B));
    ParallelFor(l.A, grain, [&](int64_t b, int64_t e) {
      for (int64_t a = b; a < e; ++a) {
        for (int64_t k = 0; k < l.K; ++k) {
          int64_t row = (a * l.K + k) * l.B;
          for (int64_t j = 0; j < l.B; ++j) {
            dst[row + j] = src[l.pre[a] + index[row + j] * l.x_axis_stride + l.suf[j]];
          }
        }
      }
    });
  });
}

template <typename I>
void GatherRef(const void* x, const I* index, void* out, const GatherParams& p) {
  int64_t n = Numel(p.index_shape);
  CheckIndices(index, n, AxisSize(p));
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(static_cast<uint8_t*>(out) + i * p.elem_size,
                static_cast<const uint8_t*>(x) + GatherOffsetRef(p, index, i) * p.elem_size,
                p.elem_size);
  }
}

// out = base, then out[pos(m)] = combine(out[pos(m)], src[m]) for every m: the one loop of
// scatter_add and scatter_max. Different prefix positions write disjoint parts of out, so
// they run in parallel; the reference runs every write serially in index order.
template <typename T, typename I, typename Combine>
void ScatterWith(const T* base, const I* index, const T* src, T* out, const GatherParams& p,
                 Combine combine) {
  CheckIndices(index, Numel(p.index_shape), AxisSize(p));
  if (out != base) std::memcpy(out, base, Numel(p.x_shape) * sizeof(T));
  GatherLayout l = LayoutOf(p);
  int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(1, l.K * l.B));
  ParallelFor(l.A, grain, [&](int64_t b, int64_t e) {
    for (int64_t a = b; a < e; ++a) {
      for (int64_t k = 0; k < l.K; ++k) {
        int64_t row = (a * l.K + k) * l.B;
        for (int64_t j = 0; j < l.B; ++j) {
          T& o = out[l.pre[a] + index[row + j] * l.x_axis_stride + l.suf[j]];
          o = combine(o, src[row + j]);
        }
      }
    }
  });
}

template <typename T, typename I, typename Combine>
void ScatterWithRef(const T* base, const I* index, const T* src, T* out, const GatherParams& p,
                    Combine combine) {
  int64_t n = Numel(p.index_shape);
  CheckIndices(index, n, AxisSize(p));
  for (int64_t i = 0; i < Numel(p.x_shape); ++i) out[i] = base[i];
  for (int64_t i = 0; i < n; ++i) {
    T& o = out[GatherOffsetRef(p, index, i)];
    o = combine(o, src[i]);
  }
}

template <typename T>
T Plus(T a, T b) {
  return a + b;
}

// max(a, b) with NaN propagating from either side.
template <typename T>
T MaxKeepNan(T a, T b) {
  if (a != a) return a;
  return (b > a || b != b) ? b : a;
}

template <typename T, typename I>
void ScatterAdd(const T* base, const I* index, const T* src, T* out, const GatherParams& p) {
  ScatterWith(base, index, src, out, p, Plus<T>);
}

template <typename T, typename I>
void ScatterAddRef(const T* base, const I* index, const T* src, T* out, const GatherParams& p) {
  ScatterWithRef(base, index, src, out, p, Plus<T>);
}

template <typename T, typename I>
void ScatterMax(const T* base, const I* index, const T* src, T* out, const GatherParams& p) {
  ScatterWith(base, index, src, out, p, MaxKeepNan<T>);
}

template <typename T, typename I>
void ScatterMaxRef(const T* base, const I* index, const T* src, T* out, const GatherParams& p) {
  ScatterWithRef(base, index, src, out, p, MaxKeepNan<T>);
}

template <typename T>
T Times(T a, T b) {
  return a * b;
}

template <typename T, typename I>
void ScatterMul(const T* base, const I* index, const T* src, T* out, const GatherParams& p) {
  ScatterWith(base, index, src, out, p, Times<T>);
}

template <typename T, typename I>
void ScatterMulRef(const T* base, const I* index, const T* src, T* out, const GatherParams& p) {
  ScatterWithRef(base, index, src, out, p, Times<T>);
}

template <typename I>
void IndexSelect(const void* x, const I* index, void* out, const IndexSelectParams& p) {
  CheckIndices(index, p.n, p.dim);
  size_t row = static_cast<size_t>(p.inner) * p.elem_size;
  auto* src = static_cast<const uint8_t*>(x);
  auto* dst = static_cast<uint8_t*>(out);
  int64_t grain = std::max<int64_t>(1, kGrain * 4 / std::max<int64_t>(1, row));
  ParallelFor(p.outer * p.n, grain, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      int64_t o = t / p.n, j = t % p.n;
      std::memcpy(dst + t * row, src + (o * p.dim + index[j]) * row, row);
    }
  });
}

template <typename I>
void IndexSelectRef(const void* x, const I* index, void* out, const IndexSelectParams& p) {
  CheckIndices(index, p.n, p.dim);
  for (int64_t o = 0; o < p.outer; ++o) {
    for (int64_t j = 0; j < p.n; ++j) {
      for (int64_t i = 0; i < p.inner; ++i) {
        std::memcpy(static_cast<uint8_t*>(out) + ((o * p.n + j) * p.inner + i) * p.elem_size,
                    static_cast<const uint8_t*>(x) +
                        ((o * p.dim + index[j]) * p.inner + i) * p.elem_size,
                    p.elem_size);
      }
    }
  }
}

template <typename T, typename I>
void IndexAdd(const T* base, const I* index, const T* src, T* out, const IndexSelectParams& p) {
  CheckIndices(index, p.n, p.dim);
  if (out != base) std::memcpy(out, base, p.outer * p.dim * p.inner * sizeof(T));
  constexpr int64_t kChunk = 256;
  int64_t chunks = (p.inner + kChunk - 1) / kChunk;
  // Tasks own disjoint (outer, inner-chunk) columns; duplicates within a task are sequential.
  ParallelFor(p.outer * chunks, std::max<int64_t>(1, kGrain / (kChunk * std::max<int64_t>(1, p.n))),
              [&](int64_t b, int64_t e) {
                for (int64_t t = b; t < e; ++t) {
                  int64_t o = t / chunks, i0 = (t % chunks) * kChunk;
                  int64_t i1 = std::min(p.inner, i0 + kChunk);
                  for (int64_t j = 0; j < p.n; ++j) {
                    T* dst = out + (o * p.dim + index[j]) * p.inner;
                    const T* s = src + (o * p.n + j) * p.inner;
                    for (int64_t i = i0; i < i1; ++i) dst[i] += s[i];
                  }
                }
              });
}

template <typename T, typename I>
void IndexAddRef(const T* base, const I* index, const T* src, T* out, const IndexSelectParams& p) {
  CheckIndices(index, p.n, p.dim);
  for (int64_t i = 0; i < p.outer * p.dim * p.inner; ++i) out[i] = base[i];
  for (int64_t o = 0; o < p.outer; ++o) {
    for (int64_t j = 0; j < p.n; ++j) {
      for (int64_t i = 0; i < p.inner; ++i) {
        out[(o * p.dim + index[j]) * p.inner + i] += src[(o * p.n + j) * p.inner + i];
      }
    }
  }
}

template <typename T, typename I>
void EmbeddingBackward(const T* go, const I* index, T* gw, const EmbeddingBackwardParams& p) {
  CheckIndices(index, p.n, p.num_weights);
  const T zero = T(0);
  Fill(gw, p.num_weights * p.dim, &zero, sizeof(T));  // on every thread: a vocabulary's
                                                       // gradient is ~100 MB
  constexpr int64_t kChunk = 64;
  int64_t chunks = (p.dim + kChunk - 1) / kChunk;
  ParallelFor(chunks, std::max<int64_t>(1, kGrain / (kChunk * std::max<int64_t>(1, p.n))),
              [&](int64_t b, int64_t e) {
                int64_t c0 = b * kChunk, c1 = std::min(p.dim, e * kChunk);
                for (int64_t k = 0; k < p.n; ++k) {
                  int64_t row = static_cast<int64_t>(index[k]);
                  if (row == p.padding_idx) continue;
                  T* dst = gw + row * p.dim;
                  const T* s = go + k * p.dim;
                  for (int64_t c = c0; c < c1; ++c) dst[c] += s[c];
                }
              });
}

template <typename T, typename I>
void EmbeddingBackwardRef(const T* go, const I* index, T* gw, const EmbeddingBackwardParams& p) {
  CheckIndices(index, p.n, p.num_weights);
  for (int64_t i = 0; i < p.num_weights * p.dim; ++i) gw[i] = T(0);
  for (int64_t k = 0; k < p.n; ++k) {
    if (static_cast<int64_t>(index[k]) == p.padding_idx) continue;
    for (int64_t c = 0; c < p.dim; ++c) gw[index[k] * p.dim + c] += go[k * p.dim + c];
  }
}

#define TG_INSTANTIATE_I(I)                                                                \
  template void CheckIndices<I>(const I*, int64_t, int64_t);                               \
  template void WrapIndices<I>(const I*, int64_t*, int64_t, int64_t, int64_t);             \
  template void WrapIndicesRef<I>(const I*, int64_t*, int64_t, int64_t, int64_t);          \
  template void Gather<I>(const void*, const I*, void*, const GatherParams&);              \
  template void GatherRef<I>(const void*, const I*, void*, const GatherParams&);           \
  template void IndexSelect<I>(const void*, const I*, void*, const IndexSelectParams&);    \
  template void IndexSelectRef<I>(const void*, const I*, void*, const IndexSelectParams&);
#define TG_INSTANTIATE_TI(T, I)                                                                  \
  template void ScatterAdd<T, I>(const T*, const I*, const T*, T*, const GatherParams&);         \
  template void ScatterAddRef<T, I>(const T*, const I*, const T*, T*, const GatherParams&);      \
  template void ScatterMax<T, I>(const T*, const I*, const T*, T*, const GatherParams&);         \
  template void ScatterMaxRef<T, I>(const T*, const I*, const T*, T*, const GatherParams&);      \
  template void ScatterMul<T, I>(const T*, const I*, const T*, T*, const GatherParams&);         \
  template void ScatterMulRef<T, I>(const T*, const I*, const T*, T*, const GatherParams&);      \
  template void IndexAdd<T, I>(const T*, const I*, const T*, T*, const IndexSelectParams&);      \
  template void IndexAddRef<T, I>(const T*, const I*, const T*, T*, const IndexSelectParams&);   \
  template void EmbeddingBackward<T, I>(const T*, const I*, T*, const EmbeddingBackwardParams&); \
  template void EmbeddingBackwardRef<T, I>(const T*, const I*, T*, const EmbeddingBackwardParams&);
#define TG_INSTANTIATE_T(T) TG_INSTANTIATE_TI(T, int32_t) TG_INSTANTIATE_TI(T, int64_t)
TG_INSTANTIATE_I(int32_t)
TG_INSTANTIATE_I(int64_t)
TG_INSTANTIATE_T(float)
TG_INSTANTIATE_T(double)
TG_INSTANTIATE_T(int32_t)
TG_INSTANTIATE_T(int64_t)
#undef TG_INSTANTIATE_I
#undef TG_INSTANTIATE_TI
#undef TG_INSTANTIATE_T

}  // namespace tg::cpu
