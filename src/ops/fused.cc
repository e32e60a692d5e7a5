// fused_elementwise(inputs...){body: graph}: a group of elementwise ops run as one kernel.
// The body graph's inputs are the node's inputs in order and its outputs the node's outputs.
// Every body node is an elementwise op with block functions and every body node output has
// the same shape (the iteration space); inputs broadcast into it. Values are f32 or f64 (the
// compute type), bool (0/1 of the compute type inside, stored as bool) or f16 / bf16 (f32
// inside, stored in the format, every op's result rounded to it as the unfused op would). Built by the
// fuse-elementwise pass after autodiff, so not differentiable. `streaming_stores` lists the
// outputs written with non-temporal stores (passes/stream_update_stores.cc).
#include <map>

#include "kernels/cpu/fused_jit.h"
#include "kernels/cpu/fused_kernel.h"
#include "ops/elementwise_common.h"
#include "ops/evaluate.h"
#include "ops/families.h"

namespace tg {
namespace {

std::shared_ptr<const Graph> BodyOf(const Node& node) {
  const Attr& a = node.attrs().at("body");
  auto* g = std::get_if<std::shared_ptr<const Graph>>(&a);
  TG_CHECK(g != nullptr && *g, kInvalidInput,
           "fused_elementwise: attribute 'body' must be a graph");
  return *g;
}

// The compute type: the floating dtype used in the body (f32 when all values are bool).
// f16 / bf16 values compute in f32 (they are stored in their format and each op's result is
// rounded to it); they do not mix with f64.
DType ComputeType(const Graph& body, const std::string& where) {
  std::optional<DType> t;
  auto visit = [&](const Value* v) {
    DType d = v->type().dtype;
    if (d == DType::kBool) return;
    TG_CHECK(IsFloating(d), kShape, where, ": expected floating or bool values, got %",
             v->name(), " : ", v->type().ToString());
    d = ArithmeticDType(d);
    TG_CHECK(!t || *t == d, kShape, where, ": expected one floating dtype, got ", DTypeName(*t),
             " and ", DTypeName(d));
    t = d;
  };
  for (Value* v : body.inputs()) visit(v);
  for (Value* v : body.constants()) visit(v);
  for (const auto& n : body.nodes()) {
    for (Value* v : n->outputs()) visit(v);
  }
  return t.value_or(DType::kF32);
}

cpu::Stored StoredAs(DType d) {
  switch (d) {
    case DType::kBool: return cpu::Stored::kBool;
    case DType::kF16: return cpu::Stored::kF16;
    case DType::kBF16: return cpu::Stored::kBF16;
    default: return cpu::Stored::kCompute;
  }
}

std::vector<TensorType> InferFused(const InferContext& c) {
  const Graph& body = GetGraph(c.attrs, "body");
  TG_CHECK(c.inputs.size() == body.inputs().size(), kInvalidInput,
           "fused_elementwise: expected ", body.inputs().size(), " inputs (the body's), got ",
           c.inputs.size());
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    TG_CHECK(c.in(i) == body.inputs()[i]->type(), kShape, "fused_elementwise: input ", i,
             ": expected ", body.inputs()[i]->type().ToString(), ", got ", c.in(i).ToString());
  }
  TG_CHECK(!body.outputs().empty(), kInvalidInput, "fused_elementwise: body has no outputs");
  ComputeType(body, "fused_elementwise");
  const Shape& space = body.outputs()[0]->type().shape;
  std::vector<TensorType> out;
  for (Value* v : body.outputs()) {
    TG_CHECK(v->type().shape == space, kShape,
             "fused_elementwise: expected every output of shape ", ShapeToString(space), ", got ",
             v->type().ToString());
    out.push_back(v->type());
  }
  return out;
}

template <typename T>
cpu::FusedProgram<T> Compile(const Graph& body, const Shape& space) {
  const OpRegistry& registry = OpRegistry::Global();
  cpu::FusedProgram<T> p;
  p.shape = space;
  std::map<int, int> slot_of;  // body value id -> slot
  auto load = [&](Value* v, int arg, const void* constant) {
    TG_CHECK(BroadcastShapes(v->type().shape, space) == space, kShape,
             "fused_elementwise: %", v->name(), " : ", v->type().ToString(),
             " does not broadcast to ", ShapeToString(space));
    int s = p.num_slots++;
    slot_of[v->id()] = s;
    p.loads.push_back({s, arg, constant, StoredAs(v->type().dtype), v->type().shape});
  };
  for (size_t i = 0; i < body.inputs().size(); ++i) load(body.inputs()[i], int(i), nullptr);
  for (Value* c : body.constants()) load(c, -1, c->constant().data());
  for (const auto& n : body.nodes()) {
    const OpDef& def = registry.Get(n->op());
    TG_CHECK(def.elementwise && n->outputs().size() == 1, kUnsupported,
             "fused_elementwise: body node ", n->Describe(), " is not an elementwise op");
    TG_CHECK(n->output(0)->type().shape == space, kShape, "fused_elementwise: body node ",
             n->Describe(), ": expected shape ", ShapeToString(space), ", got ",
             n->output(0)->type().ToString());
    typename cpu::FusedProgram<T>::Step step;
    if constexpr (std::is_same_v<T, float>) step.fn = def.elementwise->f32;
    else step.fn = def.elementwise->f64;
    TG_CHECK(step.fn != nullptr, kUnsupported, "fused_elementwise: ", n->op(),
             " has no block function");
    if (def.elementwise->params) step.params = def.elementwise->params(n->attrs());
    step.jit = def.elementwise->jit;
    for (Value* in : n->inputs()) step.in_slots.push_back(slot_of.at(in->id()));
    step.out_slot = p.num_slots++;
    cpu::Stored out = StoredAs(n->output(0)->type().dtype);
    if (out == cpu::Stored::kF16 || out == cpu::Stored::kBF16) step.round_to = out;
    slot_of[n->output(0)->id()] = step.out_slot;
    p.steps.push_back(std::move(step));
  }
  for (size_t i = 0; i < body.outputs().size(); ++i) {
    Value* v = body.outputs()[i];
    p.stores.push_back({slot_of.at(v->id()), int(i), StoredAs(v->type().dtype)});
  }
  return p;
}

Kernel FusedCpuKernel(const Node& node) {
  std::shared_ptr<const Graph> body = BodyOf(node);
  Shape space = node.output(0)->type().shape;
  return DispatchFloat(ComputeType(*body, "fused_elementwise"), node.op(), [&](auto tag) -> Kernel {
    using T = decltype(tag);
    auto program = std::make_shared<cpu::FusedProgram<T>>(Compile<T>(*body, space));
    // `body` stays alive with the kernel: constants are read from it.
    if constexpr (std::is_same_v<T, float>) {
      std::vector<bool> streaming(node.outputs().size(), false);
      if (HasAttr(node.attrs(), "streaming_stores")) {
        for (int64_t o : GetInts(node.attrs(), "streaming_stores")) {
          TG_CHECK(o >= 0 && o < int64_t(streaming.size()), kInvalidInput, node.Describe(),
                   ": streaming_stores names output ", o, " of ", streaming.size());
          streaming[o] = true;
        }
      }
      std::shared_ptr<cpu::FusedJitKernel> jit =
          cpu::CompileFusedJit(*program, cpu::JitIsa::kAuto, std::move(streaming));
      if (jit) return [jit, body](const KernelArgs& a) { jit->Run(a.inputs, a.outputs); };
    }
    return [program, body](const KernelArgs& a) { cpu::RunFused(*program, a.inputs, a.outputs); };
  });
}

Kernel FusedReferenceKernel(const Node& node) {
  std::shared_ptr<const Graph> body = BodyOf(node);
  std::vector<TensorType> in_types, out_types;
  for (Value* v : node.inputs()) in_types.push_back(v->type());
  for (Value* v : node.outputs()) out_types.push_back(v->type());
  return [body, in_types, out_types](const KernelArgs& a) {
    std::map<std::string, HostTensor> feeds;
    for (size_t i = 0; i < in_types.size(); ++i) {
      feeds[body->inputs()[i]->name()] = HostTensor(in_types[i], a.inputs[i]);
    }
    EvalResult r = EvaluateGraph(*body, feeds, DeviceKind::kReference, *a.ctx);
    for (size_t i = 0; i < out_types.size(); ++i) {
      std::memcpy(a.outputs[i], r.outputs[i].data(), out_types[i].bytes());
    }
  };
}

// Sample bodies (built with the registry being filled: the elementwise ops come first).
std::shared_ptr<const Graph> SampleBody(OpRegistry& r, int which) {
  auto g = std::make_shared<Graph>("fused");
  Builder b(*g, r);
  if (which == 0) {  // broadcast inputs, a mask output and a value output
    Value* x = g->AddInput("x", {DType::kF32, {3, 4}});
    Value* y = g->AddInput("y", {DType::kF32, {4}});
    Value* t = b.Mul(x, y);
    Value* u = b.Op1("tanh", {b.Add(t, x)});
    g->AddOutput(u);
    g->AddOutput(b.Op1("gt", {u, y}));
  } else {  // a bool input, a scalar input, where, a constant
    Value* c = g->AddInput("c", {DType::kBool, {300, 256}});
    Value* x = g->AddInput("x", {DType::kF32, {300, 256}});
    Value* s = g->AddInput("s", {DType::kF32, {}});
    Value* e = b.Exp(b.Mul(x, s));
    g->AddOutput(b.Where(c, e, b.AddScalar(x, 1.0)));
  }
  return g;
}

}  // namespace

