// Pooling loops; see pool_kernels.h.
#include "kernels/cpu/pool_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <limits>

#include "kernels/cpu/parallel.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace tg::cpu {
namespace {

// Runs fn(plane) for every plane, on threads when `parallel`.
template <typename Fn>
void ForPlanes(int64_t planes, bool parallel, Fn&& fn) {
  if (!parallel) {
    for (int64_t i = 0; i < planes; ++i) fn(i);
    return;
  }
  ParallelFor(planes, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) fn(i);
  });
}

// Index (within the plane) of the window's first maximal element; -1 if it has no taps.
template <typename T>
int64_t WindowArgmax(const Pool2dParams& p, const T* x, int64_t oy, int64_t ox) {
  int64_t best = -1;
  T best_val = -std::numeric_limits<T>::infinity();
  for (int64_t ky = 0; ky < p.kh; ++ky) {
    int64_t iy = oy * p.stride_h - p.pad_h + ky * p.dil_h;
    if (iy < 0 || iy >= p.h) continue;
    for (int64_t kx = 0; kx < p.kw; ++kx) {
      int64_t ix = ox * p.stride_w - p.pad_w + kx * p.dil_w;
      if (ix < 0 || ix >= p.w) continue;
      T v = x[iy * p.w + ix];
      if (best < 0 || v > best_val || std::isnan(v)) {
        best = iy * p.w + ix;
        best_val = v;
        if (std::isnan(v)) return best;
      }
    }
  }
  return best;
}

// Windows that never leave the input (no padding, no dilation, the last window inside): the
// CPU kernels' fast path, without per-tap bounds checks. The reference kernels keep the
// general loops, so the op tests compare the two.
bool WindowsInside(const Pool2dParams& p) {
  return p.pad_h == 0 && p.pad_w == 0 && p.dil_h == 1 && p.dil_w == 1 &&
         (p.oh - 1) * p.stride_h + p.kh <= p.h && (p.ow - 1) * p.stride_w + p.kw <= p.w;
}

// The maxima (NaN propagating) of `count` consecutive windows of one output row, all inside
// the input (`in`: the first window's top-left tap, `out`: its output); KH / KW > 0 fix the
// window at compile time (unrolled, branch-free: the common 2x2 and 3x3 windows), 0 reads it
// from `p`.
template <int KH, int KW, typename T>
void InsideMaxRow(const Pool2dParams& p, const T* in, T* out, int64_t count) {
  const int64_t kh = KH > 0 ? KH : p.kh, kw = KW > 0 ? KW : p.kw, sw = p.stride_w;
  for (int64_t ox = 0; ox < count; ++ox) {
    const T* w = in + ox * sw;
    T best = w[0];
    for (int64_t ky = 0; ky < kh; ++ky) {
      for (int64_t kx = 0; kx < kw; ++kx) {
        T v = w[ky * p.w + kx];
        best = (v > best || v != v) ? v : best;
      }
    }
    out[ox] = best;
  }
}

// dx += dy routed to each window's first maximal element (the first NaN wins), for `count`
// consecutive windows of one row, inside the input (`in` / `dx`: the first window's top-left
// tap in x / dx); KH / KW as in InsideMaxRow.
template <int KH, int KW, typename T>
void InsideArgmaxRow(const Pool2dParams& p, const T* in, const T* dy, T* dx, int64_t count) {
  const int64_t kh = KH > 0 ? KH : p.kh, kw = KW > 0 ? KW : p.kw, sw = p.stride_w;
  for (int64_t ox = 0; ox < count; ++ox) {
    const T* w = in + ox * sw;
    T best = w[0];
    int64_t idx = 0;
    for (int64_t ky = 0; ky < kh; ++ky) {
      for (int64_t kx = 0; kx < kw; ++kx) {
        T v = w[ky * p.w + kx];
        bool take = v > best || (v != v && best == best);
        best = take ? v : best;
        idx = take ? ky * p.w + kx : idx;
      }
    }
    dx[ox * sw + idx] += dy[ox];
  }
}

