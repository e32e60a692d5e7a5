// Reduce op family: sum, mean, amax, var over a list of axes (empty = all, negative allowed,
// optional keepdim) and argmax over one axis. Kernels: kernels/cpu/reduce_kernels.h; when the
// reduced axes are not one contiguous block the fast kernel permutes them to the end first.
#include <cstring>

#include "kernels/cpu/reduce_kernels.h"
#include "kernels/cpu/shape_kernels.h"
#include "ops/axes_util.h"
#include "ops/builder.h"
#include "ops/dispatch.h"
#include "ops/families.h"
#include "support/error.h"

namespace tg {
namespace {

enum class ReduceKind { kSum, kMean, kAmax, kVar };

// How the fast kernel runs one reduction: optionally permute (kept axes first, reduced axes
// last) into a scratch buffer, then reduce [outer, reduce, inner].
struct ReducePlan {
  bool permute = false;
  cpu::StridedView view;
  cpu::ReduceDims dims;
  cpu::ReduceShape ref;
};

// outer_reduce_ok: the kernel takes ReduceDims::reduce_outer (sum, mean, amax).
ReducePlan PlanReduce(const TensorType& t, const std::vector<int64_t>& axes,
                      bool outer_reduce_ok) {
  ReducePlan plan;
  plan.ref.shape = t.shape;
  plan.ref.reduced.assign(t.shape.size(), false);
  for (int64_t a : axes) plan.ref.reduced[a] = true;
  // Groups of consecutive non-trivial axes of the same kind.
  std::vector<std::pair<int64_t, bool>> groups;
  for (size_t d = 0; d < t.shape.size(); ++d) {
    if (t.shape[d] == 1) continue;
    bool red = plan.ref.reduced[d];
    if (!groups.empty() && groups.back().second == red) groups.back().first *= t.shape[d];
    else groups.push_back({t.shape[d], red});
  }
  int reduced_groups = 0;
  for (auto& g : groups) reduced_groups += g.second;
  if (outer_reduce_ok && groups.size() == 3 && groups[0].second && groups[2].second) {
    // [reduced, kept, reduced] (a bias gradient: [N, C, H*W] -> [C]): no permuting copy
    plan.dims.reduce_outer = groups[0].first;
    plan.dims.outer = groups[1].first;
    plan.dims.reduce = groups[2].first;
    return plan;
  }
  if (reduced_groups <= 1) {
    bool seen = false;
    for (auto& [size, red] : groups) {
      if (red) {
        plan.dims.reduce = size;
        seen = true;
      } else {
        (seen ? plan.dims.inner : plan.dims.outer) *= size;
      }
    }
    return plan;
  }
  plan.permute = true;
  std::vector<int64_t> strides = ContiguousStrides(t.shape);
  plan.view.elem_size = SizeOf(t.dtype);
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t d = 0; d < t.shape.size(); ++d) {
      if (plan.ref.reduced[d] != (pass == 1)) continue;
      plan.view.shape.push_back(t.shape[d]);
      plan.view.strides.push_back(strides[d]);
      (pass == 0 ? plan.dims.outer : plan.dims.reduce) *= t.shape[d];
    }
  }
  return plan;
}

template <typename T>
void RunFast(ReduceKind kind, const T* in, T* out, const cpu::ReduceDims& d, double corr) {
  switch (kind) {
    case ReduceKind::kSum: cpu::Sum(in, out, d); break;
    case ReduceKind::kAmax: cpu::Amax(in, out, d); break;
    case ReduceKind::kMean:
    case ReduceKind::kVar:
      if constexpr (std::is_floating_point_v<T>) {
        if (kind == ReduceKind::kMean) cpu::Mean(in, out, d);
        else cpu::Var(in, out, d, corr);
      }
      break;
  }
}

template <typename T>
void RunRef(ReduceKind kind, const T* in, T* out, const cpu::ReduceShape& s, double corr) {
  switch (kind) {
    case ReduceKind::kSum: cpu::SumRef(in, out, s); break;
    case ReduceKind::kAmax: cpu::AmaxRef(in, out, s); break;
    case ReduceKind::kMean:
    case ReduceKind::kVar:
      if constexpr (std::is_floating_point_v<T>) {
        if (kind == ReduceKind::kMean) cpu::MeanRef(in, out, s);
        else cpu::VarRef(in, out, s, corr);
      }
      break;
  }
}

// Calls fn(T{}) for the dtypes the reduce kernels support.
template <typename Fn>
void DispatchReduce(DType dtype, const std::string& op, Fn&& fn) {
  switch (dtype) {
    case DType::kI32: fn(int32_t{}); break;
    case DType::kI64: fn(int64_t{}); break;
    default: DispatchFloat(dtype, op, fn);
  }
}

