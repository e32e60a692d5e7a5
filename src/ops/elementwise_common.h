// Building blocks shared by the elementwise op files (elementwise_*.cc, random.cc, fused.cc):
// each op writes its math once as a functor `Op` with
//   template <typename T> TG_EW_INLINE static auto Apply(T x..., const double* params);
// and these templates turn it into the op's block functions (for fused kernels), its CPU
// kernel (vectorizable, parallel, broadcasting) and its reference kernel (naive per-element
// loop computing floats in double), plus the usual infer helpers and test samples.
#pragma once

#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/cpu/broadcast.h"
#include "kernels/cpu/cast_kernels.h"
#include "kernels/cpu/elementwise_kernels.h"
#include "kernels/cpu/vector_math.h"
#include "ops/builder.h"
#include "ops/dispatch.h"
#include "ops/registry.h"
#include "support/error.h"

// On every op functor's Apply / Eval: the elementwise loops vectorize only when the math is
// inlined into them, and GCC's inliner gives up on the larger ones (gelu_backward: erf and
// exp) inside the fused block functions, leaving one call per element (~10x slower).
#define TG_EW_INLINE [[gnu::always_inline]]
// The lambdas handed to the Map* loops are always inlined too (`__attribute__` is the form
// GCC takes on a lambda): left as a call per element, gelu_backward ran unvectorized at a
// fifth of its speed (6.1 ms, now 1.3 ms, on BERT-Base's [2,128,3072]).

