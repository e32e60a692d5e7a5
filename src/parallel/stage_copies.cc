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

namespace tg {

int CheckpointStageInputs(Graph& graph) {
  // Forward = ancestors of the graph outputs.
  std::vector<bool> needed(graph.num_values(), false);
  for (Value* v : graph.outputs()) needed[v->id()] = true;
  std::vector<Node*> forward_copies;
  const auto& nodes = graph.nodes();
  for (size_t i = nodes.size(); i-- > 0;) {
    Node* n = nodes[i].get();
    bool forward = false;
    for (Value* out : n->outputs()) forward |= needed[out->id()];
    if (!forward) continue;
    for (Value* in : n->inputs()) needed[in->id()] = true;
    if (n->op() == "stage_copy") forward_copies.push_back(n);
  }
  Builder b(graph);
  int added = 0;
  for (Node* copy : forward_copies) {
    Value* received = copy->output(0);
    std::vector<std::pair<Node*, size_t>> readers;
    for (const auto& n : nodes) {
      for (size_t i = 0; i < n->inputs().size(); ++i) {
        if (n->input(i) == received) readers.emplace_back(n.get(), i);
      }
    }
    if (readers.empty()) continue;
    b.set_insertion_point(readers.front().first);
    b.set_placement(copy->placement());
    b.set_source(copy->source());
    Value* kept = b.Op1("checkpoint", {received});
    for (auto& [reader, i] : readers) reader->set_input(i, kept);
    ++added;
  }
  b.set_insertion_point(nullptr);
  return added;
}

}  // namespace tg
