// Comparisons (eq, ne, lt, le, gt, ge: any matching dtypes, broadcasting, bool result),
// logical ops on bools (logical_and, logical_or, logical_not) and signbit of floats. None is
// differentiable; all have block functions (results as 0/1 of the compute type) so masks fuse with arithmetic.
#include <cmath>
#include <limits>

#include "ops/elementwise_common.h"

namespace tg::ew {
namespace {

struct Eq {
  static constexpr cpu::JitOp kJit = cpu::JitOp::kEq;
  template <typename T> TG_EW_INLINE static bool Apply(T a, T b, const double*) { return a == b; }
};
struct Ne {
  static constexpr cpu::JitOp kJit = cpu::JitOp::kNe;
  template <typename T> TG_EW_INLINE static bool Apply(T a, T b, const double*) { return a != b; }
};
struct Lt {
  static constexpr cpu::JitOp kJit = cpu::JitOp::kLt;
  template <typename T> TG_EW_INLINE static bool Apply(T a, T b, const double*) { return a < b; }
};
struct Le {
  static constexpr cpu::JitOp kJit = cpu::JitOp::kLe;
  template <typename T> TG_EW_INLINE static bool Apply(T a, T b, const double*) { return a <= b; }
};
struct Gt {
  static constexpr cpu::JitOp kJit = cpu::JitOp::kGt;
  template <typename T> TG_EW_INLINE static bool Apply(T a, T b, const double*) { return a > b; }
};
struct Ge {
  static constexpr cpu::JitOp kJit = cpu::JitOp::kGe;
  template <typename T> TG_EW_INLINE static bool Apply(T a, T b, const double*) { return a >= b; }
};
// The sign bit, NaNs' included (a negative NaN: x86's 0 / 0); -0.0 is negative.
struct Signbit {
  template <typename T> TG_EW_INLINE static bool Apply(T x, const double*) {
    return std::signbit(x);
  }
};
struct And {
  template <typename T> TG_EW_INLINE static bool Apply(T a, T b, const double*) {
    return a != T(0) && b != T(0);
  }
};
struct Or {
  template <typename T> TG_EW_INLINE static bool Apply(T a, T b, const double*) {
    return a != T(0) || b != T(0);
  }
};
struct Not {
  template <typename T> TG_EW_INLINE static bool Apply(T a, const double*) { return a == T(0); }
};

template <typename Op, unsigned types>
OpDef CompareOp(std::string name, std::string doc) {
  OpDef def;
  def.name = name;
  def.num_inputs = 2;
  def.infer = BroadcastInfer(name, types, DType::kBool);
  def.not_differentiable = true;
  def.traits.elementwise = true;
  def.elementwise = BinaryElementwise<Op>();
  def.kernels[DeviceKind::kCpu] = BinaryCpuKernel<Op, types>({});
  def.kernels[DeviceKind::kReference] = BinaryReferenceKernel<Op, types>({});
  if (types & kFloats) {
    def.samples = BinarySamples(InputInit::Normal(), InputInit::Normal());
    for (OpSample s : BinarySamples(InputInit::Ints(-3, 3), InputInit::Ints(-3, 3), {},
                                    DType::kI64)) {
      def.samples.push_back(s);
    }
  }
  for (OpSample s : BinarySamples(InputInit::Bools(), InputInit::Bools(), {}, DType::kBool)) {
    def.samples.push_back(s);
  }
  def.doc = doc;
  return def;
}

}  // namespace

void RegisterCompareOps(OpRegistry& r) {
  r.Register(CompareOp<Eq, kAllTypes>("eq", "a == b (broadcasting, bool result)"));
  r.Register(CompareOp<Ne, kAllTypes>("ne", "a != b (broadcasting, bool result)"));
  r.Register(CompareOp<Lt, kAllTypes>("lt", "a < b (broadcasting, bool result)"));
  r.Register(CompareOp<Le, kAllTypes>("le", "a <= b (broadcasting, bool result)"));
  r.Register(CompareOp<Gt, kAllTypes>("gt", "a > b (broadcasting, bool result)"));
  r.Register(CompareOp<Ge, kAllTypes>("ge", "a >= b (broadcasting, bool result)"));
  r.Register(CompareOp<And, kBool>("logical_and", "a and b on bools (broadcasting)"));
  r.Register(CompareOp<Or, kBool>("logical_or", "a or b on bools (broadcasting)"));

  OpDef def;
  def.name = "logical_not";
  def.num_inputs = 1;
  def.infer = UnaryInfer("logical_not", kBool);
  def.not_differentiable = true;
  def.traits.elementwise = true;
  def.traits.inplace_input = 0;
  def.elementwise = UnaryElementwise<Not>();
  def.kernels[DeviceKind::kCpu] = UnaryCpuKernel<Not, kBool>({});
  def.kernels[DeviceKind::kReference] = UnaryReferenceKernel<Not, kBool>({});
  def.samples = UnarySamples(InputInit::Bools(), {}, DType::kBool);
  def.doc = "not a, on bools";
  r.Register(std::move(def));

  OpDef sign;
  sign.name = "signbit";
  sign.num_inputs = 1;
  sign.infer = UnaryInfer("signbit", kFloats, DType::kBool);
  sign.not_differentiable = true;
  sign.traits.elementwise = true;
  sign.elementwise = UnaryElementwise<Signbit>();
  sign.kernels[DeviceKind::kCpu] = UnaryCpuKernel<Signbit, kFloats>({});
  sign.kernels[DeviceKind::kReference] = UnaryReferenceKernel<Signbit, kFloats>({});
  sign.samples = UnarySamples(InputInit::Normal());
  const double nan = std::numeric_limits<double>::quiet_NaN();
  OpSample specials;  // the values whose sign bit a comparison with 0 does not see
  specials.inputs = {{DType::kF32, {8}}};
  specials.init = {InputInit::Values({-0.0, 0.0, -2.5, 3.0, nan, -nan, -INFINITY, INFINITY})};
  sign.samples.push_back(specials);
  sign.doc = "whether a's sign bit is set (-0.0 and negative NaNs included; bool result)";
  r.Register(std::move(sign));
}

}  // namespace tg::ew
