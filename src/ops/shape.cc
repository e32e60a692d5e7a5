// Shape op family: reshape, permute, expand, slice, slice_backward, cat, full. These ops move
// bytes only, so they accept every dtype; their kernels are the strided copies of
// kernels/cpu/shape_kernels.h.
#include <algorithm>
#include <limits>

#include "kernels/cpu/shape_kernels.h"
#include "ops/axes_util.h"
#include "ops/builder.h"
#include "ops/families.h"
#include "support/error.h"

namespace tg {
namespace {

using cpu::StridedView;

const TensorType& InType(const Node& n, size_t i = 0) { return n.input(i)->type(); }
const TensorType& OutType(const Node& n, size_t i = 0) { return n.output(i)->type(); }

// ---- shape arithmetic --------------------------------------------------------------------

// The target shape of a reshape with a single -1 resolved.
Shape ResolveReshape(const TensorType& in, const Shape& target) {
  Shape out = target;
  int64_t known = 1, infer_at = -1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      TG_CHECK(infer_at < 0, kShape, "reshape: expected at most one -1 in shape, got ",
               ShapeToString(target));
      infer_at = static_cast<int64_t>(i);
    } else {
      TG_CHECK(out[i] >= 0, kShape, "reshape: expected non-negative sizes, got ",
               ShapeToString(target));
      known *= out[i];
    }
  }
  if (infer_at >= 0) {
    TG_CHECK(known != 0 && in.numel() % known == 0, kShape, "reshape: cannot infer -1 in ",
             ShapeToString(target), " for input ", in.ToString());
    out[infer_at] = in.numel() / known;
  }
  TG_CHECK(NumElements(out) == in.numel(), kShape, "reshape: expected a shape with ",
           in.numel(), " elements (input ", in.ToString(), "), got ", ShapeToString(target));
  return out;
}

std::vector<int64_t> CheckedPerm(const std::vector<int64_t>& perm, int64_t rank) {
  TG_CHECK(static_cast<int64_t>(perm.size()) == rank, kShape, "permute: expected ", rank,
           " axes in perm, got ", perm.size());
  std::vector<int64_t> out;
  std::vector<bool> seen(rank, false);
  for (int64_t p : perm) {
    int64_t a = AxisAttr(p, rank, "permute");
    TG_CHECK(!seen[a], kShape, "permute: expected a permutation, got repeated axis ", p);
    seen[a] = true;
    out.push_back(a);
  }
  return out;
}

// Target shape of expand; -1 keeps the input's size. Numpy rules: trailing dims align.
Shape ExpandShape(const Shape& in, const Shape& target) {
  TG_CHECK(target.size() >= in.size(), kShape, "expand: expected a target of rank >= ",
           in.size(), ", got ", ShapeToString(target), " for input ", ShapeToString(in));
  Shape out = target;
  size_t lead = target.size() - in.size();
  for (size_t i = 0; i < target.size(); ++i) {
    if (i >= lead && out[i] == -1) out[i] = in[i - lead];
    TG_CHECK(out[i] >= 0, kShape, "expand: expected sizes >= 0, got ", ShapeToString(target));
    if (i < lead) continue;
    int64_t d = in[i - lead];
    TG_CHECK(d == out[i] || d == 1, kShape, "expand: expected input dims to be 1 or match ",
             ShapeToString(target), ", got ", ShapeToString(in));
  }
  return out;
}

// A Python slice of one axis: [start, start + len * step) with clamping.
struct SliceRange {
  int64_t axis, start, len, step;
};
SliceRange ResolveSlice(const Shape& shape, const AttrMap& attrs, const char* op) {
  int64_t rank = static_cast<int64_t>(shape.size());
  TG_CHECK(rank > 0, kShape, op, ": expected a tensor of rank >= 1, got a scalar");
  int64_t axis = AxisAttr(GetInt(attrs, "axis"), rank, op);
  int64_t step = GetInt(attrs, "step");
  TG_CHECK(step > 0, kShape, op, ": expected step > 0, got ", step);
  int64_t n = shape[axis];
  auto clamp = [n](int64_t i) {
    if (i < 0) i += n;
    return std::clamp<int64_t>(i, 0, n);
  };
  int64_t start = clamp(GetInt(attrs, "start")), end = clamp(GetInt(attrs, "end"));
  int64_t len = end > start ? (end - start + step - 1) / step : 0;
  return {axis, start, len, step};
}

