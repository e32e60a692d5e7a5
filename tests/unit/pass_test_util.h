// Helpers of the pass tests: counting nodes, and checking that a rewritten graph computes
// what the original did.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <string>

#include "ir/graph.h"
#include "ir/printer.h"
#include "ops/evaluate.h"
#include "passes/verifier.h"

namespace tg {

// Nodes of op `op` in `g`.
inline int Count(const Graph& g, const std::string& op) {
  int n = 0;
  for (const auto& node : g.nodes()) n += node->op() == op;
  return n;
}

// The one node of op `op` in `g` (null when there is none; a test failure when there are two).
inline const Node* Only(const Graph& g, const std::string& op) {
  const Node* found = nullptr;
  for (const auto& n : g.nodes()) {
    if (n->op() == op) {
      EXPECT_EQ(found, nullptr) << "two " << op << " nodes";
      found = n.get();
    }
  }
  return found;
}

// Standard-normal values (rounded to each input's dtype) for every input of `g`.
inline std::map<std::string, HostTensor> RandomFeeds(const Graph& g, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  std::map<std::string, HostTensor> feeds;
  for (Value* v : g.inputs()) {
    HostTensor h(v->type());
    for (int64_t i = 0; i < h.type().numel(); ++i) h.SetFromDouble(i, normal(rng));
    feeds[v->name()] = h;
  }
  return feeds;
}

// Evaluates the graph `text` describes and `after` (the same graph rewritten by a pass) on the
// same random inputs and expects equal outputs, to `tolerance` (absolute).
inline void ExpectSameOutputs(const std::string& text, const Graph& after,
                              double tolerance = 1e-12) {
  std::unique_ptr<Graph> before = ParseGraph(text);
  Verify(*before, &OpRegistry::Global());
  std::map<std::string, HostTensor> feeds = RandomFeeds(*before, 7);
  EvalResult a = EvaluateGraph(*before, feeds, DeviceKind::kCpu);
  EvalResult b = EvaluateGraph(after, feeds, DeviceKind::kCpu);
  ASSERT_EQ(a.outputs.size(), b.outputs.size());
  for (size_t o = 0; o < a.outputs.size(); ++o) {
    ASSERT_EQ(a.outputs[o].type(), b.outputs[o].type());
    for (int64_t i = 0; i < a.outputs[o].type().numel(); ++i) {
      ASSERT_NEAR(a.outputs[o].GetAsDouble(i), b.outputs[o].GetAsDouble(i), tolerance)
          << "output " << o << " element " << i;
    }
  }
}

}  // namespace tg
