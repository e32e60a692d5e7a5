// ONNX elementwise ops: unary math and activations, broadcasting binary ops, comparisons and
// logic, variadic Max/Min/Sum/Mean, Where, Clip, Cast, Dropout, Identity.
#include <cmath>
#include <limits>

#include "onnx/converter.h"
#include "onnx/model_file.h"
#include "support/error.h"

namespace tg {
namespace {

using Outs = std::vector<Value*>;

OnnxConverter Unary(std::string op) {
  return [op](OnnxNode& n) -> Outs { return {n.b().Op1(op, {n.input(0)})}; };
}
// Before opset 7, broadcasting was opt-in (broadcast=1) and could align B at `axis` of A.
Value* LegacyAligned(OnnxNode& n, Value* a, Value* b) {
  if (n.opset() >= 7 || n.attr_int("broadcast", 0) == 0 || !n.has_attr("axis")) return b;
  int64_t axis = n.Axis(n.attr_int("axis", 0), RankOf(a));
  Shape s(axis, 1);
  s.insert(s.end(), b->type().shape.begin(), b->type().shape.end());
  while (static_cast<int64_t>(s.size()) < RankOf(a)) s.push_back(1);
  return n.b().Reshape(b, s);
}

OnnxConverter Binary(std::string op) {
  return [op](OnnxNode& n) -> Outs {
    return {n.b().Op1(op, {n.input(0), LegacyAligned(n, n.input(0), n.input(1))})};
  };
}
// A left fold of a binary op over every input (Max, Min, Sum).
Value* Fold(OnnxNode& n, const std::string& op) {
  Value* acc = n.input(0);
  for (int i = 1; i < n.num_inputs(); ++i) acc = n.b().Op1(op, {acc, n.input(i)});
  return acc;
}

// softplus(x) = log(1 + e^x), computed as relu(x) + log1p(e^-|x|) (no overflow).
Value* Softplus(Builder& b, Value* x) {
  Value* tail = b.Op1("log1p", {b.Exp(b.Neg(b.Op1("abs", {x})))});
  return b.Add(b.Op1("relu", {x}), tail);
}

// Integer division truncates toward zero in ONNX (C semantics); tilegraph's div is true
// division, so integers divide in f64 and truncate.
Value* Divide(Builder& b, Value* a, Value* d) {
  DType t = a->type().dtype;
  if (IsFloating(t)) return b.Div(a, d);
  Value* q = b.Div(b.Cast(a, DType::kF64), b.Cast(d, DType::kF64));
  return b.Cast(b.Op1("trunc", {q}), t);
}

Value* ClipBound(OnnxNode& n, Value* x, int input, const char* attr, double def, bool is_min) {
  if (n.opset() < 11) {
    double v = n.attr_float(attr, def);
    return std::isinf(v) ? x : n.b().Op1("clamp", {x}, {{is_min ? "min" : "max", v}});
  }
  if (!n.has_input(input)) return x;
  if (const HostTensor* c = n.constant(input)) {
    double v = c->GetAsDouble(0);
    if (IsFloating(x->type().dtype))
      return n.b().Op1("clamp", {x}, {{is_min ? "min" : "max", v}});
  }
  return n.b().Op1(is_min ? "maximum" : "minimum", {x, n.input(input)});
}

DType CastTarget(OnnxNode& n, int onnx_type) {
  std::optional<DType> d = DTypeFromOnnx(onnx_type);
  if (!d) n.Unsupported("cast to " + OnnxTypeName(onnx_type));
  return *d;
}

}  // namespace

void AddElementwiseConverters(OnnxConverterTable& t) {
  const std::pair<const char*, const char*> unary[] = {
      {"Abs", "abs"},     {"Acos", "acos"},   {"Acosh", "acosh"},   {"Asin", "asin"},
      {"Asinh", "asinh"}, {"Atan", "atan"},   {"Atanh", "atanh"},   {"Ceil", "ceil"},
      {"Cos", "cos"},     {"Cosh", "cosh"},   {"Erf", "erf"},       {"Exp", "exp"},
      {"Floor", "floor"}, {"Log", "log"},     {"Neg", "neg"},       {"Reciprocal", "reciprocal"},
      {"Relu", "relu"},   {"Round", "round"}, {"Sigmoid", "sigmoid"}, {"Sign", "sign"},
      {"Sin", "sin"},     {"Sinh", "sinh"},   {"Sqrt", "sqrt"},     {"Tan", "tan"},
      {"Tanh", "tanh"},   {"Not", "logical_not"}, {"BitwiseNot", "bitwise_not"},
      {"HardSwish", "hardswish"}};
  for (auto [onnx, op] : unary) t[onnx] = Unary(op);
  const std::pair<const char*, const char*> binary[] = {
      {"Add", "add"},         {"Sub", "sub"},        {"Mul", "mul"},
      {"Equal", "eq"},        {"Greater", "gt"},     {"Less", "lt"},
      {"GreaterOrEqual", "ge"}, {"LessOrEqual", "le"}, {"And", "logical_and"},
      {"Or", "logical_or"},   {"Xor", "ne"},         {"BitwiseAnd", "bitwise_and"},
      {"BitwiseOr", "bitwise_or"}, {"BitwiseXor", "bitwise_xor"}};
  for (auto [onnx, op] : binary) t[onnx] = Binary(op);

  t["Div"] = [](OnnxNode& n) -> Outs {
    return {Divide(n.b(), n.input(0), LegacyAligned(n, n.input(0), n.input(1)))};
  };
  t["Pow"] = [](OnnxNode& n) -> Outs {
    Value* x = n.input(0);
    if (const HostTensor* e = n.constant(1); e && e->type().numel() == 1 &&
                                             IsFloating(x->type().dtype))
      return {n.b().Op1("pow_scalar", {x}, {{"exponent", e->GetAsDouble(0)}})};
    Value* y = n.input(1);
    Builder& b = n.b();
    if (!IsFloating(x->type().dtype))  // integer bases: in f64, truncated back (as numpy)
      return {b.Cast(b.Op1("pow", {b.Cast(x, DType::kF64), b.Cast(y, DType::kF64)}), x->type().dtype)};
    if (y->type().dtype != x->type().dtype) y = b.Cast(y, x->type().dtype);
    return {b.Op1("pow", {x, y})};
  };
  t["Mod"] = [](OnnxNode& n) -> Outs {
    bool fmod = n.attr_int("fmod", 0) != 0;
    return {n.b().Op1(fmod ? "fmod" : "remainder", {n.input(0), n.input(1)})};
  };
  t["Max"] = [](OnnxNode& n) -> Outs { return {Fold(n, "maximum")}; };
  t["Min"] = [](OnnxNode& n) -> Outs { return {Fold(n, "minimum")}; };
  t["Sum"] = [](OnnxNode& n) -> Outs { return {Fold(n, "add")}; };
  t["Mean"] = [](OnnxNode& n) -> Outs {
    return {n.b().MulScalar(Fold(n, "add"), 1.0 / n.num_inputs())};
  };
  t["Where"] = [](OnnxNode& n) -> Outs {
    return {n.b().Where(n.input(0), n.input(1), n.input(2))};
  };
  t["Clip"] = [](OnnxNode& n) -> Outs {
    const double inf = std::numeric_limits<double>::infinity();
    Value* x = ClipBound(n, n.input(0), 1, "min", -inf, true);
    return {ClipBound(n, x, 2, "max", inf, false)};
  };
  t["Identity"] = [](OnnxNode& n) -> Outs { return {n.input(0)}; };
  t["Cast"] = [](OnnxNode& n) -> Outs {
    DType to = CastTarget(n, static_cast<int>(n.attr_int("to", 1)));
    Value* x = n.input(0);
    return {x->type().dtype == to ? x : n.b().Cast(x, to)};
  };
  t["CastLike"] = [](OnnxNode& n) -> Outs {
    DType to = n.input(1)->type().dtype;
    Value* x = n.input(0);
    return {x->type().dtype == to ? x : n.b().Cast(x, to)};
  };
  t["IsNaN"] = [](OnnxNode& n) -> Outs { return {n.b().Op1("ne", {n.input(0), n.input(0)})}; };
  t["IsInf"] = [](OnnxNode& n) -> Outs {
    Builder& b = n.b();
    Value* x = n.input(0);
    const double inf = std::numeric_limits<double>::infinity();
    Value* pos = b.Op1("eq", {x, ScalarLike(b, x, inf)});
    Value* neg = b.Op1("eq", {x, ScalarLike(b, x, -inf)});
    bool want_pos = n.attr_int("detect_positive", 1) != 0;
    bool want_neg = n.attr_int("detect_negative", 1) != 0;
    if (want_pos && want_neg) return {b.Op1("logical_or", {pos, neg})};
    if (want_pos) return {pos};
    if (want_neg) return {neg};
    return {b.Op1("logical_and", {pos, neg})};  // neither sign asked for: all false
  };

  // Activations.
  t["LeakyRelu"] = [](OnnxNode& n) -> Outs {
    return {n.b().Op1("leaky_relu", {n.input(0)}, {{"negative_slope", n.attr_float("alpha", 0.01)}})};
  };
  t["Elu"] = [](OnnxNode& n) -> Outs {
    return {n.b().Op1("elu", {n.input(0)}, {{"alpha", n.attr_float("alpha", 1.0)}})};
  };
  t["Selu"] = [](OnnxNode& n) -> Outs {
    return {n.b().Op1("elu", {n.input(0)}, {{"alpha", n.attr_float("alpha", 1.67326319217681884765625)},
                                             {"scale", n.attr_float("gamma", 1.05070102214813232421875)}})};
  };
  t["Celu"] = [](OnnxNode& n) -> Outs {
    double alpha = n.attr_float("alpha", 1.0);
    return {n.b().Op1("elu", {n.input(0)}, {{"alpha", alpha}, {"input_scale", 1.0 / alpha}})};
  };
  t["HardSigmoid"] = [](OnnxNode& n) -> Outs {
    Builder& b = n.b();
    Value* y = b.AddScalar(b.MulScalar(n.input(0), n.attr_float("alpha", 0.2)), n.attr_float("beta", 0.5));
    return {b.Op1("clamp", {y}, {{"min", 0.0}, {"max", 1.0}})};
  };
  t["Softplus"] = [](OnnxNode& n) -> Outs { return {Softplus(n.b(), n.input(0))}; };
  t["Softsign"] = [](OnnxNode& n) -> Outs {
    Builder& b = n.b();
    Value* x = n.input(0);
    return {b.Div(x, b.AddScalar(b.Op1("abs", {x}), 1.0))};
  };
  t["Mish"] = [](OnnxNode& n) -> Outs {
    Builder& b = n.b();
    Value* x = n.input(0);
    return {b.Mul(x, b.Op1("tanh", {Softplus(b, x)}))};
  };
  t["ThresholdedRelu"] = [](OnnxNode& n) -> Outs {
    Builder& b = n.b();
    Value* x = n.input(0);
    Value* keep = b.Op1("gt", {x, ScalarLike(b, x, n.attr_float("alpha", 1.0))});
    return {b.Where(keep, x, ScalarLike(b, x, 0.0))};
  };
  t["PRelu"] = [](OnnxNode& n) -> Outs {
    Builder& b = n.b();
    Value* x = n.input(0);
    Value* slope = n.input(1);
    // A [C] slope on [N, C, ...] that does not broadcast numpy-style is per channel (opset < 7
    // and PyTorch's PReLU(num_parameters=C)).
    const Shape& xs = x->type().shape;
    if (RankOf(slope) == 1 && RankOf(x) >= 2 && slope->type().shape[0] == xs[1] &&
        xs.back() != xs[1]) {
      Shape s(RankOf(x) - 1, 1);
      s[0] = xs[1];
      slope = b.Reshape(slope, s);
    }
    Value* negative = b.Op1("lt", {x, ScalarLike(b, x, 0.0)});
    return {b.Where(negative, b.Mul(x, slope), x)};
  };
  t["Swish"] = [](OnnxNode& n) -> Outs {
    Builder& b = n.b();
    Value* x = n.input(0);
    return {b.Mul(x, b.Op1("sigmoid", {b.MulScalar(x, n.attr_float("alpha", 1.0))}))};
  };
  t["Shrink"] = [](OnnxNode& n) -> Outs {
    Builder& b = n.b();
    Value* x = n.input(0);
    const double lambd = n.attr_float("lambd", 0.5), bias = n.attr_float("bias", 0.0);
    Value* zero = ScalarLike(b, x, 0.0);
    Value* low = b.Op1("lt", {x, ScalarLike(b, x, -lambd)});
    Value* high = b.Op1("gt", {x, ScalarLike(b, x, lambd)});
    return {b.Where(low, b.AddScalar(x, bias), b.Where(high, b.AddScalar(x, -bias), zero))};
  };
  t["Gelu"] = [](OnnxNode& n) -> Outs {
    std::string approximate = n.attr_string("approximate", "none");
    if (approximate != "none" && approximate != "tanh") n.Unsupported("approximate='" + approximate + "'");
    return {n.b().Op1("gelu", {n.input(0)}, {{"approximate", approximate}})};
  };
  // Dropout: the identity in inference (and with training_mode false, opset 12+); with
  // OnnxImportOptions::training and a ratio > 0, tilegraph's dropout (Philox-keyed mask).
  t["Dropout"] = [](OnnxNode& n) -> Outs {
    Builder& b = n.b();
    Value* x = n.input(0);
    bool training = n.training();
    if (n.opset() >= 12 && n.has_input(2)) training = n.ints_input(2).at(0) != 0;
    double ratio = 0.0;
    if (training)
      ratio = n.opset() < 12 ? n.attr_float("ratio", 0.5)
                             : (n.has_input(1) ? n.floats_input(1).at(0) : 0.5);
    if (!training || ratio == 0.0) {
      Value* mask = n.wants_output(1) ? b.Full(x->type().shape, 1.0, DType::kBool) : nullptr;
      return {x, mask};
    }
    std::vector<Value*> r = b.Op("dropout", {x}, {{"p", ratio}});
    Value* mask = n.wants_output(1) ? b.Op1("ne", {r[1], ScalarLike(b, r[1], 0.0)}) : nullptr;
    return {r[0], mask};
  };
}

}  // namespace tg