// Non-overlapping 2x2 windows (stride 2, inside the input), one row of windows, f32: eight
// windows at a time in GCC's vector extensions (32-byte vectors: AVX2 / AVX-512VL registers),
// the last partial group through a zero-padded copy, so there is no scalar tail and no
// data-dependent branch whatever the row width. (The auto-vectorized loop this replaces ran
// rows shorter than the vector width as branchy scalar code: 13-window rows on AVX-512 took
// 0.76 ms for the main job's first pool backward, 26% of its training step.)
using F8 = float __attribute__((vector_size(32)));
using I8 = int32_t __attribute__((vector_size(32)));
constexpr int64_t kLanes = 8;

// x[0..16) split into its even and odd elements (the windows' left and right taps).
struct Deinterleaved {
  F8 even, odd;
};
inline Deinterleaved LoadPairs(const float* x) {
  F8 lo, hi;
  std::memcpy(&lo, x, sizeof lo);
  std::memcpy(&hi, x + kLanes, sizeof hi);
  return {__builtin_shuffle(lo, hi, I8{0, 2, 4, 6, 8, 10, 12, 14}),
          __builtin_shuffle(lo, hi, I8{1, 3, 5, 7, 9, 11, 13, 15})};
}
inline void StorePairs(float* x, F8 even, F8 odd) {
  F8 lo = __builtin_shuffle(even, odd, I8{0, 8, 1, 9, 2, 10, 3, 11});
  F8 hi = __builtin_shuffle(even, odd, I8{4, 12, 5, 13, 6, 14, 7, 15});
  std::memcpy(x, &lo, sizeof lo);
  std::memcpy(x + kLanes, &hi, sizeof hi);
}

// Overlapping 3x3 windows at stride 2 along the row (ResNet's stem pool), f32, windows inside
// the input: the argmax of 8 windows at a time in vector lanes (InsideArgmaxRow's rule: the
// first maximum, a NaN over any number), then each window's gradient added in window order,
// as the scalar loop adds it (neighbouring windows share a column). The last group reads one
// column past its windows, so it stops before the row's last window; the scalar loop does
// the rest. ResNet-50 bf16 training at 64x64, batch 8 (its stem pool in NCHW), per call:
// 1.56 ms scalar, 0.98 this (per-instruction profiles; 34 ms per step scalar at 224x224).
void InsideArgmaxRow3x3Stride2(const Pool2dParams& p, const float* in, const float* dy,
                               float* dx, int64_t count) {
  int64_t ox = 0;
  for (; ox + kLanes < count; ox += kLanes) {
    const float* base = in + ox * 2;
    F8 best{};
    I8 idx{};
    for (int64_t ky = 0; ky < 3; ++ky) {
      const float* row = base + ky * p.w;
      const Deinterleaved left = LoadPairs(row), right = LoadPairs(row + 2);
      const F8 taps[3] = {left.even, left.odd, right.even};
      for (int64_t kx = 0; kx < 3; ++kx) {
        const F8 v = taps[kx];
        if (ky == 0 && kx == 0) {
          best = v;
          continue;
        }
        const I8 take = (v > best) | ((v != v) & (best == best));
        best = take ? v : best;
        idx = take ? I8{} + static_cast<int32_t>(ky * p.w + kx) : idx;
      }
    }
    for (int64_t l = 0; l < kLanes; ++l) dx[(ox + l) * 2 + idx[l]] += dy[ox + l];
  }
  InsideArgmaxRow<3, 3>(p, in + ox * 2, dy + ox, dx + ox * 2, count - ox);
}
// The scalar loops' running maximum step: v replaces m when larger or NaN.
inline F8 TakeMax(F8 m, F8 v) { return ((v > m) | (v != v)) ? v : m; }

// Eight windows: r0 / r1 their top / bottom rows (16 floats each), y their maxima.
inline void Max2x2Group(const float* r0, const float* r1, float* y) {
  Deinterleaved t = LoadPairs(r0), b = LoadPairs(r1);
  F8 m = TakeMax(TakeMax(TakeMax(t.even, t.odd), b.even), b.odd);
  std::memcpy(y, &m, sizeof m);
}

