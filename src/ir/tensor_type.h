// TensorType: a dtype and a static shape. Shapes are fully static in tilegraph; a rank-0
// shape is a scalar.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ir/dtype.h"

namespace tg {

using Shape = std::vector<int64_t>;

// The product of the dims. Throws a Shape error for a negative dim or a product that
// overflows int64 (IR text and imported files can state any numbers).
int64_t NumElements(const Shape& shape);
// The most bytes one tensor may have (64 TiB): far above any machine's memory, low enough
// that sums of tensor sizes in the memory plan cannot overflow. The verifier enforces it.
constexpr int64_t kMaxTensorBytes = int64_t{1} << 46;
// Throws a Shape error unless every dim is >= 0 and the tensor's bytes are at most
// kMaxTensorBytes.
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
  size_t bytes() const;  // overflow-checked like NumElements
  void CheckSize() const;  // see kMaxTensorBytes
  std::string ToString() const;  // "f32[2,3]"
  bool operator==(const TensorType& other) const = default;
};

}  // namespace tg
