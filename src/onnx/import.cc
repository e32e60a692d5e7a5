#include "onnx/import.h"

#include <algorithm>
#include <optional>
#include <set>

#include "onnx/converter.h"
#include "onnx/model_file.h"
#include "ops/builder.h"
#include "ops/evaluate.h"
#include "ops/registry.h"
#include "support/error.h"

namespace tg {

// ---- OnnxNode ---------------------------------------------------------------------------

Value* OnnxNode::input(int i) const {
  TG_CHECK(has_input(i), kInvalidInput, proto_.op_type(), " needs input ", i);
  return inputs_[i];
}

const HostTensor* OnnxNode::constant(int i) const {
  if (!has_input(i) || inputs_[i]->kind() != ValueKind::kConstant) return nullptr;
  return &inputs_[i]->constant();
}

const HostTensor& OnnxNode::Known(int i) const {
  const HostTensor* t = constant(i);
  TG_CHECK(t != nullptr, kUnsupported, proto_.op_type(), "'s input ", i, " ('",
           i < proto_.input_size() ? proto_.input(i) : "", "') must be known when the model is "
           "imported (tilegraph compiles static shapes); it is computed from the model's inputs");
  return *t;
}

std::vector<int64_t> OnnxNode::ints_input(int i) const {
  const HostTensor& t = Known(i);
  std::vector<int64_t> v(t.type().numel());
  // Integers exactly (through double, INT64_MAX -- ONNX's "to the end" -- would not be).
  for (size_t k = 0; k < v.size(); ++k) {
    if (t.type().dtype == DType::kI64) v[k] = t.as<int64_t>()[k];
    else if (t.type().dtype == DType::kI32) v[k] = t.as<int32_t>()[k];
    else v[k] = static_cast<int64_t>(std::clamp(t.GetAsDouble(k), -9.2e18, 9.2e18));
  }
  return v;
}

std::vector<double> OnnxNode::floats_input(int i) const {
  const HostTensor& t = Known(i);
  std::vector<double> v(t.type().numel());
  for (size_t k = 0; k < v.size(); ++k) v[k] = t.GetAsDouble(k);
  return v;
}

const onnx::AttributeProto* OnnxNode::Find(const std::string& name) const {
  for (const auto& a : proto_.attribute())
    if (a.name() == name) return &a;
  return nullptr;
}

const onnx::AttributeProto* OnnxNode::FindTyped(const std::string& name,
                                                onnx::AttributeProto::AttributeType type) const {
  const auto* a = Find(name);
  if (a == nullptr || a->type() == onnx::AttributeProto::UNDEFINED || a->type() == type) return a;
  Fail(ErrorKind::kInvalidInput, proto_.op_type(), " node '", proto_.name(), "': attribute '", name,
          "' is ", onnx::AttributeProto::AttributeType_Name(a->type()), ", expected ",
          onnx::AttributeProto::AttributeType_Name(type));
}

int64_t OnnxNode::attr_int(const std::string& name, int64_t def) const {
  const auto* a = FindTyped(name, onnx::AttributeProto::INT);
  return a ? a->i() : def;
}
double OnnxNode::attr_float(const std::string& name, double def) const {
  const auto* a = FindTyped(name, onnx::AttributeProto::FLOAT);
  return a ? a->f() : def;
}
std::string OnnxNode::attr_string(const std::string& name, const std::string& def) const {
  const auto* a = FindTyped(name, onnx::AttributeProto::STRING);
  return a ? a->s() : def;
}
std::vector<int64_t> OnnxNode::attr_ints(const std::string& name, std::vector<int64_t> def) const {
  const auto* a = FindTyped(name, onnx::AttributeProto::INTS);
  return a ? std::vector<int64_t>(a->ints().begin(), a->ints().end()) : def;
}
std::vector<double> OnnxNode::attr_floats(const std::string& name, std::vector<double> def) const {
  const auto* a = FindTyped(name, onnx::AttributeProto::FLOATS);
  return a ? std::vector<double>(a->floats().begin(), a->floats().end()) : def;
}
const onnx::TensorProto* OnnxNode::attr_tensor(const std::string& name) const {
  const auto* a = Find(name);
  return a && a->has_t() ? &a->t() : nullptr;
}

void OnnxNode::Unsupported(const std::string& what) const {
  Fail(ErrorKind::kUnsupported, proto_.op_type(), ": ", what, " is not supported");
}

int64_t OnnxNode::Axis(int64_t axis, int64_t rank) const {
  TG_CHECK(axis >= -rank && axis < std::max<int64_t>(rank, 1), kInvalidInput, proto_.op_type(),
           ": axis ", axis, " is out of range for rank ", rank);
  return axis < 0 ? axis + rank : axis;
}

std::vector<int64_t> NormalizeAxes(const OnnxNode& n, std::vector<int64_t> axes, int64_t rank) {
  for (int64_t& a : axes) a = n.Axis(a, rank);
  return axes;
}

Value* ScalarLike(Builder& b, Value* x, double v) { return b.Scalar(v, x->type().dtype); }

const OnnxConverterTable& OnnxConverters() {
  static const OnnxConverterTable table = [] {
    OnnxConverterTable t;
    AddElementwiseConverters(t);
    AddNnConverters(t);
    AddShapeConverters(t);
    AddReduceConverters(t);
    AddAttentionConverters(t);
    AddResizeConverters(t);
    AddRecurrentConverters(t);
    return t;
  }();
  return table;
}

std::vector<std::string> SupportedOnnxOps() {
  std::vector<std::string> ops;
  for (const auto& [name, fn] : OnnxConverters()) ops.push_back(name);
  return ops;
}

// ---- the importer -----------------------------------------------------------------------

namespace {

bool IsDefaultDomain(const std::string& d) { return d.empty() || d == "ai.onnx"; }

std::string NodeLabel(const onnx::NodeProto& n) {
  std::string name = n.name().empty() ? (n.output_size() ? n.output(0) : "?") : n.name();
  return "ONNX node '" + name + "' (" + n.op_type() + ")";
}

// The static type of a ValueInfo, with `override` replacing its shape. Symbolic or missing
// dimensions without an override are an error naming the input.
TensorType TypeOfInput(const onnx::ValueInfoProto& info, const OnnxImportOptions& options,
                       const HostTensor* value = nullptr) {
  TG_CHECK(info.type().has_tensor_type(), kUnsupported, "ONNX input '", info.name(),
           "' is not a tensor (sequences, maps and optionals are not supported)");
  const auto& tt = info.type().tensor_type();
  std::optional<DType> dtype = DTypeFromOnnx(tt.elem_type());
  TG_CHECK(dtype.has_value(), kUnsupported, "ONNX input '", info.name(), "' has element type ",
           OnnxTypeName(tt.elem_type()), ", which tilegraph has no dtype for");
  if (value != nullptr) return {*dtype, value->type().shape};
  auto it = options.input_shapes.find(info.name());
  if (it != options.input_shapes.end()) return {*dtype, it->second};
  TG_CHECK(tt.has_shape(), kInvalidInput, "ONNX input '", info.name(),
           "' has no shape in the model: give it in input_shapes");
  Shape shape;
  for (const auto& d : tt.shape().dim()) {
    TG_CHECK(d.has_dim_value() && d.dim_value() >= 0, kInvalidInput, "ONNX input '", info.name(),
             "' has a symbolic dimension '", d.dim_param(), "'; tilegraph compiles static "
             "shapes: give the input's shape in input_shapes");
    shape.push_back(d.dim_value());
  }
  return {*dtype, shape};
}

// The model's static type for a value, if it states one completely.
std::optional<TensorType> StatedType(const onnx::ValueInfoProto& info) {
  if (!info.type().has_tensor_type()) return std::nullopt;
  const auto& tt = info.type().tensor_type();
  std::optional<DType> dtype = DTypeFromOnnx(tt.elem_type());
  if (!dtype || !tt.has_shape()) return std::nullopt;
  Shape shape;
  for (const auto& d : tt.shape().dim()) {
    if (!d.has_dim_value()) return std::nullopt;
    shape.push_back(d.dim_value());
  }
  return TensorType{*dtype, shape};
}

class Importer {
 public:
  Importer(const onnx::ModelProto& model, const OnnxImportOptions& options)
      : model_(model), options_(options) {}

