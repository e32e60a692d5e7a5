// Bitwise ops on integers and bools (bitwise_and, bitwise_or, bitwise_xor: broadcasting;
// bitwise_not). On bools they are the logical ops. Not differentiable, and not fused (their
// block functions would compute in a floating type, where bits have no meaning).
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

constexpr unsigned kBits = kInts | kBool;

template <typename Op>
OpDef BitwiseBinary(std::string name, std::string doc) {
  OpDef def;
  def.name = name;
  def.num_inputs = 2;
  def.infer = BroadcastInfer(name, kBits);
  def.not_differentiable = true;
  def.kernels[DeviceKind::kCpu] = BinaryCpuKernel<Op, kBits>({});
  def.kernels[DeviceKind::kReference] = BinaryReferenceKernel<Op, kBits>({});
  def.samples = BinarySamples(InputInit::Ints(-9, 9), InputInit::Ints(-9, 9), {}, DType::kI64);
  for (OpSample s : BinarySamples(InputInit::Bools(), InputInit::Bools(), {}, DType::kBool)) {
    def.samples.push_back(s);
  }
  def.doc = doc;
  return def;
}

}  // namespace

void RegisterBitwiseOps(OpRegistry& r) {
  r.Register(BitwiseBinary<BitAnd>("bitwise_and", "a & b on ints and bools (broadcasting)"));
  r.Register(BitwiseBinary<BitOr>("bitwise_or", "a | b on ints and bools (broadcasting)"));
  r.Register(BitwiseBinary<BitXor>("bitwise_xor", "a ^ b on ints and bools (broadcasting)"));
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
