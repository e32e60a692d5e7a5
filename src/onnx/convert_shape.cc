// ONNX shape and data-movement ops: Shape, Size, Constant, ConstantOfShape, Range, Reshape,
// Flatten, Transpose, Squeeze, Unsqueeze, Concat, Split, Slice, Expand, Tile, Pad, OneHot,
// Trilu, DepthToSpace / SpaceToDepth (Resize: convert_resize.cc).
// Sizes and indices must be known at import time (tilegraph compiles static shapes); the
// importer folds the shape arithmetic that produces them.
#include <algorithm>
#include <cmath>
#include <limits>

#include "onnx/converter.h"
#include "onnx/model_file.h"
#include "support/error.h"

namespace tg {
namespace {

using Outs = std::vector<Value*>;
using Ints = std::vector<int64_t>;

Value* ConstantInts(Builder& b, const Ints& v) {
  HostTensor t({DType::kI64, {static_cast<int64_t>(v.size())}});
  std::copy(v.begin(), v.end(), t.as<int64_t>());
  return b.graph().AddConstant(std::move(t));
}

// Axes from the attribute (before `input_from_opset`) or from input `input` (after); `none`
// when absent.
std::optional<Ints> AxesOf(const OnnxNode& n, int64_t input_from_opset, int input) {
  if (n.opset() < input_from_opset)
    return n.has_attr("axes") ? std::optional<Ints>(n.attr_ints("axes")) : std::nullopt;
  return n.has_input(input) ? std::optional<Ints>(n.ints_input(input)) : std::nullopt;
}

Outs Reshape(OnnxNode& n) {
  Builder& b = n.b();
  Value* x = n.input(0);
  Ints shape = n.opset() < 5 ? n.attr_ints("shape") : n.ints_input(1);
  const bool allow_zero = n.attr_int("allowzero", 0) != 0;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 0 && !allow_zero) {
      TG_CHECK(static_cast<int64_t>(i) < RankOf(x), kShape, "Reshape: 0 at position ", i,
               " copies a dimension the input (rank ", RankOf(x), ") does not have");
      shape[i] = x->type().shape[i];
    }
  }
  return {b.Reshape(x, shape)};
}

Outs Flatten(OnnxNode& n) {
  Value* x = n.input(0);
  int64_t axis = n.attr_int("axis", 1);
  if (axis < 0) axis += RankOf(x);
  TG_CHECK(axis >= 0 && axis <= RankOf(x), kInvalidInput, "Flatten: axis out of range");
  int64_t rows = 1, cols = 1;
  for (int64_t i = 0; i < RankOf(x); ++i) (i < axis ? rows : cols) *= x->type().shape[i];
  return {n.b().Reshape(x, {rows, cols})};
}

Outs Squeeze(OnnxNode& n) {
  Value* x = n.input(0);
  const Shape& s = x->type().shape;
  std::optional<Ints> axes = AxesOf(n, 13, 1);
  Shape out;
  for (int64_t i = 0; i < RankOf(x); ++i) {
    bool drop = axes ? std::count(axes->begin(), axes->end(), i) +
                           std::count(axes->begin(), axes->end(), i - RankOf(x)) > 0
                     : s[i] == 1;
    if (drop)
      TG_CHECK(s[i] == 1, kShape, "Squeeze: axis ", i, " has size ", s[i], ", not 1");
    else
      out.push_back(s[i]);
  }
  return {n.b().Reshape(x, out)};
}

Outs Unsqueeze(OnnxNode& n) {
  Value* x = n.input(0);
  Ints axes = *AxesOf(n, 13, 1);
  const int64_t rank = RankOf(x) + static_cast<int64_t>(axes.size());
  axes = NormalizeAxes(n, axes, rank);
  std::sort(axes.begin(), axes.end());
  Shape out = x->type().shape;
  for (int64_t a : axes) out.insert(out.begin() + a, 1);
  return {n.b().Reshape(x, out)};
}