  OnnxImport Run() {
    OnnxImport out;
    out.opset = Opset();
    out.graph = std::make_unique<Graph>(model_.graph().name().empty() ? "onnx"
                                                                       : model_.graph().name());
    Graph& g = *out.graph;
    Builder b(g);
    const onnx::GraphProto& gp = model_.graph();
    CheckSupported(gp, out.opset);

    std::set<std::string> initializer_names;
    for (const auto& init : gp.initializer()) {
      TG_CHECK(!init.name().empty(), kParse, "an ONNX initializer has no name");
      TG_CHECK(initializer_names.insert(init.name()).second, kParse,
               "ONNX initializer '", init.name(), "' is defined twice");
      HostTensor value = TensorFromProto(init);
      Value* v;
      if (IsFloating(value.type().dtype) && !options_.weights_as_constants) {
        v = g.AddVariable(init.name(), value.type(), /*trainable=*/true);
        out.weights.push_back(init.name());
        initial_values_[init.name()] = std::move(value);
      } else {
        v = g.AddConstant(std::move(value), init.name());
      }
      Define(init.name(), v);
    }
    for (const auto& info : gp.input()) {
      if (initializer_names.count(info.name())) continue;  // an initializer's declaration
      auto fixed = options_.constant_inputs.find(info.name());
      if (fixed != options_.constant_inputs.end()) {
        TensorType stated = TypeOfInput(info, options_, &fixed->second);
        TG_CHECK(stated.dtype == fixed->second.type().dtype, kInvalidInput, "constant input '",
                 info.name(), "' has dtype ", DTypeName(fixed->second.type().dtype),
                 ", the model states ", DTypeName(stated.dtype));
        Define(info.name(), g.AddConstant(fixed->second, info.name()));
        continue;
      }
      Value* v = g.AddInput(info.name(), TypeOfInput(info, options_));
      Define(info.name(), v);
      out.inputs.push_back(info.name());
    }
    for (const auto& [name, shape] : options_.input_shapes) {
      (void)shape;
      TG_CHECK(std::find(out.inputs.begin(), out.inputs.end(), name) != out.inputs.end() ||
                   options_.constant_inputs.count(name), kInvalidInput, "input_shapes names '",
               name, "', which is not an input of the ONNX model");
    }
    for (const auto& vi : gp.value_info())
      if (auto t = StatedType(vi)) stated_[vi.name()] = *t;
    for (const auto& vi : gp.output())
      if (auto t = StatedType(vi)) stated_[vi.name()] = *t;

    for (const auto& node : gp.node()) {
      try {
        ConvertNode(b, node, out.opset);
      } catch (Error& e) {
        e.AddContext("in " + NodeLabel(node));
        throw;
      }
    }
    for (const auto& info : gp.output()) {
      Value* v = Lookup(info.name());
      TG_CHECK(v != nullptr, kParse, "ONNX graph output '", info.name(), "' is never computed");
      if (v->kind() != ValueKind::kNodeOutput) v = b.Op1("reshape", {v}, {{"shape", v->type().shape}});
      g.AddOutput(v);
      out.outputs.push_back(info.name());
    }
    out.initial_values = std::move(initial_values_);
    out.values = values_;
    return out;
  }

