#include "parallel/stage_copies.h"

#include <map>
#include <utility>

#include "ops/builder.h"

namespace tg {

int InsertStageCopies(Graph& graph) {
  Builder b(graph);
  std::map<std::pair<Value*, int>, Value*> copies;  // (value, destination) -> its copy
  int added = 0;
  std::vector<Node*> nodes;
  for (const auto& n : graph.nodes()) nodes.push_back(n.get());
  for (Node* n : nodes) {
    for (size_t i = 0; i < n->inputs().size(); ++i) {
      Value* v = n->input(i);
      const Node* producer = v->producer();
      if (producer == nullptr || producer->placement() == n->placement()) continue;
      auto key = std::make_pair(v, n->placement());
      auto it = copies.find(key);
      if (it == copies.end()) {
        b.set_insertion_point(n);
        b.set_placement(n->placement());
        b.set_source(n->source());
        Value* copy = b.Op1("stage_copy", {v}, {{"from_stage", int64_t{producer->placement()}},
                                                {"to_stage", int64_t{n->placement()}}});
        it = copies.emplace(key, copy).first;
        ++added;
      }
      n->set_input(i, it->second);
    }
  }
  b.set_insertion_point(nullptr);
  return added;
}

}  // namespace tg
