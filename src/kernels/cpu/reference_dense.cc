// Naive matmul / conv2d loops; see reference_dense.h.
#include "kernels/cpu/reference_dense.h"

#include <algorithm>

namespace tg::cpu {
namespace {

// Offset of the operand's matrix for output batch index `flat` (broadcast dims use 0).
int64_t BatchOffset(const std::vector<int64_t>& out_batch, const std::vector<int64_t>& batch,
                    int64_t flat, int64_t matrix_size) {
  int64_t offset = 0, stride = matrix_size;
  for (int64_t d = static_cast<int64_t>(out_batch.size()) - 1; d >= 0; --d) {
    int64_t idx = flat % out_batch[d];
    flat /= out_batch[d];
    if (batch[d] != 1) offset += idx * stride;
    stride *= batch[d];
  }
  return offset;
}

}  // namespace

template <typename T>
void MatmulRef(const MatmulParams& p, const T* a, const T* b, T* out) {
  int64_t batches = 1;
  for (int64_t d : p.batch) batches *= d;
  const int64_t m = p.m, n = p.n, k = p.k;
  for (int64_t bi = 0; bi < batches; ++bi) {
    const T* pa = a + BatchOffset(p.batch, p.a_batch, bi, m * k);
    const T* pb = b + BatchOffset(p.batch, p.b_batch, bi, k * n);
    T* po = out + bi * m * n;
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t l = 0; l < k; ++l) {
          double av = p.trans_a ? pa[l * m + i] : pa[i * k + l];
          double bv = p.trans_b ? pb[j * k + l] : pb[l * n + j];
          acc += av * bv;
        }
        po[i * n + j] = static_cast<T>(acc);
      }
    }
  }
}

// Calls fn(n, o, oy, ox, ci, ky, kx, iy, ix) for every in-bounds tap of the convolution.
template <typename Fn>
void ForEachConvTap(const Conv2dParams& p, Fn&& fn) {
  const int64_t cg = p.c / p.groups, og = p.o / p.groups;
  for (int64_t n = 0; n < p.n; ++n)
    for (int64_t o = 0; o < p.o; ++o) {
      int64_t g = o / og;
      for (int64_t oy = 0; oy < p.oh; ++oy)
        for (int64_t ox = 0; ox < p.ow; ++ox)
          for (int64_t c = 0; c < cg; ++c)
            for (int64_t ky = 0; ky < p.kh; ++ky) {
              int64_t iy = oy * p.stride_h - p.pad_h + ky * p.dil_h;
              if (iy < 0 || iy >= p.h) continue;
              for (int64_t kx = 0; kx < p.kw; ++kx) {
                int64_t ix = ox * p.stride_w - p.pad_w + kx * p.dil_w;
                if (ix < 0 || ix >= p.w) continue;
                fn(n, o, oy, ox, g * cg + c, c, ky, kx, iy, ix);
              }
            }
    }
}

template <typename T>
void Conv2dForwardRef(const Conv2dParams& p, const T* x, const T* w, T* y) {
  const int64_t cg = p.c / p.groups;
  std::vector<double> acc(p.n * p.o * p.oh * p.ow, 0.0);
  ForEachConvTap(p, [&](int64_t n, int64_t o, int64_t oy, int64_t ox, int64_t ci, int64_t c,
                        int64_t ky, int64_t kx, int64_t iy, int64_t ix) {
    acc[((n * p.o + o) * p.oh + oy) * p.ow + ox] +=
        static_cast<double>(x[((n * p.c + ci) * p.h + iy) * p.w + ix]) *
        w[((o * cg + c) * p.kh + ky) * p.kw + kx];
  });
  for (size_t i = 0; i < acc.size(); ++i) y[i] = static_cast<T>(acc[i]);
}

template <typename T>
void Conv2dBackwardInputRef(const Conv2dParams& p, const T* dy, const T* w, T* dx) {
  const int64_t cg = p.c / p.groups;
  std::vector<double> acc(p.n * p.c * p.h * p.w, 0.0);
  ForEachConvTap(p, [&](int64_t n, int64_t o, int64_t oy, int64_t ox, int64_t ci, int64_t c,
                        int64_t ky, int64_t kx, int64_t iy, int64_t ix) {
    acc[((n * p.c + ci) * p.h + iy) * p.w + ix] +=
        static_cast<double>(dy[((n * p.o + o) * p.oh + oy) * p.ow + ox]) *
        w[((o * cg + c) * p.kh + ky) * p.kw + kx];
  });
  for (size_t i = 0; i < acc.size(); ++i) dx[i] = static_cast<T>(acc[i]);
}

template <typename T>
void Conv2dBackwardWeightRef(const Conv2dParams& p, const T* dy, const T* x, T* dw) {
  const int64_t cg = p.c / p.groups;
  std::vector<double> acc(p.o * cg * p.kh * p.kw, 0.0);
  ForEachConvTap(p, [&](int64_t n, int64_t o, int64_t oy, int64_t ox, int64_t ci, int64_t c,
                        int64_t ky, int64_t kx, int64_t iy, int64_t ix) {
    acc[((o * cg + c) * p.kh + ky) * p.kw + kx] +=
        static_cast<double>(dy[((n * p.o + o) * p.oh + oy) * p.ow + ox]) *
        x[((n * p.c + ci) * p.h + iy) * p.w + ix];
  });
  for (size_t i = 0; i < acc.size(); ++i) dw[i] = static_cast<T>(acc[i]);
}

#define TG_INSTANTIATE(T)                                                                 \
  template void MatmulRef<T>(const MatmulParams&, const T*, const T*, T*);                \
  template void Conv2dForwardRef<T>(const Conv2dParams&, const T*, const T*, T*);         \
  template void Conv2dBackwardInputRef<T>(const Conv2dParams&, const T*, const T*, T*);   \
  template void Conv2dBackwardWeightRef<T>(const Conv2dParams&, const T*, const T*, T*);
TG_INSTANTIATE(float)
TG_INSTANTIATE(double)
#undef TG_INSTANTIATE

}  // namespace tg::cpu
