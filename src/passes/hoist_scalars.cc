// hoist-scalars: moves nodes that compute one element from the graph's interface alone
// (hyperparameters, variables, constants, and other such nodes) to the start of the
// schedule, keeping their relative order. Optimizers emit these per parameter (the cast of
// the learning rate, `step == 0`), interleaved with the per-parameter tensor updates; there
// they split what fuse-elementwise could otherwise make one pass over the weights, since a
// group may only read values computed before its first member. Reads of a variable may move
// earlier freely: variables are written only after the step (or in place by the planner,
// which runs after the passes on the final schedule). Random and side-effecting ops stay.
#include <unordered_set>

#include "passes/passes.h"

namespace tg {
namespace {

class HoistScalarsPass : public Pass {
 public:
  std::string name() const override { return "hoist-scalars"; }

  bool Run(Graph& graph, PassContext& ctx) override {
    std::unordered_set<const Node*> hoisted;
    std::vector<Node*> front, rest;
    for (const auto& up : graph.nodes()) {
      Node* n = up.get();
      if (Hoistable(*n, hoisted, *ctx.registry)) {
        hoisted.insert(n);
        front.push_back(n);
      } else {
        rest.push_back(n);
      }
    }
    // Unchanged when the hoisted nodes already form the schedule's prefix.
    bool changed = false;
    for (size_t i = 0; i < front.size(); ++i) changed |= graph.nodes()[i].get() != front[i];
    if (!changed) return false;
    front.insert(front.end(), rest.begin(), rest.end());
    graph.SetNodeOrder(std::move(front));
    return true;
  }

 private:
  static bool Hoistable(const Node& n, const std::unordered_set<const Node*>& hoisted,
                        const OpRegistry& registry) {
    const OpDef* def = registry.Find(n.op());
    if (def == nullptr || def->traits.side_effects || def->traits.random) return false;
    for (Value* out : n.outputs()) {
      if (out->type().numel() != 1) return false;
    }
    for (Value* in : n.inputs()) {
      if (in->producer() != nullptr && !hoisted.count(in->producer())) return false;
    }
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> CreateHoistScalarsPass() { return std::make_unique<HoistScalarsPass>(); }

}  // namespace tg
