// VerifyOps / Verify: node-against-OpDef checks (see verifier.h).
#include "passes/verifier.h"

#include "ops/memory_hint.h"

#include <string>

#include "support/error.h"

namespace tg {
namespace {

std::string TypesText(const std::vector<TensorType>& types) {
  std::string s;
  for (size_t i = 0; i < types.size(); ++i) s += (i ? ", " : "") + types[i].ToString();
  return s;
}

void VerifyNode(const Node& n, const OpRegistry& registry) {
  const OpDef* def = registry.Find(n.op());
  TG_CHECK(def != nullptr, kInternal, "op '", n.op(), "' is not registered");
  int num_inputs = static_cast<int>(n.inputs().size());
  if (def->num_inputs >= 0) {
    TG_CHECK(num_inputs == def->num_inputs, kInternal, "op ", n.op(), " takes ",
             def->num_inputs, " inputs, the node has ", num_inputs);
  } else {
    TG_CHECK(num_inputs >= def->min_inputs, kInternal, "op ", n.op(), " takes at least ",
             def->min_inputs, " inputs, the node has ", num_inputs);
  }
  // num_outputs < 0: the infer function decides (checked below against the inferred types).
  TG_CHECK(def->num_outputs < 0 || static_cast<int>(n.outputs().size()) == def->num_outputs,
           kInternal, "op ", n.op(), " has ", def->num_outputs, " outputs, the node has ",
           n.outputs().size());
  for (const auto& [name, attr] : n.attrs()) {
    bool known = (def->traits.random && name == "rng_key") ||
                 (def->gemm && name == kAvailableMemoryAttr);  // ops/memory_hint.h
    for (const AttrSpec& spec : def->attrs) known = known || spec.name == name;
    TG_CHECK(known, kInternal, "attribute '", name, "' is not in the schema of op ", n.op());
  }
  std::vector<TensorType> in_types;
  for (Value* v : n.inputs()) in_types.push_back(v->type());
  std::vector<TensorType> inferred;
  try {
    inferred = InferTypes(*def, in_types, CompleteAttrs(*def, n.attrs()));
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::kInternal) throw;
    Fail(ErrorKind::kInternal, "type inference fails: ", e.message());
  }
  std::vector<TensorType> actual;
  for (Value* v : n.outputs()) actual.push_back(v->type());
  TG_CHECK(inferred == actual, kInternal, "output types ", TypesText(actual),
           " differ from the inferred ", TypesText(inferred));
}

}  // namespace

void VerifyOps(const Graph& graph, const OpRegistry& registry) {
  for (const auto& n : graph.nodes()) {
    try {
      VerifyNode(*n, registry);
      for (const auto& [name, attr] : n->attrs()) {
        if (const auto* g = std::get_if<std::shared_ptr<const Graph>>(&attr)) {
          try {
            VerifyOps(**g, registry);
          } catch (Error& e) {
            e.AddContext("in graph attribute '" + name + "'");
            throw;
          }
        }
      }
    } catch (Error& e) {
      e.AddContext("in node " + n->Describe());
      e.AddContext("in graph " + graph.name());
      throw;
    }
  }
}

void Verify(const Graph& graph, const OpRegistry* registry) {
  VerifyStructure(graph);
  if (registry != nullptr) VerifyOps(graph, *registry);
}

}  // namespace tg
