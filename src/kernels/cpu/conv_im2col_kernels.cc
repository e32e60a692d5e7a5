// conv2d backward-weight over im2col columns; see conv_im2col_kernels.h.
#include "kernels/cpu/conv_im2col_kernels.h"

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "kernels/cpu/channel_blocking.h"
#include "kernels/cpu/float16.h"
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

// bf16 backward-input (the weight as the GEMM's right operand, RunGemmBackwardInput): up to
// ResNet-50's 4x4 stage (128 positions at batch 8). Same process, engines alternating, 2
// threads on an AMX Xeon: ResNet-50 training 0.146 -> 0.142 s per call against a limit of 64
// (its 3x3 4x4-stage backward-input through oneDNN: 1.5-1.8 ms per call, 240-290 GFLOP/s);
// 512 was no better, EfficientNet-B0 unchanged. Beyond that col2im's f32 pass over the
// columns grows with the positions while oneDNN's reorders do not.
constexpr int64_t kGemmMaxPositionsBackwardInputBf16 = 128;

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
  gemm_ = std::make_shared<DenseMatmul>(m, MatmulEpilogue{}, PrepackB::kNo, type);
}

namespace {

// Between [n][rows][positions] (NCHW) and [rows][n * positions] (each image's rows side by
// side): `gather` copies the first into the second, else the second back into the first.
template <typename T>
void MoveRows(const T* src, T* dst, int64_t n, int64_t rows, int64_t positions, bool gather) {
  const int64_t k = n * positions;
  ParallelFor(rows, 1, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      for (int64_t i = 0; i < n; ++i) {
        const int64_t side = r * k + i * positions, nchw = (i * rows + r) * positions;
        std::memcpy(dst + (gather ? side : nchw), src + (gather ? nchw : side),
                    positions * sizeof(T));
      }
    }
  });
}

template <typename T>
void GatherRows(const T* src, int64_t n, int64_t rows, int64_t positions, T* dst) {
  MoveRows(src, dst, n, rows, positions, true);
}

template <typename T>
void ScatterRows(const T* src, int64_t n, int64_t rows, int64_t positions, T* dst) {
  MoveRows(src, dst, n, rows, positions, false);
}

