// HostTensor: an owned, contiguous, row-major buffer with its type. Used for constants in
// the IR, for compile-time evaluation (constant folding) and for host I/O.
#pragma once

#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "ir/tensor_type.h"
#include "support/buffer_cache.h"

namespace tg {

class HostTensor {
 public:
  HostTensor() = default;
  explicit HostTensor(TensorType type);  // zero-filled
  HostTensor(TensorType type, const void* data);
  // Contents unspecified: for results every element of which a run writes (I/O buffers).
  static HostTensor Uninitialized(TensorType type);

  const TensorType& type() const { return type_; }
  void* data() { return bytes_.data(); }
  const void* data() const { return bytes_.data(); }
  template <typename T> T* as() { return reinterpret_cast<T*>(bytes_.data()); }
  template <typename T> const T* as() const { return reinterpret_cast<const T*>(bytes_.data()); }
  size_t bytes() const { return bytes_.size(); }

  // Element i converted to double (any dtype); Set writes a double converted to the dtype.
  double GetAsDouble(int64_t i) const;
  void SetFromDouble(int64_t i, double v);
  // A scalar of the given dtype holding v.
  static HostTensor Scalar(DType dtype, double v);
  static HostTensor Full(TensorType type, double v);

 private:
  TensorType type_;
  std::vector<uint8_t, HostBufferAllocator<uint8_t>> bytes_;  // see support/buffer_cache.h
};

// Conversions for the 16-bit float formats (round to nearest even).
float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);
float BFloat16ToFloat(uint16_t b);
uint16_t FloatToBFloat16(float f);

}  // namespace tg
