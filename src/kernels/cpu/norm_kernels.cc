// Batch norm / layer norm loops; see norm_kernels.h.
#include "kernels/cpu/norm_kernels.h"

#include <cmath>
#include <type_traits>

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

template <typename T>
void LayerNormForward(const LayerNormParams& p, const T* x, const T* w, const T* b, T* y,
                      T* mean, T* rstd, bool parallel) {
  ForRange(p.rows, parallel, [&](int64_t r) {
    const T* xr = x + r * p.d;
    T* yr = y + r * p.d;
    double m = vmath::SumLanes(xr, p.d) / p.d;
    double sq = vmath::SumSquaredDeviation(xr, p.d, m);
    double rs = 1.0 / std::sqrt(sq / p.d + p.eps);
    mean[r] = static_cast<T>(m);
    rstd[r] = static_cast<T>(rs);
    for (int64_t i = 0; i < p.d; ++i) yr[i] = static_cast<T>((xr[i] - m) * rs * w[i] + b[i]);
    // The activation epilogue (passes/fuse_norm_activation.cc) on the row while it is in
    // cache: one pass over memory for layer norm -> GELU instead of two.
    if (p.activation == Activation::kNone) return;
    if constexpr (std::is_same_v<T, float>) {
      BiasActivate(p.activation, yr, p.d, 0.0f);
    } else {
      for (int64_t i = 0; i < p.d; ++i) yr[i] = static_cast<T>(ApplyActivation(p.activation, yr[i]));
    }
  });
}

template <typename T>
void LayerNormBackward(const LayerNormParams& p, const T* dy, const T* x, const T* w,
                       const T* mean, const T* rstd, T* dx, T* dw, T* db, bool parallel) {
  ForRange(p.rows, parallel, [&](int64_t r) {
    const T* xr = x + r * p.d;
    const T* dyr = dy + r * p.d;
    double m = mean[r], rs = rstd[r], sum_g = 0, sum_g_xhat = 0;
    for (int64_t i = 0; i < p.d; ++i) {
      double g = static_cast<double>(dyr[i]) * w[i];
      sum_g += g;
      sum_g_xhat += g * (xr[i] - m) * rs;
    }
    double mean_g = sum_g / p.d, mean_g_xhat = sum_g_xhat / p.d;
    for (int64_t i = 0; i < p.d; ++i) {
      double xhat = (xr[i] - m) * rs;
      double g = static_cast<double>(dyr[i]) * w[i];
      dx[r * p.d + i] = static_cast<T>(rs * (g - mean_g - xhat * mean_g_xhat));
    }
  });
  ForRange(p.d, parallel, [&](int64_t i) {
    double sw = 0, sb = 0;
    for (int64_t r = 0; r < p.rows; ++r) {
      double g = dy[r * p.d + i];
      sw += g * (x[r * p.d + i] - mean[r]) * rstd[r];
      sb += g;
    }
    dw[i] = static_cast<T>(sw);
    db[i] = static_cast<T>(sb);
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
