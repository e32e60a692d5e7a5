// Max pooling over oneDNN's channel-blocked layout nChw<B>c (see pool_kernels.h): a block
// plane (one image's B channels) is [h, w, B]; a window is its taps' B-lane vectors, so the
// max and the argmax routing are lane-parallel with no shuffles (the NCHW kernels work along
// a row and need them). B is 8 or 16 (ActivationBlock()); the lanes are GCC vector types.
// NHWC (p.channels_last = C) is the same with positions C elements apart: a "block plane" is
// then B channels of one image read with stride C (S below: the distance between positions).
#include <algorithm>
#include <cstring>
#include <limits>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/pool_kernels.h"
#include "support/error.h"

namespace tg::cpu {
namespace {

// B lanes of T (GCC ignores vector_size on a dependent type, hence one alias per pair).
template <typename T, int B>
struct VectorOf;
template <>
struct VectorOf<float, 8> {
  using V = float __attribute__((vector_size(32)));
};
template <>
struct VectorOf<float, 16> {
  using V = float __attribute__((vector_size(64)));
};
template <>
struct VectorOf<double, 8> {
  using V = double __attribute__((vector_size(64)));
};
template <>
struct VectorOf<double, 16> {
  using V = double __attribute__((vector_size(128)));
};

template <typename T, int B>
struct Lanes {
  using V = typename VectorOf<T, B>::V;
  static_assert(sizeof(V) == B * sizeof(T));
  static V Load(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  static void Store(T* p, V v) { std::memcpy(p, &v, sizeof v); }
};

// The taps [ky0, ky1) x [kx0, kx1) of window (oy, ox) that lie inside the input.
struct Taps {
  int64_t iy, ix, ky0, ky1, kx0, kx1;
};
Taps TapsOf(const Pool2dParams& p, int64_t oy, int64_t ox) {
  Taps t{oy * p.stride_h - p.pad_h, ox * p.stride_w - p.pad_w, 0, p.kh, 0, p.kw};
  while (t.ky0 < t.ky1 && t.iy + t.ky0 * p.dil_h < 0) ++t.ky0;
  while (t.ky1 > t.ky0 && t.iy + (t.ky1 - 1) * p.dil_h >= p.h) --t.ky1;
  while (t.kx0 < t.kx1 && t.ix + t.kx0 * p.dil_w < 0) ++t.kx0;
  while (t.kx1 > t.kx0 && t.ix + (t.kx1 - 1) * p.dil_w >= p.w) --t.kx1;
  return t;
}

// The window's maximum per lane: a larger tap or a NaN replaces it (the first NaN stays),
// from -inf (every window has a tap: padding is at most half the window).
template <typename T, int B>
typename Lanes<T, B>::V WindowMax(const Pool2dParams& p, int64_t S, const T* xp, const Taps& t) {
  using L = Lanes<T, B>;
  typename L::V m = typename L::V{} - std::numeric_limits<T>::infinity();
  for (int64_t ky = t.ky0; ky < t.ky1; ++ky) {
    const T* row = xp + (t.iy + ky * p.dil_h) * p.w * S;
    for (int64_t kx = t.kx0; kx < t.kx1; ++kx) {
      typename L::V v = L::Load(row + (t.ix + kx * p.dil_w) * S);
      m = ((v > m) | (v != v)) ? v : m;
    }
  }
  return m;
}

template <typename T, int B>
void ForwardPlane(const Pool2dParams& p, int64_t S, const T* xp, T* yp) {
  for (int64_t oy = 0; oy < p.oh; ++oy) {
    for (int64_t ox = 0; ox < p.ow; ++ox) {
      Lanes<T, B>::Store(yp + (oy * p.ow + ox) * S,
                         WindowMax<T, B>(p, S, xp, TapsOf(p, oy, ox)));
    }
  }
}

// Windows that tile the input exactly where they reach (stride == window, no padding or
// dilation): every dx element is written once, by its window or as a zero past the last.
bool Tiling(const Pool2dParams& p) {
  return p.stride_h == p.kh && p.stride_w == p.kw && p.pad_h == 0 && p.pad_w == 0 &&
         p.dil_h == 1 && p.dil_w == 1 && p.oh * p.kh <= p.h && p.ow * p.kw <= p.w;
}

// dy of each window to its first maximal tap per lane (the first NaN if any), in the NCHW
// kernels' tap order (rows, then columns). `tiling`: dx is written, not accumulated.
template <typename T, int B>
void BackwardPlane(const Pool2dParams& p, int64_t S, const T* dyp, const T* xp, T* dxp,
                   bool tiling) {
  using L = Lanes<T, B>;
  using V = typename L::V;
  auto zero = [&](int64_t from, int64_t to) {  // positions [from, to)
    if (S == B) return std::fill(dxp + from * B, dxp + to * B, T(0));
    for (int64_t q = from; q < to; ++q) std::fill(dxp + q * S, dxp + q * S + B, T(0));
  };
  if (tiling) {
    for (int64_t iy = 0; iy < p.h; ++iy) {  // the columns and rows no window covers
      const int64_t from = iy < p.oh * p.kh ? p.ow * p.kw : 0;
      zero(iy * p.w + from, (iy + 1) * p.w);
    }
  } else {
    zero(0, p.h * p.w);
  }
  for (int64_t oy = 0; oy < p.oh; ++oy) {
    for (int64_t ox = 0; ox < p.ow; ++ox) {
      const Taps t = TapsOf(p, oy, ox);
      const V m = WindowMax<T, B>(p, S, xp, t);
      const V g = L::Load(dyp + (oy * p.ow + ox) * S);
      const auto nan = m != m;
      auto taken = nan & 0;
      for (int64_t ky = t.ky0; ky < t.ky1; ++ky) {
        const int64_t at_row = (t.iy + ky * p.dil_h) * p.w;
        for (int64_t kx = t.kx0; kx < t.kx1; ++kx) {
          const int64_t at = (at_row + t.ix + kx * p.dil_w) * S;
          const V v = L::Load(xp + at);
          const auto here = ~taken & ((v == m) | (nan & (v != v)));
          taken |= here;
          const V routed = here ? g : V{};
          L::Store(dxp + at, tiling ? routed : L::Load(dxp + at) + routed);
        }
      }
    }
  }
}

template <typename Fn>
void ForBlockPlanes(const Pool2dParams& p, bool parallel, Fn&& fn) {
  TG_CHECK(p.block > 0 && p.planes % p.block == 0 && p.channels_last % p.block == 0,
           kInternal, "blocked max pooling: ", p.planes, " planes (", p.channels_last,
           " channels last) are not whole blocks of ", p.block);
  const int64_t planes = p.planes / p.block;
  if (!parallel) {
    fn(int64_t{0}, planes);
    return;
  }
  ParallelFor(planes, 1, fn);
}

// The distance between positions of a block plane: B, or C in NHWC.
int64_t PositionStride(const Pool2dParams& p) {
  return p.channels_last > 0 ? p.channels_last : p.block;
}

// Where block plane i (of `plane` positions) starts: planes are [h, w, B] one after another,
// or in NHWC B channels of image i / (C/B) from channel (i % (C/B)) * B.
int64_t PlaneStart(const Pool2dParams& p, int64_t i, int64_t plane) {
  if (p.channels_last == 0) return i * plane * p.block;
  const int64_t per_image = p.channels_last / p.block;
  return (i / per_image) * plane * p.channels_last + (i % per_image) * p.block;
}

template <typename T, int B>
void ForwardBlocked(const Pool2dParams& p, const T* x, T* y, bool parallel) {
  const int64_t S = PositionStride(p), in = p.h * p.w, out = p.oh * p.ow;
  ForBlockPlanes(p, parallel, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      ForwardPlane<T, B>(p, S, x + PlaneStart(p, i, in), y + PlaneStart(p, i, out));
    }
  });
}

template <typename T, int B>
void BackwardBlocked(const Pool2dParams& p, const T* dy, const T* x, T* dx, bool parallel) {
  const bool tiling = Tiling(p);
  const int64_t S = PositionStride(p), in = p.h * p.w, out = p.oh * p.ow;
  ForBlockPlanes(p, parallel, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      BackwardPlane<T, B>(p, S, dy + PlaneStart(p, i, out), x + PlaneStart(p, i, in),
                          dx + PlaneStart(p, i, in), tiling);
    }
  });
}

}  // namespace

