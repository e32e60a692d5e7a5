// Small helpers shared by op family files: dtype dispatch and common infer checks.
#pragma once

#include <string>
#include <string_view>

#include "ir/tensor_type.h"
#include "support/error.h"

namespace tg {

// Calls fn(T{}) with T = float or double for f32 / f64; other dtypes are Unsupported.
template <typename Fn>
auto DispatchFloat(DType dtype, std::string_view op, Fn&& fn) {
  switch (dtype) {
    case DType::kF32: return fn(float{});
    case DType::kF64: return fn(double{});
    default:
      Fail(ErrorKind::kUnsupported, op, ": dtype ", DTypeName(dtype),
           " is not supported (f32 and f64 are)");
  }
}

// Throws a Shape error unless t is a floating dtype.
inline void CheckFloating(const TensorType& t, const std::string& op, const char* what) {
  TG_CHECK(IsFloating(t.dtype), kShape, op, ": ", what, " must be floating point, got ",
           t.ToString());
}

}  // namespace tg
