// Point-cloud sampling and clustering (torch_cluster's fps and nearest, which PopTorch
// offers for PyTorch Geometric models). Points are rows of src [N, D]; squared Euclidean
// distances are summed over D in order, in the points' type.
//
// FarthestPointSample: the points form segments [ptr[s], ptr[s + 1]); segment s takes
// counts[s] of its points: first its start[s]-th point, then repeatedly the point farthest
// from every point taken so far (the largest of the per-point minimum distances; the first
// such point on ties; NaN distances are the largest, as torch.argmax has them). Output: the
// taken points' indices into src, segment after segment (int64). A start outside its segment
// raises a Runtime error.
//
// NearestPoint: for every row of x, the index of the nearest row of y among those with the
// same batch value (the first on ties). batch_x and batch_y are sorted; a batch of x with no
// point in y, or an unsorted batch vector, raises a Runtime error.
//
// The *Ref kernels are other algorithms: FPS recomputing each point's distance to the whole
// taken set every step, nearest scanning all of y and filtering by batch.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/cpu/int_view.h"

namespace tg::cpu {

struct PointSegments {
  std::vector<int64_t> ptr;     // [S + 1], non-decreasing, ptr[S] = N
  std::vector<int64_t> counts;  // [S], counts[s] <= ptr[s + 1] - ptr[s]
};

template <typename T>
void FarthestPointSample(const T* src, int64_t d, const PointSegments& seg, IntView start,
                         int64_t* out);
template <typename T>
void FarthestPointSampleRef(const T* src, int64_t d, const PointSegments& seg, IntView start,
                            int64_t* out);

struct NearestShape {
  int64_t n = 0, m = 0, d = 0;  // x [n, d], y [m, d]
};

template <typename T>
void NearestPoint(const T* x, const T* y, IntView batch_x, IntView batch_y, int64_t* out,
                  const NearestShape& s);
template <typename T>
void NearestPointRef(const T* x, const T* y, IntView batch_x, IntView batch_y, int64_t* out,
                     const NearestShape& s);

}  // namespace tg::cpu
