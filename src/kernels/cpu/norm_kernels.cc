// Batch norm / layer norm loops; see norm_kernels.h.
#include "kernels/cpu/norm_kernels.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "kernels/cpu/activation.h"
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

// Calls fn(ptr_offset) for the start of every contiguous run of channel c (length p.s).
template <typename Fn>
void ForChannelRuns(const BatchNormParams& p, int64_t c, Fn&& fn) {
  for (int64_t n = 0; n < p.n; ++n) fn((n * p.c + c) * p.s);
}

// Channel c's batch mean and (biased) variance, in double, from x itself.
template <typename T>
void ChannelStats(const BatchNormParams& p, const T* x, int64_t c, double* mean, double* var) {
  const double count = static_cast<double>(p.n * p.s);
  double sum = 0, sq = 0;
  ForChannelRuns(p, c, [&](int64_t o) { sum += vmath::SumLanes(x + o, p.s); });
  const double m = sum / count;
  ForChannelRuns(p, c, [&](int64_t o) { sq += vmath::SumSquaredDeviation(x + o, p.s, m); });
  *mean = m;
  *var = sq / count;
}

}  // namespace

template <typename T>
void BatchNormTrain(const BatchNormParams& p, const T* x, const T* w, const T* b, T* y, T* mean,
                    T* invstd, T* var, bool parallel) {
  ForRange(p.c, parallel, [&](int64_t c) {
    double m = 0, v = 0;
    ChannelStats(p, x, c, &m, &v);
    double is = 1.0 / std::sqrt(v + p.eps);
    mean[c] = static_cast<T>(m);
    var[c] = static_cast<T>(v);
    invstd[c] = static_cast<T>(is);
    // (x - m) * scale + b, not x * scale + (b - m * scale): an element equal to the mean
    // (every element of a constant channel, a dead ReLU's) must give exactly b, as in
    // PyTorch, or a following ReLU sees +-1e-17 and its mask differs from eager's.
    const double scale = is * w[c], shift = b[c];
    ForChannelRuns(p, c, [&](int64_t o) {
      for (int64_t i = 0; i < p.s; ++i) y[o + i] = static_cast<T>((x[o + i] - m) * scale + shift);
    });
  });
}

template <typename T>
void BatchNormInference(const BatchNormParams& p, const T* x, const T* w, const T* b,
                        const T* running_mean, const T* running_var, T* y, bool parallel) {
  ForRange(p.c, parallel, [&](int64_t c) {
    const double scale = w[c] / std::sqrt(static_cast<double>(running_var[c]) + p.eps);
    const double m = running_mean[c], shift = b[c];
    ForChannelRuns(p, c, [&](int64_t o) {
      for (int64_t i = 0; i < p.s; ++i) y[o + i] = static_cast<T>((x[o + i] - m) * scale + shift);
    });
  });
}

