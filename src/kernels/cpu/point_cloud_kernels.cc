// Point-cloud kernels; see point_cloud_kernels.h. FPS runs its segments in parallel, each
// keeping every point's distance to the taken set and lowering it with each new point
// (O(counts x points x D) per segment); nearest runs its queries in parallel over the range
// of y that has the query's batch.
#include "kernels/cpu/point_cloud_kernels.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "support/error.h"

namespace tg::cpu {
namespace {

template <typename T>
T SquaredDistance(const T* a, const T* b, int64_t d) {
  T sum = 0;
  for (int64_t k = 0; k < d; ++k) {
    T diff = a[k] - b[k];
    sum += diff * diff;
  }
  return sum;
}

// a is larger than b for the argmax: NaN is the largest (the first NaN wins).
template <typename T>
bool Larger(T a, T b) {
  return (std::isnan(a) && !std::isnan(b)) || a > b;
}

// torch.minimum's: NaN if either is.
template <typename T>
T Minimum(T a, T b) {
  return std::isnan(a) || std::isnan(b) ? std::numeric_limits<T>::quiet_NaN() : std::min(a, b);
}

std::vector<int64_t> OutputOffsets(const PointSegments& seg, IntView start) {
  const int64_t segments = static_cast<int64_t>(seg.counts.size());
  std::vector<int64_t> offsets(static_cast<size_t>(segments) + 1, 0);
  for (int64_t s = 0; s < segments; ++s) {
    const int64_t size = seg.ptr[s + 1] - seg.ptr[s];
    if (seg.counts[s] > 0) {
      TG_CHECK(start[s] >= 0 && start[s] < size, kRuntime, "fps: start[", s, "] = ", start[s],
               " out of range [0, ", size, ")");
    }
    offsets[s + 1] = offsets[s] + seg.counts[s];
  }
  return offsets;
}

// Raises a Runtime error unless batch[0, n) is non-decreasing.
void CheckSorted(IntView batch, int64_t n, const char* name) {
  for (int64_t i = 1; i < n; ++i) {
    TG_CHECK(batch[i - 1] <= batch[i], kRuntime, "nearest: ", name, " must be sorted; ", name,
             "[", i - 1, "] = ", batch[i - 1], " > ", name, "[", i, "] = ", batch[i]);
  }
}

// The first index in [0, m) whose batch value is >= b (batch sorted).
int64_t LowerBound(IntView batch, int64_t m, int64_t b) {
  int64_t lo = 0, hi = m;
  while (lo < hi) {
    int64_t mid = lo + (hi - lo) / 2;
    if (batch[mid] < b) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

[[noreturn]] void NoCandidates(int64_t i, int64_t b) {
  Fail(ErrorKind::kRuntime, "nearest: x[", i, "] is in batch ", b,
       ", which has no points in y");
}

}  // namespace

template <typename T>
void FarthestPointSample(const T* src, int64_t d, const PointSegments& seg, IntView start,
                         int64_t* out) {
  const std::vector<int64_t> offsets = OutputOffsets(seg, start);
  const int64_t segments = static_cast<int64_t>(seg.counts.size());
  ParallelFor(segments, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> dist;
    for (int64_t s = begin; s < end; ++s) {
      const int64_t first = seg.ptr[s], size = seg.ptr[s + 1] - first, count = seg.counts[s];
      if (count == 0) continue;
      const T* points = src + first * d;
      int64_t* taken = out + offsets[s];
      int64_t current = start[s];
      dist.resize(static_cast<size_t>(size));
      for (int64_t j = 0; j < size; ++j) {
        dist[j] = SquaredDistance(points + j * d, points + current * d, d);
      }
      taken[0] = first + current;
      for (int64_t i = 1; i < count; ++i) {
        int64_t best = 0;
        for (int64_t j = 1; j < size; ++j) {
          if (Larger(dist[j], dist[best])) best = j;
        }
        taken[i] = first + best;
        for (int64_t j = 0; j < size; ++j) {
          dist[j] = Minimum(dist[j], SquaredDistance(points + j * d, points + best * d, d));
        }
      }
    }
  });
}

template <typename T>
void FarthestPointSampleRef(const T* src, int64_t d, const PointSegments& seg, IntView start,
                            int64_t* out) {
  const std::vector<int64_t> offsets = OutputOffsets(seg, start);
  for (size_t s = 0; s < seg.counts.size(); ++s) {
    const int64_t first = seg.ptr[s], size = seg.ptr[s + 1] - first;
    std::vector<int64_t> taken;
    for (int64_t i = 0; i < seg.counts[s]; ++i) {
      int64_t pick = start[s];
      if (i > 0) {
        // The point whose distance to the nearest taken point (in the order they were
        // taken, as the fast kernel's running minimum) is the largest.
        T best_distance = 0;
        for (int64_t j = 0; j < size; ++j) {
          T nearest = SquaredDistance(src + (first + j) * d, src + (first + taken[0]) * d, d);
          for (size_t q = 1; q < taken.size(); ++q) {
            nearest = Minimum(nearest, SquaredDistance(src + (first + j) * d,
                                                       src + (first + taken[q]) * d, d));
          }
          if (j == 0 || Larger(nearest, best_distance)) {
            best_distance = nearest;
            pick = j;
          }
        }
      }
      taken.push_back(pick);
      out[offsets[s] + i] = first + pick;
    }
  }
}

template <typename T>
void NearestPoint(const T* x, const T* y, IntView batch_x, IntView batch_y, int64_t* out,
                  const NearestShape& s) {
  CheckSorted(batch_x, s.n, "batch_x");
  CheckSorted(batch_y, s.m, "batch_y");
  for (int64_t i = 0; i < s.n; ++i) {  // every query has candidates (before the threads)
    if (i > 0 && batch_x[i] == batch_x[i - 1]) continue;
    const int64_t lo = LowerBound(batch_y, s.m, batch_x[i]);
    if (lo == s.m || batch_y[lo] != batch_x[i]) NoCandidates(i, batch_x[i]);
  }
  ParallelFor(s.n, 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = batch_x[i];
      const int64_t lo = LowerBound(batch_y, s.m, b), hi = LowerBound(batch_y, s.m, b + 1);
      int64_t best = lo;
      T best_distance = SquaredDistance(x + i * s.d, y + lo * s.d, s.d);
      for (int64_t j = lo + 1; j < hi; ++j) {
        T distance = SquaredDistance(x + i * s.d, y + j * s.d, s.d);
        if (distance < best_distance || (std::isnan(best_distance) && !std::isnan(distance))) {
          best_distance = distance;
          best = j;
        }
      }
      out[i] = best;
    }
  });
}

