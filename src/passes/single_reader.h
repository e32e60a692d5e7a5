// Which node reads a value, when exactly one does: the question every epilogue-fusion pass
// asks before folding a value into the node that produces it (a second reader, a graph
// output or a variable update needs the value materialized). All() lists every reader, for
// patterns that read a value twice (x * sigmoid(x)).
#pragma once

#include <unordered_map>
#include <vector>

#include "ir/graph.h"

namespace tg {

class SingleReaders {
 public:
  explicit SingleReaders(Graph& graph) : uses_(graph.CountUses()) {
    for (const auto& node : graph.nodes()) {
      for (Value* in : node->inputs()) {
        reader_[in] = node.get();
        if (all_[in].empty() || all_[in].back() != node.get()) all_[in].push_back(node.get());
      }
    }
  }
  // The one node reading `v`, or null when `v` has another reader, is an output or an update.
  Node* Of(const Value* v) const {
    if (uses_[v->id()] != 1) return nullptr;
    auto it = reader_.find(v);
    return it == reader_.end() ? nullptr : it->second;
  }
  // How many times `v` is used (inputs, outputs, updates) and the distinct nodes reading it.
  int uses(const Value* v) const { return uses_[v->id()]; }
  const std::vector<Node*>& All(const Value* v) const {
    static const std::vector<Node*> kNone;
    auto it = all_.find(v);
    return it == all_.end() ? kNone : it->second;
  }

 private:
  std::vector<int> uses_;
  std::unordered_map<const Value*, Node*> reader_;
  std::unordered_map<const Value*, std::vector<Node*>> all_;
};

}  // namespace tg
