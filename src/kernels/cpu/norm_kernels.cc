// Batch norm / layer norm loops; see norm_kernels.h.
#include "kernels/cpu/norm_kernels.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "kernels/cpu/activation.h"
#include "kernels/cpu/float16.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/vector_math.h"

namespace tg::cpu {
namespace {

template <typename Fn>
void ForRange(int64_t n, bool parallel, Fn&& fn) {
  if (!parallel) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  ParallelFor(n, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) fn(i);
  });
}

// Batch norm walks its channels in chunks, one contiguous range per thread, and every pass
// over a chunk runs batch item outer, channel inner: the thread streams through
// (c1 - c0) * s contiguous values per item. Channel by channel, a pass reads s-long runs
// C * s apart (at s = 1024 every run is a fresh 4 KiB page for the prefetcher): 2.5x slower
// from memory. The sums per channel still add their runs in batch order, as before.
template <typename Fn>
void ForChannelChunks(const BatchNormParams& p, bool parallel, Fn&& fn) {
  const int64_t chunks = parallel ? std::max<int64_t>(1, std::min<int64_t>(MaxThreads(), p.c)) : 1;
  ForRange(chunks, parallel, [&](int64_t k) { fn(k * p.c / chunks, (k + 1) * p.c / chunks); });
}

// Calls fn(c, offset) for the run of every channel in [c0, c1) of every batch item, in memory
// order.
template <typename Fn>
void ForRunsInOrder(const BatchNormParams& p, int64_t c0, int64_t c1, Fn&& fn) {
  for (int64_t n = 0; n < p.n; ++n) {
    for (int64_t c = c0; c < c1; ++c) fn(c, (n * p.c + c) * p.s);
  }
}

// Per-channel double accumulators, `count` arrays of C: the calling thread's buffer, grown
// once (steady-state steps do not allocate); the kernels pass the pointer to their workers.
double* ChannelScratch(const BatchNormParams& p, int count) {
  static thread_local std::vector<double> buffer;
  const size_t need = static_cast<size_t>(count * p.c);
  if (buffer.size() < need) buffer.resize(need);
  std::fill(buffer.begin(), buffer.begin() + need, 0.0);
  return buffer.data();
}

// Channels [c0, c1)'s batch mean and (biased) variance, in double, from x itself. X: T, or
// a half element (float16.h's BFloat16Value, HalfValue: mixed precision's half activation
// with f32 parameters) widened as it is read.
template <typename X>
void ChunkStats(const BatchNormParams& p, const X* x, int64_t c0, int64_t c1, double* mean,
                double* var) {
  const double count = static_cast<double>(p.n * p.s);
  for (int64_t c = c0; c < c1; ++c) mean[c] = var[c] = 0;
  ForRunsInOrder(p, c0, c1, [&](int64_t c, int64_t o) { mean[c] += vmath::SumLanes(x + o, p.s); });
  for (int64_t c = c0; c < c1; ++c) mean[c] /= count;
  ForRunsInOrder(p, c0, c1, [&](int64_t c, int64_t o) {
    var[c] += vmath::SumSquaredDeviation(x + o, p.s, mean[c]);
  });
  for (int64_t c = c0; c < c1; ++c) var[c] /= count;
}

