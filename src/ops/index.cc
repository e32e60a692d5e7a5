// Index op family: gather / scatter_add (torch.gather semantics), index_select / index_add
// (1-D index along one axis), index_wrap (torch's negative indices, checked per dimension),
// embedding and embedding_backward. Indices are i32 or i64;
// out-of-range indices raise a Runtime error at run time. Kernels:
// kernels/cpu/index_kernels.h.
#include "kernels/cpu/index_kernels.h"
#include "ops/axes_util.h"
#include "ops/builder.h"
#include "ops/dispatch.h"
#include "ops/families.h"
#include "support/error.h"

namespace tg {
namespace {

const TensorType& InType(const Node& n, size_t i) { return n.input(i)->type(); }

void CheckIndexType(const TensorType& t, const std::string& op, const char* what) {
  TG_CHECK(t.dtype == DType::kI64 || t.dtype == DType::kI32, kShape, op, ": expected ", what,
           " of dtype i64 or i32, got ", t.ToString());
}

void CheckArithType(const TensorType& t, const std::string& op, const char* what) {
  TG_CHECK(t.dtype == DType::kF32 || t.dtype == DType::kF64 || t.dtype == DType::kI64 ||
               t.dtype == DType::kI32,
           kShape, op, ": expected ", what, " of dtype f32, f64, i64 or i32, got ", t.ToString());
}

template <typename Fn>
void DispatchIndex(DType dtype, Fn&& fn) {
  if (dtype == DType::kI32) fn(int32_t{});
  else fn(int64_t{});
}

template <typename Fn>
void DispatchArith(DType dtype, const std::string& op, Fn&& fn) {
  switch (dtype) {
    case DType::kI32: fn(int32_t{}); break;
    case DType::kI64: fn(int64_t{}); break;
    default: DispatchFloat(dtype, op, fn);
  }
}

int64_t Axis(const AttrMap& attrs, int64_t rank, const std::string& op) {
  return rank == 0 ? 0 : AxisAttr(GetInt(attrs, "axis"), rank, op);
}

// ---- gather / scatter_add -----------------------------------------------------------------

// Checks index against x (same rank, index dims <= x dims off the axis); returns the axis.
int64_t CheckGather(const TensorType& x, const TensorType& index, const AttrMap& attrs,
                    const std::string& op) {
  CheckIndexType(index, op, "index");
  int64_t axis = Axis(attrs, x.rank(), op);
  bool ok = index.rank() == x.rank();
  for (int64_t d = 0; ok && d < x.rank(); ++d) ok = d == axis || index.shape[d] <= x.shape[d];
  TG_CHECK(ok, kShape, op, ": expected an index of rank ", x.rank(), " no larger than ",
           x.ToString(), " off axis ", axis, ", got ", index.ToString());
  return axis;
}

cpu::GatherParams GatherParamsOf(const TensorType& x, const TensorType& index, int64_t axis) {
  return {x.shape, index.shape, axis, SizeOf(x.dtype)};
}

KernelFactory GatherFactory(bool reference) {
  return [reference](const Node& n) -> Kernel {
    int64_t axis = Axis(n.attrs(), InType(n, 0).rank(), "gather");
    cpu::GatherParams p = GatherParamsOf(InType(n, 0), InType(n, 1), axis);
    DType idx = InType(n, 1).dtype;
    return [=](const KernelArgs& a) {
      DispatchIndex(idx, [&](auto i) {
        auto* index = static_cast<const decltype(i)*>(a.inputs[1]);
        if (reference) cpu::GatherRef(a.inputs[0], index, a.outputs[0], p);
        else cpu::Gather(a.inputs[0], index, a.outputs[0], p);
      });
    };
  };
}

// scatter_add, scatter_max and scatter_mul: (base, index, src) -> out, one kernel shape.
KernelFactory ScatterFactory(const std::string& op, bool reference) {
  return [op, reference](const Node& n) -> Kernel {
    int64_t axis = Axis(n.attrs(), InType(n, 0).rank(), op);
    cpu::GatherParams p = GatherParamsOf(InType(n, 0), InType(n, 1), axis);
    DType dtype = InType(n, 0).dtype, idx = InType(n, 1).dtype;
    const bool max = op == "scatter_max", mul = op == "scatter_mul";
    return [=](const KernelArgs& a) {
      DispatchArith(dtype, op, [&](auto t) {
        using T = decltype(t);
        DispatchIndex(idx, [&](auto i) {
          auto* base = static_cast<const T*>(a.inputs[0]);
          auto* index = static_cast<const decltype(i)*>(a.inputs[1]);
          auto* src = static_cast<const T*>(a.inputs[2]);
          auto* out = static_cast<T*>(a.outputs[0]);
          if (max && reference) cpu::ScatterMaxRef(base, index, src, out, p);
          else if (max) cpu::ScatterMax(base, index, src, out, p);
          else if (mul && reference) cpu::ScatterMulRef(base, index, src, out, p);
          else if (mul) cpu::ScatterMul(base, index, src, out, p);
          else if (reference) cpu::ScatterAddRef(base, index, src, out, p);
          else cpu::ScatterAdd(base, index, src, out, p);
        });
      });
    };
  };
}

// ---- index_select / index_add / embedding -------------------------------------------------

cpu::IndexSelectParams SelectParamsOf(const TensorType& x, const TensorType& index,
                                      int64_t axis) {
  AxisSplit s = x.rank() == 0 ? AxisSplit{} : SplitAt(x.shape, axis);
  return {s.outer, s.dim, s.inner, index.numel(), SizeOf(x.dtype)};
}

// x with its axis dimension replaced by the index length.
Shape SelectShape(const TensorType& x, const TensorType& index, int64_t axis) {
  Shape out = x.shape;
  if (x.rank() > 0) out[axis] = index.numel();
  return out;
}

int64_t CheckSelect(const TensorType& x, const TensorType& index, const AttrMap& attrs,
                    const std::string& op) {
  CheckIndexType(index, op, "index");
  TG_CHECK(index.rank() <= 1, kShape, op, ": expected a 1-D index, got ", index.ToString());
  return Axis(attrs, x.rank(), op);
}

KernelFactory SelectFactory(bool reference, bool embedding) {
  return [reference, embedding](const Node& n) -> Kernel {
    const TensorType& x = InType(n, 0);
    cpu::IndexSelectParams p;
    if (embedding) {
      p = {1, x.shape[0], x.shape[1], InType(n, 1).numel(), SizeOf(x.dtype)};
    } else {
      p = SelectParamsOf(x, InType(n, 1), Axis(n.attrs(), x.rank(), n.op()));
    }
    DType idx = InType(n, 1).dtype;
    return [=](const KernelArgs& a) {
      DispatchIndex(idx, [&](auto i) {
        auto* index = static_cast<const decltype(i)*>(a.inputs[1]);
        if (reference) cpu::IndexSelectRef(a.inputs[0], index, a.outputs[0], p);
        else cpu::IndexSelect(a.inputs[0], index, a.outputs[0], p);
      });
    };
  };
}

KernelFactory IndexAddFactory(bool reference) {
  return [reference](const Node& n) -> Kernel {
    const TensorType& base = InType(n, 0);
    cpu::IndexSelectParams p =
        SelectParamsOf(base, InType(n, 1), Axis(n.attrs(), base.rank(), "index_add"));
    DType dtype = base.dtype, idx = InType(n, 1).dtype;
    return [=](const KernelArgs& a) {
      DispatchArith(dtype, "index_add", [&](auto t) {
        using T = decltype(t);
        DispatchIndex(idx, [&](auto i) {
          auto* b = static_cast<const T*>(a.inputs[0]);
          auto* index = static_cast<const decltype(i)*>(a.inputs[1]);
          auto* src = static_cast<const T*>(a.inputs[2]);
          auto* out = static_cast<T*>(a.outputs[0]);
          if (reference) cpu::IndexAddRef(b, index, src, out, p);
          else cpu::IndexAdd(b, index, src, out, p);
        });
      });
    };
  };
}

KernelFactory EmbeddingBackwardFactory(bool reference) {
  return [reference](const Node& n) -> Kernel {
    const TensorType& out = n.output(0)->type();
    cpu::EmbeddingBackwardParams p{InType(n, 1).numel(), out.shape[0], out.shape[1],
                                   GetInt(n.attrs(), "padding_idx")};
    DType dtype = out.dtype, idx = InType(n, 1).dtype;
    return [=](const KernelArgs& a) {
      DispatchArith(dtype, "embedding_backward", [&](auto t) {
        using T = decltype(t);
        DispatchIndex(idx, [&](auto i) {
          auto* go = static_cast<const T*>(a.inputs[0]);
          auto* index = static_cast<const decltype(i)*>(a.inputs[1]);
          auto* gw = static_cast<T*>(a.outputs[0]);
          if (reference) cpu::EmbeddingBackwardRef(go, index, gw, p);
          else cpu::EmbeddingBackward(go, index, gw, p);
        });
      });
    };
  };
}

KernelFactory WrapFactory(bool reference) {
  return [reference](const Node& n) -> Kernel {
    int64_t count = InType(n, 0).numel(), size = GetInt(n.attrs(), "size");
    int64_t dim = GetInt(n.attrs(), "dim");
    DType idx = InType(n, 0).dtype;
    return [=](const KernelArgs& a) {
      DispatchIndex(idx, [&](auto i) {
        auto* index = static_cast<const decltype(i)*>(a.inputs[0]);
        auto* out = static_cast<int64_t*>(a.outputs[0]);
        if (reference) cpu::WrapIndicesRef(index, out, count, size, dim);
        else cpu::WrapIndices(index, out, count, size, dim);
      });
    };
  };
}

// ---- samples ------------------------------------------------------------------------------

TensorType F32(Shape s) { return {DType::kF32, std::move(s)}; }
TensorType I64(Shape s) { return {DType::kI64, std::move(s)}; }
TensorType I32(Shape s) { return {DType::kI32, std::move(s)}; }

OpSample Sample(std::vector<TensorType> inputs, std::vector<InputInit> init, AttrMap attrs,
                bool skip_grad = false) {
  OpSample s;
  s.inputs = std::move(inputs);
  s.init = std::move(init);
  s.attrs = std::move(attrs);
  s.skip_grad_check = skip_grad;
  return s;
}
InputInit N() { return InputInit::Normal(); }
InputInit Ints(int64_t hi) { return InputInit::Ints(0, static_cast<double>(hi)); }
AttrMap AxisIs(int64_t axis) { return {{"axis", axis}}; }

// ---- the ops ------------------------------------------------------------------------------

void RegisterGather(OpRegistry& r) {
  OpDef d;
  d.name = "gather";
  d.traits.half_native = true;  // moves elements: any dtype
  d.num_inputs = 2;
  d.attrs = {{"axis", std::nullopt}};
  d.doc = "out[m] = x[m with m[axis] = index[m]] (torch.gather); out is shaped like index.";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    CheckGather(c.in(0), c.in(1), c.attrs, "gather");
    return {{c.in(0).dtype, c.in(1).shape}};
  };
  d.grad = [](const GradContext& g) -> std::vector<Value*> {
    Builder& b = g.b();
    Value* zeros = b.ZerosLike(g.I(0));
    return {b.Op1("scatter_add", {zeros, g.I(1), g.GO(0)}, g.attrs()), nullptr};
  };
  d.kernels[DeviceKind::kCpu] = GatherFactory(false);
  d.kernels[DeviceKind::kReference] = GatherFactory(true);
  d.samples = {Sample({F32({3, 4}), I64({3, 5})}, {N(), Ints(4)}, AxisIs(1)),
               Sample({F32({3, 4}), I64({5, 4})}, {N(), Ints(3)}, AxisIs(0)),
               Sample({F32({3, 4, 5}), I64({2, 3, 2})}, {N(), Ints(5)}, AxisIs(-1)),
               Sample({F32({4, 3}), I32({2, 3})}, {N(), Ints(4)}, AxisIs(0)),
               Sample({F32({64, 300}), I64({64, 300})}, {N(), Ints(300)}, AxisIs(1), true)};
  r.Register(std::move(d));
}

std::vector<OpSample> ScatterSamples() {
  return {
      Sample({F32({3, 4}), I64({3, 5}), F32({3, 5})}, {N(), Ints(4), N()}, AxisIs(1)),
      Sample({F32({4, 3}), I64({6, 3}), F32({6, 3})}, {N(), Ints(4), N()}, AxisIs(0)),
      Sample({F32({3, 4, 5}), I64({2, 3, 2}), F32({2, 3, 2})}, {N(), Ints(5), N()}, AxisIs(-1)),
      Sample({F32({64, 300}), I64({64, 300}), F32({64, 300})}, {N(), Ints(300), N()}, AxisIs(1),
             true)};
}

std::vector<TensorType> InferScatter(const InferContext& c, const std::string& op) {
  CheckArithType(c.in(0), op, "base");
  CheckGather(c.in(0), c.in(1), c.attrs, op);
  TG_CHECK(c.in(2).shape == c.in(1).shape && c.in(2).dtype == c.in(0).dtype, kShape,
           op, ": expected src of type ", DTypeName(c.in(0).dtype),
           ShapeToString(c.in(1).shape), ", got ", c.in(2).ToString());
  return {c.in(0)};
}

// scatter_add / scatter_max / scatter_mul: (base, index, src) -> base with each src combined
// into its position; out may be base's buffer (the kernels skip the copy).
void RegisterScatter(OpRegistry& r, const std::string& name, std::string doc, GradFn grad,
                     std::vector<OpSample> samples) {
  OpDef d;
  d.name = name;
  d.traits.inplace_input = 0;
  d.num_inputs = 3;
  d.attrs = {{"axis", std::nullopt}};
  d.doc = std::move(doc);
  d.infer = [name](const InferContext& c) { return InferScatter(c, name); };
  d.grad = std::move(grad);
  d.kernels[DeviceKind::kCpu] = ScatterFactory(name, false);
  d.kernels[DeviceKind::kReference] = ScatterFactory(name, true);
  d.samples = std::move(samples);
  r.Register(std::move(d));
}

void RegisterScatterAdd(OpRegistry& r) {
  RegisterScatter(r, "scatter_add",
                  "base with src[m] added at (m with m[axis] = index[m]); duplicates accumulate.",
                  [](const GradContext& g) -> std::vector<Value*> {
                    return {g.GO(0), nullptr, g.b().Op1("gather", {g.GO(0), g.I(1)}, g.attrs())};
                  },
                  ScatterSamples());
}

// The gradient of out = scatter_max(base, index, src): each position's gradient is split
// evenly among the entries (base and the srcs written there) equal to its maximum, as
// torch's scatter_reduce "amax" backward does.
std::vector<Value*> GradScatterMax(const GradContext& g) {
  Builder& b = g.b();
  DType t = g.I(0)->type().dtype;
  auto as_t = [&](Value* v) { return b.Op1("cast", {v}, {{"dtype", t}}); };
  Value* out_at_src = b.Op1("gather", {g.O(0), g.I(1)}, g.attrs());
  Value* src_is_max = as_t(b.Op1("eq", {g.I(2), out_at_src}));
  Value* base_is_max = as_t(b.Op1("eq", {g.I(0), g.O(0)}));
  Value* ties = b.Op1("scatter_add", {base_is_max, g.I(1), src_is_max}, g.attrs());
  Value* share = b.Op1("div", {g.GO(0), ties});
  Value* d_base = b.Op1("mul", {share, base_is_max});
  Value* d_src = b.Op1("mul", {b.Op1("gather", {share, g.I(1)}, g.attrs()), src_is_max});
  return {d_base, nullptr, d_src};
}

void RegisterScatterMax(OpRegistry& r) {
  RegisterScatter(r, "scatter_max",
                  "base with each src[m] maxed into (m with m[axis] = index[m]) (scatter_reduce "
                  "amax, include_self); gradient split evenly among tied maxima.",
                  GradScatterMax, ScatterSamples());
}

// The gradient of out = scatter_mul(base, index, src): base's is dy times the product of
// the srcs written to its position; a src's is dy times base and the other srcs written to
// its position (the exclusive product), computed without dividing by a zero: with no zero
// among the position's srcs it is (base * their product) / src; with exactly one zero, the
// zero's is base * the product of the non-zero srcs and the others' is 0; with more, all
// are 0 (torch's scatter_reduce "prod" backward).
std::vector<Value*> GradScatterMul(const GradContext& g) {
  Builder& b = g.b();
  const DType t = g.I(0)->type().dtype;
  Value* index = g.I(1);
  Value* src = g.I(2);
  auto at_src = [&](Value* v) { return b.Op1("gather", {v, index}, g.attrs()); };
  Value* ones = b.Full(g.I(0)->type().shape, 1.0, t);
  Value* product = b.Op1("scatter_mul", {ones, index, src}, g.attrs());
  Value* d_base = b.Mul(g.GO(0), product);
  Value* is_zero = b.Op1("eq", {src, b.Scalar(0.0, t)});
  Value* zero_count = b.Op1("scatter_add", {b.ZerosLike(g.I(0)), index, b.Cast(is_zero, t)},
                            g.attrs());
  Value* nonzero_src = b.Where(is_zero, b.Scalar(1.0, t), src);
  Value* others = at_src(b.Op1("scatter_mul", {g.I(0), index, nonzero_src}, g.attrs()));
  Value* zeros_here = at_src(zero_count);
  Value* none = b.Op1("eq", {zeros_here, b.Scalar(0.0, t)});
  Value* only_this = b.Op1("logical_and", {is_zero, b.Op1("eq", {zeros_here, b.Scalar(1.0, t)})});
  Value* exclusive = b.Where(none, b.Div(others, nonzero_src),
                             b.Where(only_this, others, b.Scalar(0.0, t)));
  return {d_base, nullptr, b.Mul(at_src(g.GO(0)), exclusive)};
}

// Samples with repeated positions, zeros among the srcs (none, one and two at a position)
// and a zero base.
std::vector<OpSample> ScatterMulSamples() {
  std::vector<OpSample> out = ScatterSamples();
  // Row 0: position 0 gets a zero and 2 (one zero), 1 gets 1.5, 2 gets -1. Row 1: position 2
  // gets two zeros, 0 gets 3 onto a zero base, 1 gets 0.5.
  out.push_back(Sample({F32({2, 3}), I64({2, 4}), F32({2, 4})},
                       {InputInit::Values({0.5, 0.7, -2, 0, 3, 0.25}),
                        InputInit::Values({0, 0, 1, 2, 2, 2, 0, 1}),
                        InputInit::Values({0, 2, 1.5, -1, 0, 0, 3, 0.5})},
                       AxisIs(1)));
  return out;
}

void RegisterScatterMul(OpRegistry& r) {
  RegisterScatter(r, "scatter_mul",
                  "base with each src[m] multiplied into (m with m[axis] = index[m]), in index "
                  "order (scatter_reduce prod, include_self); gradient without division by zeros.",
                  GradScatterMul, ScatterMulSamples());
}

void RegisterIndexSelect(OpRegistry& r) {
  OpDef d;
  d.name = "index_select";
  d.traits.half_native = true;  // moves elements: any dtype
  d.num_inputs = 2;
  d.attrs = {{"axis", std::nullopt}};
  d.doc = "The slices of x along `axis` picked by the 1-D index, in index order.";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    int64_t axis = CheckSelect(c.in(0), c.in(1), c.attrs, "index_select");
    return {{c.in(0).dtype, SelectShape(c.in(0), c.in(1), axis)}};
  };
  d.grad = [](const GradContext& g) -> std::vector<Value*> {
    Builder& b = g.b();
    return {b.Op1("index_add", {b.ZerosLike(g.I(0)), g.I(1), g.GO(0)}, g.attrs()), nullptr};
  };
  d.kernels[DeviceKind::kCpu] = SelectFactory(false, false);
  d.kernels[DeviceKind::kReference] = SelectFactory(true, false);
  d.samples = {Sample({F32({5, 3}), I64({7})}, {N(), Ints(5)}, AxisIs(0)),
               Sample({F32({2, 6, 3}), I64({4})}, {N(), Ints(6)}, AxisIs(1)),
               Sample({F32({2, 3, 4}), I32({5})}, {N(), Ints(4)}, AxisIs(-1)),
               Sample({F32({1000, 64}), I64({500})}, {N(), Ints(1000)}, AxisIs(0), true)};
  r.Register(std::move(d));
}

