// Values fixed between weight writes: the one answer to "may a kernel or the runtime keep
// something computed from this value across calls?". Their contents change only in runs that
// move RunContext::variables_version, so data derived from them (a weight prepacked into
// oneDNN's layout, a folded batch norm, a weight cast to bf16) may be kept while it holds.
// Kernels ask per value (IsWeight, IsWeightDerived); lowering's weight-only instructions
// (lowering/weight_only.h) apply the same rule to the whole graph.
#pragma once

#include "ir/graph.h"

namespace tg {

// A variable or a constant.
inline bool IsWeight(const Value* v) {
  return v->kind() == ValueKind::kVariable || v->kind() == ValueKind::kConstant;
}

// Whether the node's outputs are a function of its inputs alone: not random, no side effects
// (an unknown op is not).
bool IsFunctionOfInputs(const Node& node);

// A weight, or computed from weights alone through function-of-inputs nodes (a reshaped
// bias, a cast weight), at most `depth` nodes deep.
bool IsWeightDerived(const Value* v, int depth = 4);

}  // namespace tg