// ChunkStats of a half x (mixed precision's half activation with f32 parameters): the sums
// in float lanes (vmath::BlockedFloatSums: 16-term float sums added in double) over x
// widened as it is loaded, as layer norm sums its rows; the deviations around m1, the first
// mean rounded to float (x - m1 is exact near the mean), corrected by delta = mean(x - m1).
// Statistics in double per element, as ChunkStats, made the half kernel slower than a
// widening cast and the f32 kernel together: batch norm is compute-bound here.
template <typename X>
void ChunkStatsFloatLanes(const BatchNormParams& p, const X* x, int64_t c0, int64_t c1,
                          double* mean, double* var, double* delta) {
  const double count = static_cast<double>(p.n * p.s);
  for (int64_t c = c0; c < c1; ++c) mean[c] = var[c] = delta[c] = 0;
  ForRunsInOrder(p, c0, c1, [&](int64_t c, int64_t o) {
    const X* r = x + o;
    mean[c] += vmath::BlockedFloatSum(p.s, [=](auto at) { return at(r); });
  });
  for (int64_t c = c0; c < c1; ++c) mean[c] = static_cast<float>(mean[c] / count);  // m1
  ForRunsInOrder(p, c0, c1, [&](int64_t c, int64_t o) {
    const X* r = x + o;
    const float m1 = static_cast<float>(mean[c]);
    double sums[2];
    vmath::BlockedFloatSums(p.s, sums, [=](auto at) { return at(r) - m1; },
                            [=](auto at) { return (at(r) - m1) * (at(r) - m1); });
    delta[c] += sums[0];
    var[c] += sums[1];
  });
  for (int64_t c = c0; c < c1; ++c) {
    const double d = delta[c] / count;
    mean[c] += d;
    var[c] = std::max(var[c] / count - d * d, 0.0);
  }
}

// y = (x - m) * scale + shift over one run; f32 in float with a SplitMean, as PyTorch
// applies it; f64 in double.
template <typename T, typename X>
void NormalizeRun(const X* x, T* y, int64_t s, double m, double scale, double shift) {
  if constexpr (std::is_same_v<T, float>) {
    const auto [hi, lo] = SplitMean(m);
    const float scale_f = static_cast<float>(scale), shift_f = static_cast<float>(shift);
    for (int64_t i = 0; i < s; ++i) y[i] = ((x[i] - hi) - lo) * scale_f + shift_f;
  } else {
    for (int64_t i = 0; i < s; ++i) y[i] = (x[i] - m) * scale + shift;
  }
}

// The plain-layout loops of BatchNormTrain; x's elements X read as T (see ChunkStats).
template <typename T, typename X>
void PlainBatchNormTrain(const BatchNormParams& p, const X* x, const T* w, const T* b, T* y,
                         T* mean, T* invstd, T* var, bool parallel) {
  double* scratch = ChannelScratch(p, 3);
  double *m = scratch, *v = scratch + p.c;
  ForChannelChunks(p, parallel, [&](int64_t c0, int64_t c1) {
    if constexpr (std::is_same_v<X, T>) {
      ChunkStats(p, x, c0, c1, m, v);
    } else {
      ChunkStatsFloatLanes(p, x, c0, c1, m, v, scratch + 2 * p.c);
    }
    for (int64_t c = c0; c < c1; ++c) {
      const double is = 1.0 / std::sqrt(v[c] + p.eps);
      mean[c] = static_cast<T>(m[c]);
      var[c] = static_cast<T>(v[c]);
      invstd[c] = static_cast<T>(is);
      v[c] = is;  // from here on: 1 / sigma
    }
    // (x - m) * scale + b, not x * scale + (b - m * scale): an element equal to the mean
    // (every element of a constant channel, a dead ReLU's) must give exactly b, as in
    // PyTorch, or a following ReLU sees +-1e-17 and its mask differs from eager's.
    ForRunsInOrder(p, c0, c1, [&](int64_t c, int64_t o) {
      NormalizeRun(x + o, y + o, p.s, m[c], v[c] * w[c], static_cast<double>(b[c]));
    });
  });
}

}  // namespace

template <typename T>
void BatchNormTrain(const BatchNormParams& p, const T* x, const T* w, const T* b, T* y, T* mean,
                    T* invstd, T* var, bool parallel) {
  if (p.block > 1) return BlockedBatchNormTrain(p, x, w, b, y, mean, invstd, var, parallel);
  PlainBatchNormTrain(p, x, w, b, y, mean, invstd, var, parallel);
}