Outs Split(OnnxNode& n) {
  Builder& b = n.b();
  Value* x = n.input(0);
  int64_t axis = n.Axis(n.attr_int("axis", 0), RankOf(x));
  const int64_t dim = x->type().shape[axis];
  Ints sizes = n.opset() < 13 ? n.attr_ints("split") : (n.has_input(1) ? n.ints_input(1) : Ints{});
  if (sizes.empty()) {
    int64_t parts = n.opset() >= 18 && n.has_attr("num_outputs") ? n.attr_int("num_outputs", 1)
                                                                  : n.num_outputs();
    TG_CHECK(parts > 0, kInvalidInput, "Split into ", parts, " parts");
    int64_t each = (dim + parts - 1) / parts;  // the last part may be smaller
    for (int64_t p = 0, left = dim; p < parts; ++p, left -= each) sizes.push_back(std::min(each, left));
  }
  Outs outs;
  int64_t start = 0;
  for (int64_t sz : sizes) {
    TG_CHECK(sz >= 0, kInvalidInput, "Split: size ", sz, " is negative");
    outs.push_back(b.Op1("slice", {x}, {{"axis", axis}, {"start", start}, {"end", start + sz}}));
    start += sz;
  }
  TG_CHECK(start == dim, kShape, "Split sizes add up to ", start, ", the axis has ", dim);
  return outs;
}

// ONNX Slice: per axis start/end clamped by the spec's rules; negative steps pick the
// elements with index_select.
Outs Slice(OnnxNode& n) {
  Builder& b = n.b();
  Value* x = n.input(0);
  Ints starts, ends, axes, steps;
  if (n.opset() < 10) {
    starts = n.attr_ints("starts");
    ends = n.attr_ints("ends");
    axes = n.attr_ints("axes");
  } else {
    starts = n.ints_input(1);
    ends = n.ints_input(2);
    if (n.has_input(3)) axes = n.ints_input(3);
    if (n.has_input(4)) steps = n.ints_input(4);
  }
  if (axes.empty())
    for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  if (steps.empty()) steps.assign(starts.size(), 1);
  TG_CHECK(ends.size() == starts.size() && axes.size() == starts.size() &&
               steps.size() == starts.size(), kInvalidInput, "Slice: starts, ends, axes and steps "
           "differ in length");
  Value* y = x;
  for (size_t i = 0; i < starts.size(); ++i) {
    int64_t axis = n.Axis(axes[i], RankOf(x));
    const int64_t dim = x->type().shape[axis];
    int64_t step = steps[i];
    TG_CHECK(step != 0, kInvalidInput, "Slice: step 0");
    auto norm = [&](int64_t v) { return v < 0 ? v + dim : v; };
    int64_t start = norm(std::clamp<int64_t>(starts[i], -dim - 1, dim + 1));
    int64_t end = norm(std::clamp<int64_t>(ends[i], -dim - 1, dim + 1));
    if (step > 0) {
      start = std::clamp<int64_t>(start, 0, dim);
      end = std::clamp<int64_t>(end, 0, dim);
      if (start == 0 && end == dim && step == 1) continue;
      y = b.Op1("slice", {y}, {{"axis", axis}, {"start", start}, {"end", std::max(start, end)},
                               {"step", step}});
    } else {
      start = std::clamp<int64_t>(start, 0, dim - 1);
      end = std::clamp<int64_t>(end, -1, dim - 1);
      Ints picks;
      for (int64_t k = start; k > end; k += step) picks.push_back(k);
      y = b.Op1("index_select", {y, ConstantInts(b, picks)}, {{"axis", axis}});
    }
  }
  return {y == x ? b.Op1("copy", {x}) : y};
}

Outs Expand(OnnxNode& n) {
  Value* x = n.input(0);
  Shape target = BroadcastShapes(x->type().shape, n.ints_input(1));
  return {n.b().Expand(x, target)};
}

// Tile: x viewed as [1, d0, 1, d1, ...], broadcast to [r0, d0, r1, d1, ...], flattened pairwise.
Outs Tile(OnnxNode& n) {
  Builder& b = n.b();
  Value* x = n.input(0);
  Ints reps = n.ints_input(1);
  const Shape& s = x->type().shape;
  TG_CHECK(static_cast<int64_t>(reps.size()) == RankOf(x), kInvalidInput,
           "Tile: ", reps.size(), " repeats for rank ", RankOf(x));
  Shape view, wide, out;
  for (size_t i = 0; i < s.size(); ++i) {
    view.insert(view.end(), {1, s[i]});
    wide.insert(wide.end(), {reps[i], s[i]});
    out.push_back(reps[i] * s[i]);
  }
  return {b.Reshape(b.Expand(b.Reshape(x, view), wide), out)};
}