// ---- views for the kernels ----------------------------------------------------------------

StridedView ContiguousView(const TensorType& t) {
  return {t.shape, ContiguousStrides(t.shape), 0, SizeOf(t.dtype)};
}

StridedView PermuteView(const Node& n) {
  const TensorType& in = InType(n);
  std::vector<int64_t> perm = CheckedPerm(GetInts(n.attrs(), "perm"), in.rank());
  std::vector<int64_t> strides = ContiguousStrides(in.shape);
  StridedView v{{}, {}, 0, SizeOf(in.dtype)};
  for (int64_t p : perm) {
    v.shape.push_back(in.shape[p]);
    v.strides.push_back(strides[p]);
  }
  return v;
}

StridedView ExpandView(const Node& n) {
  const TensorType& in = InType(n);
  Shape out = OutType(n).shape;
  std::vector<int64_t> in_strides = ContiguousStrides(in.shape);
  size_t lead = out.size() - in.shape.size();
  StridedView v{out, std::vector<int64_t>(out.size(), 0), 0, SizeOf(in.dtype)};
  for (size_t i = lead; i < out.size(); ++i) {
    if (in.shape[i - lead] != 1) v.strides[i] = in_strides[i - lead];
  }
  return v;
}

// The slice as a view of a tensor of `full` shape.
StridedView SliceView(const Shape& full, const AttrMap& attrs, DType dtype, const char* op) {
  SliceRange s = ResolveSlice(full, attrs, op);
  StridedView v = ContiguousView({dtype, full});
  v.shape[s.axis] = s.len;
  v.offset = s.start * v.strides[s.axis];
  v.strides[s.axis] *= s.step;
  return v;
}

StridedView SliceViewOf(const Node& n) {
  return SliceView(InType(n).shape, n.attrs(), InType(n).dtype, "slice");
}

// A kernel factory copying input 0 through the view made by make(node).
template <StridedView (*Make)(const Node&)>
KernelFactory GatherFactory(bool reference) {
  return [reference](const Node& n) -> Kernel {
    StridedView v = Make(n);
    if (NumElements(v.shape) == 0) return [](const KernelArgs&) {};
    return [v, reference](const KernelArgs& a) {
      if (reference) cpu::StridedGatherRef(v, a.inputs[0], a.outputs[0]);
      else cpu::StridedGather(v, a.inputs[0], a.outputs[0]);
    };
  };
}

KernelFactory CopyFactory() {
  return [](const Node& n) -> Kernel {
    size_t bytes = OutType(n).bytes();
    return [bytes](const KernelArgs& a) { cpu::CopyBytes(a.inputs[0], a.outputs[0], bytes); };
  };
}

KernelFactory SliceBackwardFactory(bool reference) {
  return [reference](const Node& n) -> Kernel {
    const TensorType& out = OutType(n);
    StridedView v = SliceView(out.shape, n.attrs(), out.dtype, "slice_backward");
    int64_t numel = out.numel();
    return [v, numel, reference](const KernelArgs& a) {
      if (NumElements(v.shape) == 0) {
        std::fill_n(static_cast<uint8_t*>(a.outputs[0]), numel * v.elem_size, 0);
        return;
      }
      if (reference) cpu::StridedScatterRef(v, a.inputs[0], a.outputs[0], numel);
      else cpu::StridedScatter(v, a.inputs[0], a.outputs[0], numel);
    };
  };
}

KernelFactory ConcatFactory(bool reference) {
  return [reference](const Node& n) -> Kernel {
    const TensorType& out = OutType(n);
    int64_t axis = AxisAttr(GetInt(n.attrs(), "axis"), out.rank(), "cat");
    cpu::ConcatParams p;
    p.outer = SplitAt(out.shape, axis).outer;
    for (Value* in : n.inputs()) {
      AxisSplit s = SplitAt(in->type().shape, axis);
      p.chunk_bytes.push_back(s.dim * s.inner * static_cast<int64_t>(SizeOf(out.dtype)));
    }
    return [p, reference](const KernelArgs& a) {
      if (reference) cpu::ConcatRef(p, a.inputs, a.outputs[0]);
      else cpu::Concat(p, a.inputs, a.outputs[0]);
    };
  };
}

