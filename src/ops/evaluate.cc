#include "ops/evaluate.h"

#include "support/error.h"

namespace tg {

std::vector<HostTensor> EvaluateNode(const Node& node, const std::vector<const HostTensor*>& inputs,
                                     DeviceKind choice, const RunContext& ctx) {
  const OpDef& def = OpRegistry::Global().Get(node.op());
  const KernelFactory& factory = def.KernelFor(choice);
  Kernel kernel = AsTgError(ErrorKind::kUnsupported, "the kernel library refused this node",
                            [&] { return factory(node); });
  std::vector<HostTensor> outputs;
  for (Value* out : node.outputs()) outputs.emplace_back(out->type());
  std::vector<const void*> in_ptrs;
  for (const HostTensor* t : inputs) in_ptrs.push_back(t->data());
  std::vector<void*> out_ptrs;
  for (HostTensor& t : outputs) out_ptrs.push_back(t.data());
  AsTgError(ErrorKind::kRuntime, "kernel failed",
            [&] { kernel(KernelArgs{in_ptrs.data(), out_ptrs.data(), &ctx}); });
  return outputs;
}

EvalResult EvaluateGraph(const Graph& graph, const std::map<std::string, HostTensor>& feeds,
                         DeviceKind choice, const RunContext& ctx) {
  std::vector<HostTensor> values(graph.num_values());
  auto feed = [&](Value* v, bool required) {
    auto it = feeds.find(v->name());
    if (it == feeds.end()) {
      TG_CHECK(!required, kInvalidInput, "no value fed for %", v->name());
      values[v->id()] = HostTensor(v->type());
      return;
    }
    TG_CHECK(it->second.type() == v->type(), kInvalidInput, "fed value for %", v->name(),
             ": expected ", v->type().ToString(), ", got ", it->second.type().ToString());
    values[v->id()] = it->second;
  };
  for (Value* v : graph.inputs()) feed(v, true);
  for (Value* v : graph.hyperparams()) feed(v, true);
  for (Value* v : graph.variables()) feed(v, false);
  for (Value* v : graph.constants()) values[v->id()] = v->constant();
  for (const auto& n : graph.nodes()) {
    std::vector<const HostTensor*> ins;
    for (Value* in : n->inputs()) ins.push_back(&values[in->id()]);
    std::vector<HostTensor> outs;
    try {
      outs = EvaluateNode(*n, ins, choice, ctx);
    } catch (Error& e) {
      e.AddContext("in node " + n->Describe());
      throw;
    }
    for (size_t i = 0; i < outs.size(); ++i) values[n->output(i)->id()] = std::move(outs[i]);
  }
  EvalResult result;
  for (Value* v : graph.outputs()) result.outputs.push_back(values[v->id()]);
  for (const VariableUpdate& u : graph.updates()) {
    result.updated_variables[u.variable->name()] = values[u.value->id()];
  }
  return result;
}

}  // namespace tg
