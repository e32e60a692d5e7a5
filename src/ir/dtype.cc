#include "ir/dtype.h"

namespace tg {

size_t SizeOf(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kF64: return 8;
    case DType::kF16: return 2;
    case DType::kBF16: return 2;
    case DType::kI64: return 8;
    case DType::kI32: return 4;
    case DType::kBool: return 1;
    case DType::kU8: return 1;
    case DType::kI8: return 1;
    case DType::kI16: return 2;
  }
  return 0;
}

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "f32";
    case DType::kF64: return "f64";
    case DType::kF16: return "f16";
    case DType::kBF16: return "bf16";
    case DType::kI64: return "i64";
    case DType::kI32: return "i32";
    case DType::kBool: return "bool";
    case DType::kU8: return "u8";
    case DType::kI8: return "i8";
    case DType::kI16: return "i16";
  }
  return "?";
}

std::optional<DType> ParseDType(std::string_view name) {
  for (DType d : {DType::kF32, DType::kF64, DType::kF16, DType::kBF16, DType::kI64, DType::kI32,
                  DType::kBool, DType::kU8, DType::kI8, DType::kI16}) {
    if (DTypeName(d) == name) return d;
  }
  return std::nullopt;
}

bool IsFloating(DType d) {
  return d == DType::kF32 || d == DType::kF64 || d == DType::kF16 || d == DType::kBF16;
}
bool IsInteger(DType d) { return d == DType::kI64 || d == DType::kI32; }
bool IsHalf(DType d) { return d == DType::kF16 || d == DType::kBF16; }
DType ArithmeticDType(DType d) { return IsHalf(d) ? DType::kF32 : d; }

}  // namespace tg
