#include "ir/host_tensor.h"

#include <cmath>

#include "support/error.h"

namespace tg {

HostTensor::HostTensor(TensorType type) : type_(std::move(type)), bytes_(type_.bytes(), 0) {}

HostTensor::HostTensor(TensorType type, const void* data) : type_(std::move(type)) {
  bytes_.resize(type_.bytes());  // uninitialized: the copy writes every byte
  if (!bytes_.empty()) std::memcpy(bytes_.data(), data, bytes_.size());
}

HostTensor HostTensor::Uninitialized(TensorType type) {
  HostTensor t;
  t.type_ = std::move(type);
  t.bytes_.resize(t.type_.bytes());
  return t;
}

double HostTensor::GetAsDouble(int64_t i) const {
  switch (type_.dtype) {
    case DType::kF32: return as<float>()[i];
    case DType::kF64: return as<double>()[i];
    case DType::kF16: return HalfToFloat(as<uint16_t>()[i]);
    case DType::kBF16: return BFloat16ToFloat(as<uint16_t>()[i]);
    case DType::kI64: return static_cast<double>(as<int64_t>()[i]);
    case DType::kI32: return as<int32_t>()[i];
    case DType::kBool: return as<uint8_t>()[i] ? 1.0 : 0.0;
    case DType::kU8: return as<uint8_t>()[i];
    case DType::kI8: return as<int8_t>()[i];
    case DType::kI16: return as<int16_t>()[i];
  }
  return 0;
}

void HostTensor::SetFromDouble(int64_t i, double v) {
  switch (type_.dtype) {
    case DType::kF32: as<float>()[i] = static_cast<float>(v); break;
    case DType::kF64: as<double>()[i] = v; break;
    case DType::kF16: as<uint16_t>()[i] = FloatToHalf(static_cast<float>(v)); break;
    case DType::kBF16: as<uint16_t>()[i] = FloatToBFloat16(static_cast<float>(v)); break;
    case DType::kI64: as<int64_t>()[i] = static_cast<int64_t>(v); break;
    case DType::kI32: as<int32_t>()[i] = static_cast<int32_t>(v); break;
    case DType::kBool: as<uint8_t>()[i] = v != 0.0; break;
    // 8-bit through int64, as the cast kernels and PyTorch (-1.0 -> 255 for u8)
    case DType::kU8: as<uint8_t>()[i] = static_cast<uint8_t>(static_cast<int64_t>(v)); break;
    case DType::kI8: as<int8_t>()[i] = static_cast<int8_t>(static_cast<int64_t>(v)); break;
    case DType::kI16: as<int16_t>()[i] = static_cast<int16_t>(static_cast<int64_t>(v)); break;
  }
}

HostTensor HostTensor::Scalar(DType dtype, double v) { return Full(TensorType{dtype, {}}, v); }

HostTensor HostTensor::Full(TensorType type, double v) {
  HostTensor t(std::move(type));
  for (int64_t i = 0; i < t.type().numel(); ++i) t.SetFromDouble(i, v);
  return t;
}

float HalfToFloat(uint16_t h) {
  uint32_t sign = (h >> 15) & 1, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  float v;
  if (exp == 0) v = std::ldexp(static_cast<float>(mant), -24);
  else if (exp == 31) v = mant ? NAN : INFINITY;
  else v = std::ldexp(static_cast<float>(mant | 0x400), static_cast<int>(exp) - 25);
  return sign ? -v : v;
}

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000;
  float a = std::fabs(f);
  if (std::isnan(f)) return static_cast<uint16_t>(sign | 0x7e00);
  if (a >= 65520.0f) return static_cast<uint16_t>(sign | 0x7c00);
  if (a < 6.103515625e-05f) {  // subnormal: round to a multiple of 2^-24
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(a * 16777216.0f)));
  }
  int e;
  float m = std::frexp(a, &e);  // a = m * 2^e, m in [0.5,1)
  uint32_t mant = static_cast<uint32_t>(std::nearbyint((m * 2.0f - 1.0f) * 1024.0f));
  int exp = e - 1 + 15;
  if (mant == 1024) { mant = 0; ++exp; }
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7c00);
  return static_cast<uint16_t>(sign | (static_cast<uint32_t>(exp) << 10) | mant);
}

float BFloat16ToFloat(uint16_t b) {
  uint32_t x = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

uint16_t FloatToBFloat16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if (std::isnan(f)) return static_cast<uint16_t>((x >> 16) | 0x40);
  uint32_t rounding = 0x7fff + ((x >> 16) & 1);
  return static_cast<uint16_t>((x + rounding) >> 16);
}

}  // namespace tg