void BatchNormTrainHalfX(const BatchNormParams& p, const uint16_t* x, bool bf16, const float* w,
                         const float* b, float* y, float* mean, float* invstd, float* var,
                         bool parallel) {
  if (bf16) {
    PlainBatchNormTrain(p, reinterpret_cast<const BFloat16Value*>(x), w, b, y, mean, invstd, var,
                        parallel);
  } else {
    PlainBatchNormTrain(p, reinterpret_cast<const HalfValue*>(x), w, b, y, mean, invstd, var,
                        parallel);
  }
}

template <typename T>
void BatchNormInference(const BatchNormParams& p, const T* x, const T* w, const T* b,
                        const T* running_mean, const T* running_var, T* y, bool parallel) {
  double* scale = ChannelScratch(p, 1);
  ForChannelChunks(p, parallel, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      scale[c] = w[c] / std::sqrt(static_cast<double>(running_var[c]) + p.eps);
    }
    ForRunsInOrder(p, c0, c1, [&](int64_t c, int64_t o) {
      NormalizeRun(x + o, y + o, p.s, static_cast<double>(running_mean[c]), scale[c],
                   static_cast<double>(b[c]));
    });
  });
}

namespace {

// Values per channel from which a half-x backward uses the forward's saved statistics.
constexpr double kHalfSavedStatsFrom = 256;

// The plain-layout loops of BatchNormBackward; x's elements X read as T, dx's DX written
// from T (rounded, for a half DX).
template <typename T, typename X, typename DX>
void PlainBatchNormBackward(const BatchNormParams& p, const T* dy, const X* x, const T* w,
                            const T* mean, const T* invstd, DX* dx, T* dw, T* db, bool parallel) {
  const double count = static_cast<double>(p.n * p.s);
  double* scratch = ChannelScratch(p, 5);
  double *m = scratch, *is = scratch + p.c, *sum_dy = scratch + 2 * p.c;
  double* sum_dy_xc = scratch + 3 * p.c;
  ForChannelChunks(p, parallel, [&](int64_t c0, int64_t c1) {
    // Recomputed statistics: the saved mean / invstd are rounded to T, and with few values
    // per channel (2 at 1x1 spatial, batch 2) 1/sigma is large, so x-hat from rounded
    // statistics leaves rounding-sized components the projection below should remove,
    // amplified by 1/sigma into the gradients (PyTorch's statistics are double).
    // A half x (mixed precision) over many values per channel reads the saved statistics:
    // rounded to f32 they move x-hat by ~1e-7 relative, far below dx's half rounding, and the
    // two passes over x that recomputing them takes were a third of the kernel's traffic.
    const bool recompute =
        p.recompute_stats && (std::is_same_v<X, T> || count < kHalfSavedStatsFrom);
    if (recompute) {
      if constexpr (std::is_same_v<X, T>) {
        ChunkStats(p, x, c0, c1, m, is);
      } else {
        ChunkStatsFloatLanes(p, x, c0, c1, m, is, scratch + 4 * p.c);
      }
      for (int64_t c = c0; c < c1; ++c) is[c] = 1.0 / std::sqrt(is[c] + p.eps);
    } else {
      for (int64_t c = c0; c < c1; ++c) m[c] = mean[c], is[c] = invstd[c];
    }
    ForRunsInOrder(p, c0, c1, [&](int64_t c, int64_t o) {
      if constexpr (std::is_same_v<X, T>) {
        sum_dy[c] += vmath::SumLanes(dy + o, p.s);
        sum_dy_xc[c] += vmath::SumProductDeviation(dy + o, x + o, p.s, m[c]);
      } else {  // in float lanes, as ChunkStatsFloatLanes; both sums in one pass over dy
        const SplitMean sm(m[c]);
        const T* d = dy + o;
        const X* r = x + o;
        double sums[2];
        vmath::BlockedFloatSums(p.s, sums, [=](auto at) { return at(d); },
                                [=](auto at) { return at(d) * ((at(r) - sm.hi) - sm.lo); });
        sum_dy[c] += sums[0];
        sum_dy_xc[c] += sums[1];
      }
    });
    // dx = k (dy - mean(dy) - xhat mean(dy xhat)), k = w / sigma.
    for (int64_t c = c0; c < c1; ++c) {
      const double sum_dy_xhat = sum_dy_xc[c] * is[c];
      db[c] = static_cast<T>(sum_dy[c]);
      dw[c] = static_cast<T>(sum_dy_xhat);
      sum_dy[c] /= count;                 // mean(dy)
      sum_dy_xc[c] = sum_dy_xhat / count;  // mean(dy xhat)
    }
    ForRunsInOrder(p, c0, c1, [&](int64_t c, int64_t o) {
      const double k = w[c] * is[c];
      const X* xr = x + o;
      const T* dyr = dy + o;
      DX* dxr = dx + o;
      if constexpr (std::is_same_v<T, float>) {
        // In float (the sums above stay in double), the mean split as in the forward.
        const auto [hi, lo] = SplitMean(m[c]);
        const float is_f = static_cast<float>(is[c]), k_f = static_cast<float>(k);
        const float mean_dy = static_cast<float>(sum_dy[c]);
        const float mean_dy_xhat = static_cast<float>(sum_dy_xc[c]);
        for (int64_t i = 0; i < p.s; ++i) {
          const float xhat = ((xr[i] - hi) - lo) * is_f;
          dxr[i] = DX(k_f * (dyr[i] - mean_dy - xhat * mean_dy_xhat));
        }
      } else {
        for (int64_t i = 0; i < p.s; ++i) {
          const double xhat = (xr[i] - m[c]) * is[c];
          dxr[i] = DX(static_cast<T>(k * (dyr[i] - sum_dy[c] - xhat * sum_dy_xc[c])));
        }
      }
    });
  });
}

}  // namespace

