// ONNX reductions: ReduceSum / Mean / Max / Min / Prod / L1 / L2 / SumSquare / LogSumExp,
// ArgMax / ArgMin, TopK, CumSum.
#include <algorithm>

#include "onnx/converter.h"
#include "support/error.h"

namespace tg {
namespace {

using Outs = std::vector<Value*>;
using Ints = std::vector<int64_t>;

// The reduced axes: from the attribute before `input_opset`, from input 1 after; empty
// means all axes unless noop_with_empty_axes (then none: the op is the identity).
struct Reduction {
  Ints axes;
  bool keepdim = true;
  bool noop = false;
};

Reduction ReductionOf(const OnnxNode& n, int64_t input_opset) {
  Reduction r;
  Value* x = n.input(0);
  if (n.opset() < input_opset) r.axes = n.attr_ints("axes");
  else if (n.has_input(1)) r.axes = n.ints_input(1);
  r.axes = NormalizeAxes(n, r.axes, RankOf(x));
  r.keepdim = n.attr_int("keepdims", 1) != 0;
  r.noop = r.axes.empty() && n.attr_int("noop_with_empty_axes", 0) != 0;
  if (r.axes.empty())
    for (int64_t a = 0; a < RankOf(x); ++a) r.axes.push_back(a);
  return r;
}

Value* Reduce(Builder& b, const std::string& op, Value* x, const Reduction& r) {
  return b.Op1(op, {x}, {{"axes", r.axes}, {"keepdim", r.keepdim}});
}

// Shape after reducing r.axes (kept as 1 or removed).
Shape ReducedShape(Value* x, const Reduction& r) {
  Shape out;
  for (int64_t a = 0; a < RankOf(x); ++a) {
    bool reduced = std::count(r.axes.begin(), r.axes.end(), a) > 0;
    if (!reduced) out.push_back(x->type().shape[a]);
    else if (r.keepdim) out.push_back(1);
  }
  return out;
}

using ReduceFn = Value* (*)(Builder&, Value*, const Reduction&);

OnnxConverter Reducer(int64_t input_opset, ReduceFn fn) {
  return [input_opset, fn](OnnxNode& n) -> Outs {
    Reduction r = ReductionOf(n, input_opset);
    if (r.noop) return {n.input(0)};
    return {fn(n.b(), n.input(0), r)};
  };
}

// Max over the axes (bools through i32: any).
Value* Amax(Builder& b, Value* x, const Reduction& r) {
  if (x->type().dtype == DType::kBool)
    return b.Cast(Reduce(b, "amax", b.Cast(x, DType::kI32), r), DType::kBool);
  return Reduce(b, "amax", x, r);
}

// Min over the axes: -max(-x) (bools: not any(not x)).
Value* Amin(Builder& b, Value* x, const Reduction& r) {
  if (x->type().dtype == DType::kBool)
    return b.Op1("logical_not", {Amax(b, b.Op1("logical_not", {x}), r)});
  return b.Neg(Reduce(b, "amax", b.Neg(x), r));
}

Value* Prod(Builder& b, Value* x, const Reduction& r) {
  Ints axes = r.axes;
  std::sort(axes.rbegin(), axes.rend());
  Value* y = x;
  for (int64_t a : axes) y = b.Op1("prod", {y}, {{"axis", a}});
  return b.Reshape(y, ReducedShape(x, r));
}

Value* LogSumExp(Builder& b, Value* x, const Reduction& r) {
  Reduction keep = r;
  keep.keepdim = true;
  Value* m = Reduce(b, "amax", x, keep);
  // A row of -inf (or with +inf) shifts by 0: log-sum-exp is then -inf (or inf), not NaN.
  Value* finite = b.Op1("eq", {b.Sub(m, m), ScalarLike(b, m, 0.0)});
  Value* shift = b.Where(finite, m, ScalarLike(b, m, 0.0));
  Value* y = b.Add(b.Log(Reduce(b, "sum", b.Exp(b.Sub(x, shift)), keep)), shift);
  return r.keepdim ? y : b.Reshape(y, ReducedShape(x, r));
}

Outs ArgReduce(OnnxNode& n, bool max) {
  Builder& b = n.b();
  Value* x = n.input(0);
  int64_t axis = n.Axis(n.attr_int("axis", 0), RankOf(x));
  const bool keepdim = n.attr_int("keepdims", 1) != 0;
  Value* src = max ? x : b.Neg(x);
  if (n.attr_int("select_last_index", 0) == 0)
    return {b.Op1("argmax", {src}, {{"axis", axis}, {"keepdim", keepdim}})};
  // The last extremum: the first one of the reversed axis, counted from the end.
  const int64_t dim = x->type().shape[axis];
  HostTensor reversed({DType::kI64, {dim}});
  for (int64_t i = 0; i < dim; ++i) reversed.as<int64_t>()[i] = dim - 1 - i;
  Value* flipped = b.Op1("index_select", {src, b.graph().AddConstant(std::move(reversed))},
                         {{"axis", axis}});
  Value* first = b.Op1("argmax", {flipped}, {{"axis", axis}, {"keepdim", keepdim}});
  return {b.Sub(b.Scalar(static_cast<double>(dim - 1), DType::kI64), first)};
}

}  // namespace

void AddReduceConverters(OnnxConverterTable& t) {
  t["ReduceSum"] = Reducer(13, [](Builder& b, Value* x, const Reduction& r) { return Reduce(b, "sum", x, r); });
  t["ReduceMean"] = Reducer(18, [](Builder& b, Value* x, const Reduction& r) { return Reduce(b, "mean", x, r); });
  t["ReduceMax"] = Reducer(18, Amax);
  t["ReduceMin"] = Reducer(18, Amin);
  t["ReduceProd"] = Reducer(18, Prod);
  t["ReduceL1"] = Reducer(18, [](Builder& b, Value* x, const Reduction& r) {
    return Reduce(b, "sum", b.Op1("abs", {x}), r);
  });
  t["ReduceL2"] = Reducer(18, [](Builder& b, Value* x, const Reduction& r) {
    return b.Sqrt(Reduce(b, "sum", b.Mul(x, x), r));
  });
  t["ReduceSumSquare"] = Reducer(18, [](Builder& b, Value* x, const Reduction& r) {
    return Reduce(b, "sum", b.Mul(x, x), r);
  });
  t["ReduceLogSumExp"] = Reducer(18, LogSumExp);
  t["ReduceLogSum"] = Reducer(18, [](Builder& b, Value* x, const Reduction& r) {
    return b.Log(Reduce(b, "sum", x, r));
  });
  t["ArgMax"] = [](OnnxNode& n) { return ArgReduce(n, true); };
  t["ArgMin"] = [](OnnxNode& n) { return ArgReduce(n, false); };
  t["TopK"] = [](OnnxNode& n) -> Outs {
    Value* x = n.input(0);
    int64_t k = n.opset() < 10 ? n.attr_int("k", 1) : n.ints_input(1).at(0);
    int64_t axis = n.Axis(n.attr_int("axis", -1), RankOf(x));
    // sorted=0 allows any order; tilegraph's sorted result is one of them.
    std::vector<Value*> r = n.b().Op("topk", {x}, {{"k", k}, {"axis", axis},
                                                   {"largest", n.attr_int("largest", 1)}});
    return {r[0], r[1]};
  };
  t["CumSum"] = [](OnnxNode& n) -> Outs {
    Builder& b = n.b();
    Value* x = n.input(0);
    int64_t axis = n.Axis(n.ints_input(1).at(0), RankOf(x));
    const bool reverse = n.attr_int("reverse", 0) != 0;
    Value* y = b.Op1("cumsum", {x}, {{"axis", axis}, {"reverse", int64_t{reverse}}});
    if (n.attr_int("exclusive", 0) != 0) y = b.Sub(y, x);
    return {y};
  };
}

}  // namespace tg