void RegisterIndexAdd(OpRegistry& r) {
  OpDef d;
  d.name = "index_add";
  d.traits.inplace_input = 0;  // out may be base's buffer (the kernels skip the copy)
  d.num_inputs = 3;
  d.attrs = {{"axis", std::nullopt}};
  d.doc = "base with slice j of src added to slice index[j] along `axis` (accumulating).";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    CheckArithType(c.in(0), "index_add", "base");
    int64_t axis = CheckSelect(c.in(0), c.in(1), c.attrs, "index_add");
    TensorType want{c.in(0).dtype, SelectShape(c.in(0), c.in(1), axis)};
    TG_CHECK(c.in(2) == want, kShape, "index_add: expected src of type ", want.ToString(),
             ", got ", c.in(2).ToString());
    return {c.in(0)};
  };
  d.grad = [](const GradContext& g) -> std::vector<Value*> {
    return {g.GO(0), nullptr, g.b().Op1("index_select", {g.GO(0), g.I(1)}, g.attrs())};
  };
  d.kernels[DeviceKind::kCpu] = IndexAddFactory(false);
  d.kernels[DeviceKind::kReference] = IndexAddFactory(true);
  d.samples = {
      Sample({F32({5, 3}), I64({7}), F32({7, 3})}, {N(), Ints(5), N()}, AxisIs(0)),
      Sample({F32({2, 6, 3}), I64({4}), F32({2, 4, 3})}, {N(), Ints(6), N()}, AxisIs(1)),
      Sample({F32({1000, 64}), I64({500}), F32({500, 64})}, {N(), Ints(1000), N()}, AxisIs(0),
             true)};
  r.Register(std::move(d));
}

