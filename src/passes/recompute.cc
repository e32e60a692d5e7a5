// recompute: activation recomputation at checkpoints (PopTorch's recomputationCheckpoint).
//
// A `checkpoint` node marks a forward value the user chose to keep. Forward values are the
// ancestors of the graph's outputs; every other node is backward or optimizer work. When a
// graph has checkpoints, each forward value (other than a checkpoint) that the backward
// reads is recomputed instead of kept: its producer is cloned, recursively, from checkpoints,
// inputs, variables, constants and hyperparameters, and the clone is placed right before the
// value's first backward reader. The originals die at their last forward use, so between two
// checkpoints only the segment being differentiated is alive: the planned peak falls.
// Clones compute exactly what the originals did (random ops keep their rng_key and so draw
// the same numbers), so results are identical. Runs after CSE, which would merge the clones
// back into the originals.
#include <unordered_map>
#include <unordered_set>

#include "passes/passes.h"

namespace tg {
namespace {

class RecomputePass : public Pass {
 public:
  std::string name() const override { return "recompute"; }

  bool Run(Graph& graph, PassContext&) override {
    bool any_checkpoint = false;
    for (const auto& n : graph.nodes()) any_checkpoint |= n->op() == "checkpoint";
    if (!any_checkpoint) return false;
    std::unordered_set<const Node*> forward = Ancestors(graph);
    std::unordered_map<Value*, Value*> recomputed;  // forward value -> its clone
    std::vector<Node*> order;
    for (const auto& n : graph.nodes()) order.push_back(n.get());
    bool changed = false;
    for (Node* n : order) {
      if (forward.count(n)) continue;  // a backward / optimizer node
      for (size_t i = 0; i < n->inputs().size(); ++i) {
        Value* v = n->input(i);
        if (!NeedsRecompute(v, forward)) continue;
        n->set_input(i, Recompute(graph, v, n, forward, recomputed));
        changed = true;
      }
    }
    return changed;
  }

 private:
  static std::unordered_set<const Node*> Ancestors(const Graph& graph) {
    std::unordered_set<const Node*> seen;
    std::vector<const Node*> stack;
    for (Value* out : graph.outputs()) {
      if (out->producer()) stack.push_back(out->producer());
    }
    while (!stack.empty()) {
      const Node* n = stack.back();
      stack.pop_back();
      if (!seen.insert(n).second) continue;
      for (Value* in : n->inputs()) {
        if (in->producer()) stack.push_back(in->producer());
      }
    }
    return seen;
  }

  // A forward node output that is not itself kept (a checkpoint's output).
  static bool NeedsRecompute(Value* v, const std::unordered_set<const Node*>& forward) {
    const Node* p = v->producer();
    return p != nullptr && forward.count(p) && p->op() != "checkpoint";
  }

  // v's clone, built (with its own recomputed inputs) right before `reader`.
  Value* Recompute(Graph& graph, Value* v, const Node* reader,
                   const std::unordered_set<const Node*>& forward,
                   std::unordered_map<Value*, Value*>& recomputed) {
    auto it = recomputed.find(v);
    if (it != recomputed.end()) return it->second;
    const Node* p = v->producer();
    std::vector<Value*> inputs;
    for (Value* in : p->inputs()) {
      inputs.push_back(NeedsRecompute(in, forward)
                           ? Recompute(graph, in, reader, forward, recomputed)
                           : in);
    }
    std::vector<TensorType> types;
    for (Value* out : p->outputs()) types.push_back(out->type());
    Node* clone = graph.AddNode(p->op(), inputs, types, p->attrs(), reader);
    clone->set_placement(p->placement());
    clone->set_source(p->source());
    for (size_t i = 0; i < p->outputs().size(); ++i) recomputed[p->output(i)] = clone->output(i);
    return recomputed.at(v);
  }
};

}  // namespace

std::unique_ptr<Pass> CreateRecomputePass() { return std::make_unique<RecomputePass>(); }

}  // namespace tg