template <typename T>
void BatchNormBackward(const BatchNormParams& p, const T* dy, const T* x, const T* w,
                       const T* mean, const T* invstd, T* dx, T* dw, T* db, bool parallel) {
  if (p.block > 1) {
    return BlockedBatchNormBackward(p, dy, x, w, mean, invstd, dx, dw, db, parallel);
  }
  PlainBatchNormBackward(p, dy, x, w, mean, invstd, dx, dw, db, parallel);
}

void BatchNormBackwardHalfX(const BatchNormParams& p, const float* dy, const uint16_t* x,
                            bool bf16, const float* w, const float* mean, const float* invstd,
                            uint16_t* dx, float* dw, float* db, bool parallel) {
  if (bf16) {
    PlainBatchNormBackward(p, dy, reinterpret_cast<const BFloat16Value*>(x), w, mean, invstd,
                           reinterpret_cast<BFloat16Value*>(dx), dw, db, parallel);
  } else {
    PlainBatchNormBackward(p, dy, reinterpret_cast<const HalfValue*>(x), w, mean, invstd,
                           reinterpret_cast<HalfValue*>(dx), dw, db, parallel);
  }
}

namespace {

// Layer norm rows in float (PyTorch's precision for f32; double made the statistics and the
// normalization 2x slower than the GELU after them), sums by vmath::BlockedFloatSum. The mean
// is kept in two parts: a first estimate m1 (a float) and the correction delta = sum(x - m1)
// / d. x - m1 is exact in float for x near m1, so x - mean = (x - m1) - delta keeps the
// inputs' precision even where |mean| >> sigma (1e4 + N(0, 1): a mean rounded to float is
// off by up to 5e-4 sigma); var = sum((x - m1)^2) / d - delta^2.
struct FloatRowMoments {
  float m1, delta, mean, rstd;
};
FloatRowMoments RowMoments(const float* x, int64_t d, double eps) {
  const float m1 = static_cast<float>(vmath::BlockedFloatSum(d, [=](auto at) { return at(x); }) / d);
  double sums[2];  // of x - m1, of (x - m1)^2
  vmath::BlockedFloatSums(d, sums, [=](auto at) { return at(x) - m1; },
                          [=](auto at) { return (at(x) - m1) * (at(x) - m1); });
  const double delta = sums[0] / d;
  const double var = std::max(sums[1] / d - delta * delta, 0.0);
  return {m1, static_cast<float>(delta), static_cast<float>(m1 + delta),
          static_cast<float>(1.0 / std::sqrt(var + eps))};
}

}  // namespace

