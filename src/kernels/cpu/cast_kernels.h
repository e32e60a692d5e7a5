// Dtype conversion kernel between every element type (f32, f64, f16, bf16, i64, i32, bool,
// u8, i8, i16),
// with PyTorch's semantics: float -> int truncates toward zero, anything -> bool is `!= 0`,
// 16-bit floats round to nearest even.
#pragma once

#include <cstdint>

namespace tg::cpu {

// Element types as kernels see them (same order as tg::DType).
enum class ElemType : uint8_t { kF32, kF64, kF16, kBF16, kI64, kI32, kBool, kU8, kI8, kI16 };

void CastBuffer(const void* src, ElemType src_type, void* dst, ElemType dst_type, int64_t n);

// Element i of a buffer as double, and storing a double (reference kernels, tests).
double LoadAsDouble(const void* src, ElemType type, int64_t i);
void StoreFromDouble(void* dst, ElemType type, int64_t i, double v);

}  // namespace tg::cpu