// The im2col columns of x for `p`: [tap][n * oh * ow], tap = (c, ky, kx), zero padding.
template <typename T>
void BuildColumns(const Conv2dParams& p, const T* x, T* cols) {
  const int64_t positions = p.oh * p.ow, taps = p.c * p.kh * p.kw;
  if (IsPointwiseConv(p)) {  // the columns are the planes themselves
    GatherRows(x, p.n, p.c, positions, cols);
    return;
  }
  ParallelFor(taps, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t c = t / (p.kh * p.kw), ky = t / p.kw % p.kh, kx = t % p.kw;
      T* col = cols + t * p.n * positions;
      for (int64_t n = 0; n < p.n; ++n) {
        const T* plane = x + (n * p.c + c) * p.h * p.w;
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

// `count` elements of T in `scratch` (grown on first use), from element `offset`. Growing
// moves the buffer: take the furthest part first.
template <typename T>
T* ScratchOf(std::vector<unsigned char>& scratch, int64_t offset, int64_t count) {
  const size_t bytes = static_cast<size_t>(offset + count) * sizeof(T);
  if (scratch.size() < bytes) scratch.resize(bytes);
  return reinterpret_cast<T*>(scratch.data()) + offset;
}

template <typename T>
void RunGemmBackwardWeight(const Conv2dParams& p, const DenseMatmul& gemm,
                           std::vector<unsigned char>& scratch, const T* dy, const T* x, T* dw) {
  const int64_t k = p.n * p.oh * p.ow, taps = p.c * p.kh * p.kw;
  if (p.o == 0 || taps == 0) return;
  if (k == 0) {
    std::fill(dw, dw + p.o * taps, T{0});
    return;
  }
  T* dy_t = ScratchOf<T>(scratch, 0, (p.o + taps) * k);  // dy^T [o][n * positions]
  T* cols = dy_t + p.o * k;                              // [tap][n * positions]
  GatherRows(dy, p.n, p.o, p.oh * p.ow, dy_t);
  BuildColumns(p, x, cols);
  gemm.Run(dy_t, cols, dw);
}

// Forward on columns: y^T [o][n * positions] = w [o][taps] . cols, scattered to NCHW.
template <typename T>
void RunGemmForward(const Conv2dParams& p, const DenseMatmul& gemm,
                    std::vector<unsigned char>& scratch, const T* x, const T* w, T* y) {
  const int64_t k = p.n * p.oh * p.ow, taps = p.c * p.kh * p.kw;
  T* cols = ScratchOf<T>(scratch, 0, (taps + p.o) * k);
  T* y_t = cols + taps * k;
  BuildColumns(p, x, cols);
  gemm.Run(w, cols, y_t);
  ScatterRows(y_t, p.n, p.o, p.oh * p.ow, y);
}

// Backward-input on columns: dcols^T [n * positions][taps] = (dy^T)^T . w in f32, then each
// dx element the f32 sum of the columns that read it, rounded once to T (col2im). The weight
// is the GEMM's right operand as stored ([o][taps], row-major: read row by row while it is
// packed); as the left operand w^T it was read transposed, a column of 32 taps at a time
// across every row of the weight, a new page per row: ResNet-50's 2x2-stage 3x3 backward-input
// (4608 x 512 x 32, the weight cold from the previous step's update) ran at 160-280 GFLOP/s
// on an AMX Xeon's two cores, this form 350-620.
template <typename T>
void RunGemmBackwardInput(const Conv2dParams& p, const DenseMatmul& gemm,
                          std::vector<unsigned char>& scratch, const T* dy, const T* w, T* dx) {
  const int64_t positions = p.oh * p.ow, k = p.n * positions, taps = p.c * p.kh * p.kw;
  const int64_t plane = p.h * p.w;
  const int64_t dy_floats = (p.o * k * static_cast<int64_t>(sizeof(T)) + 63) / 64 * 16;
  float* dcols = ScratchOf<float>(scratch, dy_floats, k * taps);  // grows the buffer first
  T* dy_t = ScratchOf<T>(scratch, 0, p.o * k);
  GatherRows(dy, p.n, p.o, positions, dy_t);
  gemm.Run(dy_t, w, dcols);
  ParallelFor(p.n * p.c, 1, [&](int64_t b, int64_t e) {
    std::vector<float> acc(static_cast<size_t>(plane));
    for (int64_t nc = b; nc < e; ++nc) {
      const int64_t n = nc / p.c, c = nc % p.c;
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t ky = 0; ky < p.kh; ++ky) {
        for (int64_t kx = 0; kx < p.kw; ++kx) {
          // Tap (c, ky, kx) of the image's positions: every taps-th float of its rows.
          const float* col = dcols + n * positions * taps + (c * p.kh + ky) * p.kw + kx;
          for (int64_t oy = 0; oy < p.oh; ++oy) {
            const int64_t iy = oy * p.stride_h - p.pad_h + ky * p.dil_h;
            if (iy < 0 || iy >= p.h) continue;
            for (int64_t ox = 0; ox < p.ow; ++ox) {
              const int64_t ix = ox * p.stride_w - p.pad_w + kx * p.dil_w;
              if (ix >= 0 && ix < p.w) acc[iy * p.w + ix] += col[(oy * p.ow + ox) * taps];
            }
          }
        }
      }
      T* out = dx + nc * plane;
      for (int64_t i = 0; i < plane; ++i) {
        if constexpr (std::is_same_v<T, float>) {
          out[i] = acc[i];
        } else {
          out[i] = FloatToBFloat16Bits(acc[i]);
        }
      }
    }
  });
}

// f(T) for the buffers' element type: uint16_t bits for bf16, else float.
template <typename F>
void WithElementType(DenseType type, F&& f) {
  if (type == DenseType::kBF16) {
    f(uint16_t{});
  } else {
    f(float{});
  }
}

}  // namespace

void Conv2dBackwardWeightGemm::Run(const void* dy, const void* x, void* dw) const {
  WithElementType(type_, [&](auto t) {
    using T = decltype(t);
    RunGemmBackwardWeight(p_, *gemm_, *scratch_, static_cast<const T*>(dy),
                          static_cast<const T*>(x), static_cast<T*>(dw));
  });
}

bool IsPointwiseConv(const Conv2dParams& p) {
  return p.groups == 1 && p.kh == 1 && p.kw == 1 && p.stride_h == 1 && p.stride_w == 1 &&
         p.pad_h == 0 && p.pad_w == 0 && p.oh == p.h && p.ow == p.w;
}

bool PreferGemm(const Conv2dParams& p, ConvPass pass) {
  if (pass == ConvPass::kBackwardWeight) return PreferGemmBackwardWeight(p, DenseType::kBF16);
  if (p.groups != 1 || p.c < 16) return false;
  const int64_t positions = p.n * p.oh * p.ow;
  if (pass == ConvPass::kForward) return IsPointwiseConv(p) || positions <= kGemmMaxPositionsBf16;
  return positions <= kGemmMaxPositionsBackwardInputBf16 ||
         (IsPointwiseConv(p) && p.h * p.w >= Conv2dGemm::kBatchedMinPlane);
}

Conv2dGemm::Conv2dGemm(const Conv2dParams& p, ConvPass pass, DenseType type)
    : p_(p), pass_(pass), type_(type) {
  TG_CHECK(pass != ConvPass::kBackwardWeight && (type == DenseType::kF32 ||
           type == DenseType::kBF16) && PreferGemm(p, pass),
           kInternal, "conv2d GEMM: a forward or backward-input convolution PreferGemm takes");
  const int64_t hw = p.h * p.w;
  batched_ = IsPointwiseConv(p) && hw >= kBatchedMinPlane;
  MatmulParams m;
  const bool forward = pass == ConvPass::kForward;
  if (batched_) {  // per image, the weight broadcast: y[n] = w . x[n], dx[n] = w^T . dy[n]
    m.batch = {p.n};
    m.a_batch = {1};
    m.b_batch = {p.n};
    m.m = forward ? p.o : p.c;
    m.k = forward ? p.c : p.o;
    m.n = hw;
    m.trans_a = !forward;  // w is stored [o][c], the transpose of a [c][o] operand
  } else if (forward) {  // y^T [o][n * positions] = w [o][taps] . cols
    m.m = p.o;
    m.k = p.c * p.kh * p.kw;
    m.n = p.n * p.oh * p.ow;
  } else {  // dcols^T [n * positions][taps] = (dy^T)^T . w, in f32 for col2im
    m.m = p.n * p.oh * p.ow;
    m.k = p.o;
    m.n = p.c * p.kh * p.kw;
    m.trans_a = true;  // dy^T is stored [o][n * positions]; w [o][taps] is read as it is
  }
  const DenseType gemm_type =
      !batched_ && !forward && type == DenseType::kBF16 ? DenseType::kBF16ToF32 : type;
  gemm_ = std::make_shared<DenseMatmul>(m, MatmulEpilogue{}, PrepackB::kNo, gemm_type);
}

void Conv2dGemm::Run(const void* in0, const void* in1, void* out) const {
  if (batched_) {
    gemm_->Run(in1, in0, out);
    return;
  }
  WithElementType(type_, [&](auto t) {
    using T = decltype(t);
    const T* a = static_cast<const T*>(in0);
    const T* w = static_cast<const T*>(in1);
    T* o = static_cast<T*>(out);
    if (pass_ == ConvPass::kForward) {
      RunGemmForward(p_, *gemm_, *scratch_, a, w, o);
    } else {
      RunGemmBackwardInput(p_, *gemm_, *scratch_, a, w, o);
    }
  });
}

bool PreferGemmEpilogue(const Conv2dParams& p) {
  return p.groups == 1 && p.c >= 16 && p.n * p.oh * p.ow <= kGemmMaxPositions;
}

Conv2dGemmEpilogue::Conv2dGemmEpilogue(const Conv2dParams& p, ConvLayout layout,
                                       Activation activation)
    : p_(p), layout_(layout), activation_(activation) {
  TG_CHECK(PreferGemmEpilogue(p), kInternal,
           "conv2d epilogue GEMM: a forward convolution PreferGemmEpilogue takes");
  MatmulParams m;  // y^T [o][n * positions] = w [o][taps] . cols
  m.m = p.o;
  m.k = p.c * p.kh * p.kw;
  m.n = p.n * p.oh * p.ow;
  gemm_ = std::make_shared<DenseMatmul>(m, MatmulEpilogue{}, PrepackB::kNo,
                                        DenseType::kBF16ToF32);
}

void Conv2dGemmEpilogue::Run(const uint16_t* x, const uint16_t* w, const float* shift,
                             float* y) const {
  const Conv2dParams& p = p_;
  const int64_t plane = p.oh * p.ow, taps = p.c * p.kh * p.kw;
  // Scratch: x's NCHW copy when x is blocked and the columns (bf16), then the GEMM's f32
  // result y^T [o][n][plane].
  const int64_t x_numel = layout_.src_blocked ? p.n * p.c * p.h * p.w : 0;
  const int64_t halves = x_numel + taps * p.n * plane;
  float* sums = ScratchOf<float>(*scratch_, (halves + 1) / 2, p.o * p.n * plane);  // grows first
  uint16_t* x_plain = ScratchOf<uint16_t>(*scratch_, 0, halves);
  uint16_t* cols = x_plain + x_numel;
  if (layout_.src_blocked) {
    Reblock(x, x_plain, p.n, p.c, p.h * p.w, false, layout_.src_block(p.c));
    x = x_plain;
  }
  BuildColumns(p, x, cols);
  gemm_->Run(w, cols, sums);
  // y = act(sums + shift[o]) in y's layout: each channel's row of sums (every image's plane,
  // side by side) activated in place, then its planes copied out.
  const int64_t block = layout_.dst_block(p.o), row = p.n * plane;
  ParallelFor(p.o, 1, [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o) {
      float* src = sums + o * row;
      BiasActivate(activation_, src, row, shift[o]);
      for (int64_t n = 0; n < p.n; ++n) {
        const float* from = src + n * plane;
        if (!layout_.dst_blocked) {
          std::memcpy(y + (n * p.o + o) * plane, from, static_cast<size_t>(plane) * 4);
          continue;
        }
        float* to = y + BlockedIndex(p.o, plane, block, n, o, 0);
        for (int64_t q = 0; q < plane; ++q) to[q * block] = from[q];
      }
    }
  });
}
}  // namespace tg::cpu
