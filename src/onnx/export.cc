#include "onnx/export.h"

#include <cmath>
#include <functional>
#include <limits>
#include <algorithm>
#include <set>

#include "onnx/model_file.h"
#include "onnx/onnx_builder.h"
#include "support/error.h"

namespace tg {
namespace {

using Ints = std::vector<int64_t>;

// Writes ONNX nodes for IR nodes; knows the ONNX name of every IR value.
class Exporter {
 public:
  explicit Exporter(OnnxBuilder& ob) : ob_(ob) {}

  std::string Name(const Value* v) const { return names_.at(v); }
  void Bind(const Value* v, std::string name) { names_[v] = std::move(name); }
  OnnxBuilder& ob() { return ob_; }

  std::string Const(const HostTensor& t) { return ob_.AddInitializer("const_" + std::to_string(next_++), t); }
  std::string Scalar(double v, DType d) { return Const(HostTensor::Scalar(d, v)); }
  std::string IntsConst(const Ints& v) { return ob_.Ints(v); }

 private:
  OnnxBuilder& ob_;
  std::map<const Value*, std::string> names_;
  int next_ = 0;
};

using Emit = std::function<std::vector<std::string>(Exporter&, const Node&,
                                                    const std::vector<std::string>&)>;

Emit Same(std::string onnx_op) {
  return [onnx_op](Exporter& e, const Node&, const std::vector<std::string>& in) {
    return std::vector<std::string>{e.ob().Op(onnx_op, in)};
  };
}

std::vector<std::string> One(std::string s) { return {std::move(s)}; }

DType In(const Node& n, int i) { return n.input(i)->type().dtype; }

// What a recurrent layer op's unrolled export starts from: w_hh^T, every step's input
// projection x w_ih^T + b [T, B, G], the split of a [B, G] row into `gates` parts of H, and
// the time axis steps are stacked along.
struct UnrolledLayer {
  std::string w_hh_t, projected, split, time_axis;
  int64_t steps = 0;
  bool reverse = false;
};

UnrolledLayer StartUnrolledLayer(Exporter& e, const Node& n, const std::string& x,
                                 const std::string& w_ih, const std::string& w_hh,
                                 const std::string& b_ih, int64_t gates) {
  OnnxBuilder& ob = e.ob();
  UnrolledLayer u;
  u.steps = n.input(0)->type().shape[0];
  u.reverse = GetBool(n.attrs(), "reverse");
  u.w_hh_t = ob.Op("Transpose", {w_hh}, {{"perm", Ints{1, 0}}});
  const std::string w_ih_t = ob.Op("Transpose", {w_ih}, {{"perm", Ints{1, 0}}});
  u.projected = ob.Op("Add", {ob.Op("MatMul", {x, w_ih_t}), b_ih});
  const int64_t hidden = n.output(0)->type().shape[2];  // y [T, B, H]
  u.split = e.IntsConst(Ints(static_cast<size_t>(gates), hidden));
  u.time_axis = e.IntsConst({0});
  return u;
}

// Step t's row of the projection [B, G].
std::string ProjectedAt(Exporter& e, const UnrolledLayer& u, int64_t t) {
  return e.ob().Op("Gather", {u.projected, e.Scalar(static_cast<double>(t), DType::kI64)},
                   {{"axis", int64_t{0}}});
}

// [B, ...] values of every step, in time order, as one [T, B, ...] tensor.
std::string StackSteps(Exporter& e, const UnrolledLayer& u, const std::vector<std::string>& rows) {
  std::vector<std::string> parts;
  for (const std::string& r : rows) parts.push_back(e.ob().Op("Unsqueeze", {r, u.time_axis}));
  return e.ob().Op("Concat", parts, {{"axis", int64_t{0}}});
}

// lstm_layer unrolled over its time steps in plain ONNX ops (ONNX's LSTM gives neither every
// step's cell state nor the gates, which are lstm_layer's second and third outputs).
std::vector<std::string> ExportLstmLayer(Exporter& e, const Node& n,
                                         const std::vector<std::string>& in) {
  OnnxBuilder& ob = e.ob();
  const UnrolledLayer u = StartUnrolledLayer(e, n, in[0], in[3], in[4], in[5], 4);
  std::vector<std::string> ys(u.steps), cs(u.steps), gates(u.steps);
  std::string h = in[1], c = in[2];
  for (int64_t s = 0; s < u.steps; ++s) {
    const int64_t t = u.reverse ? u.steps - 1 - s : s;
    std::string a = ob.Op("Add", {ProjectedAt(e, u, t), ob.Op("MatMul", {h, u.w_hh_t})});
    std::vector<std::string> part = ob.OpN("Split", {a, u.split}, 4, {{"axis", int64_t{1}}});
    std::string i = ob.Op("Sigmoid", {part[0]}), f = ob.Op("Sigmoid", {part[1]});
    std::string g = ob.Op("Tanh", {part[2]}), o = ob.Op("Sigmoid", {part[3]});
    c = ob.Op("Add", {ob.Op("Mul", {f, c}), ob.Op("Mul", {i, g})});
    h = ob.Op("Mul", {o, ob.Op("Tanh", {c})});
    ys[t] = h;
    cs[t] = c;
    gates[t] = ob.Op("Concat", {i, f, g, o}, {{"axis", int64_t{1}}});
  }
  return {StackSteps(e, u, ys), StackSteps(e, u, cs), StackSteps(e, u, gates)};
}

// gru_layer unrolled the same way (outputs y, the activated gates r, z, n and p_n).
std::vector<std::string> ExportGruLayer(Exporter& e, const Node& n,
                                        const std::vector<std::string>& in) {
  OnnxBuilder& ob = e.ob();
  const UnrolledLayer u = StartUnrolledLayer(e, n, in[0], in[2], in[3], in[4], 3);
  const std::string one = e.Scalar(1.0, n.input(0)->type().dtype);
  std::vector<std::string> ys(u.steps), gates(u.steps), pns(u.steps);
  std::string h = in[1];
  for (int64_t s = 0; s < u.steps; ++s) {
    const int64_t t = u.reverse ? u.steps - 1 - s : s;
    std::string p = ob.Op("Add", {ob.Op("MatMul", {h, u.w_hh_t}), in[5]});
    std::vector<std::string> qs =
        ob.OpN("Split", {ProjectedAt(e, u, t), u.split}, 3, {{"axis", int64_t{1}}});
    std::vector<std::string> ps = ob.OpN("Split", {p, u.split}, 3, {{"axis", int64_t{1}}});
    std::string r = ob.Op("Sigmoid", {ob.Op("Add", {qs[0], ps[0]})});
    std::string z = ob.Op("Sigmoid", {ob.Op("Add", {qs[1], ps[1]})});
    std::string cand = ob.Op("Tanh", {ob.Op("Add", {qs[2], ob.Op("Mul", {r, ps[2]})})});
    h = ob.Op("Add", {ob.Op("Mul", {ob.Op("Sub", {one, z}), cand}), ob.Op("Mul", {z, h})});
    ys[t] = h;
    gates[t] = ob.Op("Concat", {r, z, cand}, {{"axis", int64_t{1}}});
    pns[t] = ps[2];
  }
  return {StackSteps(e, u, ys), StackSteps(e, u, gates), StackSteps(e, u, pns)};
}

const std::map<std::string, Emit>& Table() {
  static const std::map<std::string, Emit> table = [] {
    std::map<std::string, Emit> t;
    for (auto [ir, onnx] : std::vector<std::pair<const char*, const char*>>{
             {"abs", "Abs"}, {"acos", "Acos"}, {"acosh", "Acosh"}, {"asin", "Asin"},
             {"asinh", "Asinh"}, {"atan", "Atan"}, {"atanh", "Atanh"}, {"ceil", "Ceil"},
             {"cos", "Cos"}, {"cosh", "Cosh"}, {"erf", "Erf"}, {"exp", "Exp"}, {"floor", "Floor"},
             {"log", "Log"}, {"neg", "Neg"}, {"reciprocal", "Reciprocal"}, {"relu", "Relu"},
             {"round", "Round"}, {"sigmoid", "Sigmoid"}, {"sign", "Sign"}, {"sin", "Sin"},
             {"sinh", "Sinh"}, {"sqrt", "Sqrt"}, {"tan", "Tan"}, {"tanh", "Tanh"},
             {"logical_not", "Not"}, {"bitwise_not", "BitwiseNot"}, {"hardswish", "HardSwish"},
             {"add", "Add"}, {"sub", "Sub"}, {"mul", "Mul"}, {"div", "Div"}, {"pow", "Pow"},
             {"maximum", "Max"}, {"minimum", "Min"}, {"eq", "Equal"}, {"gt", "Greater"},
             {"lt", "Less"}, {"ge", "GreaterOrEqual"}, {"le", "LessOrEqual"},
             {"logical_and", "And"}, {"logical_or", "Or"}, {"bitwise_and", "BitwiseAnd"},
             {"bitwise_or", "BitwiseOr"}, {"bitwise_xor", "BitwiseXor"}, {"where", "Where"},
             {"copy", "Identity"}, {"det", "Det"}})
      t[ir] = Same(onnx);
    t["ne"] = [](Exporter& e, const Node&, const std::vector<std::string>& in) {
      return One(e.ob().Op("Not", {e.ob().Op("Equal", in)}));
    };
    t["triangle"] = [](Exporter& e, const Node& n, const std::vector<std::string>& in) {
      const double k = static_cast<double>(GetInt(n.attrs(), "diagonal"));
      return One(e.ob().Op("Trilu", {in[0], e.Scalar(k, DType::kI64)},
                           {{"upper", int64_t{GetFlag(n.attrs(), "upper") ? 1 : 0}}}));
    };
    t["rsqrt"] = [](Exporter& e, const Node&, const std::vector<std::string>& in) {
      return One(e.ob().Op("Reciprocal", {e.ob().Op("Sqrt", in)}));
    };
    t["log1p"] = [](Exporter& e, const Node& n, const std::vector<std::string>& in) {
      return One(e.ob().Op("Log", {e.ob().Op("Add", {in[0], e.Scalar(1, In(n, 0))})}));
    };
    t["expm1"] = [](Exporter& e, const Node& n, const std::vector<std::string>& in) {
      return One(e.ob().Op("Sub", {e.ob().Op("Exp", in), e.Scalar(1, In(n, 0))}));
    };
    for (auto [ir, base] : std::vector<std::pair<const char*, double>>{{"log2", 2.0}, {"log10", 10.0}})
      t[ir] = [base](Exporter& e, const Node& n, const std::vector<std::string>& in) {
        return One(e.ob().Op("Div", {e.ob().Op("Log", in), e.Scalar(std::log(base), In(n, 0))}));
      };
    t["silu"] = [](Exporter& e, const Node&, const std::vector<std::string>& in) {
      return One(e.ob().Op("Mul", {in[0], e.ob().Op("Sigmoid", in)}));
    };
    t["hardsigmoid"] = [](Exporter& e, const Node&, const std::vector<std::string>& in) {
      return One(e.ob().Op("HardSigmoid", in, {{"alpha", 1.0 / 6}, {"beta", 0.5}}));
    };
    t["leaky_relu"] = [](Exporter& e, const Node& n, const std::vector<std::string>& in) {
      return One(e.ob().Op("LeakyRelu", in, {{"alpha", GetFloat(n.attrs(), "negative_slope")}}));
    };
    t["gelu"] = [](Exporter& e, const Node& n, const std::vector<std::string>& in) {
      const DType d = In(n, 0);
      OnnxBuilder& ob = e.ob();
      std::string x = in[0], inner;
      if (GetString(n.attrs(), "approximate") == "tanh") {  // tanh(sqrt(2/pi) (x + 0.044715 x^3))
        std::string cube = ob.Op("Mul", {ob.Op("Mul", {x, x}), x});
        std::string poly = ob.Op("Add", {x, ob.Op("Mul", {cube, e.Scalar(0.044715, d)})});
        inner = ob.Op("Tanh", {ob.Op("Mul", {poly, e.Scalar(std::sqrt(2.0 / M_PI), d)})});
      } else {  // erf(x / sqrt 2)
        inner = ob.Op("Erf", {ob.Op("Mul", {x, e.Scalar(M_SQRT1_2, d)})});
      }
      std::string half = ob.Op("Mul", {x, e.Scalar(0.5, d)});
      return One(ob.Op("Mul", {half, ob.Op("Add", {inner, e.Scalar(1.0, d)})}));
    };
    t["cast"] = [](Exporter& e, const Node& n, const std::vector<std::string>& in) {
      return One(e.ob().Op("Cast", in, {{"to", int64_t{OnnxTypeOf(GetDType(n.attrs(), "dtype"))}}}));
    };
    t["clamp"] = [](Exporter& e, const Node& n, const std::vector<std::string>& in) {
      const double lo = GetFloat(n.attrs(), "min"), hi = GetFloat(n.attrs(), "max");
      const DType d = In(n, 0);
      std::vector<std::string> args{in[0], std::isinf(lo) ? "" : e.Scalar(lo, d),
                                    std::isinf(hi) ? "" : e.Scalar(hi, d)};
      while (!args.empty() && args.back().empty()) args.pop_back();
      return One(e.ob().Op("Clip", args));
    };
    t["pow_scalar"] = [](Exporter& e, const Node& n, const std::vector<std::string>& in) {
      return One(e.ob().Op("Pow", {in[0], e.Scalar(GetFloat(n.attrs(), "exponent"), In(n, 0))}));
    };
    t["fmod"] = [](Exporter& e, const Node&, const std::vector<std::string>& in) {
      return One(e.ob().Op("Mod", in, {{"fmod", int64_t{1}}}));
    };
    t["matmul"] = [](Exporter& e, const Node& n, const std::vector<std::string>& in) {
      std::vector<std::string> args = in;
      for (int i = 0; i < 2; ++i) {
        if (!GetBool(n.attrs(), i == 0 ? "transpose_a" : "transpose_b")) continue;
        const int64_t r = n.input(i)->type().rank();
        Ints perm;
        for (int64_t a = 0; a < r; ++a) perm.push_back(a);
        std::swap(perm[r - 1], perm[r - 2]);
        args[i] = e.ob().Op("Transpose", {args[i]}, {{"perm", perm}});
      }
      return One(e.ob().Op("MatMul", args));
    };
    t["conv2d"] = [](Exporter& e, const Node& n, const std::vector<std::string>& in) {
      Ints pad = GetInts(n.attrs(), "padding");
      const Shape& w = n.input(1)->type().shape;
      return One(e.ob().Op("Conv", in, {{"strides", GetInts(n.attrs(), "stride")},
                                         {"pads", Ints{pad[0], pad[1], pad[0], pad[1]}},
                                         {"dilations", GetInts(n.attrs(), "dilation")},
                                         {"group", GetInt(n.attrs(), "groups")},
                                         {"kernel_shape", Ints{w[2], w[3]}}}));
    };
    t["max_pool2d"] = [](Exporter& e, const Node& n, const std::vector<std::string>& in) {
      Ints pad = GetInts(n.attrs(), "padding"), k = GetInts(n.attrs(), "kernel_size");
      Ints s = GetInts(n.attrs(), "stride");
      if (s.empty()) s = k;
      return One(e.ob().Op("MaxPool", in, {{"kernel_shape", k}, {"strides", s},
                                            {"pads", Ints{pad[0], pad[1], pad[0], pad[1]}},
                                            {"dilations", GetInts(n.attrs(), "dilation")},
                                            {"ceil_mode", int64_t{GetBool(n.attrs(), "ceil_mode")}}}));
    };
    t["avg_pool2d"] = [](Exporter& e, const Node& n, const std::vector<std::string>& in) {
      if (GetInt(n.attrs(), "divisor_override") != 0)
        Fail(ErrorKind::kUnsupported, "avg_pool2d with divisor_override has no ONNX equivalent");
      Ints pad = GetInts(n.attrs(), "padding"), k = GetInts(n.attrs(), "kernel_size");
      Ints s = GetInts(n.attrs(), "stride");
      if (s.empty()) s = k;
      return One(e.ob().Op("AveragePool", in,
                           {{"kernel_shape", k}, {"strides", s},
                            {"pads", Ints{pad[0], pad[1], pad[0], pad[1]}},
                            {"ceil_mode", int64_t{GetBool(n.attrs(), "ceil_mode")}},
                            {"count_include_pad", int64_t{GetBool(n.attrs(), "count_include_pad")}}}));
    };
    t["adaptive_avg_pool2d"] = [](Exporter& e, const Node& n, const std::vector<std::string>& in) {
      if (GetInts(n.attrs(), "output_size") != Ints{1, 1})
        Fail(ErrorKind::kUnsupported, "adaptive_avg_pool2d to a size other than 1x1");
      return One(e.ob().Op("GlobalAveragePool", in));
    };
    t["batch_norm_inference"] = [](Exporter& e, const Node& n, const std::vector<std::string>& in) {
      return One(e.ob().Op("BatchNormalization", in, {{"epsilon", GetFloat(n.attrs(), "eps")}}));
    };
    t["layer_norm"] = [](Exporter& e, const Node& n, const std::vector<std::string>& in) {
      std::string y = e.ob().Op("LayerNormalization", in,
                                {{"axis", -GetInt(n.attrs(), "normalized_ndim")},
                                 {"epsilon", GetFloat(n.attrs(), "eps")}});
      return std::vector<std::string>{y, "", ""};  // mean / rstd: not exported (see Export)
    };
    for (auto [ir, onnx] : std::vector<std::pair<const char*, const char*>>{
             {"softmax", "Softmax"}, {"log_softmax", "LogSoftmax"}})
      t[ir] = [onnx](Exporter& e, const Node& n, const std::vector<std::string>& in) {
        return One(e.ob().Op(onnx, in, {{"axis", GetInt(n.attrs(), "axis")}}));
      };
    t["reshape"] = [](Exporter& e, const Node& n, const std::vector<std::string>& in) {
      return One(e.ob().Op("Reshape", {in[0], e.IntsConst(n.output()->type().shape)}));
    };
    t["permute"] = [](Exporter& e, const Node& n, const std::vector<std::string>& in) {
      return One(e.ob().Op("Transpose", in, {{"perm", GetInts(n.attrs(), "perm")}}));
    };
    t["expand"] = [](Exporter& e, const Node& n, const std::vector<std::string>& in) {
      return One(e.ob().Op("Expand", {in[0], e.IntsConst(n.output()->type().shape)}));
    };
    t["slice"] = [](Exporter& e, const Node& n, const std::vector<std::string>& in) {
      const AttrMap& a = n.attrs();
      return One(e.ob().Op("Slice", {in[0], e.IntsConst({GetInt(a, "start")}),
                                     e.IntsConst({GetInt(a, "end")}), e.IntsConst({GetInt(a, "axis")}),
                                     e.IntsConst({GetInt(a, "step")})}));
    };
    t["cat"] = [](Exporter& e, const Node& n, const std::vector<std::string>& in) {
      return One(e.ob().Op("Concat", in, {{"axis", GetInt(n.attrs(), "axis")}}));
    };
    t["pad"] = [](Exporter& e, const Node& n, const std::vector<std::string>& in) {
      Ints pads = GetInts(n.attrs(), "before");
      Ints after = GetInts(n.attrs(), "after");
      pads.insert(pads.end(), after.begin(), after.end());
      return One(e.ob().Op("Pad", {in[0], e.IntsConst(pads), e.Scalar(GetFloat(n.attrs(), "value"), In(n, 0))}));
    };
    t["index_select"] = [](Exporter& e, const Node& n, const std::vector<std::string>& in) {
      return One(e.ob().Op("Gather", in, {{"axis", GetInt(n.attrs(), "axis")}}));
    };
    t["embedding"] = [](Exporter& e, const Node&, const std::vector<std::string>& in) {
      return One(e.ob().Op("Gather", {in[0], in[1]}, {{"axis", int64_t{0}}}));
    };
    t["gather"] = [](Exporter& e, const Node& n, const std::vector<std::string>& in) {
      return One(e.ob().Op("GatherElements", in, {{"axis", GetInt(n.attrs(), "axis")}}));
    };
    t["index_wrap"] = [](Exporter& e, const Node& n, const std::vector<std::string>& in) {
      OnnxBuilder& ob = e.ob();
      std::string i64 = ob.Op("Cast", in, {{"to", int64_t{onnx::TensorProto::INT64}}});
      std::string negative = ob.Op("Less", {i64, e.Scalar(0, DType::kI64)});
      std::string wrapped = ob.Op("Add", {i64, e.Scalar(static_cast<double>(GetInt(n.attrs(), "size")), DType::kI64)});
      return One(ob.Op("Where", {negative, wrapped, i64}));
    };
    t["lstm_layer"] = ExportLstmLayer;
    t["gru_layer"] = ExportGruLayer;
    t["full"] = [](Exporter& e, const Node& n, const std::vector<std::string>&) {
      return One(e.ob().Op("Identity", {e.Const(HostTensor::Full(n.output()->type(),
                                                                 GetFloat(n.attrs(), "value")))}));
    };
    // Reductions: ReduceSum takes axes as an input (opset 13), the others as an attribute
    // (until opset 18); empty axes: all of them.
    auto reduce = [](const char* onnx, bool axes_input) {
      return [onnx, axes_input](Exporter& e, const Node& n, const std::vector<std::string>& in) {
        Ints axes = GetInts(n.attrs(), "axes");
        if (axes.empty())
          for (int64_t a = 0; a < n.input(0)->type().rank(); ++a) axes.push_back(a);
        const int64_t keep = GetBool(n.attrs(), "keepdim");
        if (axes_input) return One(e.ob().Op(onnx, {in[0], e.IntsConst(axes)}, {{"keepdims", keep}}));
        return One(e.ob().Op(onnx, in, {{"axes", axes}, {"keepdims", keep}}));
      };
    };
    t["sum"] = reduce("ReduceSum", true);
    t["mean"] = reduce("ReduceMean", false);
    t["amax"] = reduce("ReduceMax", false);
    t["argmax"] = [](Exporter& e, const Node& n, const std::vector<std::string>& in) {
      return One(e.ob().Op("ArgMax", in, {{"axis", GetInt(n.attrs(), "axis")},
                                          {"keepdims", int64_t{GetBool(n.attrs(), "keepdim")}}}));
    };
    t["cumsum"] = [](Exporter& e, const Node& n, const std::vector<std::string>& in) {
      return One(e.ob().Op("CumSum", {in[0], e.IntsConst({GetInt(n.attrs(), "axis")})},
                           {{"reverse", GetInt(n.attrs(), "reverse")}}));
    };
    t["topk"] = [](Exporter& e, const Node& n, const std::vector<std::string>& in) {
      return e.ob().OpN("TopK", {in[0], e.IntsConst({GetInt(n.attrs(), "k")})}, 2,
                        {{"axis", GetInt(n.attrs(), "axis")}, {"largest", GetInt(n.attrs(), "largest")}});
    };
    // attention(q, k, v, mask) -> softmax(q k^T * scale + mask [causal]) v (and no lse).
    t["attention"] = [](Exporter& e, const Node& n, const std::vector<std::string>& in) {
      if (GetFloat(n.attrs(), "dropout_p") != 0.0)
        Fail(ErrorKind::kUnsupported, "attention with dropout (a training graph)");
      OnnxBuilder& ob = e.ob();
      const DType d = In(n, 0);
      const int64_t r = n.input(1)->type().rank();
      Ints perm;
      for (int64_t a = 0; a < r; ++a) perm.push_back(a);
      std::swap(perm[r - 1], perm[r - 2]);
      std::string scores = ob.Op("Mul", {ob.Op("MatMul", {in[0], ob.Op("Transpose", {in[1]}, {{"perm", perm}})}),
                                         e.Scalar(GetFloat(n.attrs(), "scale"), d)});
      scores = ob.Op("Add", {scores, in[3]});
      if (GetBool(n.attrs(), "causal")) {
        const int64_t s = n.input(0)->type().shape[r - 2], t = n.input(1)->type().shape[r - 2];
        HostTensor mask({d, {s, t}});
        for (int64_t i = 0; i < s; ++i)
          for (int64_t j = 0; j < t; ++j)
            mask.SetFromDouble(i * t + j, j <= i ? 0.0 : -std::numeric_limits<double>::infinity());
        scores = ob.Op("Add", {scores, e.Const(mask)});
      }
      std::string probs = ob.Op("Softmax", {scores}, {{"axis", int64_t{-1}}});
      return std::vector<std::string>{ob.Op("MatMul", {probs, in[2]}), ""};
    };
    return t;
  }();
  return table;
}

}  // namespace

onnx::ModelProto ExportOnnx(const Graph& graph, const std::map<std::string, HostTensor>& variables) {
  TG_CHECK(graph.updates().empty(), kUnsupported, "ONNX export takes an inference graph; this "
           "one updates ", graph.updates().size(), " variable(s) (a training step)");
  // The nodes the outputs need.
  std::set<const Value*> live(graph.outputs().begin(), graph.outputs().end());
  std::vector<const Node*> order;
  for (auto it = graph.nodes().rbegin(); it != graph.nodes().rend(); ++it) {
    const Node& n = **it;
    bool needed = false;
    for (Value* o : n.outputs()) needed |= live.count(o) > 0;
    if (!needed) continue;
    order.insert(order.begin(), &n);
    for (Value* i : n.inputs()) live.insert(i);
  }
  std::vector<std::string> missing;
  for (const Node* n : order) {
    if (!Table().count(n->op())) missing.push_back(n->Describe());
    for (size_t k = 1; k < n->outputs().size(); ++k)
      if (live.count(n->output(k)) && (n->op() == "layer_norm" || n->op() == "attention"))
        missing.push_back(n->Describe() + " (its output " + std::to_string(k) + " is used)");
  }
  if (!missing.empty()) {
    std::string msg = std::to_string(missing.size()) + " node(s) have no ONNX export:";
    for (const auto& m : missing) msg += "\n  " + m;
    Fail(ErrorKind::kUnsupported, msg);
  }
  TG_CHECK(graph.hyperparams().empty() ||
               std::none_of(graph.hyperparams().begin(), graph.hyperparams().end(),
                            [&](Value* h) { return live.count(h) > 0; }),
           kUnsupported, "ONNX export: the graph reads hyperparameters (a training step)");

  OnnxBuilder ob(17, graph.name());
  Exporter e(ob);
  for (Value* in : graph.inputs()) e.Bind(in, ob.AddInput(in->name(), in->type()));
  for (Value* v : graph.variables()) {
    if (!live.count(v)) continue;
    auto it = variables.find(v->name());
    TG_CHECK(it != variables.end(), kInvalidInput, "ONNX export: no value for variable '",
             v->name(), "'");
    TG_CHECK(it->second.type() == v->type(), kInvalidInput, "ONNX export: variable '", v->name(),
             "' is ", v->type().ToString(), ", its value ", it->second.type().ToString());
    e.Bind(v, ob.AddInitializer(v->name(), it->second));
  }
  for (Value* c : graph.constants())
    if (live.count(c)) e.Bind(c, e.Const(c->constant()));
  for (const Node* n : order) {
    std::vector<std::string> in;
    for (Value* v : n->inputs()) in.push_back(e.Name(v));
    std::vector<std::string> out;
    try {
      out = Table().at(n->op())(e, *n, in);
    } catch (Error& err) {
      err.AddContext("exporting " + n->Describe());
      throw;
    }
    for (size_t k = 0; k < n->outputs().size() && k < out.size(); ++k)
      if (!out[k].empty()) e.Bind(n->output(k), out[k]);
  }
  onnx::ModelProto model = ob.Build();
  for (size_t i = 0; i < graph.outputs().size(); ++i) {
    Value* v = graph.outputs()[i];
    // Name the outputs: an Identity per output, typed.
    std::string name = "output" + std::to_string(i);
    auto* node = model.mutable_graph()->add_node();
    node->set_op_type("Identity");
    node->set_name(name);
    node->add_input(e.Name(v));
    node->add_output(name);
    auto* info = model.mutable_graph()->add_output();
    info->set_name(name);
    auto* tt = info->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(OnnxTypeOf(v->type().dtype));
    for (int64_t d : v->type().shape) tt->mutable_shape()->add_dim()->set_dim_value(d);
  }
  return model;
}

}  // namespace tg
