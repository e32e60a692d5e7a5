// Reduction kernels; see reduce_kernels.h.
#include "kernels/cpu/reduce_kernels.h"

#include <cmath>
#include <limits>
#include <type_traits>

#include "kernels/cpu/parallel.h"
#include "support/error.h"

namespace tg::cpu {
namespace {

constexpr int64_t kGrain = 1 << 14;  // elements of work per task
constexpr int64_t kBlock = 64;       // inner elements per task in the strided case

// Accumulator type: double for floats, int64 for integers.
template <typename T>
using Acc = std::conditional_t<std::is_floating_point_v<T>, double, int64_t>;

template <typename T>
bool IsNan(T v) {
  if constexpr (std::is_floating_point_v<T>) return std::isnan(v);
  return false;
}

// Max that propagates NaN.
template <typename T>
T MaxNan(T a, T b) {
  return (b > a || IsNan(b)) && !IsNan(a) ? b : a;
}

// Generic driver: out[o, i] = finish(fold(combine, init, in[o, :, i])). combine must accept
// (A, A) as well as (A, T) so that partial accumulators can be merged.
template <typename T, typename A, typename Combine, typename Finish>
void Reduce(const T* in, T* out, const ReduceDims& d, A init, Combine combine, Finish finish) {
  const int64_t R = d.reduce, I = d.inner, RO = d.reduce_outer;
  if (I == 1) {
    int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(1, R * RO));
    ParallelFor(d.outer, grain, [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) {
        A acc[4] = {init, init, init, init};
        for (int64_t ro = 0; ro < RO; ++ro) {  // rows [ro, o, :], in order
          const T* row = in + (ro * d.outer + o) * R;
          int64_t r = 0;
          for (; r + 4 <= R; r += 4) {
            for (int k = 0; k < 4; ++k) acc[k] = combine(acc[k], static_cast<A>(row[r + k]));
          }
          for (; r < R; ++r) acc[0] = combine(acc[0], static_cast<A>(row[r]));
        }
        out[o] = finish(combine(combine(acc[0], acc[1]), combine(acc[2], acc[3])));
      }
    });
    return;
  }
  TG_ASSERT(RO == 1, "reduce_outer needs inner == 1");
  int64_t blocks = (I + kBlock - 1) / kBlock;
  int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(1, R * kBlock));
  ParallelFor(d.outer * blocks, grain, [&](int64_t b, int64_t e) {
    A acc[kBlock];
    for (int64_t t = b; t < e; ++t) {
      int64_t o = t / blocks, i0 = (t % blocks) * kBlock, n = std::min(kBlock, I - i0);
      for (int64_t i = 0; i < n; ++i) acc[i] = init;
      const T* base = in + o * R * I + i0;
      for (int64_t r = 0; r < R; ++r) {
        const T* row = base + r * I;
        for (int64_t i = 0; i < n; ++i) acc[i] = combine(acc[i], static_cast<A>(row[i]));
      }
      for (int64_t i = 0; i < n; ++i) out[o * I + i0 + i] = finish(acc[i]);
    }
  });
}

// Visits the input in order, calling fn(flat_in, flat_out).
template <typename Fn>
void ForEachRef(const ReduceShape& s, Fn&& fn) {
  int64_t n = 1;
  for (int64_t d : s.shape) n *= d;
  const int64_t rank = static_cast<int64_t>(s.shape.size());
  for (int64_t i = 0; i < n; ++i) {
    int64_t rest = i, out = 0, mul = 1;
    for (int64_t d = rank - 1; d >= 0; --d) {
      int64_t idx = rest % s.shape[d];
      rest /= s.shape[d];
      if (!s.reduced[d]) {
        out += idx * mul;
        mul *= s.shape[d];
      }
    }
    fn(i, out);
  }
}

int64_t OutNumel(const ReduceShape& s, int64_t* count) {
  int64_t out = 1, c = 1;
  for (size_t d = 0; d < s.shape.size(); ++d) (s.reduced[d] ? c : out) *= s.shape[d];
  if (count) *count = c;
  return out;
}

}  // namespace

template <typename T>
void Sum(const T* in, T* out, const ReduceDims& d) {
  Reduce(in, out, d, Acc<T>{0}, [](auto a, auto x) { return a + x; },
         [](Acc<T> a) { return static_cast<T>(a); });
}

template <typename T>
void Mean(const T* in, T* out, const ReduceDims& d) {
  double scale = 1.0 / static_cast<double>(d.reduce * d.reduce_outer);
  Reduce(in, out, d, 0.0, [](double a, double x) { return a + x; },
         [scale](double a) { return static_cast<T>(a * scale); });
}

template <typename T>
void Amax(const T* in, T* out, const ReduceDims& d) {
  T lowest = std::numeric_limits<T>::has_infinity ? -std::numeric_limits<T>::infinity()
                                                  : std::numeric_limits<T>::lowest();
  Reduce(in, out, d, lowest, [](T a, T x) { return MaxNan(a, x); }, [](T a) { return a; });
}

