// Dtype conversion kernels (see cast_kernels.h).
#include "kernels/cpu/cast_kernels.h"

#include <cstring>

#include "kernels/cpu/elementwise_kernels.h"
#include "kernels/cpu/float16.h"
#include "support/error.h"

namespace tg::cpu {
namespace {

// Storage type of each element type; 16-bit floats are stored as uint16_t bits.
struct Half { uint16_t bits; };
struct BF16 { uint16_t bits; };

// Loads an element as the widest type that holds it exactly enough.
inline double ToDouble(float v) { return v; }
inline double ToDouble(double v) { return v; }
inline double ToDouble(Half v) { return HalfBitsToFloat(v.bits); }
inline double ToDouble(BF16 v) { return BFloat16BitsToFloat(v.bits); }
inline double ToDouble(int64_t v) { return static_cast<double>(v); }
inline double ToDouble(int32_t v) { return v; }
inline double ToDouble(bool v) { return v ? 1.0 : 0.0; }
inline double ToDouble(uint8_t v) { return v; }
inline double ToDouble(int8_t v) { return v; }

template <typename D, typename S>
inline D Convert(S v) {
  if constexpr (std::is_same_v<D, bool>) {
    if constexpr (std::is_same_v<S, Half> || std::is_same_v<S, BF16>) {
      return ToDouble(v) != 0.0;
    } else {
      return v != S{};
    }
  } else if constexpr (std::is_same_v<D, Half>) {
    if constexpr (std::is_same_v<S, float>) return Half{FloatToHalfBits(v)};
    else return Half{FloatToHalfBits(static_cast<float>(ToDouble(v)))};
  } else if constexpr (std::is_same_v<D, BF16>) {
    if constexpr (std::is_same_v<S, float>) return BF16{FloatToBFloat16Bits(v)};
    else return BF16{FloatToBFloat16Bits(static_cast<float>(ToDouble(v)))};
  } else if constexpr (sizeof(D) == 1 && !std::is_integral_v<S>) {
    // float -> 8-bit through int64, as PyTorch does: -1.0 -> 255 for u8, not undefined.
    return static_cast<D>(static_cast<int64_t>(ToDouble(v)));
  } else if constexpr (std::is_same_v<S, Half> || std::is_same_v<S, BF16>) {
    float f = static_cast<float>(ToDouble(v));
    return static_cast<D>(f);
  } else {
    return static_cast<D>(v);  // float -> int truncates toward zero
  }
}

template <typename Fn>
void DispatchElem(ElemType t, Fn&& fn) {
  switch (t) {
    case ElemType::kF32: return fn(float{});
    case ElemType::kF64: return fn(double{});
    case ElemType::kF16: return fn(Half{});
    case ElemType::kBF16: return fn(BF16{});
    case ElemType::kI64: return fn(int64_t{});
    case ElemType::kI32: return fn(int32_t{});
    case ElemType::kBool: return fn(bool{});
    case ElemType::kU8: return fn(uint8_t{});
    case ElemType::kI8: return fn(int8_t{});
    case ElemType::kI16: return fn(int16_t{});
  }
  Fail(ErrorKind::kInternal, "bad element type");
}

size_t ElemSize(ElemType t) {
  switch (t) {
    case ElemType::kF32: case ElemType::kI32: return 4;
    case ElemType::kF64: case ElemType::kI64: return 8;
    case ElemType::kF16: case ElemType::kBF16: case ElemType::kI16: return 2;
    case ElemType::kBool: case ElemType::kU8: case ElemType::kI8: return 1;
  }
  return 0;
}

}  // namespace

void CastBuffer(const void* src, ElemType src_type, void* dst, ElemType dst_type, int64_t n) {
  if (src_type == dst_type) {
    std::memcpy(dst, src, static_cast<size_t>(n) * ElemSize(src_type));
    return;
  }
  DispatchElem(src_type, [&](auto s) {
    using S = decltype(s);
    DispatchElem(dst_type, [&](auto d) {
      using D = decltype(d);
      MapUnary(static_cast<const S*>(src), static_cast<D*>(dst), n,
               [](S v) { return Convert<D>(v); });
    });
  });
}

double LoadAsDouble(const void* src, ElemType type, int64_t i) {
  double out = 0;
  DispatchElem(type, [&](auto s) {
    using S = decltype(s);
    out = ToDouble(static_cast<const S*>(src)[i]);
  });
  return out;
}

void StoreFromDouble(void* dst, ElemType type, int64_t i, double v) {
  DispatchElem(type, [&](auto d) {
    using D = decltype(d);
    if constexpr (std::is_same_v<D, float> || std::is_same_v<D, double>) {
      static_cast<D*>(dst)[i] = static_cast<D>(v);
    } else {
      static_cast<D*>(dst)[i] = Convert<D>(v);
    }
  });
}

}  // namespace tg::cpu
