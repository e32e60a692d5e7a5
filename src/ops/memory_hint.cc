#include "ops/memory_hint.h"

#include <vector>

#include "ops/registry.h"
#include "support/error.h"

namespace tg {

Node* HintAvailableMemory(Value* v, double proportion) {
  TG_CHECK(proportion > 0.0 && proportion <= 1.0, kInvalidInput,
           "available memory proportion must be in (0, 1], got ", proportion);
  const OpRegistry& registry = OpRegistry::Global();
  // Breadth-first up the producers, through elementwise ops and views only, a few steps
  // (a Linear's bias add and activation, a half model's casts).
  constexpr int kMaxSteps = 6;
  std::vector<Value*> frontier = {v};
  for (int step = 0; step < kMaxSteps && !frontier.empty(); ++step) {
    std::vector<Value*> next;
    for (Value* value : frontier) {
      Node* p = value->producer();
      if (p == nullptr) continue;
      const OpDef* def = registry.Find(p->op());
      if (def == nullptr) continue;
      if (def->gemm) {
        p->mutable_attrs()[kAvailableMemoryAttr] = proportion;
        return p;
      }
      if (!def->traits.elementwise && !def->elementwise && !def->traits.view) continue;
      for (Value* in : p->inputs()) next.push_back(in);
    }
    frontier = std::move(next);
  }
  return nullptr;
}

}  // namespace tg