namespace tg::ew {

using ParamsFn = std::function<std::vector<double>(const AttrMap&)>;

inline cpu::ElemType ToElem(DType d) { return static_cast<cpu::ElemType>(d); }
inline std::vector<double> ParamsOf(const ParamsFn& fn, const AttrMap& attrs) {
  return fn ? fn(attrs) : std::vector<double>{};
}

// Which dtypes a kernel accepts.
enum TypeSet : unsigned { kFloats = 1, kInts = 2, kBool = 4, kAllTypes = 7 };

// Calls fn(T{}) for the dtype (float, double, int64_t, int32_t, bool) if it is in `kAllowed`
// (only the allowed instantiations are compiled).
template <unsigned kAllowed, typename Fn>
auto DispatchTypes(DType dtype, const std::string& op, Fn&& fn) {
  if constexpr ((kAllowed & kFloats) != 0) {
    if (dtype == DType::kF32) return fn(float{});
    if (dtype == DType::kF64) return fn(double{});
  }
  if constexpr ((kAllowed & kInts) != 0) {
    if (dtype == DType::kI64) return fn(int64_t{});
    if (dtype == DType::kI32) return fn(int32_t{});
  }
  if constexpr ((kAllowed & kBool) != 0) {
    if (dtype == DType::kBool) return fn(bool{});
  }
  Fail(ErrorKind::kUnsupported, op, ": dtype ", DTypeName(dtype), " is not supported");
}
bool DTypeAllowed(DType dtype, unsigned allowed);
std::string AllowedNames(unsigned allowed);

// Computation type of a reference kernel: double for floats, the type itself otherwise.
template <typename T>
using RefT = std::conditional_t<std::is_floating_point_v<T>, double, T>;

// ---- modal ops ------------------------------------------------------------------------------
// An op whose params[0] chooses between two formulas (gelu: exact or tanh) declares
// `static constexpr bool kModal = true` and writes `template <bool kMode, typename T> static
// T Eval(T x..., const double* p)`, with Apply(x..., p) choosing per element (the reference
// kernels). The fast kernels call WithMode, which branches once per call, outside the loop,
// so the vectorized body holds one formula instead of computing both and selecting.
template <typename Op, bool kMode>
struct ModeOf {
  template <typename... A>
  TG_EW_INLINE static auto Apply(A... args) { return Op::template Eval<kMode>(args...); }
};

template <typename Op, typename F>
void WithMode(const double* p, F&& f) {
  if constexpr (requires { Op::kModal; }) {
    if (p[0] != 0) {
      f(ModeOf<Op, true>{});
    } else {
      f(ModeOf<Op, false>{});
    }
  } else {
    f(Op{});
  }
}

// ---- unary ------------------------------------------------------------------------------
template <typename Op, typename T>
void UnaryBlock(const T* const* in, T* out, int64_t n, const double* p) {
  const T* x = in[0];
  WithMode<Op>(p, [&](auto op) {
    using O = decltype(op);
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(O::Apply(x[i], p));
  });
}

template <typename Op, unsigned kTypes = kFloats>
KernelFactory UnaryCpuKernel(ParamsFn params) {
  return [params](const Node& node) -> Kernel {
    std::vector<double> p = ParamsOf(params, node.attrs());
    int64_t n = node.output(0)->type().numel();
    return DispatchTypes<kTypes>(node.input(0)->type().dtype, node.op(), [&](auto tag) -> Kernel {
      using T = decltype(tag);
      using R = decltype(Op::Apply(T{}, nullptr));
      return [p, n](const KernelArgs& a) {
        const double* pp = p.data();
        WithMode<Op>(pp, [&](auto op) {
          using O = decltype(op);
          cpu::MapUnary(static_cast<const T*>(a.inputs[0]), static_cast<R*>(a.outputs[0]), n,
                        [pp](T x) __attribute__((always_inline)) { return O::Apply(x, pp); });
        });
      };
    });
  };
}

template <typename Op, unsigned kTypes = kFloats>
KernelFactory UnaryReferenceKernel(ParamsFn params) {
  return [params](const Node& node) -> Kernel {
    std::vector<double> p = ParamsOf(params, node.attrs());
    int64_t n = node.output(0)->type().numel();
    return DispatchTypes<kTypes>(node.input(0)->type().dtype, node.op(), [&](auto tag) -> Kernel {
      using T = decltype(tag);
      using R = decltype(Op::Apply(T{}, nullptr));
      return [p, n](const KernelArgs& a) {
        const T* x = static_cast<const T*>(a.inputs[0]);
        R* y = static_cast<R*>(a.outputs[0]);
        for (int64_t i = 0; i < n; ++i) {
          y[i] = static_cast<R>(Op::Apply(static_cast<RefT<T>>(x[i]), p.data()));
        }
      };
    });
  };
}

// ---- binary (numpy broadcasting) ----------------------------------------------------------
template <typename Op, typename T>
void BinaryBlock(const T* const* in, T* out, int64_t n, const double* p) {
  const T* a = in[0];
  const T* b = in[1];
  WithMode<Op>(p, [&](auto op) {
    using O = decltype(op);
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(O::Apply(a[i], b[i], p));
  });
}

template <typename Op, unsigned kTypes>
KernelFactory BinaryCpuKernel(ParamsFn params) {
  return [params](const Node& node) -> Kernel {
    std::vector<double> p = ParamsOf(params, node.attrs());
    Shape as = node.input(0)->type().shape, bs = node.input(1)->type().shape;
    Shape os = node.output(0)->type().shape;
    return DispatchTypes<kTypes>(node.input(0)->type().dtype, node.op(), [&](auto tag) -> Kernel {
      using T = decltype(tag);
      using R = decltype(Op::Apply(T{}, T{}, nullptr));
      cpu::BroadcastPlan plan = cpu::MakeBroadcastPlan(os, {as, bs});
      return [p, plan](const KernelArgs& a) {
        const double* pp = p.data();
        WithMode<Op>(pp, [&](auto op) {
          using O = decltype(op);
          cpu::MapBinary(static_cast<const T*>(a.inputs[0]), static_cast<const T*>(a.inputs[1]),
                         static_cast<R*>(a.outputs[0]), plan,
                         [pp](T x, T y) __attribute__((always_inline)) {
                           return O::Apply(x, y, pp);
                         });
        });
      };
    });
  };
}

// Flat offset into a contiguous operand of shape `in` for flat output index i (naive).
int64_t BroadcastOffset(const Shape& out, const Shape& in, int64_t i);

template <typename Op, unsigned kTypes>
KernelFactory BinaryReferenceKernel(ParamsFn params) {
  return [params](const Node& node) -> Kernel {
    std::vector<double> p = ParamsOf(params, node.attrs());
    Shape as = node.input(0)->type().shape, bs = node.input(1)->type().shape;
    Shape os = node.output(0)->type().shape;
    return DispatchTypes<kTypes>(node.input(0)->type().dtype, node.op(), [&](auto tag) -> Kernel {
      using T = decltype(tag);
      using R = decltype(Op::Apply(T{}, T{}, nullptr));
      return [p, as, bs, os](const KernelArgs& a) {
        const T* x = static_cast<const T*>(a.inputs[0]);
        const T* y = static_cast<const T*>(a.inputs[1]);
        R* out = static_cast<R*>(a.outputs[0]);
        for (int64_t i = 0, n = NumElements(os); i < n; ++i) {
          out[i] = static_cast<R>(Op::Apply(static_cast<RefT<T>>(x[BroadcastOffset(os, as, i)]),
                                            static_cast<RefT<T>>(y[BroadcastOffset(os, bs, i)]),
                                            p.data()));
        }
      };
    });
  };
}

// An op functor with `static constexpr cpu::JitOp kJit` says which JIT instruction it is.
template <typename Op>
constexpr cpu::JitOp JitOf() {
  if constexpr (requires { Op::kJit; }) return Op::kJit;
  return cpu::JitOp::kNone;
}
template <typename Op>
ElementwiseDef UnaryElementwise(ParamsFn params = {}) {
  return ElementwiseDef{&UnaryBlock<Op, float>, &UnaryBlock<Op, double>, std::move(params),
                        JitOf<Op>()};
}
template <typename Op>
ElementwiseDef BinaryElementwise(ParamsFn params = {}) {
  return ElementwiseDef{&BinaryBlock<Op, float>, &BinaryBlock<Op, double>, std::move(params),
                        JitOf<Op>()};
}

// ---- infer --------------------------------------------------------------------------------
// Same type as input 0, which must be one of `allowed`.
InferFn UnaryInfer(const std::string& op, unsigned allowed, std::optional<DType> out = {});
// Broadcast of inputs whose dtypes must all match and be in `allowed` (first `skip` inputs
// excluded from the dtype rule); output dtype `out` or the operands' dtype.
InferFn BroadcastInfer(const std::string& op, unsigned allowed, std::optional<DType> out = {});

// ---- samples ------------------------------------------------------------------------------
// Shapes every unary op is tested on (same-shape, rank-0, a large one for the parallel path).
std::vector<OpSample> UnarySamples(InputInit init, AttrMap attrs = {}, DType dtype = DType::kF32);
// Pairs of shapes for binary ops: same, broadcast both ways, scalar operands, rank-0, large.
std::vector<OpSample> BinarySamples(InputInit a, InputInit b, AttrMap attrs = {},
                                    DType dtype = DType::kF32);

// ---- grad helpers ---------------------------------------------------------------------------
// A scalar constant of v's dtype.
inline Value* ScalarLike(Builder& b, Value* v, double s) { return b.Scalar(s, v->type().dtype); }

// ---- one unary float op ------------------------------------------------------------------
struct UnarySpec {
  std::string name;
  std::string doc;
  GradFn grad;  // null: not differentiable
  InputInit init = InputInit::Normal();
  ParamsFn params = {};
  std::vector<AttrSpec> attrs = {};
  std::vector<AttrMap> sample_attrs = {{}};
};

// A unary op over floats (and, with kTypes = kFloats | kInts, over i64/i32 as well: the
// integer kernels are not fused and carry no gradient).
template <typename Op, unsigned kTypes = kFloats>
inline OpDef UnaryFloatOp(UnarySpec s) {
  OpDef def;
  def.name = s.name;
  def.num_inputs = 1;
  def.attrs = s.attrs;
  def.infer = UnaryInfer(s.name, kTypes);
  def.grad = s.grad;
  def.not_differentiable = s.grad == nullptr;
  def.traits.elementwise = true;
  def.traits.inplace_input = 0;
  def.elementwise = UnaryElementwise<Op>(s.params);
  def.kernels[DeviceKind::kCpu] = UnaryCpuKernel<Op, kTypes>(s.params);
  def.kernels[DeviceKind::kReference] = UnaryReferenceKernel<Op, kTypes>(s.params);
  for (const AttrMap& attrs : s.sample_attrs) {
    for (OpSample& sample : UnarySamples(s.init, attrs)) def.samples.push_back(sample);
    if constexpr ((kTypes & kInts) != 0) {
      OpSample ints;
      ints.inputs = {{DType::kI64, {2, 3}}};
      ints.init = {InputInit::Ints(-5, 5)};
      ints.attrs = attrs;
      ints.skip_grad_check = true;  // integer tensors carry no gradient
      def.samples.push_back(ints);
    }
  }
  def.doc = s.doc;
  return def;
}

// go * f for a single-input op.
inline GradFn Scaled(std::function<Value*(const GradContext&)> factor) {
  return [factor](const GradContext& g) {
    return std::vector<Value*>{g.b().Mul(g.GO(0), factor(g))};
  };
}
// Registration of each sub-family (elementwise_*.cc).
void RegisterUnaryOps(OpRegistry& r);
void RegisterActivationOps(OpRegistry& r);  // elementwise_activation.cc
void RegisterActivationBackwardOps(OpRegistry& r);
void RegisterBinaryOps(OpRegistry& r);
void RegisterCompareOps(OpRegistry& r);
void RegisterBitwiseOps(OpRegistry& r);      // elementwise_bitwise.cc
void RegisterMathOps(OpRegistry& r);         // elementwise_math.cc
void RegisterSpecialOps(OpRegistry& r);      // elementwise_special.cc
void RegisterWhereCastOps(OpRegistry& r);

}  // namespace tg::ew
