#include "ops/builder.h"

#include <algorithm>

#include "support/error.h"

namespace tg {

Shape BroadcastShapes(const Shape& a, const Shape& b) {
  size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    TG_CHECK(da == db || da == 1 || db == 1, kShape, "shapes ", ShapeToString(a), " and ",
             ShapeToString(b), " do not broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Node* Builder::OpNode(const std::string& op, std::vector<Value*> inputs, AttrMap attrs) {
  const OpDef& def = registry_.Get(op);
  AttrMap full = CompleteAttrs(def, attrs);
  if (def.traits.random && !HasAttr(attrs, "rng_key")) {
    int64_t key = 0;
    for (const auto& n : graph_.nodes()) {
      if (HasAttr(n->attrs(), "rng_key")) key = std::max(key, GetInt(n->attrs(), "rng_key") + 1);
    }
    full["rng_key"] = key;
  }
  std::vector<TensorType> in_types;
  for (Value* v : inputs) in_types.push_back(v->type());
  std::vector<TensorType> out_types;
  try {
    out_types = InferTypes(def, in_types, full);
  } catch (Error& e) {
    std::string ins;
    for (size_t i = 0; i < inputs.size(); ++i) {
      ins += (i ? ", %" : "%") + inputs[i]->name() + " : " + inputs[i]->type().ToString();
    }
    e.AddContext("building " + op + "(" + ins + ")" + (source_.empty() ? "" : " from " + source_));
    throw;
  }
  Node* n = graph_.AddNode(op, std::move(inputs), std::move(out_types), std::move(full), before_);
  n->set_placement(placement_);
  n->set_source(source_);
  return n;
}

std::vector<Value*> Builder::Op(const std::string& op, std::vector<Value*> inputs,
                                AttrMap attrs) {
  return OpNode(op, std::move(inputs), std::move(attrs))->outputs();
}

Value* Builder::Op1(const std::string& op, std::vector<Value*> inputs, AttrMap attrs) {
  Node* n = OpNode(op, std::move(inputs), std::move(attrs));
  TG_ASSERT(n->outputs().size() == 1, "Op1 on multi-output op ", op);
  return n->output(0);
}

Value* Builder::Scalar(double v, DType dtype) {
  return graph_.AddConstant(HostTensor::Scalar(dtype, v));
}

Value* Builder::Full(const Shape& shape, double v, DType dtype) {
  return Op1("full", {}, {{"shape", shape}, {"value", v}, {"dtype", dtype}});
}

Value* Builder::Cast(Value* a, DType d) {
  if (a->type().dtype == d) return a;
  return Op1("cast", {a}, {{"dtype", d}});
}

Value* Builder::MulScalar(Value* a, double s) { return Mul(a, Scalar(s, a->type().dtype)); }
Value* Builder::AddScalar(Value* a, double s) { return Add(a, Scalar(s, a->type().dtype)); }

Value* Builder::Reshape(Value* a, const Shape& shape) {
  if (a->type().shape == shape) return a;
  return Op1("reshape", {a}, {{"shape", shape}});
}

Value* Builder::Permute(Value* a, const std::vector<int64_t>& perm) {
  bool identity = true;
  for (size_t i = 0; i < perm.size(); ++i) identity &= perm[i] == static_cast<int64_t>(i);
  if (identity) return a;
  return Op1("permute", {a}, {{"perm", perm}});
}

Value* Builder::Transpose(Value* a, int64_t d0, int64_t d1) {
  int64_t rank = a->type().rank();
  std::vector<int64_t> perm(rank);
  for (int64_t i = 0; i < rank; ++i) perm[i] = i;
  std::swap(perm[NormalizeAxis(d0, rank)], perm[NormalizeAxis(d1, rank)]);
  return Permute(a, perm);
}

Value* Builder::Expand(Value* a, const Shape& shape) {
  if (a->type().shape == shape) return a;
  return Op1("expand", {a}, {{"shape", shape}});
}

Value* Builder::SumToShape(Value* g, const Shape& shape) {
  const Shape& gs = g->type().shape;
  if (gs == shape) return g;
  size_t lead = gs.size() - shape.size();
  std::vector<int64_t> axes;
  for (size_t i = 0; i < gs.size(); ++i) {
    if (i < lead || (shape[i - lead] == 1 && gs[i] != 1)) axes.push_back(static_cast<int64_t>(i));
  }
  Value* s = axes.empty() ? g : Sum(g, axes, /*keepdim=*/false);
  return Reshape(s, shape);
}

Value* Builder::Sum(Value* a, const std::vector<int64_t>& axes, bool keepdim) {
  return Op1("sum", {a}, {{"axes", axes}, {"keepdim", keepdim}});
}

Value* Builder::Mean(Value* a, const std::vector<int64_t>& axes, bool keepdim) {
  return Op1("mean", {a}, {{"axes", axes}, {"keepdim", keepdim}});
}

Value* Builder::MatMul(Value* a, Value* b, bool transpose_a, bool transpose_b) {
  return Op1("matmul", {a, b}, {{"transpose_a", transpose_a}, {"transpose_b", transpose_b}});
}

Value* Builder::CrossEntropy(Value* logits, Value* target, const std::string& reduction,
                             int64_t ignore_index, double label_smoothing) {
  TG_CHECK(logits->type().rank() == 2, kShape, "cross entropy: expected logits [N, C], got ",
           logits->type().ToString());
  Value* logp = Op1("log_softmax", {logits}, {{"axis", int64_t{1}}});
  Value* nll = Op1("nll_loss", {logp, target},
                   {{"reduction", reduction}, {"ignore_index", ignore_index}});
  if (label_smoothing == 0.0) return nll;
  // torch: (1-e) * nll + e/C * smooth, smooth_i = -sum_c logp[i,c] (0 where ignored), reduced
  // like nll (mean: over the targets that are not ignored).
  DType dtype = logits->type().dtype;
  double classes = static_cast<double>(logits->type().shape[1]);
  Value* valid = Cast(Op1("ne", {target, Scalar(static_cast<double>(ignore_index),
                                                target->type().dtype)}),
                      dtype);
  Value* smooth = Mul(Neg(Sum(logp, {1})), valid);
  if (reduction == "mean") smooth = Div(Sum(smooth, {}), Sum(valid, {}));
  else if (reduction == "sum") smooth = Sum(smooth, {});
  return Add(MulScalar(nll, 1.0 - label_smoothing), MulScalar(smooth, label_smoothing / classes));
}

Value* Builder::MseLoss(Value* input, Value* target, const std::string& reduction) {
  Value* diff = Sub(input, target);
  Value* sq = Mul(diff, diff);
  if (reduction == "mean") return Mean(sq, {});
  if (reduction == "sum") return Sum(sq, {});
  TG_CHECK(reduction == "none", kInvalidInput, "expected reduction mean, sum or none, got '",
           reduction, "'");
  return sq;
}

}  // namespace tg
