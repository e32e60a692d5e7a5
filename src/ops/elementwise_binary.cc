// Binary arithmetic with numpy broadcasting: add, sub, mul, div, maximum, minimum, pow.
// add/sub/mul/maximum/minimum also run on i64 and i32. Gradients are summed back to each
// operand's shape with Builder::SumToShape.
#include <cmath>

#include "ops/elementwise_common.h"

namespace tg::ew {
namespace {

struct Add {
  static constexpr cpu::JitOp kJit = cpu::JitOp::kAdd;
  template <typename T> TG_EW_INLINE static T Apply(T a, T b, const double*) { return a + b; }
};
struct Sub {
  static constexpr cpu::JitOp kJit = cpu::JitOp::kSub;
  template <typename T> TG_EW_INLINE static T Apply(T a, T b, const double*) { return a - b; }
};
struct Mul {
  static constexpr cpu::JitOp kJit = cpu::JitOp::kMul;
  template <typename T> TG_EW_INLINE static T Apply(T a, T b, const double*) { return a * b; }
};
struct Div {
  static constexpr cpu::JitOp kJit = cpu::JitOp::kDiv;
  template <typename T> TG_EW_INLINE static T Apply(T a, T b, const double*) { return a / b; }
};
// NaN-propagating maximum / minimum, as torch.maximum / torch.minimum.
struct Maximum {
  static constexpr cpu::JitOp kJit = cpu::JitOp::kMaximum;
  template <typename T> TG_EW_INLINE static T Apply(T a, T b, const double*) {
    if constexpr (std::is_floating_point_v<T>) {
      if (std::isnan(a) || std::isnan(b)) return a + b;
    }
    return a > b ? a : b;
  }
};
struct Minimum {
  static constexpr cpu::JitOp kJit = cpu::JitOp::kMinimum;
  template <typename T> TG_EW_INLINE static T Apply(T a, T b, const double*) {
    if constexpr (std::is_floating_point_v<T>) {
      if (std::isnan(a) || std::isnan(b)) return a + b;
    }
    return a < b ? a : b;
  }
};
struct Pow {
  template <typename T> TG_EW_INLINE static T Apply(T a, T b, const double*) {
    return std::pow(a, b);
  }
};

using GradPair = std::function<std::pair<Value*, Value*>(const GradContext&)>;

// Wraps a rule giving full-shape gradients of (a, b) into one that sums them to shape.
GradFn Reduced(GradPair rule) {
  return [rule](const GradContext& g) {
    auto [ga, gb] = rule(g);
    Builder& b = g.b();
    return std::vector<Value*>{ga ? b.SumToShape(ga, g.I(0)->type().shape) : nullptr,
                               gb ? b.SumToShape(gb, g.I(1)->type().shape) : nullptr};
  };
}

// Gradient of maximum (gt = "gt") or minimum (gt = "lt"): go to the winner, split at ties.
GradPair MaxMinGrad(const char* win) {
  return [win](const GradContext& g) {
    Builder& b = g.b();
    Value *x = g.I(0), *y = g.I(1), *go = g.GO(0);
    Value* zero = ScalarLike(b, go, 0);
    Value* half = b.MulScalar(go, 0.5);
    Value* tie = b.Op1("eq", {x, y});
    Value* ga = b.Where(b.Op1(win, {x, y}), go, b.Where(tie, half, zero));
    Value* gb = b.Where(b.Op1(win, {y, x}), go, b.Where(tie, half, zero));
    return std::pair{ga, gb};
  };
}

// C's fmod (the result has a's sign) and torch.remainder (b's sign). Integers divide
// exactly; a zero integer divisor gives 0 (the front ends check for it first: torch raises
// ZeroDivisionError), floats follow IEEE (NaN).
struct Fmod {
  template <typename T> TG_EW_INLINE static T Apply(T a, T b, const double*) {
    if constexpr (std::is_integral_v<T>) {
      return b == T(0) ? T(0) : static_cast<T>(a % b);
    } else {
      return std::fmod(a, b);
    }
  }
};
struct Remainder {
  template <typename T> TG_EW_INLINE static T Apply(T a, T b, const double*) {
    T mod = Fmod::Apply(a, b, nullptr);
    return (mod != T(0) && ((b < T(0)) != (mod < T(0)))) ? static_cast<T>(mod + b) : mod;
  }
};

struct Atan2 {
  template <typename T> TG_EW_INLINE static T Apply(T a, T b, const double*) {
    return std::atan2(a, b);
  }
};

struct NextAfter {  // the next representable value after a toward b (float and double)
  template <typename T> TG_EW_INLINE static T Apply(T a, T b, const double*) {
    return std::nextafter(a, b);
  }
};

template <typename Op, unsigned types>
OpDef BinaryOp(std::string name, std::string doc, GradPair grad,
               InputInit ia = InputInit::Normal(), InputInit ib = InputInit::Normal()) {
  OpDef def;
  def.name = name;
  def.num_inputs = 2;
  def.infer = BroadcastInfer(name, types);
  def.grad = Reduced(std::move(grad));
  def.traits.elementwise = true;
  def.traits.inplace_input = 0;  // legal when input 0 has the output's shape and dtype
  def.elementwise = BinaryElementwise<Op>();
  def.kernels[DeviceKind::kCpu] = BinaryCpuKernel<Op, types>({});
  def.kernels[DeviceKind::kReference] = BinaryReferenceKernel<Op, types>({});
  def.samples = BinarySamples(ia, ib);
  if (types & kInts) {
    for (DType d : {DType::kI64, DType::kI32}) {
      for (OpSample s : BinarySamples(InputInit::Ints(-20, 20), InputInit::Ints(-20, 20), {}, d)) {
        s.skip_grad_check = true;
        def.samples.push_back(s);
      }
    }
  }
  def.doc = doc;
  return def;
}

}  // namespace

void RegisterBinaryOps(OpRegistry& r) {
  constexpr unsigned numeric = kFloats | kInts;
  r.Register(BinaryOp<Add, numeric>("add", "a + b (broadcasting)", [](const GradContext& g) {
    return std::pair{g.GO(0), g.GO(0)};
  }));
  r.Register(BinaryOp<Sub, numeric>("sub", "a - b (broadcasting)", [](const GradContext& g) {
    return std::pair{g.GO(0), g.b().Neg(g.GO(0))};
  }));
  r.Register(BinaryOp<Mul, numeric>("mul", "a * b (broadcasting)", [](const GradContext& g) {
    Builder& b = g.b();
    return std::pair{b.Mul(g.GO(0), g.I(1)), b.Mul(g.GO(0), g.I(0))};
  }));
  r.Register(BinaryOp<Div, kFloats>("div", "a / b (broadcasting, true division)",
                                    [](const GradContext& g) {
    Builder& b = g.b();  // d/db = -go * a / b^2
    Value *x = g.I(0), *y = g.I(1);
    return std::pair{b.Div(g.GO(0), y), b.Div(b.Neg(b.Mul(g.GO(0), x)), b.Mul(y, y))};
  }, InputInit::Normal(), InputInit::Uniform(0.5, 2)));
  r.Register(BinaryOp<Maximum, numeric>("maximum", "elementwise max(a, b) (broadcasting)",
                               MaxMinGrad("gt")));
  r.Register(BinaryOp<Minimum, numeric>("minimum", "elementwise min(a, b) (broadcasting)",
                               MaxMinGrad("lt")));
  // d/da = 1; d/db = -trunc(a / b) (fmod) or -floor(a / b) (remainder), between the jumps.
  auto quotient_grad = [](const char* rounding) {
    return [rounding](const GradContext& g) {
      Builder& b = g.b();
      Value* q = b.Op1(rounding, {b.Div(g.I(0), g.I(1))});
      return std::pair{g.GO(0), b.Neg(b.Mul(g.GO(0), q))};
    };
  };
  r.Register(BinaryOp<Fmod, kFloats | kInts>("fmod", "a - trunc(a / b) * b (C's fmod)",
                                             quotient_grad("trunc"), InputInit::Uniform(-5, 5),
                                             InputInit::Uniform(0.7, 2.3)));
  r.Register(BinaryOp<Remainder, kFloats | kInts>(
      "remainder", "a - floor(a / b) * b (Python's %, torch.remainder)",
      quotient_grad("floor"), InputInit::Uniform(-5, 5), InputInit::Uniform(-2.3, -0.7)));
  r.Register(BinaryOp<Atan2, kFloats>("atan2", "atan(a / b) in the quadrant of (b, a)",
                                      [](const GradContext& g) {
    Builder& b = g.b();  // d/da = go * b / (a^2 + b^2); d/db = -go * a / (a^2 + b^2)
    Value *y = g.I(0), *x = g.I(1);
    Value* r2 = b.Add(b.Mul(x, x), b.Mul(y, y));
    return std::pair{b.Div(b.Mul(g.GO(0), x), r2), b.Div(b.Neg(b.Mul(g.GO(0), y)), r2)};
  }));
  OpDef next_after = BinaryOp<NextAfter, kFloats>(
      "nextafter", "the representable value after a in the direction of b",
      [](const GradContext&) -> std::pair<Value*, Value*> {
        TG_CHECK(false, kUnsupported, "nextafter has no gradient (as in PyTorch)");
        return {nullptr, nullptr};
      });
  next_after.grad = nullptr;  // as torch: not differentiable
  next_after.not_differentiable = true;
  r.Register(std::move(next_after));
  r.Register(BinaryOp<Pow, kFloats>("pow", "a ^ b (broadcasting)", [](const GradContext& g) {
    Builder& b = g.b();  // d/da = go * b * a^(b-1); d/db = go * a^b * log(a)
    Value *x = g.I(0), *y = g.I(1);
    Value* ga = b.Mul(g.GO(0), b.Mul(y, b.Op1("pow", {x, b.AddScalar(y, -1.0)})));
    Value* gb = b.Mul(g.GO(0), b.Mul(g.O(0), b.Log(x)));
    return std::pair{ga, gb};
  }, InputInit::Uniform(0.5, 2), InputInit::Uniform(-1.5, 1.5)));
}

}  // namespace tg::ew