void RegisterIndexWrap(OpRegistry& r) {
  OpDef d;
  d.name = "index_wrap";
  d.num_inputs = 1;
  d.attrs = {{"size", std::nullopt}, {"dim", Attr(int64_t{0})}};
  d.doc = "An index into a dimension of `size` (dimension `dim`, for messages) made "
          "non-negative as torch does (i < 0 -> i + size) and checked to lie in [-size, size); "
          "i64 out.";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    CheckIndexType(c.in(0), "index_wrap", "an index");
    TG_CHECK(GetInt(c.attrs, "size") >= 0, kShape, "index_wrap: expected size >= 0, got ",
             GetInt(c.attrs, "size"));
    return {{DType::kI64, c.in(0).shape}};
  };
  d.not_differentiable = true;
  d.kernels[DeviceKind::kCpu] = WrapFactory(false);
  d.kernels[DeviceKind::kReference] = WrapFactory(true);
  auto attrs = [](int64_t size, int64_t dim) { return AttrMap{{"size", size}, {"dim", dim}}; };
  d.samples = {Sample({I64({7})}, {InputInit::Ints(-5, 5)}, attrs(5, 0)),
               Sample({I32({2, 3})}, {InputInit::Ints(-3, 3)}, attrs(3, 1)),
               Sample({I64({})}, {InputInit::Ints(-4, 4)}, attrs(4, 2))};
  r.Register(std::move(d));
}

