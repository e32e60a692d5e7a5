// DCE: removes nodes none of whose outputs is used (by a node, a graph output or an update),
// unless the op has side effects, then drops constants nothing uses. Nodes whose op is not
// in the registry are kept: without an OpDef we cannot rule out side effects. Inputs,
// hyper-parameters and variables are the graph's interface and are never removed.
#include <unordered_set>

#include "passes/passes.h"

namespace tg {
namespace {

class DcePass : public Pass {
 public:
  std::string name() const override { return "dce"; }

  bool Run(Graph& graph, PassContext& ctx) override {
    const OpRegistry& registry = ctx.registry ? *ctx.registry : OpRegistry::Global();
    std::vector<int> uses = graph.CountUses();
    std::unordered_set<const Node*> dead;
    // A reverse walk over a topological order sees every use of a node before the node
    // itself, so one walk reaches the fixpoint; loop anyway in case the order is not.
    for (bool progress = true; progress;) {
      progress = false;
      for (auto it = graph.nodes().rbegin(); it != graph.nodes().rend(); ++it) {
        const Node& n = **it;
        if (dead.count(&n) || !Removable(n, registry)) continue;
        bool used = false;
        for (Value* out : n.outputs()) used = used || uses[out->id()] > 0;
        if (used) continue;
        dead.insert(&n);
        for (Value* in : n.inputs()) --uses[in->id()];
        progress = true;
      }
    }
    if (!dead.empty()) graph.RemoveNodesIf([&](const Node& n) { return dead.count(&n) != 0; });
    size_t constants = graph.constants().size();
    graph.RemoveUnusedConstants();
    return !dead.empty() || graph.constants().size() != constants;
  }

 private:
  static bool Removable(const Node& n, const OpRegistry& registry) {
    const OpDef* def = registry.Find(n.op());
    return def != nullptr && !def->traits.side_effects;
  }
};

}  // namespace

std::unique_ptr<Pass> CreateDcePass() { return std::make_unique<DcePass>(); }

}  // namespace tg