KernelFactory FullFactory() {
  return [](const Node& n) -> Kernel {
    const TensorType& out = OutType(n);
    HostTensor pattern = HostTensor::Scalar(out.dtype, GetFloat(n.attrs(), "value"));
    int64_t numel = out.numel();
    return [pattern, numel](const KernelArgs& a) {
      cpu::Fill(a.outputs[0], numel, pattern.data(), SizeOf(pattern.type().dtype));
    };
  };
}

OpSample Sample(std::vector<TensorType> inputs, AttrMap attrs) {
  OpSample s;
  s.inputs = std::move(inputs);
  s.attrs = std::move(attrs);
  return s;
}
TensorType F32(Shape s) { return {DType::kF32, std::move(s)}; }

// ---- the ops ------------------------------------------------------------------------------

void RegisterReshape(OpRegistry& r) {
  OpDef d;
  d.name = "reshape";
  d.traits.half_native = true;  // moves elements: any dtype
  d.attrs = {{"shape", std::nullopt}};
  d.doc = "The input's elements in row-major order with a new shape (one -1 is inferred).";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    return {{c.in(0).dtype, ResolveReshape(c.in(0), GetInts(c.attrs, "shape"))}};
  };
  d.grad = [](const GradContext& g) -> std::vector<Value*> {
    return {g.b().Reshape(g.GO(0), g.I(0)->type().shape)};
  };
  d.traits.view = true;
  d.kernels[DeviceKind::kCpu] = CopyFactory();
  d.kernels[DeviceKind::kReference] = CopyFactory();
  d.samples = {Sample({F32({2, 3, 4})}, {{"shape", Shape{6, 4}}}),
               Sample({F32({2, 3, 4})}, {{"shape", Shape{4, -1}}}),
               Sample({F32({1})}, {{"shape", Shape{}}}),
               Sample({F32({})}, {{"shape", Shape{1, 1}}})};
  r.Register(std::move(d));
}

void RegisterPermute(OpRegistry& r) {
  OpDef d;
  d.name = "permute";
  d.traits.half_native = true;  // moves elements: any dtype
  d.attrs = {{"perm", std::nullopt}};
  d.doc = "Reorders the axes: output axis i is input axis perm[i].";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    std::vector<int64_t> perm = CheckedPerm(GetInts(c.attrs, "perm"), c.in(0).rank());
    Shape out;
    for (int64_t p : perm) out.push_back(c.in(0).shape[p]);
    return {{c.in(0).dtype, out}};
  };
  d.grad = [](const GradContext& g) -> std::vector<Value*> {
    std::vector<int64_t> perm = CheckedPerm(GetInts(g.attrs(), "perm"), g.I(0)->type().rank());
    std::vector<int64_t> inverse(perm.size());
    for (size_t i = 0; i < perm.size(); ++i) inverse[perm[i]] = static_cast<int64_t>(i);
    return {g.b().Permute(g.GO(0), inverse)};
  };
  d.kernels[DeviceKind::kCpu] = GatherFactory<PermuteView>(false);
  d.kernels[DeviceKind::kReference] = GatherFactory<PermuteView>(true);
  d.samples = {Sample({F32({2, 3})}, {{"perm", std::vector<int64_t>{1, 0}}}),
               Sample({F32({2, 3, 4})}, {{"perm", std::vector<int64_t>{2, 0, 1}}}),
               Sample({F32({2, 3, 4, 5})}, {{"perm", std::vector<int64_t>{0, 2, -1, 1}}}),
               Sample({F32({33, 17})}, {{"perm", std::vector<int64_t>{1, 0}}})};
  r.Register(std::move(d));
}

