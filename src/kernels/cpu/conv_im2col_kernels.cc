// conv2d backward-weight over im2col columns; see conv_im2col_kernels.h.
#include "kernels/cpu/conv_im2col_kernels.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/parallel.h"
#include "support/error.h"

namespace tg::cpu {

bool PreferIm2colBackwardWeight(const Conv2dParams& p) { return p.groups == 1 && p.c == 1; }

Conv2dBackwardWeightIm2col::Conv2dBackwardWeightIm2col(const Conv2dParams& p) : p_(p) {}

namespace {

// Eight floats in a GCC vector (one AVX register, two SSE ones): the accumulators below stay
// in registers, which GCC does not manage for a float[TB][8] array it vectorizes itself.
using Vec8 = float __attribute__((vector_size(32)));
inline Vec8 Load8(const float* p) {
  Vec8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// out[t] += sum_i d[i] * c[t * stride + i] for TB taps at once: d is loaded once for all of
// them and the TB vector accumulators are independent FMA chains. A fixed order: runs repeat
// bit for bit.
template <int TB>
void DotBlock(const float* d, const float* c, int64_t stride, int64_t n, float* out) {
  Vec8 acc[TB] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const Vec8 dv = Load8(d + i);
    for (int t = 0; t < TB; ++t) acc[t] += dv * Load8(c + t * stride + i);
  }
  float tail[TB] = {};
  for (; i < n; ++i) {
    for (int t = 0; t < TB; ++t) tail[t] += d[i] * c[t * stride + i];
  }
  for (int t = 0; t < TB; ++t) {
    float s = tail[t];
    for (int j = 0; j < 8; ++j) s += acc[t][j];
    out[t] += s;
  }
}

}  // namespace

void Conv2dBackwardWeightIm2col::Run(const float* dy, const float* x, float* dw) const {
  const Conv2dParams& p = p_;
  const int64_t positions = p.oh * p.ow;
  const int64_t taps = p.c * p.kh * p.kw;
  if (p.o == 0 || taps == 0) return;
  std::fill(dw, dw + p.o * taps, 0.0f);
  if (positions == 0 || p.n == 0) return;
  if (cols_->empty()) cols_->resize(static_cast<size_t>(p.n * taps * positions));
  float* cols = cols_->data();
  // cols[n][(c, ky, kx)][q] = x[n][c][iy][ix], 0 outside the input (im2col per image).
  ParallelFor(p.n * taps, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t n = i / taps, t = i % taps;
      const int64_t c = t / (p.kh * p.kw), ky = t / p.kw % p.kh, kx = t % p.kw;
      const float* plane = x + (n * p.c + c) * p.h * p.w;
      float* col = cols + i * positions;
      for (int64_t oy = 0; oy < p.oh; ++oy) {
        const int64_t iy = oy * p.stride_h - p.pad_h + ky * p.dil_h;
        for (int64_t ox = 0; ox < p.ow; ++ox) {
          const int64_t ix = ox * p.stride_w - p.pad_w + kx * p.dil_w;
          const bool inside = iy >= 0 && iy < p.h && ix >= 0 && ix < p.w;
          col[oy * p.ow + ox] = inside ? plane[iy * p.w + ix] : 0.0f;
        }
      }
    }
  });
  // dw[o][t] = sum over n of dy[n][o][:] . cols[n][t][:]; threads split the out channels,
  // and images are the outer loop so that one image's columns stay in L1 / L2 while every
  // out channel of the thread reads them.
  ParallelFor(p.o, 1, [&](int64_t b, int64_t e) {
    for (int64_t n = 0; n < p.n; ++n) {
      const float* c = cols + n * taps * positions;
      for (int64_t o = b; o < e; ++o) {
        const float* d = dy + (n * p.o + o) * positions;
        float* out = dw + o * taps;
        int64_t t = 0;
        for (; t + 8 <= taps; t += 8) DotBlock<8>(d, c + t * positions, positions, positions, out + t);
        for (; t + 4 <= taps; t += 4) DotBlock<4>(d, c + t * positions, positions, positions, out + t);
        for (; t < taps; ++t) DotBlock<1>(d, c + t * positions, positions, positions, out + t);
      }
    }
  });
}

// At most this many output positions in the batch. Measured per convolution on ResNet-50's
// and EfficientNet-B0's backward (batch 8, 64x64 inputs, AVX-512): 2x2 maps (32 positions)
// run 1.6-2x faster than oneDNN's kernels; 4x4 maps (128) are even to 1.6x slower, 8x8 (512)
// 1.3-1.6x slower.
constexpr int64_t kGemmMaxPositions = 64;

