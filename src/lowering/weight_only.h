// Weight-only nodes: computed from variables and constants alone (a weight cast to bf16 for a
// mixed-precision matmul, a transposed or reshaped weight, position embeddings gathered by
// constant ids), so their results cannot change while no variable does.
//
// In a program that updates no variable (inference), lowering keeps the results such nodes
// hand to the rest of the graph in arena buffers of their own, live over the whole step
// (BufferAssignment's pinned values), and the runtime runs the weight-only instructions once
// per RunContext::variables_version instead of on every call: ONNX Runtime's and PopART's
// constant folding of weights, done where the weights live, so that writing new weights
// (copyWeightsToDevice, load_state_dict) needs no recompilation.
#pragma once

#include <unordered_set>
#include <vector>

#include "ir/graph.h"

namespace tg {

struct WeightOnlyNodes {
  std::unordered_set<const Node*> nodes;  // every weight-only node
  // Their outputs that a node outside the set reads, or the graph returns: what must survive
  // from one call to the next.
  std::unordered_set<const Value*> handed_on;
};

// Empty for a graph that updates variables (their values change every step) or has no such
// nodes. Random and side-effecting nodes never count (they must run every time).
WeightOnlyNodes FindWeightOnlyNodes(const Graph& graph);

}  // namespace tg