Outs Pad(OnnxNode& n) {
  Builder& b = n.b();
  Value* x = n.input(0);
  std::string mode = n.attr_string("mode", "constant");
  if (mode != "constant" && mode != "edge" && mode != "reflect" && mode != "wrap")
    n.Unsupported("mode '" + mode + "'");
  const int64_t r = RankOf(x);
  Ints pads = n.opset() < 11 ? n.attr_ints("pads") : n.ints_input(1);
  // The constant value: known at import, or (a value computed at run time) filled in after.
  Value* runtime_value = nullptr;
  double value = 0.0;
  if (n.opset() < 11) value = n.attr_float("value", 0.0);
  else if (n.has_input(2) && n.constant(2)) value = n.floats_input(2).at(0);
  else if (n.has_input(2)) runtime_value = n.input(2);
  Ints axes;
  if (n.opset() >= 18 && n.has_input(3)) axes = NormalizeAxes(n, n.ints_input(3), r);
  else for (int64_t a = 0; a < r; ++a) axes.push_back(a);
  TG_CHECK(pads.size() == 2 * axes.size(), kInvalidInput, "Pad: ", pads.size(),
           " pads for ", axes.size(), " axes");
  Ints before(r, 0), after(r, 0);
  for (size_t i = 0; i < axes.size(); ++i) {
    before[axes[i]] = pads[i];
    after[axes[i]] = pads[axes.size() + i];
  }
  if (mode == "constant") {
    Value* y = b.Op1("pad", {x}, {{"before", before}, {"after", after}, {"value", value}});
    if (runtime_value == nullptr) return {y};
    Value* inside = b.Op1("pad", {b.Full(x->type().shape, 1.0, DType::kBool)},
                          {{"before", before}, {"after", after}, {"value", 0.0}});
    return {b.Where(inside, y, b.Reshape(runtime_value, {}))};
  }
  // edge / reflect / wrap: each padded axis gathers source positions (differentiable).
  Value* y = x;
  for (int64_t a = 0; a < r; ++a) {
    if (before[a] == 0 && after[a] == 0) continue;
    const int64_t dim = x->type().shape[a];
    TG_CHECK(dim > 0 && (mode != "reflect" || dim > 1 || before[a] + after[a] == 0), kShape,
             "Pad: mode '", mode, "' needs a longer axis ", a, " (size ", dim, ")");
    Ints picks;
    for (int64_t i = -before[a]; i < dim + after[a]; ++i) {
      int64_t k = i;
      if (mode == "edge") {
        k = std::clamp<int64_t>(i, 0, dim - 1);
      } else if (mode == "wrap") {
        k = ((i % dim) + dim) % dim;
      } else {  // reflect about the first and last elements (not repeating them)
        const int64_t period = 2 * (dim - 1);
        k = ((i % period) + period) % period;
        if (k >= dim) k = period - k;
      }
      picks.push_back(k);
    }
    y = b.Op1("index_select", {y, ConstantInts(b, picks)}, {{"axis", a}});
  }
  return {y};
}

HostTensor TensorFromAttr(const OnnxNode& n) {
  if (const onnx::TensorProto* t = n.attr_tensor("value")) return TensorFromProto(*t);
  if (n.has_attr("value_float")) return HostTensor::Scalar(DType::kF32, n.attr_float("value_float", 0));
  if (n.has_attr("value_int")) return HostTensor::Scalar(DType::kI64, static_cast<double>(n.attr_int("value_int", 0)));
  auto vector = [](DType d, const auto& v) {
    HostTensor t({d, {static_cast<int64_t>(v.size())}});
    for (size_t i = 0; i < v.size(); ++i) t.SetFromDouble(i, static_cast<double>(v[i]));
    return t;
  };
  if (n.has_attr("value_floats")) return vector(DType::kF32, n.attr_floats("value_floats"));
  if (n.has_attr("value_ints")) return vector(DType::kI64, n.attr_ints("value_ints"));
  n.Unsupported("a Constant without a tensor, float or int value");
}

Outs Range(OnnxNode& n) {
  // The bounds must be known at import (floats_input says so otherwise).
  double s = n.floats_input(0).at(0), l = n.floats_input(1).at(0), d = n.floats_input(2).at(0);
  const HostTensor* start = n.constant(0);
  TG_CHECK(d != 0, kInvalidInput, "Range: delta 0");
  const double steps = std::ceil((l - s) / d);
  // Built on the host at import: bounded so that a hostile model cannot ask for terabytes.
  TG_CHECK(std::isfinite(steps) && steps <= double{1 << 28}, kInvalidInput, "Range of ", steps,
           " elements (", s, " to ", l, " by ", d, ") is more than tilegraph builds at import");
  int64_t count = std::max<int64_t>(static_cast<int64_t>(steps), 0);
  HostTensor t({start->type().dtype, {count}});
  for (int64_t i = 0; i < count; ++i) t.SetFromDouble(i, s + static_cast<double>(i) * d);
  return {n.b().graph().AddConstant(std::move(t))};
}