// Eight windows: dy to each window's first maximal tap (the first NaN if it has one), 0 to
// the other three; every dx element of the two rows is written once (no fill, no scatter).
inline void Route2x2Group(const float* r0, const float* r1, const float* dy, float* d0,
                          float* d1) {
  Deinterleaved t = LoadPairs(r0), b = LoadPairs(r1);
  F8 m = TakeMax(TakeMax(TakeMax(t.even, t.odd), b.even), b.odd);
  I8 nan = m != m;
  I8 ta = (t.even == m) | (nan & (t.even != t.even));
  I8 tb = ~ta & ((t.odd == m) | (nan & (t.odd != t.odd)));
  I8 tc = ~(ta | tb) & ((b.even == m) | (nan & (b.even != b.even)));
  I8 td = ~(ta | tb | tc);
  F8 g;
  std::memcpy(&g, dy, sizeof g);
  I8 gi = reinterpret_cast<I8>(g);
  StorePairs(d0, reinterpret_cast<F8>(gi & ta), reinterpret_cast<F8>(gi & tb));
  StorePairs(d1, reinterpret_cast<F8>(gi & tc), reinterpret_cast<F8>(gi & td));
}

// The first n (< 16) floats of x, zeros after; stores write back only the first n. With AVX2
// these are masked loads / stores (no copy); elsewhere a padded copy.
struct PartialPairs {
  int64_t n;
#if defined(__AVX2__)
  __m256i lo_mask, hi_mask;
  explicit PartialPairs(int64_t count) : n(count) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    lo_mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), lane);
    hi_mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n - kLanes)), lane);
  }
  void Load(const float* x, float* buf) const {
    _mm256_storeu_ps(buf, _mm256_maskload_ps(x, lo_mask));
    _mm256_storeu_ps(buf + kLanes, _mm256_maskload_ps(x + kLanes, hi_mask));
  }
  void Store(const float* buf, float* x) const {
    _mm256_maskstore_ps(x, lo_mask, _mm256_loadu_ps(buf));
    _mm256_maskstore_ps(x + kLanes, hi_mask, _mm256_loadu_ps(buf + kLanes));
  }
#else
  explicit PartialPairs(int64_t count) : n(count) {}
  void Load(const float* x, float* buf) const {
    std::fill(std::copy(x, x + n, buf), buf + 2 * kLanes, 0.0f);
  }
  void Store(const float* buf, float* x) const { std::copy(buf, buf + n, x); }
#endif
};

void Max2x2Row(int64_t ow, const float* r0, const float* r1, float* y) {
  int64_t ox = 0;
  for (; ox + kLanes <= ow; ox += kLanes) Max2x2Group(r0 + 2 * ox, r1 + 2 * ox, y + ox);
  const int64_t k = ow - ox;
  if (k == 0) return;
  const PartialPairs pairs(2 * k), singles(k);
  float t[2 * kLanes], b[2 * kLanes], out[2 * kLanes] = {};
  pairs.Load(r0 + 2 * ox, t);
  pairs.Load(r1 + 2 * ox, b);
  Max2x2Group(t, b, out);
  singles.Store(out, y + ox);
}

void Route2x2Row(int64_t ow, const float* r0, const float* r1, const float* dy, float* d0,
                 float* d1) {
  int64_t ox = 0;
  for (; ox + kLanes <= ow; ox += kLanes)
    Route2x2Group(r0 + 2 * ox, r1 + 2 * ox, dy + ox, d0 + 2 * ox, d1 + 2 * ox);
  const int64_t k = ow - ox;
  if (k == 0) return;
  const PartialPairs pairs(2 * k), singles(k);
  float t[2 * kLanes], b[2 * kLanes], g[2 * kLanes], o0[2 * kLanes] = {}, o1[2 * kLanes] = {};
  pairs.Load(r0 + 2 * ox, t);
  pairs.Load(r1 + 2 * ox, b);
  singles.Load(dy + ox, g);
  Route2x2Group(t, b, g, o0, o1);
  pairs.Store(o0, d0 + 2 * ox);
  pairs.Store(o1, d1 + 2 * ox);
}

