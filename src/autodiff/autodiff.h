// Reverse-mode automatic differentiation over tilegraph IR. Appends the backward graph to
// the same Graph as ordinary nodes built by each op's grad rule, so every later pass (fusion,
// memory planning) treats forward and backward alike.
//
// Assumptions: the graph is in topological order; only floating-point values carry
// gradients; integer/bool values, constants, inputs, hyperparams and frozen variables act
// as constants unless listed in `wrt`. Gradients of values used several times are summed.
#pragma once

#include <vector>

#include "ir/graph.h"
#include "ops/builder.h"

namespace tg {

// Returns d(loss)/d(w) for each w in `wrt` (a zeros `full` node when no differentiable path
// leads from w to the loss: eager PyTorch's grad is None there; `has_path`, when given, gets
// false for those w). `seed` is the gradient of the loss itself (null: ones); a scalar seed
// broadcasts to the loss shape (this is how the loss-scaling factor enters). Throws
// Unsupported when a value on the path is produced by a not-differentiable op.
std::vector<Value*> BuildGradients(Builder& b, Value* loss, const std::vector<Value*>& wrt,
                                   Value* seed = nullptr, std::vector<bool>* has_path = nullptr);

}  // namespace tg
