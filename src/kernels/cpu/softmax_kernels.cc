// Softmax kernels; see softmax_kernels.h.
#include "kernels/cpu/softmax_kernels.h"

#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/vector_math.h"

namespace tg::cpu {
namespace {

constexpr int64_t kGrain = 1 << 13;

// Calls fn(o, i) for every (outer, inner) line, in parallel.
template <typename Fn>
void ForEachLine(const SoftmaxDims& d, Fn&& fn) {
  int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(1, d.dim));
  ParallelFor(d.outer * d.inner, grain, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) fn(t / d.inner, t % d.inner);
  });
}

}  // namespace

template <typename T>
void Softmax(const T* x, T* y, const SoftmaxDims& d, bool log) {
  const int64_t D = d.dim, I = d.inner;
  if (I == 1) {  // contiguous lines: vectorizable passes
    ForEachLine(d, [&](int64_t o, int64_t) {
      const T* xr = x + o * D;
      T* yr = y + o * D;
      T m = -std::numeric_limits<T>::infinity();
      if constexpr (std::is_same_v<T, float>) {
        m = vmath::MaxOf(xr, D);
      } else {
        for (int64_t k = 0; k < D; ++k) m = std::max(m, xr[k]);
      }
      if (std::isinf(m) && m < 0) m = 0;  // an all -inf line gives NaN like PyTorch
      // vectorized; x - max <= 0
      for (int64_t k = 0; k < D; ++k) yr[k] = vmath::ExpNonPositive(xr[k] - m);
      const double s = vmath::SumLanes(yr, D);
      if (log) {
        T ls = static_cast<T>(std::log(s)) + m;
        for (int64_t k = 0; k < D; ++k) yr[k] = xr[k] - ls;
      } else {
        T inv = static_cast<T>(1.0 / s);
        for (int64_t k = 0; k < D; ++k) yr[k] *= inv;
      }
    });
    return;
  }
  ForEachLine(d, [&](int64_t o, int64_t i) {
    const T* xr = x + o * D * I + i;
    T* yr = y + o * D * I + i;
    T m = -std::numeric_limits<T>::infinity();
    for (int64_t k = 0; k < D; ++k) m = std::max(m, xr[k * I]);
    if (std::isinf(m) && m < 0) m = 0;
    double s = 0;
    for (int64_t k = 0; k < D; ++k) s += std::exp(static_cast<double>(xr[k * I] - m));
    T ls = static_cast<T>(std::log(s)) + m;
    for (int64_t k = 0; k < D; ++k) {
      yr[k * I] =
          log ? xr[k * I] - ls : static_cast<T>(vmath::ExpNonPositive(xr[k * I] - m) / s);
    }
  });
}

template <typename T>
void SoftmaxRef(const T* x, T* y, const SoftmaxDims& d, bool log) {
  for (int64_t o = 0; o < d.outer; ++o) {
    for (int64_t i = 0; i < d.inner; ++i) {
      auto at = [&](int64_t k) { return (o * d.dim + k) * d.inner + i; };
      double m = -std::numeric_limits<double>::infinity();
      for (int64_t k = 0; k < d.dim; ++k) m = std::max(m, static_cast<double>(x[at(k)]));
      if (std::isinf(m) && m < 0) m = 0;
      double s = 0;
      for (int64_t k = 0; k < d.dim; ++k) s += std::exp(x[at(k)] - m);
      for (int64_t k = 0; k < d.dim; ++k) {
        double v = x[at(k)] - m;
        y[at(k)] = static_cast<T>(log ? v - std::log(s) : std::exp(v) / s);
      }
    }
  }
}

template <typename T>
void SoftmaxBackward(const T* go, const T* y, T* gx, const SoftmaxDims& d, bool log) {
  const int64_t D = d.dim, I = d.inner;
  if (I == 1) {  // contiguous lines: the sum in 8 double lanes (a serial chain of adds was
                 // 4 cycles per element: 12 ms on BERT's [256, 30522] log-softmax backward)
    ForEachLine(d, [&](int64_t o, int64_t) {
      const T* g = go + o * D;
      const T* yr = y + o * D;
      T* out = gx + o * D;
      if (log) {
        const T st = static_cast<T>(vmath::SumLanes(g, D));
        // y: log-probabilities, <= 0
        for (int64_t k = 0; k < D; ++k) out[k] = g[k] - vmath::ExpNonPositive(yr[k]) * st;
      } else {
        const T st = static_cast<T>(vmath::LaneSum(
            D, [g, yr](int64_t k) { return static_cast<double>(g[k]) * yr[k]; }));
        for (int64_t k = 0; k < D; ++k) out[k] = yr[k] * (g[k] - st);
      }
    });
    return;
  }
  ForEachLine(d, [&](int64_t o, int64_t i) {
    int64_t base = o * D * I + i;
    double s = 0;
    for (int64_t k = 0; k < D; ++k) {
      int64_t j = base + k * I;
      s += log ? static_cast<double>(go[j]) : static_cast<double>(go[j]) * y[j];
    }
    T st = static_cast<T>(s);
    for (int64_t k = 0; k < D; ++k) {
      int64_t j = base + k * I;
      gx[j] = log ? go[j] - vmath::ExpNonPositive(y[j]) * st : y[j] * (go[j] - st);
    }
  });
}

template <typename T>
void SoftmaxBackwardRef(const T* go, const T* y, T* gx, const SoftmaxDims& d, bool log) {
  for (int64_t o = 0; o < d.outer; ++o) {
    for (int64_t i = 0; i < d.inner; ++i) {
      auto at = [&](int64_t k) { return (o * d.dim + k) * d.inner + i; };
      double s = 0;
      for (int64_t k = 0; k < d.dim; ++k) {
        s += log ? static_cast<double>(go[at(k)]) : static_cast<double>(go[at(k)]) * y[at(k)];
      }
      for (int64_t k = 0; k < d.dim; ++k) {
        double g = go[at(k)], v = y[at(k)];
        gx[at(k)] = static_cast<T>(log ? g - std::exp(v) * s : v * (g - s));
      }
    }
  }
}

#define TG_INSTANTIATE(T)                                                               \
  template void Softmax<T>(const T*, T*, const SoftmaxDims&, bool);                     \
  template void SoftmaxRef<T>(const T*, T*, const SoftmaxDims&, bool);                  \
  template void SoftmaxBackward<T>(const T*, const T*, T*, const SoftmaxDims&, bool);   \
  template void SoftmaxBackwardRef<T>(const T*, const T*, T*, const SoftmaxDims&, bool);
TG_INSTANTIATE(float)
TG_INSTANTIATE(double)
#undef TG_INSTANTIATE

}  // namespace tg::cpu
