#include "ops/weight_derived.h"

#include "ops/registry.h"

namespace tg {

bool IsFunctionOfInputs(const Node& node) {
  const OpDef* def = OpRegistry::Global().Find(node.op());
  return def != nullptr && !def->traits.random && !def->traits.side_effects;
}

bool IsWeightDerived(const Value* v, int depth) {
  if (IsWeight(v)) return true;
  const Node* p = v->producer();
  if (p == nullptr || depth == 0 || !IsFunctionOfInputs(*p)) return false;
  for (const Value* in : p->inputs()) {
    if (!IsWeightDerived(in, depth - 1)) return false;
  }
  return true;
}

}  // namespace tg
