// Small shape helpers shared by several op families; see axes_util.h.
#include "ops/axes_util.h"

#include <algorithm>

#include "support/error.h"

namespace tg {

std::vector<int64_t> NormalizeAxes(const std::vector<int64_t>& axes, int64_t rank,
                                   const std::string& op) {
  std::vector<int64_t> out;
  if (axes.empty()) {
    for (int64_t i = 0; i < rank; ++i) out.push_back(i);
    return out;
  }
  for (int64_t a : axes) {
    int64_t r = rank == 0 ? 1 : rank;
    TG_CHECK(a >= -r && a < r, kShape, op, ": expected axes in [", -r, ", ", r, "), got ", a,
             " for rank ", rank);
    out.push_back(rank == 0 ? 0 : (a < 0 ? a + rank : a));
  }
  std::sort(out.begin(), out.end());
  TG_CHECK(std::adjacent_find(out.begin(), out.end()) == out.end(), kShape, op,
           ": expected distinct axes, got a repeated axis");
  if (rank == 0) out.clear();
  return out;
}

Shape ReducedShape(const Shape& shape, const std::vector<int64_t>& axes, bool keepdim) {
  Shape out;
  for (int64_t d = 0; d < static_cast<int64_t>(shape.size()); ++d) {
    bool reduced = std::find(axes.begin(), axes.end(), d) != axes.end();
    if (!reduced) out.push_back(shape[d]);
    else if (keepdim) out.push_back(1);
  }
  return out;
}

AxisSplit SplitAt(const Shape& shape, int64_t axis) {
  AxisSplit s;
  for (int64_t d = 0; d < static_cast<int64_t>(shape.size()); ++d) {
    if (d < axis) s.outer *= shape[d];
    else if (d == axis) s.dim = shape[d];
    else s.inner *= shape[d];
  }
  return s;
}

int64_t AxisAttr(int64_t axis, int64_t rank, const std::string& op) {
  int64_t r = rank == 0 ? 1 : rank;
  TG_CHECK(axis >= -r && axis < r, kShape, op, ": expected axis in [", -r, ", ", r, "), got ",
           axis, " for rank ", rank);
  return axis < 0 ? axis + r : axis;
}

}  // namespace tg
