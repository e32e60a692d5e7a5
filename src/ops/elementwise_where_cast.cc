// where(cond, a, b) with three-way broadcasting, and cast(x){dtype} between every dtype
// (f32, f64, f16, bf16, i64, i32, bool) with PyTorch's conversion rules.
#include "kernels/cpu/cast_kernels.h"
#include "ops/elementwise_common.h"

namespace tg::ew {
namespace {

struct Select {
  template <typename T> TG_EW_INLINE static T Apply(T c, T a, T b) { return c != T(0) ? a : b; }
};

template <typename T>
void WhereBlock(const T* const* in, T* out, int64_t n, const double*) {
  const T *c = in[0], *a = in[1], *b = in[2];
  for (int64_t i = 0; i < n; ++i) out[i] = c[i] != T(0) ? a[i] : b[i];
}

InferFn WhereInfer() {
  return [](const InferContext& c) {
    TG_CHECK(c.in(0).dtype == DType::kBool, kShape, "where: expected a bool condition, got ",
             c.in(0).ToString());
    TG_CHECK(c.in(1).dtype == c.in(2).dtype, kShape,
             "where: expected operands of one dtype, got ", c.in(1).ToString(), " and ",
             c.in(2).ToString());
    TG_CHECK(DTypeAllowed(c.in(1).dtype, kAllTypes), kShape, "where: expected operands of dtype ",
             AllowedNames(kAllTypes), ", got ", c.in(1).ToString());
    Shape s = BroadcastShapes(BroadcastShapes(c.in(0).shape, c.in(1).shape), c.in(2).shape);
    return std::vector<TensorType>{{c.in(1).dtype, s}};
  };
}

Kernel WhereKernel(const Node& node, bool reference) {
  Shape cs = node.input(0)->type().shape, as = node.input(1)->type().shape;
  Shape bs = node.input(2)->type().shape, os = node.output(0)->type().shape;
  cpu::BroadcastPlan plan = cpu::MakeBroadcastPlan(os, {cs, as, bs});
  return DispatchTypes<kAllTypes>(node.input(1)->type().dtype, "where", [&](auto tag) -> Kernel {
    using T = decltype(tag);
    return [=](const KernelArgs& args) {
      const bool* c = static_cast<const bool*>(args.inputs[0]);
      const T* a = static_cast<const T*>(args.inputs[1]);
      const T* b = static_cast<const T*>(args.inputs[2]);
      T* out = static_cast<T*>(args.outputs[0]);
      if (reference) {
        for (int64_t i = 0, n = NumElements(os); i < n; ++i) {
          out[i] = c[BroadcastOffset(os, cs, i)] ? a[BroadcastOffset(os, as, i)]
                                                 : b[BroadcastOffset(os, bs, i)];
        }
        return;
      }
      cpu::MapTernary(c, a, b, out, plan, [](bool cv, T av, T bv) { return cv ? av : bv; });
    };
  });
}

OpDef WhereOp() {
  OpDef def;
  def.name = "where";
  def.num_inputs = 3;
  def.infer = WhereInfer();
  def.grad = [](const GradContext& g) {
    Builder& b = g.b();
    Value* zero = ScalarLike(b, g.GO(0), 0);
    Value* ga = b.SumToShape(b.Where(g.I(0), g.GO(0), zero), g.I(1)->type().shape);
    Value* gb = b.SumToShape(b.Where(g.I(0), zero, g.GO(0)), g.I(2)->type().shape);
    return std::vector<Value*>{nullptr, ga, gb};
  };
  def.traits.elementwise = true;
  def.elementwise = ElementwiseDef{&WhereBlock<float>, &WhereBlock<double>, {}, cpu::JitOp::kWhere};
  def.kernels[DeviceKind::kCpu] = [](const Node& n) { return WhereKernel(n, false); };
  def.kernels[DeviceKind::kReference] = [](const Node& n) { return WhereKernel(n, true); };
  const std::vector<Shape> shapes[] = {{{3, 4}, {3, 4}, {3, 4}}, {{3, 4}, {4}, {}},
                                       {{3, 1}, {1, 4}, {3, 4}}, {{}, {2, 3}, {3}},
                                       {{}, {}, {}},             {{300, 256}, {256}, {300, 1}}};
  for (const auto& s : shapes) {
    OpSample sample{{{DType::kBool, s[0]}, {DType::kF32, s[1]}, {DType::kF32, s[2]}}, {},
                    {InputInit::Bools(), InputInit::Normal(), InputInit::Normal()}};
    sample.skip_grad_check = NumElements(s[0]) > 1000;
    def.samples.push_back(sample);
  }
  def.samples.push_back(OpSample{
      {{DType::kBool, {3, 4}}, {DType::kI64, {3, 4}}, {DType::kI64, {4}}},
                                 {}, {InputInit::Bools(), InputInit::Ints(-5, 5),
                                      InputInit::Ints(-5, 5)}, true});
  def.doc = "a where cond else b (broadcasting)";
  return def;
}

// Block function of cast inside a fused kernel, where both sides are the compute type or
// bool: params[0] = 1 when casting to bool (x != 0), else the value passes through.
template <typename T>
void CastBlock(const T* const* in, T* out, int64_t n, const double* p) {
  const T* x = in[0];
  if (p[0] != 0) {
    for (int64_t i = 0; i < n; ++i) out[i] = x[i] != T(0) ? T(1) : T(0);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = x[i];
  }
}

OpDef CastOp() {
  OpDef def;
  def.name = "cast";
  def.traits.half_native = true;
  def.num_inputs = 1;
  def.attrs = {{"dtype", std::nullopt}};
  def.infer = [](const InferContext& c) {
    return std::vector<TensorType>{{GetDType(c.attrs, "dtype"), c.in(0).shape}};
  };
  def.grad = [](const GradContext& g) {
    bool floating = IsFloating(g.I(0)->type().dtype) && IsFloating(g.O(0)->type().dtype);
    return std::vector<Value*>{floating ? g.b().Cast(g.GO(0), g.I(0)->type().dtype) : nullptr};
  };
  def.traits.elementwise = true;
  def.elementwise = ElementwiseDef{
      &CastBlock<float>, &CastBlock<double>, [](const AttrMap& a) {
        return std::vector<double>{GetDType(a, "dtype") == DType::kBool ? 1.0 : 0.0};
      },
      cpu::JitOp::kCast};
  def.kernels[DeviceKind::kCpu] = [](const Node& n) -> Kernel {
    cpu::ElemType from = ToElem(n.input(0)->type().dtype), to = ToElem(n.output(0)->type().dtype);
    int64_t count = n.output(0)->type().numel();
    return [=](const KernelArgs& a) {
      cpu::CastBuffer(a.inputs[0], from, a.outputs[0], to, count);
    };
  };
  def.kernels[DeviceKind::kReference] = [](const Node& n) -> Kernel {
    cpu::ElemType from = ToElem(n.input(0)->type().dtype), to = ToElem(n.output(0)->type().dtype);
    int64_t count = n.output(0)->type().numel();
    return [=](const KernelArgs& a) {
      for (int64_t i = 0; i < count; ++i) {
        cpu::StoreFromDouble(a.outputs[0], to, i, cpu::LoadAsDouble(a.inputs[0], from, i));
      }
    };
  };
  const DType all[] = {DType::kF32, DType::kF64, DType::kF16, DType::kBF16,
                       DType::kI64, DType::kI32, DType::kBool, DType::kU8, DType::kI8,
                       DType::kI16};
  for (DType from : all) {
    for (DType to : all) {
      if (from == to) continue;
      if (from != DType::kF32 && to != DType::kF32) continue;  // every dtype to and from f32
      InputInit init = from == DType::kBool  ? InputInit::Bools()
                       : from == DType::kU8  ? InputInit::Ints(0, 255)
                       : from == DType::kI8  ? InputInit::Ints(-128, 127)
                       : from == DType::kI16 ? InputInit::Ints(-32768, 32767)
                       : IsInteger(from)     ? InputInit::Ints(-100, 100)
                                             : InputInit::Uniform(-100, 100);
      for (Shape shape : {Shape{3, 4}, Shape{}, Shape{300, 256}}) {
        OpSample s{{{from, shape}}, {{"dtype", to}}, {init}};
        // The gradient check runs in f64: only casts to f64 keep its precision.
        s.skip_grad_check = to != DType::kF64 || NumElements(shape) > 1000;
        def.samples.push_back(s);
      }
    }
  }
  def.doc = "x converted to dtype (float -> int truncates toward zero, -> bool is x != 0, "
            "-> u8 / i8 wraps as PyTorch does)";
  return def;
}

}  // namespace

void RegisterWhereCastOps(OpRegistry& r) {
  r.Register(WhereOp());
  r.Register(CastOp());
}

}  // namespace tg::ew