// bf16 (oneDNN 2.6's AMX and AVX512_BF16 backward-weight kernels): ResNet-50's backward at
// batch 8, 64x64 inputs, 2 threads on an AMX Xeon, per convolution: 1x1 convolutions 3-10x
// faster as this GEMM at every map size (2x2 to 16x16; the columns are plain copies of the
// planes), 3x3 ones 3-10x faster on 2x2 and 4x4 maps (32 and 128 positions) but 1.5x
// slower on 8x8 and 16x16 (512 and 2,048), where building 9 shifted columns per channel
// costs more than oneDNN's kernel.
constexpr int64_t kGemmMaxPositionsBf16 = 256;

bool PreferGemmBackwardWeight(const Conv2dParams& p, DenseType type) {
  if (p.groups != 1 || p.c < 16) return false;
  const int64_t positions = p.n * p.oh * p.ow;
  if (type == DenseType::kBF16) return p.kh * p.kw == 1 || positions <= kGemmMaxPositionsBf16;
  return positions <= kGemmMaxPositions;
}

Conv2dBackwardWeightGemm::Conv2dBackwardWeightGemm(const Conv2dParams& p, DenseType type)
    : p_(p), type_(type) {
  TG_CHECK(type == DenseType::kF32 || type == DenseType::kBF16, kInternal,
           "conv2d backward-weight GEMM: f32 or bf16 buffers only");
  MatmulParams m;
  m.m = p.o;
  m.n = p.c * p.kh * p.kw;
  m.k = p.n * p.oh * p.ow;
  m.trans_b = true;
  gemm_ = std::make_shared<OnednnMatmul>(m, MatmulEpilogue{}, PrepackB::kNo, type);
}

namespace {

// dy^T [o][n * positions] and the columns [tap][n * positions] of `p`, in the buffers' own
// element type (a copy: f32 and bf16 alike).
template <typename T>
void GatherGemmOperands(const Conv2dParams& p, const T* dy, const T* x, T* dy_t, T* cols) {
  const int64_t positions = p.oh * p.ow, k = p.n * positions, taps = p.c * p.kh * p.kw;
  ParallelFor(p.o, 1, [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o) {
      for (int64_t n = 0; n < p.n; ++n) {
        std::memcpy(dy_t + o * k + n * positions, dy + (n * p.o + o) * positions,
                    positions * sizeof(T));
      }
    }
  });
  const bool one_by_one = p.kh == 1 && p.kw == 1 && p.stride_h == 1 && p.stride_w == 1 &&
                          p.pad_h == 0 && p.pad_w == 0;
  ParallelFor(taps, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t c = t / (p.kh * p.kw), ky = t / p.kw % p.kh, kx = t % p.kw;
      T* col = cols + t * k;
      for (int64_t n = 0; n < p.n; ++n) {
        const T* plane = x + (n * p.c + c) * p.h * p.w;
        if (one_by_one) {  // the column is the plane itself
          std::memcpy(col, plane, positions * sizeof(T));
          col += positions;
          continue;
        }
        for (int64_t oy = 0; oy < p.oh; ++oy) {
          const int64_t iy = oy * p.stride_h - p.pad_h + ky * p.dil_h;
          for (int64_t ox = 0; ox < p.ow; ++ox) {
            const int64_t ix = ox * p.stride_w - p.pad_w + kx * p.dil_w;
            const bool inside = iy >= 0 && iy < p.h && ix >= 0 && ix < p.w;
            *col++ = inside ? plane[iy * p.w + ix] : T{0};  // bf16 bits 0 are +0
          }
        }
      }
    }
  });
}

template <typename T>
void RunGemmBackwardWeight(const Conv2dParams& p, const OnednnMatmul& gemm,
                           std::vector<unsigned char>& scratch, const T* dy, const T* x, T* dw) {
  const int64_t k = p.n * p.oh * p.ow, taps = p.c * p.kh * p.kw;
  if (p.o == 0 || taps == 0) return;
  if (k == 0) {
    std::fill(dw, dw + p.o * taps, T{0});
    return;
  }
  if (scratch.empty()) scratch.resize(static_cast<size_t>((p.o + taps) * k) * sizeof(T));
  T* dy_t = reinterpret_cast<T*>(scratch.data());
  T* cols = dy_t + p.o * k;
  GatherGemmOperands(p, dy, x, dy_t, cols);
  gemm.Run(dy_t, cols, dw);
}

}  // namespace

void Conv2dBackwardWeightGemm::Run(const void* dy, const void* x, void* dw) const {
  if (type_ == DenseType::kBF16) {
    RunGemmBackwardWeight(p_, *gemm_, *scratch_, static_cast<const uint16_t*>(dy),
                          static_cast<const uint16_t*>(x), static_cast<uint16_t*>(dw));
  } else {
    RunGemmBackwardWeight(p_, *gemm_, *scratch_, static_cast<const float*>(dy),
                          static_cast<const float*>(x), static_cast<float*>(dw));
  }
}

}  // namespace tg::cpu