void RegisterFusedOps(OpRegistry& r) {
  OpDef def;
  def.name = "fused_elementwise";
  def.num_inputs = -1;
  def.min_inputs = 0;
  def.num_outputs = -1;
  // streaming_stores: outputs nothing reads soon (set by the stream-update-stores pass),
  // written past the caches where the kernel can; the values are the same either way.
  def.attrs = {{"body", std::nullopt}, {"streaming_stores", std::vector<int64_t>{}}};
  def.infer = InferFused;
  def.not_differentiable = true;
  def.traits.elementwise = true;
  def.traits.half_native = true;  // half values load, round and store in the kernel itself
  def.kernels[DeviceKind::kCpu] = FusedCpuKernel;
  def.kernels[DeviceKind::kReference] = FusedReferenceKernel;
  for (int which : {0, 1}) {
    std::shared_ptr<const Graph> body = SampleBody(r, which);
    OpSample s;
    for (Value* v : body->inputs()) {
      s.inputs.push_back(v->type());
      s.init.push_back(v->type().dtype == DType::kBool ? InputInit::Bools() : InputInit::Normal());
    }
    s.attrs = {{"body", body}};
    def.samples.push_back(s);
  }
  def.doc = "a group of elementwise ops (the body graph) run as one blocked kernel";
  r.Register(std::move(def));
}

}  // namespace tg
