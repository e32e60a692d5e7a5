// TensorType: a dtype and a static shape. Shapes are fully static in tilegraph; a rank-0
// shape is a scalar.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ir/dtype.h"

namespace tg {

using Shape = std::vector<int64_t>;

int64_t NumElements(const Shape& shape);
std::string ShapeToString(const Shape& shape);  // "[2,3]"
// Row-major strides in elements.
std::vector<int64_t> ContiguousStrides(const Shape& shape);
// Normalizes a possibly negative axis against rank; throws a Shape error when out of range.
int64_t NormalizeAxis(int64_t axis, int64_t rank);

struct TensorType {
  DType dtype = DType::kF32;
  Shape shape;

  int64_t rank() const { return static_cast<int64_t>(shape.size()); }
  int64_t numel() const { return NumElements(shape); }
  size_t bytes() const { return static_cast<size_t>(numel()) * SizeOf(dtype); }
  std::string ToString() const;  // "f32[2,3]"
  bool operator==(const TensorType& other) const = default;
};

}  // namespace tg
