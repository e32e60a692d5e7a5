// DType: element types of tilegraph tensors. f32 is the working type, f64 exists for
// gradient checks, f16/bf16 for storage and casts, i64/i32 for indices, bool for masks,
// u8/i8 for 8-bit inputs (images): only casts and data movement take them, arithmetic refuses
// them (PyTorch wraps 8-bit sums; a model computes on them after a cast).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace tg {

enum class DType : uint8_t { kF32, kF64, kF16, kBF16, kI64, kI32, kBool, kU8, kI8, kI16 };

size_t SizeOf(DType dtype);
std::string_view DTypeName(DType dtype);  // "f32", "i64", ...
std::optional<DType> ParseDType(std::string_view name);
bool IsFloating(DType dtype);
bool IsInteger(DType dtype);  // i32, i64 (not bool, not the 8-bit types)
bool IsHalf(DType dtype);     // f16, bf16
// The dtype arithmetic on `dtype` runs in: f32 for the half formats (ops/half_widening.h),
// the dtype itself otherwise.
DType ArithmeticDType(DType dtype);

}  // namespace tg
