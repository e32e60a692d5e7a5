#include "lowering/weight_only.h"

#include "ops/weight_derived.h"

namespace tg {

WeightOnlyNodes FindWeightOnlyNodes(const Graph& graph) {
  WeightOnlyNodes out;
  if (!graph.updates().empty()) return out;
  std::unordered_set<const Value*> weight_only_values;
  auto weight_only = [&](const Value* v) {
    return IsWeight(v) || weight_only_values.count(v) != 0;
  };
  for (const auto& n : graph.nodes()) {  // in schedule order: producers come first
    if (!IsFunctionOfInputs(*n)) continue;
    bool all = true;
    for (const Value* in : n->inputs()) all = all && weight_only(in);
    if (!all) continue;
    out.nodes.insert(n.get());
    for (const Value* o : n->outputs()) weight_only_values.insert(o);
  }
  for (const auto& n : graph.nodes()) {
    if (out.nodes.count(n.get())) continue;
    for (const Value* in : n->inputs()) {
      if (weight_only_values.count(in)) out.handed_on.insert(in);
    }
  }
  for (const Value* v : graph.outputs()) {
    if (weight_only_values.count(v)) out.handed_on.insert(v);
  }
  return out;
}

}  // namespace tg