Outs OneHot(OnnxNode& n) {
  Builder& b = n.b();
  Value* idx = n.input(0);
  const double depth_value = n.floats_input(1).at(0);
  // The classes are built on the host at import: bounded as Range's are.
  TG_CHECK(std::isfinite(depth_value) && depth_value >= 1 && depth_value <= double{1 << 28},
           kInvalidInput, "OneHot: depth ", depth_value, " (tilegraph builds 1 to 2^28 classes)");
  const int64_t depth = static_cast<int64_t>(depth_value);
  Value* values = n.input(2);
  const int64_t rank = RankOf(idx) + 1;
  int64_t axis = n.Axis(n.attr_int("axis", -1), rank);
  Value* i64 = b.Cast(idx, DType::kI64);
  // Negative indices count from the end.
  i64 = b.Where(b.Op1("lt", {i64, b.Scalar(0, DType::kI64)}), b.AddScalar(i64, depth), i64);
  Shape idx_shape = i64->type().shape;
  idx_shape.insert(idx_shape.begin() + axis, 1);
  Ints classes(depth);
  for (int64_t c = 0; c < depth; ++c) classes[c] = c;
  Shape class_shape(rank, 1);
  class_shape[axis] = depth;
  Value* hot = b.Op1("eq", {b.Reshape(i64, idx_shape), b.Reshape(ConstantInts(b, classes), class_shape)});
  Value* off = b.Reshape(b.Op1("slice", {values}, {{"axis", int64_t{0}}, {"start", int64_t{0}}, {"end", int64_t{1}}}), {});
  Value* on = b.Reshape(b.Op1("slice", {values}, {{"axis", int64_t{0}}, {"start", int64_t{1}}, {"end", int64_t{2}}}), {});
  return {b.Where(hot, on, off)};
}

Outs Trilu(OnnxNode& n) {
  const int64_t k = n.has_input(1) ? n.ints_input(1).at(0) : 0;
  const bool upper = n.attr_int("upper", 1) != 0;
  return {n.b().Op1("triangle", {n.input(0)}, {{"upper", upper}, {"diagonal", k}})};
}

// DepthToSpace / SpaceToDepth by reshape and permute (DCR and CRD orders).
Outs DepthToSpace(OnnxNode& n) {
  Builder& b = n.b();
  Value* x = n.input(0);
  const int64_t bs = n.attr_int("blocksize", 1);
  const Shape& s = x->type().shape;
  const int64_t N = s[0], C = s[1], H = s[2], W = s[3], c = C / (bs * bs);
  Value* y;
  if (n.attr_string("mode", "DCR") == "DCR")
    y = b.Permute(b.Reshape(x, {N, bs, bs, c, H, W}), {0, 3, 4, 1, 5, 2});
  else
    y = b.Permute(b.Reshape(x, {N, c, bs, bs, H, W}), {0, 1, 4, 2, 5, 3});
  return {b.Reshape(y, {N, c, H * bs, W * bs})};
}

Outs SpaceToDepth(OnnxNode& n) {
  Builder& b = n.b();
  Value* x = n.input(0);
  const int64_t bs = n.attr_int("blocksize", 1);
  const Shape& s = x->type().shape;
  const int64_t N = s[0], C = s[1], H = s[2], W = s[3];
  Value* r = b.Reshape(x, {N, C, H / bs, bs, W / bs, bs});
  Value* y = n.attr_string("mode", "DCR") == "CRD" ? b.Permute(r, {0, 1, 3, 5, 2, 4})
                                                   : b.Permute(r, {0, 3, 5, 1, 2, 4});
  return {b.Reshape(y, {N, C * bs * bs, H / bs, W / bs})};
}

}  // namespace