template <typename T>
void NearestPointRef(const T* x, const T* y, IntView batch_x, IntView batch_y, int64_t* out,
                     const NearestShape& s) {
  CheckSorted(batch_x, s.n, "batch_x");
  CheckSorted(batch_y, s.m, "batch_y");
  for (int64_t i = 0; i < s.n; ++i) {
    int64_t best = -1;
    T best_distance = 0;
    for (int64_t j = 0; j < s.m; ++j) {
      if (batch_y[j] != batch_x[i]) continue;
      T distance = SquaredDistance(x + i * s.d, y + j * s.d, s.d);
      bool better = best < 0 || distance < best_distance ||
                    (std::isnan(best_distance) && !std::isnan(distance));
      if (better) {
        best = j;
        best_distance = distance;
      }
    }
    if (best < 0) NoCandidates(i, batch_x[i]);
    out[i] = best;
  }
}

#define TG_INSTANTIATE(T)                                                                  \
  template void FarthestPointSample<T>(const T*, int64_t, const PointSegments&, IntView,   \
                                       int64_t*);                                          \
  template void FarthestPointSampleRef<T>(const T*, int64_t, const PointSegments&, IntView, \
                                          int64_t*);                                       \
  template void NearestPoint<T>(const T*, const T*, IntView, IntView, int64_t*,            \
                                const NearestShape&);                                      \
  template void NearestPointRef<T>(const T*, const T*, IntView, IntView, int64_t*,         \
                                   const NearestShape&);
TG_INSTANTIATE(float)
TG_INSTANTIATE(double)
#undef TG_INSTANTIATE

}  // namespace tg::cpu