template <typename T>
void LayerNormForward(const LayerNormParams& p, const T* x, const T* w, const T* b, T* y,
                      T* mean, T* rstd, bool parallel) {
  ForRange(p.rows, parallel, [&](int64_t r) {
    const T* xr = x + r * p.d;
    T* yr = y + r * p.d;
    if constexpr (std::is_same_v<T, float>) {
      const FloatRowMoments mo = RowMoments(xr, p.d, p.eps);
      mean[r] = mo.mean;
      rstd[r] = mo.rstd;
      // (x - mean) first, as batch norm: an element equal to the mean gives exactly b. The
      // activation epilogue (passes/fuse_norm_activation.cc) in the same loop: one pass
      // over memory for layer norm -> GELU instead of two, and no store and reload per value.
      WithActivation(p.activation, [&](auto act) {
        for (int64_t i = 0; i < p.d; ++i) {
          yr[i] = Activate<decltype(act)::value>(((xr[i] - mo.m1) - mo.delta) * (mo.rstd * w[i]) +
                                                 b[i]);
        }
      });
    } else {
      double m = vmath::SumLanes(xr, p.d) / p.d;
      double sq = vmath::SumSquaredDeviation(xr, p.d, m);
      double rs = 1.0 / std::sqrt(sq / p.d + p.eps);
      mean[r] = static_cast<T>(m);
      rstd[r] = static_cast<T>(rs);
      for (int64_t i = 0; i < p.d; ++i) yr[i] = static_cast<T>((xr[i] - m) * rs * w[i] + b[i]);
      if (p.activation == Activation::kNone) return;
      for (int64_t i = 0; i < p.d; ++i) yr[i] = static_cast<T>(ApplyActivation(p.activation, yr[i]));
    }
  });
}

namespace {

// Layer norm backward's accumulator type: float rows accumulate in float, double in double.
template <typename T>
using NormAcc = std::conditional_t<std::is_same_v<T, float>, float, double>;

// One row of layer norm's backward: dx, and the row's terms added to dw / db's accumulators.
// With g = dy * w and xhat = (x - mean) * rstd:
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), dw += dy * xhat, db += dy.
// f32 rows compute in float with blocked sums (as the forward); f64 in double.
template <typename T>
void LayerNormBackwardRow(int64_t d, const T* __restrict dy, const T* __restrict x,
                          const T* __restrict w, T m, T rs, T* __restrict dx,
                          NormAcc<T>* __restrict sw, NormAcc<T>* __restrict sb) {
  // __restrict: distinct buffers (the planner never aliases a kernel's output with its
  // inputs here); without it GCC needs more run-time alias checks than it will emit and
  // leaves the loop scalar.
  using Acc = NormAcc<T>;
  double sum_g = 0, sum_g_xhat = 0;
  if constexpr (std::is_same_v<T, float>) {
    double sums[2];
    vmath::BlockedFloatSums(d, sums, [=](auto at) { return at(dy) * at(w); },
                            [=](auto at) { return at(dy) * at(w) * ((at(x) - m) * rs); });
    sum_g = sums[0], sum_g_xhat = sums[1];
  } else {
    sum_g = vmath::LaneSum(d, [&](int64_t i) { return dy[i] * w[i]; });
    sum_g_xhat = vmath::LaneSum(d, [&](int64_t i) { return dy[i] * w[i] * ((x[i] - m) * rs); });
  }
  const Acc mean_g = static_cast<Acc>(sum_g / d), mean_g_xhat = static_cast<Acc>(sum_g_xhat / d);
  for (int64_t i = 0; i < d; ++i) {
    const Acc xhat = (x[i] - m) * rs;
    dx[i] = static_cast<T>(rs * (dy[i] * w[i] - mean_g - xhat * mean_g_xhat));
    sw[i] += dy[i] * xhat;
    sb[i] += dy[i];
  }
}

}  // namespace