// The f64 version of Route2x2Row, left to GCC's vectorizer (int flags combined with & and |,
// scalar taps, rows kept unrelated by noinline); f64 pooling is for checks, not speed.
template <typename T>
__attribute__((noinline)) void Tiled2x2RouteRow(int64_t ow, const T* r0, const T* r1,
                                                 const T* dy, T* d0, T* d1) {
  for (int64_t ox = 0; ox < ow; ++ox) {
    const T a = r0[2 * ox], b = r0[2 * ox + 1], c = r1[2 * ox], d = r1[2 * ox + 1];
    T m = a;
    m = (b > m || b != b) ? b : m;
    m = (c > m || c != c) ? c : m;
    m = (d > m || d != d) ? d : m;
    const int nan = m != m;
    const int ta = (a == m) | (nan & (a != a));
    const int tb = (ta ^ 1) & ((b == m) | (nan & (b != b)));
    const int tc = ((ta | tb) ^ 1) & ((c == m) | (nan & (c != c)));
    const int td = (ta | tb | tc) ^ 1;
    const T g = dy[ox];
    d0[2 * ox] = ta ? g : T(0);
    d0[2 * ox + 1] = tb ? g : T(0);
    d1[2 * ox] = tc ? g : T(0);
    d1[2 * ox + 1] = td ? g : T(0);
  }
}
void Tiled2x2RouteRow(int64_t ow, const float* r0, const float* r1, const float* dy, float* d0,
                      float* d1) {
  Route2x2Row(ow, r0, r1, dy, d0, d1);
}

template <typename T>
void Tiled2x2RoutePlane(const Pool2dParams& p, const T* x, const T* dy, T* dx) {
  const int64_t w = p.w;
  for (int64_t oy = 0; oy < p.oh; ++oy) {
    const T* r0 = x + 2 * oy * w;
    T* d0 = dx + 2 * oy * w;
    Tiled2x2RouteRow(p.ow, r0, r0 + w, dy + oy * p.ow, d0, d0 + w);
    if (w > 2 * p.ow) d0[w - 1] = d0[2 * w - 1] = T(0);  // the odd last column
  }
  std::fill(dx + 2 * p.oh * w, dx + p.h * w, T(0));  // the odd last row
}

struct AvgWindow {
  int64_t y0, y1, x0, x1;
  double divisor;
};

AvgWindow AvgWindowAt(const Pool2dParams& p, int64_t oy, int64_t ox) {
  int64_t y0 = oy * p.stride_h - p.pad_h, x0 = ox * p.stride_w - p.pad_w;
  int64_t y1 = std::min(y0 + p.kh, p.h + p.pad_h), x1 = std::min(x0 + p.kw, p.w + p.pad_w);
  int64_t pool_size = (y1 - y0) * (x1 - x0);
  y0 = std::max<int64_t>(y0, 0);
  x0 = std::max<int64_t>(x0, 0);
  y1 = std::min(y1, p.h);
  x1 = std::min(x1, p.w);
  double divisor = p.divisor_override != 0 ? p.divisor_override
                   : p.count_include_pad   ? pool_size
                                           : (y1 - y0) * (x1 - x0);
  return {y0, y1, x0, x1, divisor};
}

int64_t AdaptiveStart(int64_t i, int64_t in, int64_t out) { return (i * in) / out; }
int64_t AdaptiveEnd(int64_t i, int64_t in, int64_t out) { return ((i + 1) * in + out - 1) / out; }

}  // namespace

namespace {

// The output columns [lo, hi) of row oy whose windows lie inside the input (lo == hi: none,
// e.g. a row whose windows reach into the padding above or below). Dilation 1 only.
struct InteriorColumns {
  int64_t lo = 0, hi = 0;
  int64_t iy0 = 0;  // the windows' top input row
};

InteriorColumns InteriorOf(const Pool2dParams& p, int64_t oy) {
  InteriorColumns c;
  c.iy0 = oy * p.stride_h - p.pad_h;
  if (p.dil_h != 1 || p.dil_w != 1 || c.iy0 < 0 || c.iy0 + p.kh > p.h || p.w < p.kw) return c;
  c.lo = (p.pad_w + p.stride_w - 1) / p.stride_w;            // first ox with ox*s - pad >= 0
  c.hi = std::min(p.ow, (p.w - p.kw + p.pad_w) / p.stride_w + 1);  // last window ends <= w
  if (c.hi < c.lo) c.hi = c.lo;
  return c;
}

// Calls fast(row info) for the interior columns of every output row and edge(oy, ox) for the
// others (windows touching the padding): pooling with padding (ResNet's 3x3 / 2, pad 1 stem)
// runs the unrolled loops on all but its border.
template <typename Fast, typename Edge>
void ForWindows(const Pool2dParams& p, bool fast_path, Fast&& fast, Edge&& edge) {
  for (int64_t oy = 0; oy < p.oh; ++oy) {
    InteriorColumns c = fast_path ? InteriorOf(p, oy) : InteriorColumns{};
    for (int64_t ox = 0; ox < c.lo; ++ox) edge(oy, ox);
    if (c.hi > c.lo) fast(oy, c);
    for (int64_t ox = std::max(c.hi, c.lo); ox < p.ow; ++ox) edge(oy, ox);
  }
}

}  // namespace