void RegisterExpand(OpRegistry& r) {
  OpDef d;
  d.name = "expand";
  d.traits.half_native = true;  // moves elements: any dtype
  d.attrs = {{"shape", std::nullopt}};
  d.doc = "Broadcasts the input to `shape` (numpy rules; -1 keeps a dimension).";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    return {{c.in(0).dtype, ExpandShape(c.in(0).shape, GetInts(c.attrs, "shape"))}};
  };
  d.grad = [](const GradContext& g) -> std::vector<Value*> {
    return {g.b().SumToShape(g.GO(0), g.I(0)->type().shape)};
  };
  d.kernels[DeviceKind::kCpu] = GatherFactory<ExpandView>(false);
  d.kernels[DeviceKind::kReference] = GatherFactory<ExpandView>(true);
  d.samples = {Sample({F32({3, 1})}, {{"shape", Shape{3, 4}}}),
               Sample({F32({4})}, {{"shape", Shape{2, 3, 4}}}),
               Sample({F32({1, 3, 1})}, {{"shape", Shape{2, -1, 5}}}),
               Sample({F32({})}, {{"shape", Shape{2, 2}}})};
  r.Register(std::move(d));
}

std::vector<AttrSpec> SliceAttrs() {
  return {{"axis", std::nullopt},
          {"start", std::nullopt},
          {"end", std::nullopt},
          {"step", Attr(int64_t{1})}};
}

AttrMap SliceAttrMap(int64_t axis, int64_t start, int64_t end, int64_t step) {
  return {{"axis", axis}, {"start", start}, {"end", end}, {"step", step}};
}

void RegisterSlice(OpRegistry& r) {
  OpDef d;
  d.name = "slice";
  d.traits.half_native = true;  // moves elements: any dtype
  d.attrs = SliceAttrs();
  d.doc = "x[..., start:end:step, ...] along `axis` (Python slice semantics, step > 0).";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    SliceRange s = ResolveSlice(c.in(0).shape, c.attrs, "slice");
    Shape out = c.in(0).shape;
    out[s.axis] = s.len;
    return {{c.in(0).dtype, out}};
  };
  d.grad = [](const GradContext& g) -> std::vector<Value*> {
    AttrMap a = g.attrs();
    a["input_shape"] = g.I(0)->type().shape;
    return {g.b().Op1("slice_backward", {g.GO(0)}, a)};
  };
  d.kernels[DeviceKind::kCpu] = GatherFactory<SliceViewOf>(false);
  d.kernels[DeviceKind::kReference] = GatherFactory<SliceViewOf>(true);
  int64_t big = std::numeric_limits<int64_t>::max();
  d.samples = {Sample({F32({5, 4})}, SliceAttrMap(0, 1, 4, 1)),
               Sample({F32({3, 10})}, SliceAttrMap(1, 1, big, 3)),
               Sample({F32({3, 10, 2})}, SliceAttrMap(-2, -7, -1, 2)),
               Sample({F32({6, 3})}, SliceAttrMap(0, -100, 100, 1)),
               Sample({F32({4, 3})}, SliceAttrMap(1, 2, 2, 1))};
  r.Register(std::move(d));
}

void RegisterSliceBackward(OpRegistry& r) {
  OpDef d;
  d.name = "slice_backward";
  d.traits.half_native = true;  // moves elements: any dtype
  d.attrs = SliceAttrs();
  d.attrs.push_back({"input_shape", std::nullopt});
  d.doc = "Zeros of input_shape with the slice (axis, start, end, step) set to the input.";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    Shape full = GetInts(c.attrs, "input_shape");
    SliceRange s = ResolveSlice(full, c.attrs, "slice_backward");
    Shape expected = full;
    expected[s.axis] = s.len;
    TG_CHECK(c.in(0).shape == expected, kShape, "slice_backward: expected a gradient of shape ",
             ShapeToString(expected), ", got ", c.in(0).ToString());
    return {{c.in(0).dtype, full}};
  };
  d.grad = [](const GradContext& g) -> std::vector<Value*> {
    AttrMap a = g.attrs();
    a.erase("input_shape");
    return {g.b().Op1("slice", {g.GO(0)}, a)};
  };
  d.kernels[DeviceKind::kCpu] = SliceBackwardFactory(false);
  d.kernels[DeviceKind::kReference] = SliceBackwardFactory(true);
  auto with_shape = [](AttrMap a, Shape s) {
    a["input_shape"] = std::move(s);
    return a;
  };
  d.samples = {Sample({F32({3, 4})}, with_shape(SliceAttrMap(0, 1, 4, 1), {5, 4})),
               Sample({F32({3, 3})}, with_shape(SliceAttrMap(1, 1, 100, 3), {3, 10})),
               Sample({F32({3, 3, 2})}, with_shape(SliceAttrMap(-2, -7, -1, 2), {3, 10, 2}))};
  r.Register(std::move(d));
}

