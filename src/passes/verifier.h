// Verify: the full IR verifier. VerifyStructure (ir/verifier.h) checks the op-independent
// invariants; VerifyOps checks each node against its OpDef: the op is registered, input and
// output counts fit the schema, every attribute is declared, and re-running the op's infer
// function (attributes completed with their defaults) gives the node's output types.
#pragma once

#include "ir/graph.h"
#include "ir/verifier.h"
#include "ops/registry.h"

namespace tg {

// Op checks only (run VerifyStructure first: this assumes a structurally valid graph).
void VerifyOps(const Graph& graph, const OpRegistry& registry);

// Structure, then ops when a registry is given. Throws Error(kInternal).
void Verify(const Graph& graph, const OpRegistry* registry = nullptr);

}  // namespace tg