void RegisterEmbedding(OpRegistry& r) {
  OpDef d;
  d.name = "embedding";
  d.num_inputs = 2;
  d.attrs = {{"padding_idx", Attr(int64_t{-1})}};
  d.doc = "Rows of weight [V, D] picked by integer indices of any shape -> [..., D]; rows "
          "equal to padding_idx (>= 0; negative: none) get no gradient.";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    TG_CHECK(c.in(0).rank() == 2, kShape, "embedding: expected a weight of rank 2, got ",
             c.in(0).ToString());
    CheckIndexType(c.in(1), "embedding", "indices");
    Shape out = c.in(1).shape;
    out.push_back(c.in(0).shape[1]);
    return {{c.in(0).dtype, out}};
  };
  d.grad = [](const GradContext& g) -> std::vector<Value*> {
    AttrMap a = {{"num_weights", g.I(0)->type().shape[0]},
                 {"padding_idx", GetInt(g.attrs(), "padding_idx")}};
    return {g.b().Op1("embedding_backward", {g.GO(0), g.I(1)}, a), nullptr};
  };
  d.kernels[DeviceKind::kCpu] = SelectFactory(false, true);
  d.kernels[DeviceKind::kReference] = SelectFactory(true, true);
  AttrMap none = {{"padding_idx", int64_t{-1}}}, pad0 = {{"padding_idx", int64_t{0}}};
  d.samples = {Sample({F32({10, 4}), I64({2, 6})}, {N(), Ints(10)}, none),
               Sample({F32({5, 3}), I64({9})}, {N(), Ints(5)}, none),
               Sample({F32({6, 2}), I32({})}, {N(), Ints(6)}, none),
               // The padding row is used forward but gets no gradient (PyTorch semantics):
               // finite differences disagree by design, so kernel check only.
               Sample({F32({5, 3}), I64({4, 3})}, {N(), Ints(5)}, pad0, true),
               Sample({F32({1000, 64}), I64({32, 20})}, {N(), Ints(1000)}, none, true)};
  r.Register(std::move(d));
}

