// Batch norm (training forward and backward) on activations in oneDNN's channel-blocked
// layout nChw<B>c (channel_blocking.h), so that a conv -> batch norm -> activation -> conv
// chain of a training step needs no reorder to NCHW and back (passes/block_conv_layout.cc).
// A channel block of one batch item is S * B contiguous values, B channels interleaved:
// the B channels' sums are B double lanes (vector registers for the compile-time B), and
// the normalization is B-wide vector arithmetic with per-lane scale and shift. Same
// formulas as the NCHW kernels (norm_kernels.cc); only the order of the double sums differs.
#include <cmath>
#include <type_traits>

#include "kernels/cpu/norm_kernels.h"
#include "kernels/cpu/parallel.h"

namespace tg::cpu {
namespace {

// Calls fn(cb) for every channel block, the blocks split over threads when `parallel`.
template <typename Fn>
void ForBlocks(int64_t blocks, bool parallel, Fn&& fn) {
  auto run = [&](int64_t begin, int64_t end) {
    for (int64_t cb = begin; cb < end; ++cb) fn(cb);
  };
  if (parallel) {
    ParallelFor(blocks, 1, run);
  } else {
    run(0, blocks);
  }
}

// The S * B values of channel block cb of batch item n.
template <typename T, int B>
const T* BlockOf(const T* x, const BatchNormParams& p, int64_t n, int64_t cb) {
  return x + (n * (p.c / B) + cb) * p.s * B;
}

// Channel block cb's batch mean and biased variance per lane, in double, from x.
template <typename T, int B>
void BlockStats(const BatchNormParams& p, const T* x, int64_t cb, double* mean, double* var) {
  const double count = static_cast<double>(p.n * p.s);
  for (int l = 0; l < B; ++l) mean[l] = var[l] = 0;
  for (int64_t n = 0; n < p.n; ++n) {
    const T* xb = BlockOf<T, B>(x, p, n, cb);
    for (int64_t s = 0; s < p.s; ++s) {
      for (int l = 0; l < B; ++l) mean[l] += xb[s * B + l];
    }
  }
  for (int l = 0; l < B; ++l) mean[l] /= count;
  for (int64_t n = 0; n < p.n; ++n) {
    const T* xb = BlockOf<T, B>(x, p, n, cb);
    for (int64_t s = 0; s < p.s; ++s) {
      for (int l = 0; l < B; ++l) {
        const double d = xb[s * B + l] - mean[l];
        var[l] += d * d;
      }
    }
  }
  for (int l = 0; l < B; ++l) var[l] /= count;
}

// f32 normalizes in float with each lane's mean split in two (SplitMean, as the NCHW
// kernel); f64 in double (lo = 0).
template <typename T>
using Arith = std::conditional_t<std::is_same_v<T, float>, float, double>;

template <typename T, int B>
void SplitLanes(const double* mean, Arith<T>* hi, Arith<T>* lo) {
  for (int l = 0; l < B; ++l) {
    if constexpr (std::is_same_v<T, float>) {
      const SplitMean split(mean[l]);
      hi[l] = split.hi, lo[l] = split.lo;
    } else {
      hi[l] = mean[l], lo[l] = 0;
    }
  }
}

template <typename T, int B>
void TrainBlocks(const BatchNormParams& p, const T* x, const T* w, const T* b, T* y, T* mean,
                 T* invstd, T* var, bool parallel) {
  ForBlocks(p.c / B, parallel, [&](int64_t cb) {
    double m[B], v[B];
    BlockStats<T, B>(p, x, cb, m, v);
    Arith<T> hi[B], lo[B], scale[B], shift[B];
    SplitLanes<T, B>(m, hi, lo);
    for (int l = 0; l < B; ++l) {
      const int64_t c = cb * B + l;
      const double is = 1.0 / std::sqrt(v[l] + p.eps);
      mean[c] = static_cast<T>(m[l]);
      var[c] = static_cast<T>(v[l]);
      invstd[c] = static_cast<T>(is);
      scale[l] = static_cast<Arith<T>>(is * w[c]);
      shift[l] = static_cast<Arith<T>>(b[c]);
    }
    for (int64_t n = 0; n < p.n; ++n) {
      const T* xb = BlockOf<T, B>(x, p, n, cb);
      T* yb = y + (xb - x);
      for (int64_t s = 0; s < p.s; ++s) {
        for (int l = 0; l < B; ++l) {
          yb[s * B + l] = static_cast<T>(((xb[s * B + l] - hi[l]) - lo[l]) * scale[l] + shift[l]);
        }
      }
    }
  });
}

template <typename T, int B>
void BackwardBlocks(const BatchNormParams& p, const T* dy, const T* x, const T* w,
                    const T* mean, const T* invstd, T* dx, T* dw, T* db, bool parallel) {
  const double count = static_cast<double>(p.n * p.s);
  ForBlocks(p.c / B, parallel, [&](int64_t cb) {
    double m[B], is[B], sum_dy[B] = {}, sum_dy_xc[B] = {};
    // Recomputed statistics where the saved ones are rounded to T (see norm_kernels.cc).
    if (p.recompute_stats) {
      BlockStats<T, B>(p, x, cb, m, is);
      for (int l = 0; l < B; ++l) is[l] = 1.0 / std::sqrt(is[l] + p.eps);
    } else {
      for (int l = 0; l < B; ++l) m[l] = mean[cb * B + l], is[l] = invstd[cb * B + l];
    }
    for (int64_t n = 0; n < p.n; ++n) {
      const T* xb = BlockOf<T, B>(x, p, n, cb);
      const T* dyb = dy + (xb - x);
      for (int64_t s = 0; s < p.s; ++s) {
        for (int l = 0; l < B; ++l) {
          sum_dy[l] += dyb[s * B + l];
          sum_dy_xc[l] += dyb[s * B + l] * (xb[s * B + l] - m[l]);
        }
      }
    }
    // dx = k (dy - mean(dy) - xhat mean(dy xhat)), k = w / sigma.
    Arith<T> hi[B], lo[B], is_t[B], k[B], mean_dy[B], mean_dy_xhat[B];
    SplitLanes<T, B>(m, hi, lo);
    for (int l = 0; l < B; ++l) {
      const int64_t c = cb * B + l;
      const double sum_dy_xhat = sum_dy_xc[l] * is[l];
      db[c] = static_cast<T>(sum_dy[l]);
      dw[c] = static_cast<T>(sum_dy_xhat);
      is_t[l] = static_cast<Arith<T>>(is[l]);
      k[l] = static_cast<Arith<T>>(w[c] * is[l]);
      mean_dy[l] = static_cast<Arith<T>>(sum_dy[l] / count);
      mean_dy_xhat[l] = static_cast<Arith<T>>(sum_dy_xhat / count);
    }
    for (int64_t n = 0; n < p.n; ++n) {
      const T* xb = BlockOf<T, B>(x, p, n, cb);
      const T* dyb = dy + (xb - x);
      T* dxb = dx + (xb - x);
      for (int64_t s = 0; s < p.s; ++s) {
        for (int l = 0; l < B; ++l) {
          const Arith<T> xhat = ((xb[s * B + l] - hi[l]) - lo[l]) * is_t[l];
          dxb[s * B + l] =
              static_cast<T>(k[l] * (dyb[s * B + l] - mean_dy[l] - xhat * mean_dy_xhat[l]));
        }
      }
    }
  });
}

}  // namespace

template <typename T>
void BlockedBatchNormTrain(const BatchNormParams& p, const T* x, const T* w, const T* b, T* y,
                           T* mean, T* invstd, T* var, bool parallel) {
  if (p.block == 16) {
    TrainBlocks<T, 16>(p, x, w, b, y, mean, invstd, var, parallel);
  } else {
    TrainBlocks<T, 8>(p, x, w, b, y, mean, invstd, var, parallel);
  }
}

template <typename T>
void BlockedBatchNormBackward(const BatchNormParams& p, const T* dy, const T* x, const T* w,
                              const T* mean, const T* invstd, T* dx, T* dw, T* db,
                              bool parallel) {
  if (p.block == 16) {
    BackwardBlocks<T, 16>(p, dy, x, w, mean, invstd, dx, dw, db, parallel);
  } else {
    BackwardBlocks<T, 8>(p, dy, x, w, mean, invstd, dx, dw, db, parallel);
  }
}

#define TG_INSTANTIATE(T)                                                                     \
  template void BlockedBatchNormTrain<T>(const BatchNormParams&, const T*, const T*, const T*, \
                                         T*, T*, T*, T*, bool);                               \
  template void BlockedBatchNormBackward<T>(const BatchNormParams&, const T*, const T*,        \
                                            const T*, const T*, const T*, T*, T*, T*, bool);
TG_INSTANTIATE(float)
TG_INSTANTIATE(double)
#undef TG_INSTANTIATE

}  // namespace tg::cpu