 private:
  int64_t Opset() const {
    for (const auto& op : model_.opset_import())
      if (IsDefaultDomain(op.domain())) return op.version();
    TG_CHECK(model_.opset_import_size() == 0, kUnsupported,
             "the ONNX model imports no opset of the default domain");
    return 1;
  }

  // Every node of an unsupported op type or domain, listed at once.
  void CheckSupported(const onnx::GraphProto& gp, int64_t opset) const {
    TG_CHECK(opset >= 1 && opset <= 28, kUnsupported, "ONNX opset ", opset,
             " (tilegraph imports opsets 1 to 28)");
    const auto& table = OnnxConverters();
    std::vector<std::string> missing;
    for (const auto& node : gp.node()) {
      if (IsDefaultDomain(node.domain()) && table.count(node.op_type())) continue;
      missing.push_back(NodeLabel(node) +
                        (IsDefaultDomain(node.domain()) ? "" : " of domain '" + node.domain() + "'"));
    }
    if (missing.empty()) return;
    std::string msg = std::to_string(missing.size()) + " ONNX node(s) use ops tilegraph does "
                      "not import:";
    for (const auto& m : missing) msg += "\n  " + m;
    Fail(ErrorKind::kUnsupported, msg);
  }

  void Define(const std::string& name, Value* v) {
    TG_CHECK(!values_.count(name), kParse, "ONNX value '", name, "' is defined twice");
    values_[name] = v;
  }
  Value* Lookup(const std::string& name) const {
    auto it = values_.find(name);
    return it == values_.end() ? nullptr : it->second;
  }