void RegisterCat(OpRegistry& r) {
  OpDef d;
  d.name = "cat";
  d.traits.half_native = true;  // moves elements: any dtype
  d.num_inputs = -1;
  d.min_inputs = 1;
  d.attrs = {{"axis", Attr(int64_t{0})}};
  d.doc = "Concatenates the inputs along `axis`.";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    const TensorType& first = c.in(0);
    TG_CHECK(first.rank() > 0, kShape, "cat: expected inputs of rank >= 1, got ",
             first.ToString());
    int64_t axis = AxisAttr(GetInt(c.attrs, "axis"), first.rank(), "cat");
    Shape out = first.shape;
    out[axis] = 0;
    for (const TensorType& t : c.inputs) {
      Shape want = first.shape;
      want[axis] = t.rank() == first.rank() ? t.shape[axis] : -1;
      TG_CHECK(t.dtype == first.dtype && t.shape == want, kShape, "cat: expected inputs like ",
               first.ToString(), " except along axis ", axis, ", got ", t.ToString());
      out[axis] += t.shape[axis];
    }
    return {{first.dtype, out}};
  };
  d.grad = [](const GradContext& g) -> std::vector<Value*> {
    const Node& n = g.node();
    int64_t axis = AxisAttr(GetInt(g.attrs(), "axis"), g.I(0)->type().rank(), "cat");
    std::vector<Value*> grads;
    int64_t offset = 0;
    for (Value* in : n.inputs()) {
      int64_t len = in->type().shape[axis];
      grads.push_back(g.b().Op1("slice", {g.GO(0)}, SliceAttrMap(axis, offset, offset + len, 1)));
      offset += len;
    }
    return grads;
  };
  d.kernels[DeviceKind::kCpu] = ConcatFactory(false);
  d.kernels[DeviceKind::kReference] = ConcatFactory(true);
  d.samples = {Sample({F32({2, 3}), F32({1, 3}), F32({4, 3})}, {{"axis", int64_t{0}}}),
               Sample({F32({2, 3, 2}), F32({2, 1, 2}), F32({2, 2, 2})}, {{"axis", int64_t{-2}}}),
               Sample({F32({3})}, {{"axis", int64_t{0}}})};
  r.Register(std::move(d));
}

void RegisterFull(OpRegistry& r) {
  OpDef d;
  d.name = "full";
  d.num_inputs = 0;
  d.attrs = {{"shape", std::nullopt}, {"value", Attr(0.0)}, {"dtype", Attr(DType::kF32)}};
  d.doc = "A tensor of `shape` and `dtype` with every element equal to `value`.";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    Shape shape = GetInts(c.attrs, "shape");
    for (int64_t s : shape) {
      TG_CHECK(s >= 0, kShape, "full: expected sizes >= 0, got ", ShapeToString(shape));
    }
    return {{GetDType(c.attrs, "dtype"), shape}};
  };
  d.not_differentiable = true;
  d.kernels[DeviceKind::kCpu] = FullFactory();
  d.kernels[DeviceKind::kReference] = FullFactory();
  d.samples = {Sample({}, {{"shape", Shape{2, 3}}, {"value", 1.5}}),
               Sample({}, {{"shape", Shape{}}, {"value", -2.0}}),
               Sample({}, {{"shape", Shape{4}}, {"value", 3.0}, {"dtype", DType::kI64}})};
  r.Register(std::move(d));
}

}  // namespace

void RegisterShapeOps(OpRegistry& r) {
  RegisterReshape(r);
  RegisterPermute(r);
  RegisterExpand(r);
  RegisterSlice(r);
  RegisterSliceBackward(r);
  RegisterCat(r);
  RegisterFull(r);
}

}  // namespace tg
