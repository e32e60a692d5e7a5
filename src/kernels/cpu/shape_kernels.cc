// Data-movement kernels for shape ops; see shape_kernels.h.
#include "kernels/cpu/shape_kernels.h"

#include <cstring>

#include "kernels/cpu/parallel.h"

namespace tg::cpu {
namespace {

constexpr int64_t kGrainBytes = 1 << 16;

// Calls fn(W{}) with W an unsigned integer type of the element's size (1, 2, 4 or 8 bytes).
template <typename Fn>
void ByElemSize(size_t elem_size, Fn&& fn) {
  switch (elem_size) {
    case 1: fn(uint8_t{}); break;
    case 2: fn(uint16_t{}); break;
    case 4: fn(uint32_t{}); break;
    default: fn(uint64_t{}); break;
  }
}

// Offset (in elements) of row `row` of the view, where rows are all dims but the last.
int64_t RowOffset(const StridedView& v, int64_t row) {
  int64_t off = v.offset;
  for (int64_t d = static_cast<int64_t>(v.shape.size()) - 2; d >= 0; --d) {
    off += (row % v.shape[d]) * v.strides[d];
    row /= v.shape[d];
  }
  return off;
}

// Calls fn(strided_offset, contiguous_offset, count, stride) once per innermost row.
template <typename Fn>
void ForEachRow(const StridedView& view, Fn&& fn) {
  StridedView v = Coalesce(view);
  int64_t inner = v.shape.back(), stride = v.strides.back();
  int64_t rows = 1;
  for (size_t d = 0; d + 1 < v.shape.size(); ++d) rows *= v.shape[d];
  int64_t grain = std::max<int64_t>(1, kGrainBytes / std::max<int64_t>(1, inner * v.elem_size));
  ParallelFor(rows, grain, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) fn(RowOffset(v, r), r * inner, inner, stride);
  });
}

int64_t ViewOffsetOf(const StridedView& v, int64_t flat) {
  int64_t off = v.offset;
  for (int64_t d = static_cast<int64_t>(v.shape.size()) - 1; d >= 0; --d) {
    off += (flat % v.shape[d]) * v.strides[d];
    flat /= v.shape[d];
  }
  return off;
}

int64_t NumelOf(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

}  // namespace

StridedView Coalesce(const StridedView& v) {
  StridedView out;
  out.offset = v.offset;
  out.elem_size = v.elem_size;
  for (size_t d = 0; d < v.shape.size(); ++d) {
    if (v.shape[d] == 1) continue;
    if (!out.shape.empty() && out.strides.back() == v.strides[d] * v.shape[d]) {
      out.shape.back() *= v.shape[d];
      out.strides.back() = v.strides[d];
    } else {
      out.shape.push_back(v.shape[d]);
      out.strides.push_back(v.strides[d]);
    }
  }
  if (out.shape.empty()) {  // a single element
    out.shape.push_back(1);
    out.strides.push_back(1);
  }
  return out;
}

void CopyBytes(const void* in, void* out, size_t bytes) {
  if (in == out || bytes == 0) return;
  auto* src = static_cast<const uint8_t*>(in);
  auto* dst = static_cast<uint8_t*>(out);
  ParallelFor(static_cast<int64_t>(bytes), 1 << 20, [&](int64_t b, int64_t e) {
    std::memcpy(dst + b, src + b, static_cast<size_t>(e - b));
  });
}

void StridedGather(const StridedView& view, const void* in, void* out) {
  if (NumelOf(view.shape) == 0) return;
  ByElemSize(view.elem_size, [&](auto w) {
    using W = decltype(w);
    const W* src = static_cast<const W*>(in);
    W* dst = static_cast<W*>(out);
    ForEachRow(view, [&](int64_t s, int64_t c, int64_t n, int64_t stride) {
      if (stride == 1) {
        std::memcpy(dst + c, src + s, static_cast<size_t>(n) * sizeof(W));
      } else {
        for (int64_t i = 0; i < n; ++i) dst[c + i] = src[s + i * stride];
      }
    });
  });
}

void StridedGatherRef(const StridedView& v, const void* in, void* out) {
  auto* src = static_cast<const uint8_t*>(in);
  auto* dst = static_cast<uint8_t*>(out);
  int64_t n = NumelOf(v.shape);
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(dst + i * v.elem_size, src + ViewOffsetOf(v, i) * v.elem_size, v.elem_size);
  }
}

void StridedScatter(const StridedView& view, const void* in, void* out, int64_t out_numel) {
  std::memset(out, 0, static_cast<size_t>(out_numel) * view.elem_size);
  if (NumelOf(view.shape) == 0) return;
  ByElemSize(view.elem_size, [&](auto w) {
    using W = decltype(w);
    const W* src = static_cast<const W*>(in);
    W* dst = static_cast<W*>(out);
    ForEachRow(view, [&](int64_t s, int64_t c, int64_t n, int64_t stride) {
      for (int64_t i = 0; i < n; ++i) dst[s + i * stride] = src[c + i];
    });
  });
}

void StridedScatterRef(const StridedView& v, const void* in, void* out, int64_t out_numel) {
  auto* src = static_cast<const uint8_t*>(in);
  auto* dst = static_cast<uint8_t*>(out);
  std::memset(out, 0, static_cast<size_t>(out_numel) * v.elem_size);
  int64_t n = NumelOf(v.shape);
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(dst + ViewOffsetOf(v, i) * v.elem_size, src + i * v.elem_size, v.elem_size);
  }
}

void Concat(const ConcatParams& p, const void* const* ins, void* out) {
  int64_t total = 0;
  for (int64_t c : p.chunk_bytes) total += c;
  auto* dst = static_cast<uint8_t*>(out);
  int64_t grain = std::max<int64_t>(1, kGrainBytes / std::max<int64_t>(1, total));
  ParallelFor(p.outer, grain, [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o) {
      uint8_t* row = dst + o * total;
      for (size_t i = 0; i < p.chunk_bytes.size(); ++i) {
        int64_t c = p.chunk_bytes[i];
        if (c) std::memcpy(row, static_cast<const uint8_t*>(ins[i]) + o * c, c);
        row += c;
      }
    }
  });
}

void ConcatRef(const ConcatParams& p, const void* const* ins, void* out) {
  auto* dst = static_cast<uint8_t*>(out);
  for (int64_t o = 0; o < p.outer; ++o) {
    for (size_t i = 0; i < p.chunk_bytes.size(); ++i) {
      auto* src = static_cast<const uint8_t*>(ins[i]) + o * p.chunk_bytes[i];
      for (int64_t b = 0; b < p.chunk_bytes[i]; ++b) *dst++ = src[b];
    }
  }
}

void Fill(void* out, int64_t n, const void* pattern, size_t elem_size) {
  ByElemSize(elem_size, [&](auto w) {
    using W = decltype(w);
    W value;
    std::memcpy(&value, pattern, sizeof(W));
    W* dst = static_cast<W*>(out);
    ParallelFor(n, 1 << 16, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) dst[i] = value;
    });
  });
}

}  // namespace tg::cpu