KernelFactory ReduceFactory(ReduceKind kind, bool reference) {
  return [kind, reference](const Node& n) -> Kernel {
    const TensorType& in = n.input(0)->type();
    std::vector<int64_t> axes = NormalizeAxes(GetInts(n.attrs(), "axes"), in.rank(), n.op());
    double corr = kind == ReduceKind::kVar ? GetFloat(n.attrs(), "correction") : 0.0;
    ReducePlan plan = PlanReduce(in, axes, kind != ReduceKind::kVar);
    DType dtype = in.dtype;
    std::string op = n.op();
    return [=](const KernelArgs& a) {
      DispatchReduce(dtype, op, [&](auto t) {
        using T = decltype(t);
        const T* x = static_cast<const T*>(a.inputs[0]);
        T* y = static_cast<T*>(a.outputs[0]);
        if (reference) return RunRef(kind, x, y, plan.ref, corr);
        if (!plan.permute) return RunFast(kind, x, y, plan.dims, corr);
        std::vector<T> scratch(plan.dims.outer * plan.dims.reduce);
        if (!scratch.empty()) cpu::StridedGather(plan.view, x, scratch.data());
        RunFast(kind, scratch.data(), y, plan.dims, corr);
      });
    };
  };
}

std::vector<TensorType> InferReduce(const InferContext& c, const std::string& op,
                                    bool float_only) {
  const TensorType& x = c.in(0);
  if (float_only) {
    TG_CHECK(x.dtype == DType::kF32 || x.dtype == DType::kF64, kShape, op,
             ": expected an f32 or f64 input, got ", x.ToString());
  } else {
    TG_CHECK(x.dtype != DType::kBool && x.dtype != DType::kF16 && x.dtype != DType::kBF16,
             kShape, op, ": expected an f32, f64, i32 or i64 input, got ", x.ToString());
  }
  std::vector<int64_t> axes = NormalizeAxes(GetInts(c.attrs, "axes"), x.rank(), op);
  return {{x.dtype, ReducedShape(x.shape, axes, GetBool(c.attrs, "keepdim"))}};
}

// Axes and keepdim-shape of a reduce node, for gradient rules.
struct GradAxes {
  std::vector<int64_t> axes;
  Shape kept;  // the output shape with keepdim
  int64_t count = 1;
};
GradAxes AxesOf(const GradContext& g) {
  const TensorType& x = g.I(0)->type();
  GradAxes r;
  r.axes = NormalizeAxes(GetInts(g.attrs(), "axes"), x.rank(), g.node().op());
  r.kept = ReducedShape(x.shape, r.axes, true);
  for (int64_t a : r.axes) r.count *= x.shape[a];
  return r;
}

// GO broadcast back to the input's shape.
Value* ExpandGrad(const GradContext& g, const GradAxes& ax) {
  Builder& b = g.b();
  return b.Expand(b.Reshape(g.GO(0), ax.kept), g.I(0)->type().shape);
}

OpSample Sample(Shape shape, std::vector<int64_t> axes, bool keepdim, AttrMap extra = {},
                InputInit init = InputInit::Normal()) {
  OpSample s;
  s.inputs = {{DType::kF32, std::move(shape)}};
  s.attrs = std::move(extra);
  s.attrs["axes"] = std::move(axes);
  s.attrs["keepdim"] = keepdim;
  s.init = {init};
  return s;
}

std::vector<OpSample> ReduceSamples(InputInit init = InputInit::Normal()) {
  // The last three are large (parallel, strided and outer-and-inner kernel paths): kernel
  // check only.
  std::vector<OpSample> samples = {Sample({3, 4}, {}, false, {}, init),
          Sample({2, 3, 4}, {1}, false, {}, init),
          Sample({2, 3, 4}, {-1}, true, {}, init),
          Sample({2, 3, 4, 2}, {0, 2}, true, {}, init),
          Sample({2, 3, 4}, {0, -1}, false, {}, init),
          Sample({5}, {0}, false, {}, init),
          Sample({1, 3, 1}, {0, 2}, false, {}, init),
          Sample({40, 130}, {0}, false, {}, init),
          Sample({3, 700}, {1}, true, {}, init),
          Sample({5, 6, 2, 333}, {0, 2, 3}, false, {}, init)};
  for (size_t i = samples.size() - 3; i < samples.size(); ++i) samples[i].skip_grad_check = true;
  return samples;
}

OpDef ReduceDef(const std::string& name, ReduceKind kind, bool float_only) {
  OpDef d;
  d.name = name;
  d.attrs = {{"axes", Attr(std::vector<int64_t>{})}, {"keepdim", Attr(false)}};
  d.infer = [name, float_only](const InferContext& c) { return InferReduce(c, name, float_only); };
  d.kernels[DeviceKind::kCpu] = ReduceFactory(kind, false);
  d.kernels[DeviceKind::kReference] = ReduceFactory(kind, true);
  d.samples = ReduceSamples();
  return d;
}

