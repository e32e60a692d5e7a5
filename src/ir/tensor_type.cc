#include "ir/tensor_type.h"

#include "support/error.h"

namespace tg {

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    TG_CHECK(d >= 0, kShape, "negative dimension ", d, " in shape ", ShapeToString(shape));
    TG_CHECK(!__builtin_mul_overflow(n, d, &n), kShape, "shape ", ShapeToString(shape),
             " has more elements than an int64 can count");
  }
  return n;
}

size_t TensorType::bytes() const {
  int64_t b = 0;
  TG_CHECK(!__builtin_mul_overflow(numel(), static_cast<int64_t>(SizeOf(dtype)), &b), kShape,
           ToString(), " has more bytes than an int64 can count");
  return static_cast<size_t>(b);
}

void TensorType::CheckSize() const {
  TG_CHECK(static_cast<int64_t>(bytes()) <= kMaxTensorBytes, kShape, ToString(), " needs ",
           bytes(), " bytes, more than tilegraph's per-tensor limit of ", kMaxTensorBytes,
           " (64 TiB)");
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