template <typename T>
void MaxPool2dForward(const Pool2dParams& p, const T* x, T* y, bool parallel) {
  ForPlanes(p.planes, parallel, [&](int64_t pl) {
    const T* xp = x + pl * p.h * p.w;
    T* yp = y + pl * p.oh * p.ow;
    auto fast = [&](int64_t oy, const InteriorColumns& c) {
      const T* in = xp + c.iy0 * p.w + c.lo * p.stride_w - p.pad_w;
      T* out = yp + oy * p.ow + c.lo;
      if constexpr (std::is_same_v<T, float>) {
        if (p.kh == 2 && p.kw == 2 && p.stride_w == 2) return Max2x2Row(c.hi - c.lo, in, in + p.w, out);
      }
      if (p.kh == 2 && p.kw == 2) {
        InsideMaxRow<2, 2>(p, in, out, c.hi - c.lo);
      } else if (p.kh == 3 && p.kw == 3) {
        InsideMaxRow<3, 3>(p, in, out, c.hi - c.lo);
      } else {
        InsideMaxRow<0, 0>(p, in, out, c.hi - c.lo);
      }
    };
    auto edge = [&](int64_t oy, int64_t ox) {
      int64_t idx = WindowArgmax(p, xp, oy, ox);
      yp[oy * p.ow + ox] = idx < 0 ? -std::numeric_limits<T>::infinity() : xp[idx];
    };
    ForWindows(p, parallel, fast, edge);
  });
}

template <typename T>
void MaxPool2dBackward(const Pool2dParams& p, const T* dy, const T* x, T* dx, bool parallel) {
  const bool inside = parallel && WindowsInside(p);
  ForPlanes(p.planes, parallel, [&](int64_t pl) {
    const T* xp = x + pl * p.h * p.w;
    const T* dyp = dy + pl * p.oh * p.ow;
    T* dxp = dx + pl * p.h * p.w;
    if (inside && p.kh == 2 && p.kw == 2 && p.stride_h == 2 && p.stride_w == 2 &&
        (std::is_same_v<T, float> || p.ow >= 8)) {
      Tiled2x2RoutePlane(p, xp, dyp, dxp);
      return;
    }
    std::fill(dxp, dxp + p.h * p.w, T(0));
    auto fast = [&](int64_t oy, const InteriorColumns& c) {
      const int64_t base = c.iy0 * p.w + c.lo * p.stride_w - p.pad_w;
      const T* g = dyp + oy * p.ow + c.lo;
      if (p.kh == 2 && p.kw == 2) {
        InsideArgmaxRow<2, 2>(p, xp + base, g, dxp + base, c.hi - c.lo);
      } else if (p.kh == 3 && p.kw == 3) {
        if constexpr (std::is_same_v<T, float>) {
          if (p.stride_w == 2) {
            InsideArgmaxRow3x3Stride2(p, xp + base, g, dxp + base, c.hi - c.lo);
            return;
          }
        }
        InsideArgmaxRow<3, 3>(p, xp + base, g, dxp + base, c.hi - c.lo);
      } else {
        InsideArgmaxRow<0, 0>(p, xp + base, g, dxp + base, c.hi - c.lo);
      }
    };
    auto edge = [&](int64_t oy, int64_t ox) {
      int64_t idx = WindowArgmax(p, xp, oy, ox);
      if (idx >= 0) dxp[idx] += dyp[oy * p.ow + ox];
    };
    ForWindows(p, parallel, fast, edge);
  });
}

template <typename T>
void AvgPool2dForward(const Pool2dParams& p, const T* x, T* y, bool parallel) {
  ForPlanes(p.planes, parallel, [&](int64_t pl) {
    const T* xp = x + pl * p.h * p.w;
    T* yp = y + pl * p.oh * p.ow;
    for (int64_t oy = 0; oy < p.oh; ++oy)
      for (int64_t ox = 0; ox < p.ow; ++ox) {
        AvgWindow win = AvgWindowAt(p, oy, ox);
        double sum = 0;
        for (int64_t iy = win.y0; iy < win.y1; ++iy)
          for (int64_t ix = win.x0; ix < win.x1; ++ix) sum += xp[iy * p.w + ix];
        bool empty = win.y0 >= win.y1 || win.x0 >= win.x1;
        yp[oy * p.ow + ox] = empty ? T(0) : static_cast<T>(sum / win.divisor);
      }
  });
}

