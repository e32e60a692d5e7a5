// Gradient accumulation: the work of the optimizer step proper.
//
// With accumulation, the optimizer builder (autodiff/optimizer.cc) writes every parameter
// and optimizer-state update as where(apply, new, old), marked on_optimizer_step: only the
// last micro-batch of a step changes them. The nodes whose values reach nothing but such
// updates (the optimizer arithmetic, the gradient all-reduce of data parallelism) compute
// a result that every other micro-batch throws away; the runtime skips them there.
#pragma once

#include <unordered_set>

#include "ir/graph.h"

namespace tg {

// Nodes needed only by on_optimizer_step updates (empty when the graph has none).
std::unordered_set<const Node*> OptimizerStepOnlyNodes(const Graph& graph);

}  // namespace tg