void AddShapeConverters(OnnxConverterTable& t) {
  t["Shape"] = [](OnnxNode& n) -> Outs {
    const Shape& s = n.input(0)->type().shape;
    const int64_t r = static_cast<int64_t>(s.size());
    int64_t start = std::clamp<int64_t>(n.attr_int("start", 0), -r, r);
    int64_t end = std::clamp<int64_t>(n.attr_int("end", r), -r, r);
    if (start < 0) start += r;
    if (end < 0) end += r;
    return {ConstantInts(n.b(), Ints(s.begin() + start, s.begin() + std::max(start, end)))};
  };
  t["Size"] = [](OnnxNode& n) -> Outs {
    return {n.b().graph().AddConstant(
        HostTensor::Scalar(DType::kI64, static_cast<double>(n.input(0)->type().numel())))};
  };
  t["Constant"] = [](OnnxNode& n) -> Outs { return {n.b().graph().AddConstant(TensorFromAttr(n))}; };
  t["ConstantOfShape"] = [](OnnxNode& n) -> Outs {
    Shape shape = n.ints_input(0);
    const onnx::TensorProto* v = n.attr_tensor("value");
    HostTensor value = v ? TensorFromProto(*v) : HostTensor::Scalar(DType::kF32, 0.0);
    TG_CHECK(value.type().numel() == 1, kInvalidInput, "ConstantOfShape: value has ",
             value.type().numel(), " elements, expected 1");
    return {n.b().Full(shape, value.GetAsDouble(0), value.type().dtype)};
  };
  t["Range"] = Range;
  t["EyeLike"] = [](OnnxNode& n) -> Outs {
    Value* x = n.input(0);
    const Shape& s = x->type().shape;
    TG_CHECK(s.size() == 2, kShape, "EyeLike: expected a 2-D input");
    DType d = x->type().dtype;
    if (n.has_attr("dtype")) {
      std::optional<DType> t = DTypeFromOnnx(static_cast<int>(n.attr_int("dtype", 1)));
      if (!t) n.Unsupported("dtype " + OnnxTypeName(static_cast<int>(n.attr_int("dtype", 1))));
      d = *t;
    }
    const int64_t k = n.attr_int("k", 0);
    HostTensor eye({d, s});
    for (int64_t i = 0; i < s[0]; ++i)
      if (i + k >= 0 && i + k < s[1]) eye.SetFromDouble(i * s[1] + i + k, 1.0);
    return {n.b().graph().AddConstant(std::move(eye))};
  };
  t["NonZero"] = [](OnnxNode& n) -> Outs {  // data-dependent size: only of known values
    const HostTensor* c = n.constant(0);
    if (c == nullptr) n.Unsupported("NonZero of values computed at run time (its size depends on them)");
    const Shape& s = c->type().shape;
    std::vector<int64_t> hits;
    for (int64_t i = 0; i < c->type().numel(); ++i)
      if (c->GetAsDouble(i) != 0) hits.push_back(i);
    const int64_t rank = static_cast<int64_t>(s.size()), count = static_cast<int64_t>(hits.size());
    HostTensor out({DType::kI64, {rank, count}});
    for (int64_t h = 0; h < count; ++h) {
      int64_t rem = hits[h];
      for (int64_t a = rank - 1; a >= 0; --a) {
        out.as<int64_t>()[a * count + h] = rem % s[a];
        rem /= s[a];
      }
    }
    return {n.b().graph().AddConstant(std::move(out))};
  };
  t["Reshape"] = Reshape;
  t["Flatten"] = Flatten;
  t["Transpose"] = [](OnnxNode& n) -> Outs {
    Value* x = n.input(0);
    Ints perm = n.attr_ints("perm");
    if (perm.empty())
      for (int64_t i = RankOf(x) - 1; i >= 0; --i) perm.push_back(i);
    return {n.b().Permute(x, NormalizeAxes(n, perm, RankOf(x)))};
  };
  t["Squeeze"] = Squeeze;
  t["Unsqueeze"] = Unsqueeze;
  t["Concat"] = [](OnnxNode& n) -> Outs {
    int64_t axis = n.Axis(n.attr_int("axis", 0), RankOf(n.input(0)));
    return {n.b().Op1("cat", n.inputs(), {{"axis", axis}})};
  };
  t["Split"] = Split;
  t["Slice"] = Slice;
  t["Expand"] = Expand;
  t["Tile"] = Tile;
  t["Pad"] = Pad;
  t["OneHot"] = OneHot;
  t["Trilu"] = Trilu;
  t["DepthToSpace"] = DepthToSpace;
  t["SpaceToDepth"] = SpaceToDepth;
}

}  // namespace tg
