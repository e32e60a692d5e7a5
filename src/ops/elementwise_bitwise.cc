// Bitwise ops on integers and bools (bitwise_and, bitwise_or, bitwise_xor: broadcasting;
// bitwise_not), shifts on integers (bitwise_left_shift, bitwise_right_shift) and the
// integers' gcd / lcm. On bools the bitwise ops are the logical ops. Not differentiable, and
// not fused (their block functions would compute in a floating type, where bits have no
// meaning).
#include <type_traits>

#include "ops/elementwise_common.h"

namespace tg::ew {
namespace {

struct BitAnd {
  template <typename T> TG_EW_INLINE static T Apply(T a, T b, const double*) {
    return static_cast<T>(a & b);
  }
};
struct BitOr {
  template <typename T> TG_EW_INLINE static T Apply(T a, T b, const double*) {
    return static_cast<T>(a | b);
  }
};
struct BitXor {
  template <typename T> TG_EW_INLINE static T Apply(T a, T b, const double*) {
    return static_cast<T>(a ^ b);
  }
};
struct BitNot {
  template <typename T> TG_EW_INLINE static T Apply(T a, const double*) {
    if constexpr (std::is_same_v<T, bool>) {
      return !a;
    } else {
      return static_cast<T>(~a);
    }
  }
};

// Shifts as torch's: a shift by a negative count or by the width of the type or more gives 0
// (left) or the sign (right, arithmetic); a left shift drops the bits shifted out.
struct ShiftLeft {
  template <typename T> TG_EW_INLINE static T Apply(T a, T b, const double*) {
    if constexpr (std::is_same_v<T, bool>) {
      return a;  // (not registered for bools)
    } else {
      constexpr T kBitsOf = static_cast<T>(sizeof(T) * 8);
      if (b < 0 || b >= kBitsOf) return T(0);
      return static_cast<T>(static_cast<std::make_unsigned_t<T>>(a) << b);
    }
  }
};
struct ShiftRight {
  template <typename T> TG_EW_INLINE static T Apply(T a, T b, const double*) {
    if constexpr (std::is_same_v<T, bool>) {
      return a;
    } else {
      constexpr T kBitsOf = static_cast<T>(sizeof(T) * 8);
      if (b < 0 || b >= kBitsOf) return static_cast<T>(a >> (kBitsOf - 1));
      return static_cast<T>(a >> b);
    }
  }
};

// torch.gcd: the greatest common divisor of |a| and |b| (gcd(0, 0) = 0), by Euclid on the
// unsigned magnitudes (the most negative value's magnitude is representable there; its gcd
// with 0 wraps back to it, as torch's).
template <typename T>
T Gcd(T a, T b) {
  using U = std::make_unsigned_t<T>;
  U x = a < 0 ? static_cast<U>(U(0) - static_cast<U>(a)) : static_cast<U>(a);
  U y = b < 0 ? static_cast<U>(U(0) - static_cast<U>(b)) : static_cast<U>(b);
  while (y != 0) {
    const U r = static_cast<U>(x % y);
    x = y;
    y = r;
  }
  return static_cast<T>(x);
}
struct GcdOp {
  template <typename T> TG_EW_INLINE static T Apply(T a, T b, const double*) {
    if constexpr (std::is_same_v<T, bool>) {
      return a || b;  // (not registered for bools)
    } else {
      return Gcd(a, b);
    }
  }
};
// torch.lcm: |a / gcd(a, b) * b| (wrapping as torch's on overflow), 0 when either is 0.
struct LcmOp {
  template <typename T> TG_EW_INLINE static T Apply(T a, T b, const double*) {
    if constexpr (std::is_same_v<T, bool>) {
      return a && b;
    } else {
      const T g = Gcd(a, b);
      if (g == 0) return T(0);
      using U = std::make_unsigned_t<T>;
      const U m = static_cast<U>(static_cast<U>(a / g) * static_cast<U>(b));
      return static_cast<T>(static_cast<T>(m) < 0 ? U(0) - m : m);
    }
  }
};

constexpr unsigned kBits = kInts | kBool;

template <typename Op, unsigned types = kBits>
OpDef BitwiseBinary(std::string name, std::string doc) {
  OpDef def;
  def.name = name;
  def.num_inputs = 2;
  def.infer = BroadcastInfer(name, types);
  def.not_differentiable = true;
  def.kernels[DeviceKind::kCpu] = BinaryCpuKernel<Op, types>({});
  def.kernels[DeviceKind::kReference] = BinaryReferenceKernel<Op, types>({});
  def.samples = BinarySamples(InputInit::Ints(-9, 9), InputInit::Ints(-9, 9), {}, DType::kI64);
  if (types & kBool) {
    for (OpSample s : BinarySamples(InputInit::Bools(), InputInit::Bools(), {}, DType::kBool)) {
      def.samples.push_back(s);
    }
  }
  def.doc = doc;
  return def;
}

}  // namespace

void RegisterBitwiseOps(OpRegistry& r) {
  r.Register(BitwiseBinary<BitAnd>("bitwise_and", "a & b on ints and bools (broadcasting)"));
  r.Register(BitwiseBinary<BitOr>("bitwise_or", "a | b on ints and bools (broadcasting)"));
  r.Register(BitwiseBinary<BitXor>("bitwise_xor", "a ^ b on ints and bools (broadcasting)"));
  r.Register(BitwiseBinary<ShiftLeft, kInts>(
      "bitwise_left_shift", "a << b on ints (broadcasting; 0 past the type's width)"));
  r.Register(BitwiseBinary<ShiftRight, kInts>(
      "bitwise_right_shift", "a >> b on ints, arithmetic (broadcasting; the sign past the width)"));
  r.Register(BitwiseBinary<GcdOp, kInts>(
      "gcd", "greatest common divisor of |a| and |b| on ints (broadcasting; gcd(0, 0) = 0)"));
  r.Register(BitwiseBinary<LcmOp, kInts>(
      "lcm", "least common multiple |a / gcd(a, b) * b| on ints (broadcasting; 0 with a 0)"));
  OpDef def;
  def.name = "bitwise_not";
  def.num_inputs = 1;
  def.infer = UnaryInfer("bitwise_not", kBits);
  def.not_differentiable = true;
  def.kernels[DeviceKind::kCpu] = UnaryCpuKernel<BitNot, kBits>({});
  def.kernels[DeviceKind::kReference] = UnaryReferenceKernel<BitNot, kBits>({});
  def.samples = UnarySamples(InputInit::Ints(-9, 9), {}, DType::kI64);
  for (OpSample s : UnarySamples(InputInit::Bools(), {}, DType::kBool)) def.samples.push_back(s);
  def.doc = "~a on ints, not a on bools";
  r.Register(std::move(def));
}

}  // namespace tg::ew
