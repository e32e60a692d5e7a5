#include "parallel/pipeline_order.h"

#include <algorithm>
#include <map>
#include <vector>

namespace tg {
namespace {

std::string SegmentName(int segment, int stages) {
  return segment < stages ? "the forward of device " + std::to_string(segment)
                          : "the backward of device " + std::to_string(2 * stages - 1 - segment);
}

// Nodes that a graph output depends on.
std::vector<bool> AncestorsOfOutputs(const Graph& g) {
  std::vector<bool> needed(g.num_values(), false);
  for (Value* v : g.outputs()) needed[v->id()] = true;
  const auto& nodes = g.nodes();
  std::vector<bool> is_forward(nodes.size(), false);
  for (size_t i = nodes.size(); i-- > 0;) {
    const Node& n = *nodes[i];
    bool any = false;
    for (Value* out : n.outputs()) any |= needed[out->id()];
    if (!any) continue;
    is_forward[i] = true;
    for (Value* in : n.inputs()) needed[in->id()] = true;
  }
  return is_forward;
}

}  // namespace

PipelineSegments FindPipelineSegments(const Graph& g, int stages) {
  PipelineSegments result;
  result.stages = stages;
  const auto& nodes = g.nodes();
  std::vector<bool> is_forward = AncestorsOfOutputs(g);
  for (size_t i = 0; i < nodes.size(); ++i) {
    int device = std::clamp(nodes[i]->placement(), 0, stages - 1);
    result.segment[nodes[i].get()] = is_forward[i] ? device : 2 * stages - 1 - device;
  }
  auto segment_of = [&](const Value* v) {  // -1: not produced by a node (always available)
    return v->producer() ? result.segment.at(v->producer()) : -1;
  };
  auto refuse = [&](std::string why) {
    if (result.why_not.empty()) result.why_not = std::move(why);
  };
  // Data flows forward through the devices, then back.
  for (const auto& n : nodes) {
    int mine = result.segment.at(n.get());
    for (Value* in : n->inputs()) {
      int theirs = segment_of(in);
      if (theirs > mine) {
        refuse(n->Describe() + " (in " + SegmentName(mine, stages) + ") reads %" + in->name() +
               ", computed later in the micro-batch (in " + SegmentName(theirs, stages) + ")");
      }
    }
  }
  // Variables updated per micro-batch are private to the segment that updates them.
  std::map<const Value*, std::vector<const Node*>> readers;
  for (const auto& n : nodes) {
    for (Value* in : n->inputs()) {
      if (in->kind() == ValueKind::kVariable) readers[in].push_back(n.get());
    }
  }
  for (const VariableUpdate& u : g.updates()) {
    int writer = u.value->producer() ? segment_of(u.value) : 2 * stages - 1;
    for (const Node* r : readers[u.variable]) {
      int at = result.segment.at(r);
      bool ok = u.on_optimizer_step ? at <= writer : at == writer;
      if (!ok) {
        refuse("variable %" + u.variable->name() + " is updated in " +
               SegmentName(writer, stages) + " every micro-batch and read in " +
               SegmentName(at, stages) + " by " + r->Describe() +
               ": with several micro-batches in flight that read would see another "
               "micro-batch's value");
      }
    }
    for (Value* out : g.outputs()) {
      if (out == u.variable && !u.on_optimizer_step) {
        refuse("variable %" + u.variable->name() + " is a graph output and changes every "
               "micro-batch");
      }
    }
  }
  return result;
}

PipelineSegments OrderForPipeline(Graph& g, int stages) {
  PipelineSegments segments = FindPipelineSegments(g, stages);
  if (!segments.why_not.empty()) return segments;
  std::vector<Node*> order;
  for (const auto& n : g.nodes()) order.push_back(n.get());
  std::stable_sort(order.begin(), order.end(), [&](const Node* a, const Node* b) {
    return segments.segment.at(a) < segments.segment.at(b);
  });
  g.SetNodeOrder(std::move(order));
  return segments;
}

}  // namespace tg
