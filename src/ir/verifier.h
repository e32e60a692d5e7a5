// VerifyStructure: the op-independent invariants of a Graph (SSA, topological order,
// ownership, updates, constants, placement), checked recursively into nested graphs.
// The op-aware checks (registered ops, attributes, inferred types) live in
// passes/verifier.h, because ir may not depend on ops.
#pragma once

#include "ir/graph.h"

namespace tg {

// Throws Error(kInternal) naming the broken rule, with the offending node's Describe() and
// the graph's name as context.
void VerifyStructure(const Graph& graph);

}  // namespace tg
