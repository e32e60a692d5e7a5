// Helpers for the generated op tests: deterministic random inputs for an OpSample, a
// one-node graph for a sample, and tolerant comparison of host tensors.
#pragma once

#include <random>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "ops/registry.h"

namespace tg::testing {

// Inputs for `sample`, with floating inputs converted to `float_dtype`.
std::vector<HostTensor> MakeSampleInputs(const OpSample& sample, DType float_dtype,
                                         std::mt19937_64& rng);

// Max over elements of |a-b| / (1 + |b|); +inf on shape/dtype mismatch or NaN mismatch.
double MaxRelativeError(const HostTensor& a, const HostTensor& b);

// A graph with one input per tensor and one node `op` over them; its outputs are the
// graph's outputs. Returns the node.
Node* BuildSingleOpGraph(Graph& g, const std::string& op, const std::vector<HostTensor>& inputs,
                         const AttrMap& attrs);

}  // namespace tg::testing