template <typename T>
void MaxPool2dForwardBlocked(const Pool2dParams& p, const T* x, T* y, bool parallel) {
  TG_CHECK(p.block == 8 || p.block == 16, kInternal, "blocked max pooling: block ", p.block);
  if (p.block == 16) return ForwardBlocked<T, 16>(p, x, y, parallel);
  ForwardBlocked<T, 8>(p, x, y, parallel);
}

template <typename T>
void MaxPool2dBackwardBlocked(const Pool2dParams& p, const T* dy, const T* x, T* dx,
                              bool parallel) {
  TG_CHECK(p.block == 8 || p.block == 16, kInternal, "blocked max pooling: block ", p.block);
  if (p.block == 16) return BackwardBlocked<T, 16>(p, dy, x, dx, parallel);
  BackwardBlocked<T, 8>(p, dy, x, dx, parallel);
}

template void MaxPool2dForwardBlocked<float>(const Pool2dParams&, const float*, float*, bool);
template void MaxPool2dForwardBlocked<double>(const Pool2dParams&, const double*, double*, bool);
template void MaxPool2dBackwardBlocked<float>(const Pool2dParams&, const float*, const float*,
                                              float*, bool);
template void MaxPool2dBackwardBlocked<double>(const Pool2dParams&, const double*,
                                               const double*, double*, bool);

}  // namespace tg::cpu
