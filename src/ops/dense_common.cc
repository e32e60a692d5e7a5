// Out-of-line helpers of ops/dense_common.h.
#include "ops/dense_common.h"

namespace tg::dense {

bool IsWeightDerived(const Value* v, int depth) {
  if (IsWeight(v)) return true;
  const Node* p = v->producer();
  if (p == nullptr || depth == 0) return false;  // an input or a hyperparameter
  const OpDef* def = OpRegistry::Global().Find(p->op());
  if (def == nullptr || def->traits.random || def->traits.side_effects) return false;
  for (const Value* in : p->inputs()) {
    if (!IsWeightDerived(in, depth - 1)) return false;
  }
  return true;
}

}  // namespace tg::dense
