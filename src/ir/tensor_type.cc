#include "ir/tensor_type.h"

#include "support/error.h"

namespace tg {

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeToString(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::vector<int64_t> ContiguousStrides(const Shape& shape) {
  std::vector<int64_t> strides(shape.size(), 1);
  for (int64_t i = static_cast<int64_t>(shape.size()) - 2; i >= 0; --i) {
    strides[i] = strides[i + 1] * shape[i + 1];
  }
  return strides;
}

int64_t NormalizeAxis(int64_t axis, int64_t rank) {
  int64_t r = rank == 0 ? 1 : rank;
  TG_CHECK(axis >= -r && axis < r, kShape, "axis ", axis, " out of range for rank ", rank);
  return axis < 0 ? axis + r : axis;
}

std::string TensorType::ToString() const {
  return std::string(DTypeName(dtype)) + ShapeToString(shape);
}

}  // namespace tg
