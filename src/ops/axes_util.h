// Small shape helpers shared by the reduce, softmax, shape, index and loss op families:
// axis normalization, reduced shapes and the [outer, dim, inner] split around one axis.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ir/tensor_type.h"

namespace tg {

// Sorted, non-negative, unique axes; an empty list means every axis. Throws a Shape error
// naming the op on an out-of-range or repeated axis.
std::vector<int64_t> NormalizeAxes(const std::vector<int64_t>& axes, int64_t rank,
                                   const std::string& op);
// `shape` with the (normalized) axes removed, or set to 1 when keepdim.
Shape ReducedShape(const Shape& shape, const std::vector<int64_t>& axes, bool keepdim);

// The input viewed as [outer, dim, inner] around `axis` (normalized).
struct AxisSplit {
  int64_t outer = 1, dim = 1, inner = 1;
};
AxisSplit SplitAt(const Shape& shape, int64_t axis);

// Axis attribute of a node normalized against `rank` (Shape error when out of range).
int64_t AxisAttr(int64_t axis, int64_t rank, const std::string& op);

}  // namespace tg