template <typename T>
void BatchNormBackward(const BatchNormParams& p, const T* dy, const T* x, const T* w,
                       const T* mean, const T* invstd, T* dx, T* dw, T* db, bool parallel) {
  const double count = static_cast<double>(p.n * p.s);
  ForRange(p.c, parallel, [&](int64_t c) {
    // Recomputed statistics: the saved mean / invstd are rounded to T, and with few values
    // per channel (2 at 1x1 spatial, batch 2) 1/sigma is large, so x-hat from rounded
    // statistics leaves rounding-sized components the projection below should remove,
    // amplified by 1/sigma into the gradients (PyTorch's statistics are double).
    double m = mean[c], is = invstd[c], sum_dy = 0, sum_dy_xc = 0;
    if (p.recompute_stats) {
      double v = 0;
      ChannelStats(p, x, c, &m, &v);
      is = 1.0 / std::sqrt(v + p.eps);
    }
    ForChannelRuns(p, c, [&](int64_t o) {
      sum_dy += vmath::SumLanes(dy + o, p.s);
      sum_dy_xc += vmath::SumProductDeviation(dy + o, x + o, p.s, m);
    });
    double sum_dy_xhat = sum_dy_xc * is;
    db[c] = static_cast<T>(sum_dy);
    dw[c] = static_cast<T>(sum_dy_xhat);
    double k = w[c] * is, mean_dy = sum_dy / count, mean_dy_xhat = sum_dy_xhat / count;
    ForChannelRuns(p, c, [&](int64_t o) {
      for (int64_t i = 0; i < p.s; ++i) {
        double xhat = (x[o + i] - m) * is;
        dx[o + i] = static_cast<T>(k * (dy[o + i] - mean_dy - xhat * mean_dy_xhat));
      }
    });
  });
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
  double shift = 0, sq = 0;
  vmath::BlockedFloatSum2(
      d, [=](auto at) { return at(x) - m1; },
      [=](auto at) { return (at(x) - m1) * (at(x) - m1); }, &shift, &sq);
  const double delta = shift / d;
  const double var = std::max(sq / d - delta * delta, 0.0);
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
      // (x - mean) first, as batch norm: an element equal to the mean gives exactly b.
      for (int64_t i = 0; i < p.d; ++i) {
        yr[i] = ((xr[i] - mo.m1) - mo.delta) * (mo.rstd * w[i]) + b[i];
      }
      // The activation epilogue (passes/fuse_norm_activation.cc) on the row while it is in
      // cache: one pass over memory for layer norm -> GELU instead of two.
      if (p.activation != Activation::kNone) BiasActivate(p.activation, yr, p.d, 0.0f);
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

// One row of layer norm's backward: dx, and the row's terms added to dw / db's accumulators.
// With g = dy * w and xhat = (x - mean) * rstd:
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), dw += dy * xhat, db += dy.
// f32 rows compute in float with blocked sums (as the forward); f64 in double.
template <typename T>
using NormAcc = std::conditional_t<std::is_same_v<T, float>, float, double>;

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
    vmath::BlockedFloatSum2(
        d, [=](auto at) { return at(dy) * at(w); },
        [=](auto at) { return at(dy) * at(w) * ((at(x) - m) * rs); }, &sum_g, &sum_g_xhat);
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

// dw / db sum over rows: each of a fixed number of row chunks accumulates while it computes
// dx (one pass over dy and x, contiguous in d): in NormAcc (float for f32, so the
// accumulators stay in L1 next to the rows) over kRowsPerFlush rows, then into the chunk's
// double vectors. The chunks' vectors are added in chunk order, so the result does not depend
// on thread timing (only on the thread count, as every parallel reduction here).
inline constexpr int64_t kRowsPerFlush = 16;

template <typename T>
void LayerNormBackward(const LayerNormParams& p, const T* dy, const T* x, const T* w,
                       const T* mean, const T* rstd, T* dx, T* dw, T* db, bool parallel) {
  using Acc = NormAcc<T>;
  const int64_t chunks = parallel ? std::max<int64_t>(1, std::min<int64_t>(MaxThreads(), p.rows))
                                  : 1;
  const int64_t d = p.d;
  // The calling thread's buffers, grown once (steady-state steps do not allocate). Used by
  // pointer: inside the workers, the names would be their own thread's buffers.
  static thread_local std::vector<double> partial_buffer;
  static thread_local std::vector<Acc> block_buffer;
  const size_t need = static_cast<size_t>(chunks * 2 * d);
  if (partial_buffer.size() < need) partial_buffer.resize(need);
  if (block_buffer.size() < need) block_buffer.resize(need);
  std::fill(partial_buffer.begin(), partial_buffer.begin() + need, 0.0);
  std::fill(block_buffer.begin(), block_buffer.begin() + need, Acc{0});
  double* partial = partial_buffer.data();
  Acc* block = block_buffer.data();
  ForRange(chunks, parallel, [&](int64_t c) {
    Acc* bw = block + c * 2 * d;
    Acc* bb = bw + d;
    double* pw = partial + c * 2 * d;
    double* pb = pw + d;
    const int64_t begin = c * p.rows / chunks, end = (c + 1) * p.rows / chunks;
    for (int64_t r = begin; r < end; ++r) {
      LayerNormBackwardRow(d, dy + r * d, x + r * d, w, mean[r], rstd[r], dx + r * d, bw, bb);
      if ((r - begin + 1) % kRowsPerFlush != 0 && r + 1 != end) continue;
      for (int64_t i = 0; i < d; ++i) {
        pw[i] += bw[i];
        pb[i] += bb[i];
        bw[i] = bb[i] = 0;
      }
    }
  });
  for (int64_t i = 0; i < d; ++i) {
    double sw = 0, sb = 0;
    for (int64_t c = 0; c < chunks; ++c) {
      sw += partial[c * 2 * d + i];
      sb += partial[c * 2 * d + d + i];
    }
    dw[i] = static_cast<T>(sw);
    db[i] = static_cast<T>(sb);
  }
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
