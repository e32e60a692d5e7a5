// Evaluation of nodes and whole graphs on host tensors, one node at a time, with either the
// CPU kernels or the reference kernels. No planning, no fusion: this is the interpreter used
// by constant folding and by tests (gradient checks, pass equivalence), not the runtime.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "ops/registry.h"

namespace tg {

// Runs one node with the kernel of device kind `choice` (a node-at-a-time interpreter for
// constant folding and tests).
std::vector<HostTensor> EvaluateNode(const Node& node, const std::vector<const HostTensor*>& inputs,
                                     DeviceKind choice, const RunContext& ctx = {});

struct EvalResult {
  std::vector<HostTensor> outputs;
  std::map<std::string, HostTensor> updated_variables;  // variable name -> new value
};

// `feeds` maps input, hyperparam and variable names to values (variables not given are zero).
EvalResult EvaluateGraph(const Graph& graph, const std::map<std::string, HostTensor>& feeds,
                         DeviceKind choice, const RunContext& ctx = {});

}  // namespace tg