template <typename T>
void Var(const T* in, T* out, const ReduceDims& d, double correction) {
  const int64_t R = d.reduce, I = d.inner;
  // torch divides by max(0, N - correction): N = 0 (or N < correction) gives NaN, not -0.
  double denom = std::max(0.0, static_cast<double>(R) - correction);
  int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(1, R));
  ParallelFor(d.outer * I, grain, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      int64_t o = t / I, i = t % I;
      const T* x = in + o * R * I + i;
      double mean = 0;
      for (int64_t r = 0; r < R; ++r) mean += x[r * I];
      mean /= static_cast<double>(R);
      double ss = 0;
      for (int64_t r = 0; r < R; ++r) {
        double dev = x[r * I] - mean;
        ss += dev * dev;
      }
      out[t] = static_cast<T>(ss / denom);
    }
  });
}

template <typename T>
void Argmax(const T* in, int64_t* out, const ReduceDims& d) {
  const int64_t R = d.reduce, I = d.inner;
  int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(1, R));
  ParallelFor(d.outer * I, grain, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const T* x = in + (t / I) * R * I + t % I;
      int64_t best = 0;
      for (int64_t r = 1; r < R && !IsNan(x[best * I]); ++r) {
        if (x[r * I] > x[best * I] || IsNan(x[r * I])) best = r;
      }
      out[t] = best;
    }
  });
}

template <typename T>
void SumRef(const T* in, T* out, const ReduceShape& s) {
  std::vector<Acc<T>> acc(OutNumel(s, nullptr), 0);
  ForEachRef(s, [&](int64_t i, int64_t o) { acc[o] += in[i]; });
  for (size_t o = 0; o < acc.size(); ++o) out[o] = static_cast<T>(acc[o]);
}

template <typename T>
void MeanRef(const T* in, T* out, const ReduceShape& s) {
  int64_t count;
  std::vector<double> acc(OutNumel(s, &count), 0.0);
  ForEachRef(s, [&](int64_t i, int64_t o) { acc[o] += in[i]; });
  for (size_t o = 0; o < acc.size(); ++o) out[o] = static_cast<T>(acc[o] / count);
}

template <typename T>
void AmaxRef(const T* in, T* out, const ReduceShape& s) {
  std::vector<T> acc(OutNumel(s, nullptr), std::numeric_limits<T>::lowest());
  if constexpr (std::numeric_limits<T>::has_infinity) {
    std::fill(acc.begin(), acc.end(), -std::numeric_limits<T>::infinity());
  }
  ForEachRef(s, [&](int64_t i, int64_t o) { acc[o] = MaxNan(acc[o], in[i]); });
  for (size_t o = 0; o < acc.size(); ++o) out[o] = acc[o];
}

template <typename T>
void VarRef(const T* in, T* out, const ReduceShape& s, double correction) {
  int64_t count;
  std::vector<double> mean(OutNumel(s, &count), 0.0), ss(mean.size(), 0.0);
  ForEachRef(s, [&](int64_t i, int64_t o) { mean[o] += in[i]; });
  for (double& m : mean) m /= static_cast<double>(count);
  ForEachRef(s, [&](int64_t i, int64_t o) { ss[o] += (in[i] - mean[o]) * (in[i] - mean[o]); });
  for (size_t o = 0; o < ss.size(); ++o) {
    out[o] = static_cast<T>(ss[o] / std::max(0.0, static_cast<double>(count) - correction));
  }
}

template <typename T>
void ArgmaxRef(const T* in, int64_t* out, const ReduceDims& d) {
  for (int64_t o = 0; o < d.outer; ++o) {
    for (int64_t i = 0; i < d.inner; ++i) {
      int64_t best = -1;
      for (int64_t r = 0; r < d.reduce; ++r) {
        T v = in[(o * d.reduce + r) * d.inner + i];
        if (best >= 0 && IsNan(in[(o * d.reduce + best) * d.inner + i])) break;
        if (best < 0 || IsNan(v) || v > in[(o * d.reduce + best) * d.inner + i]) best = r;
      }
      out[o * d.inner + i] = std::max<int64_t>(best, 0);
    }
  }
}

#define TG_INSTANTIATE_ALL(T)                                           \
  template void Sum<T>(const T*, T*, const ReduceDims&);                \
  template void Amax<T>(const T*, T*, const ReduceDims&);               \
  template void Argmax<T>(const T*, int64_t*, const ReduceDims&);       \
  template void SumRef<T>(const T*, T*, const ReduceShape&);            \
  template void AmaxRef<T>(const T*, T*, const ReduceShape&);           \
  template void ArgmaxRef<T>(const T*, int64_t*, const ReduceDims&);
#define TG_INSTANTIATE_FLOAT(T)                                         \
  template void Mean<T>(const T*, T*, const ReduceDims&);               \
  template void Var<T>(const T*, T*, const ReduceDims&, double);        \
  template void MeanRef<T>(const T*, T*, const ReduceShape&);           \
  template void VarRef<T>(const T*, T*, const ReduceShape&, double);
TG_INSTANTIATE_ALL(float)
TG_INSTANTIATE_ALL(double)
TG_INSTANTIATE_ALL(int32_t)
TG_INSTANTIATE_ALL(int64_t)
TG_INSTANTIATE_FLOAT(float)
TG_INSTANTIATE_FLOAT(double)
#undef TG_INSTANTIATE_ALL
#undef TG_INSTANTIATE_FLOAT

}  // namespace tg::cpu