void RegisterArgmax(OpRegistry& r) {
  OpDef d;
  d.name = "argmax";
  d.attrs = {{"axis", std::nullopt}, {"keepdim", Attr(false)}};
  d.doc = "Index (i64) of the first maximum along `axis`.";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    const TensorType& x = c.in(0);
    TG_CHECK(x.dtype != DType::kBool && x.dtype != DType::kF16 && x.dtype != DType::kBF16,
             kShape, "argmax: expected an f32, f64, i32 or i64 input, got ", x.ToString());
    int64_t axis = AxisAttr(GetInt(c.attrs, "axis"), x.rank(), "argmax");
    std::vector<int64_t> axes;
    if (x.rank() > 0) axes.push_back(axis);
    return {{DType::kI64, ReducedShape(x.shape, axes, GetBool(c.attrs, "keepdim"))}};
  };
  d.not_differentiable = true;
  auto factory = [](bool reference) -> KernelFactory {
    return [reference](const Node& n) -> Kernel {
      const TensorType& x = n.input(0)->type();
      int64_t axis = AxisAttr(GetInt(n.attrs(), "axis"), x.rank(), "argmax");
      AxisSplit s = x.rank() > 0 ? SplitAt(x.shape, axis) : AxisSplit{};
      cpu::ReduceDims dims{s.outer, s.dim, s.inner};
      DType dtype = x.dtype;
      return [=](const KernelArgs& a) {
        DispatchReduce(dtype, "argmax", [&](auto t) {
          using T = decltype(t);
          const T* in = static_cast<const T*>(a.inputs[0]);
          int64_t* out = static_cast<int64_t*>(a.outputs[0]);
          if (reference) cpu::ArgmaxRef(in, out, dims);
          else cpu::Argmax(in, out, dims);
        });
      };
    };
  };
  d.kernels[DeviceKind::kCpu] = factory(false);
  d.kernels[DeviceKind::kReference] = factory(true);
  auto sample = [](Shape shape, int64_t axis, bool keepdim) {
    OpSample s;
    s.inputs = {{DType::kF32, std::move(shape)}};
    s.attrs = {{"axis", axis}, {"keepdim", keepdim}};
    return s;
  };
  d.samples = {sample({3, 5}, 1, false), sample({4, 3, 2}, 0, true), sample({2, 6, 3}, -2, false),
               sample({7}, 0, false), sample({64, 300}, 1, false)};
  r.Register(std::move(d));
}

}  // namespace

void RegisterReduceOps(OpRegistry& r) {
  OpDef sum = ReduceDef("sum", ReduceKind::kSum, false);
  sum.doc = "Sum over `axes` (empty: all axes).";
  sum.grad = [](const GradContext& g) -> std::vector<Value*> {
    return {ExpandGrad(g, AxesOf(g))};
  };
  r.Register(std::move(sum));

  OpDef mean = ReduceDef("mean", ReduceKind::kMean, true);
  mean.doc = "Mean over `axes` (empty: all axes).";
  mean.grad = [](const GradContext& g) -> std::vector<Value*> {
    GradAxes ax = AxesOf(g);
    return {g.b().MulScalar(ExpandGrad(g, ax), 1.0 / static_cast<double>(ax.count))};
  };
  r.Register(std::move(mean));

  OpDef amax = ReduceDef("amax", ReduceKind::kAmax, false);
  amax.doc = "Maximum over `axes` (empty: all axes); the gradient is split evenly among ties.";
  amax.grad = [](const GradContext& g) -> std::vector<Value*> {
    Builder& b = g.b();
    GradAxes ax = AxesOf(g);
    Value* x = g.I(0);
    Value* max = b.Expand(b.Reshape(g.O(0), ax.kept), x->type().shape);
    Value* mask = b.Cast(b.Op1("eq", {x, max}), x->type().dtype);
    Value* count = b.Sum(mask, ax.axes, /*keepdim=*/true);
    return {b.Div(b.Mul(ExpandGrad(g, ax), mask), count)};
  };
  amax.samples = ReduceSamples(InputInit::Uniform(-2, 2));
  r.Register(std::move(amax));

  OpDef var = ReduceDef("var", ReduceKind::kVar, true);
  var.attrs.push_back({"correction", Attr(1.0)});
  var.doc = "Variance over `axes` dividing by N - correction (correction=1: unbiased).";
  var.grad = [](const GradContext& g) -> std::vector<Value*> {
    Builder& b = g.b();
    GradAxes ax = AxesOf(g);
    Value* x = g.I(0);
    Value* centered = b.Sub(x, b.Mean(x, ax.axes, /*keepdim=*/true));
    double scale = 2.0 / (static_cast<double>(ax.count) - GetFloat(g.attrs(), "correction"));
    return {b.MulScalar(b.Mul(centered, b.Reshape(g.GO(0), ax.kept)), scale)};
  };
  var.samples = ReduceSamples();
  var.samples.erase(var.samples.begin() + 6);  // a single element: N - correction = 0
  var.samples.push_back(Sample({4, 5}, {1}, false, {{"correction", 0.0}}));
  r.Register(std::move(var));

  RegisterArgmax(r);
}

}  // namespace tg
