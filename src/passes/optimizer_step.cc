#include "passes/optimizer_step.h"

#include <vector>

namespace tg {

std::unordered_set<const Node*> OptimizerStepOnlyNodes(const Graph& graph) {
  std::unordered_set<const Node*> result;
  bool any = false;
  for (const VariableUpdate& u : graph.updates()) any |= u.on_optimizer_step;
  if (!any) return result;
  // Values every micro-batch needs: outputs, per-micro-batch updates, and their ancestors.
  std::vector<bool> every(graph.num_values(), false);
  std::vector<bool> step(graph.num_values(), false);  // reaches an on_optimizer_step update
  for (Value* v : graph.outputs()) every[v->id()] = true;
  for (const VariableUpdate& u : graph.updates()) {
    (u.on_optimizer_step ? step : every)[u.value->id()] = true;
  }
  const auto& nodes = graph.nodes();
  for (size_t i = nodes.size(); i-- > 0;) {
    const Node& n = *nodes[i];
    bool needed = false, for_step = false;
    for (Value* out : n.outputs()) {
      needed |= every[out->id()];
      for_step |= step[out->id()];
    }
    if (needed) {
      for (Value* in : n.inputs()) every[in->id()] = true;
    } else if (for_step) {
      result.insert(&n);
      for (Value* in : n.inputs()) step[in->id()] = true;
    }
  }
  return result;
}

}  // namespace tg