template <typename T>
void AvgPool2dBackward(const Pool2dParams& p, const T* dy, T* dx, bool parallel) {
  ForPlanes(p.planes, parallel, [&](int64_t pl) {
    const T* dyp = dy + pl * p.oh * p.ow;
    T* dxp = dx + pl * p.h * p.w;
    std::fill(dxp, dxp + p.h * p.w, T(0));
    for (int64_t oy = 0; oy < p.oh; ++oy)
      for (int64_t ox = 0; ox < p.ow; ++ox) {
        AvgWindow win = AvgWindowAt(p, oy, ox);
        if (win.y0 >= win.y1 || win.x0 >= win.x1) continue;
        T g = static_cast<T>(dyp[oy * p.ow + ox] / win.divisor);
        for (int64_t iy = win.y0; iy < win.y1; ++iy)
          for (int64_t ix = win.x0; ix < win.x1; ++ix) dxp[iy * p.w + ix] += g;
      }
  });
}

template <typename T>
void AdaptiveAvgPool2dForward(const Pool2dParams& p, const T* x, T* y, bool parallel) {
  ForPlanes(p.planes, parallel, [&](int64_t pl) {
    const T* xp = x + pl * p.h * p.w;
    T* yp = y + pl * p.oh * p.ow;
    for (int64_t oy = 0; oy < p.oh; ++oy) {
      int64_t y0 = AdaptiveStart(oy, p.h, p.oh), y1 = AdaptiveEnd(oy, p.h, p.oh);
      for (int64_t ox = 0; ox < p.ow; ++ox) {
        int64_t x0 = AdaptiveStart(ox, p.w, p.ow), x1 = AdaptiveEnd(ox, p.w, p.ow);
        double sum = 0;
        for (int64_t iy = y0; iy < y1; ++iy)
          for (int64_t ix = x0; ix < x1; ++ix) sum += xp[iy * p.w + ix];
        yp[oy * p.ow + ox] = static_cast<T>(sum / static_cast<double>((y1 - y0) * (x1 - x0)));
      }
    }
  });
}

template <typename T>
void AdaptiveAvgPool2dBackward(const Pool2dParams& p, const T* dy, T* dx, bool parallel) {
  ForPlanes(p.planes, parallel, [&](int64_t pl) {
    const T* dyp = dy + pl * p.oh * p.ow;
    T* dxp = dx + pl * p.h * p.w;
    std::fill(dxp, dxp + p.h * p.w, T(0));
    for (int64_t oy = 0; oy < p.oh; ++oy) {
      int64_t y0 = AdaptiveStart(oy, p.h, p.oh), y1 = AdaptiveEnd(oy, p.h, p.oh);
      for (int64_t ox = 0; ox < p.ow; ++ox) {
        int64_t x0 = AdaptiveStart(ox, p.w, p.ow), x1 = AdaptiveEnd(ox, p.w, p.ow);
        T g = static_cast<T>(dyp[oy * p.ow + ox] / static_cast<double>((y1 - y0) * (x1 - x0)));
        for (int64_t iy = y0; iy < y1; ++iy)
          for (int64_t ix = x0; ix < x1; ++ix) dxp[iy * p.w + ix] += g;
      }
    }
  });
}

#define TG_INSTANTIATE(T)                                                                      \
  template void MaxPool2dForward<T>(const Pool2dParams&, const T*, T*, bool);                  \
  template void MaxPool2dBackward<T>(const Pool2dParams&, const T*, const T*, T*, bool);       \
  template void AvgPool2dForward<T>(const Pool2dParams&, const T*, T*, bool);                  \
  template void AvgPool2dBackward<T>(const Pool2dParams&, const T*, T*, bool);                 \
  template void AdaptiveAvgPool2dForward<T>(const Pool2dParams&, const T*, T*, bool);          \
  template void AdaptiveAvgPool2dBackward<T>(const Pool2dParams&, const T*, T*, bool);
TG_INSTANTIATE(float)
TG_INSTANTIATE(double)
#undef TG_INSTANTIATE

}  // namespace tg::cpu