  void ConvertNode(Builder& b, const onnx::NodeProto& node, int64_t opset) {
    std::vector<Value*> inputs;
    for (const auto& name : node.input()) {
      if (name.empty()) {
        inputs.push_back(nullptr);
        continue;
      }
      Value* v = Lookup(name);
      TG_CHECK(v != nullptr, kParse, "input '", name, "' is not defined before this node "
               "(ONNX graphs are topologically sorted)");
      inputs.push_back(v);
    }
    b.set_source(NodeLabel(node));
    Graph& g = b.graph();
    size_t first_new = g.nodes().size();
    // Half precision: the node computes in f32 on its f16 / bf16 inputs and its f32 results
    // are rounded back (the IR's arithmetic is f32 / f64; casts and data movement keep the
    // half type as it is).
    std::optional<DType> half;
    if (node.op_type() != "Cast" && node.op_type() != "CastLike") {
      for (Value*& v : inputs) {
        if (v == nullptr || (v->type().dtype != DType::kF16 && v->type().dtype != DType::kBF16))
          continue;
        half = v->type().dtype;
        if (v->kind() == ValueKind::kConstant) {  // converted now: converters may read it
          HostTensor f32({DType::kF32, v->type().shape});
          for (int64_t i = 0; i < f32.type().numel(); ++i) f32.SetFromDouble(i, v->constant().GetAsDouble(i));
          v = g.AddConstant(std::move(f32));
        } else {
          v = b.Cast(v, DType::kF32);
        }
      }
    }
    OnnxNode n(node, b, opset, options_.training, std::move(inputs));
    std::vector<Value*> outs = OnnxConverters().at(node.op_type())(n);
    if (half)
      for (Value*& o : outs)
        if (o != nullptr && o->type().dtype == DType::kF32) o = b.Cast(o, *half);
    TG_CHECK(static_cast<int>(outs.size()) >= node.output_size() ||
                 std::all_of(node.output().begin() + outs.size(), node.output().end(),
                             [](const std::string& s) { return s.empty(); }),
             kInternal, "converter of ", node.op_type(), " returned ", outs.size(), " outputs");
    FoldConstants(g, first_new, outs);
    for (int i = 0; i < node.output_size(); ++i) {
      if (node.output(i).empty()) continue;
      TG_CHECK(i < static_cast<int>(outs.size()) && outs[i] != nullptr, kUnsupported,
               "output ", i, " ('", node.output(i), "') of ", node.op_type());
      CheckStatedType(node.output(i), outs[i]);
      Define(node.output(i), outs[i]);
    }
  }

  // Evaluates the nodes just built whose inputs are all constants, replacing their outputs
  // by constants (this is how shape arithmetic becomes the static sizes Reshape needs).
  void FoldConstants(Graph& g, size_t first_new, std::vector<Value*>& outs) {
    for (size_t k = first_new; k < g.nodes().size(); ++k) {
      Node* node = g.nodes()[k].get();
      const OpDef& def = OpRegistry::Global().Get(node->op());
      if (def.traits.random || def.traits.side_effects) continue;
      bool all_constant = true;
      for (Value* in : node->inputs()) all_constant &= in->kind() == ValueKind::kConstant;
      if (!all_constant || node->outputs().empty()) continue;
      int64_t bytes = 0;
      for (Value* o : node->outputs()) bytes += static_cast<int64_t>(o->type().bytes());
      if (bytes > (int64_t{64} << 20)) continue;  // large constants are computed at run time
      std::vector<const HostTensor*> in;
      for (Value* v : node->inputs()) in.push_back(&v->constant());
      std::vector<HostTensor> results = EvaluateNode(*node, in, DeviceKind::kCpu);
      for (size_t r = 0; r < results.size(); ++r) {
        Value* old = node->outputs()[r];
        Value* folded = g.AddConstant(std::move(results[r]));
        g.ReplaceAllUsesWith(old, folded);
        for (Value*& o : outs)
          if (o == old) o = folded;
      }
    }
  }

  void CheckStatedType(const std::string& name, Value* v) const {
    auto it = stated_.find(name);
    if (it == stated_.end()) return;
    // A model whose inputs were given new shapes states types for its original shapes.
    if (!options_.input_shapes.empty()) return;
    const TensorType& stated = it->second;
    TensorType ours = v->type();
    // Narrow integer types widen on import; compare shapes then.
    bool dtype_ok = stated.dtype == ours.dtype || !IsFloating(stated.dtype);
    TG_CHECK(dtype_ok && stated.shape == ours.shape, kShape, "ONNX value '", name,
             "': the model states type ", stated.ToString(), ", tilegraph infers ",
             ours.ToString());
  }

  const onnx::ModelProto& model_;
  const OnnxImportOptions& options_;
  std::map<std::string, Value*> values_;
  std::map<std::string, TensorType> stated_;
  std::map<std::string, HostTensor> initial_values_;
};

}  // namespace

OnnxImport ImportOnnx(const onnx::ModelProto& model, const OnnxImportOptions& options) {
  Importer importer(model, options);
  return importer.Run();
}

}  // namespace tg
