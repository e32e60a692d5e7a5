// IEEE half and bfloat16 conversions for kernels (round to nearest even), independent of the
// IR so that kernels need not include ir/ headers.
#pragma once

#include <cstdint>
#include <cstring>

namespace tg::cpu {

inline uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float BitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float HalfBitsToFloat(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  if (exp == 0x1f) return BitsFloat(sign | 0x7f800000u | (mant << 13));  // inf / nan
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24.
    float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return BitsFloat(sign | ((exp + 112) << 23) | (mant << 13));
}

inline uint16_t FloatToHalfBits(float f) {
  uint32_t u = FloatBits(f);
  uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000);
  uint32_t abs = u & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // inf or nan
    return sign | 0x7c00 | (abs > 0x7f800000u ? 0x200 : 0);
  }
  if (abs >= 0x477ff000u) return sign | 0x7c00;  // rounds to >= 65520: overflow to inf
  if (abs < 0x38800000u) {
    // Subnormal half (or zero): round abs * 2^24 to an integer, nearest even.
    float v = BitsFloat(abs) * 16777216.0f;  // exact scaling
    uint32_t m = static_cast<uint32_t>(v);
    float frac = v - static_cast<float>(m);
    if (frac > 0.5f || (frac == 0.5f && (m & 1))) ++m;
    return sign | static_cast<uint16_t>(m);
  }
  uint32_t mant = abs & 0x7fffff;
  uint32_t exp = (abs >> 23) - 112;
  uint32_t h = (exp << 10) | (mant >> 13);
  uint32_t rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) ++h;  // may carry into the exponent
  return sign | static_cast<uint16_t>(h);
}

inline float BFloat16BitsToFloat(uint16_t b) { return BitsFloat(static_cast<uint32_t>(b) << 16); }

inline uint16_t FloatToBFloat16Bits(float f) {
  uint32_t u = FloatBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // nan
  u += 0x7fff + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}

// Half elements that read as float and are written from float (rounded to nearest even):
// loops templated on their element type (batch norm's half activations, norm_kernels.cc)
// widen on load and round on store, with no widened copy.
struct BFloat16Value {
  uint16_t bits;
  BFloat16Value() = default;
  explicit BFloat16Value(float f) : bits(FloatToBFloat16Bits(f)) {}
  operator float() const { return BFloat16BitsToFloat(bits); }
};
struct HalfValue {
  uint16_t bits;
  HalfValue() = default;
  explicit HalfValue(float f) : bits(FloatToHalfBits(f)) {}
  operator float() const { return HalfBitsToFloat(bits); }
};
static_assert(sizeof(BFloat16Value) == 2 && sizeof(HalfValue) == 2);

}  // namespace tg::cpu