void RegisterEmbeddingBackward(OpRegistry& r) {
  OpDef d;
  d.name = "embedding_backward";
  d.num_inputs = 2;
  d.attrs = {{"num_weights", std::nullopt}, {"padding_idx", Attr(int64_t{-1})}};
  d.doc = "Gradient of embedding's weight: GO rows summed into [num_weights, D] by index, "
          "skipping padding_idx.";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    CheckIndexType(c.in(1), "embedding_backward", "indices");
    const TensorType& go = c.in(0);
    CheckArithType(go, "embedding_backward", "the gradient");
    Shape want = c.in(1).shape;
    want.push_back(go.rank() > 0 ? go.shape.back() : 1);
    TG_CHECK(go.shape == want, kShape, "embedding_backward: expected a gradient of shape ",
             ShapeToString(c.in(1).shape), "+[D], got ", go.ToString());
    return {{go.dtype, {GetInt(c.attrs, "num_weights"), go.shape.back()}}};
  };
  d.not_differentiable = true;
  d.kernels[DeviceKind::kCpu] = EmbeddingBackwardFactory(false);
  d.kernels[DeviceKind::kReference] = EmbeddingBackwardFactory(true);
  auto attrs = [](int64_t v, int64_t pad) {
    return AttrMap{{"num_weights", v}, {"padding_idx", pad}};
  };
  d.samples = {Sample({F32({2, 6, 4}), I64({2, 6})}, {N(), Ints(10)}, attrs(10, -1)),
               Sample({F32({9, 3}), I32({9})}, {N(), Ints(5)}, attrs(5, 2)),
               Sample({F32({32, 20, 64}), I64({32, 20})}, {N(), Ints(1000)}, attrs(1000, 7))};
  r.Register(std::move(d));
}

}  // namespace

void RegisterIndexOps(OpRegistry& r) {
  RegisterGather(r);
  RegisterScatterAdd(r);
  RegisterScatterMax(r);
  RegisterScatterMul(r);
  RegisterIndexSelect(r);
  RegisterIndexAdd(r);
  RegisterIndexWrap(r);
  RegisterEmbedding(r);
  RegisterEmbeddingBackward(r);
}

}  // namespace tg