// dw / db sum over rows in two phases, so that the result depends on neither the thread
// count nor timing (a pipelined stage runs with fewer threads than the whole program, and
// must give the same numbers): the rows split into fixed blocks of kRowsPerBlock; each block
// accumulates its own NormAcc vectors (float for f32: they stay in L1 next to the rows) in
// the pass that computes dx (one pass over dy and x, contiguous in d); then the blocks'
// vectors are added in block order in double, per column range.
inline constexpr int64_t kRowsPerBlock = 16, kColumnsPerRange = 256;

template <typename T>
void LayerNormBackward(const LayerNormParams& p, const T* dy, const T* x, const T* w,
                       const T* mean, const T* rstd, T* dx, T* dw, T* db, bool parallel) {
  using Acc = NormAcc<T>;
  const int64_t d = p.d, blocks = (p.rows + kRowsPerBlock - 1) / kRowsPerBlock;
  // The calling thread's buffer, grown once (steady-state steps do not allocate). Used by
  // pointer: inside the workers, the name would be their own thread's buffer.
  static thread_local std::vector<Acc> block_buffer;
  const size_t need = static_cast<size_t>(blocks * 2 * d);
  if (block_buffer.size() < need) block_buffer.resize(need);
  Acc* block_sums = block_buffer.data();
  ForRange(blocks, parallel, [&](int64_t blk) {
    Acc* bw = block_sums + blk * 2 * d;
    Acc* bb = bw + d;
    std::fill(bw, bw + 2 * d, Acc{0});
    const int64_t end = std::min(p.rows, (blk + 1) * kRowsPerBlock);
    for (int64_t r = blk * kRowsPerBlock; r < end; ++r) {
      LayerNormBackwardRow(d, dy + r * d, x + r * d, w, mean[r], rstd[r], dx + r * d, bw, bb);
    }
  });
  ForRange((d + kColumnsPerRange - 1) / kColumnsPerRange, parallel, [&](int64_t range) {
    const int64_t i0 = range * kColumnsPerRange, i1 = std::min(d, i0 + kColumnsPerRange);
    double sw[kColumnsPerRange] = {}, sb[kColumnsPerRange] = {};
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const Acc* bw = block_sums + blk * 2 * d;
      const Acc* bb = bw + d;
      for (int64_t i = i0; i < i1; ++i) {
        sw[i - i0] += bw[i];
        sb[i - i0] += bb[i];
      }
    }
    for (int64_t i = i0; i < i1; ++i) {
      dw[i] = static_cast<T>(sw[i - i0]);
      db[i] = static_cast<T>(sb[i - i0]);
    }
  });
}

#define TG_INSTANTIATE(T)                                                                    \
  template void BatchNormTrain<T>(const BatchNormParams&, const T*, const T*, const T*, T*,  \
                                  T*, T*, T*, bool);                                         \
  template void BatchNormInference<T>(const BatchNormParams&, const T*, const T*, const T*,  \
                                      const T*, const T*, T*, bool);                         \
  template void BatchNormBackward<T>(const BatchNormParams&, const T*, const T*, const T*,   \
                                     const T*, const T*, T*, T*, T*, bool);                  \
  template void LayerNormForward<T>(const LayerNormParams&, const T*, const T*, const T*, T*, \
                                    T*, T*, bool);                                           \
  template void LayerNormBackward<T>(const LayerNormParams&, const T*, const T*, const T*,   \
                                     const T*, const T*, T*, T*, T*, bool);
TG_INSTANTIATE(float)
TG_INSTANTIATE(double)
#undef TG_INSTANTIATE

}  // namespace tg::cpu
