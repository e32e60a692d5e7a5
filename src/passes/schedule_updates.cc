// schedule-updates: runs each parameter's optimizer update as soon as it can, instead of
// where the optimizer appended it (after the whole backward). A node whose outputs feed only
// variable updates (after fusion: one parameter's SGD / Adam chain) moves to just after the
// last of its inputs' producers and of the other readers of the variables it updates. Each
// gradient then dies right after its update instead of every gradient living until the end
// of the backward (the peak of a training step's memory: the arena on the CPU, the tiles on
// the IPU Model), and the update can still be written in place, since lowering's condition
// (no reader of the variable after the update) holds. Nothing else moves; moved nodes keep
// their relative order. What reads the variables before the update still reads the old
// value: the same numbers as before.
#include <algorithm>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include "ops/registry.h"
#include "passes/passes.h"

namespace tg {
namespace {

class ScheduleUpdatesPass : public Pass {
 public:
  std::string name() const override { return "schedule-updates"; }

  bool Run(Graph& graph, PassContext& ctx) override {
    const auto& nodes = graph.nodes();
    std::unordered_map<const Node*, int64_t> pos;
    for (size_t i = 0; i < nodes.size(); ++i) pos[nodes[i].get()] = static_cast<int64_t>(i);
    std::unordered_map<const Value*, const Value*> variable_of;  // update value -> variable
    for (const VariableUpdate& u : graph.updates()) variable_of[u.value] = u.variable;
    std::unordered_map<const Value*, std::vector<const Node*>> readers;
    for (const auto& n : nodes) {
      for (const Value* in : n->inputs()) {
        readers[in].push_back(n.get());
      }
    }

    // Elementwise nodes (and constant generators) that only serve updates: each output is an
    // update value read by nothing else, or read only by such nodes (the unfused chain of
    // one parameter's update, its gradient accumulator's reset included). Gradients
    // themselves (matmuls, reductions) keep their place in the backward.
    std::unordered_set<const Node*> serves_updates;
    for (auto it = nodes.rbegin(); it != nodes.rend(); ++it) {
      const Node* n = it->get();
      const OpDef& def = ctx.registry->Get(n->op());
      // A generator with no inputs (the zeros an accumulator is reset to) moves with the
      // chain it feeds; left at the end, it would hold the whole chain back.
      const bool generator = n->inputs().empty() && !def.traits.random;
      bool only = !n->outputs().empty() && (def.traits.elementwise || def.elementwise ||
                                            n->op() == "fused_elementwise" || generator);
      // Scalar arithmetic (a hyperparameter's cast, -lr) stays where hoist-scalars put it:
      // moving it frees nothing, and placed inside the first parameter's chain it split that
      // chain's fused kernel in two.
      bool scalar = true;
      for (const Value* out : n->outputs()) scalar &= out->type().numel() == 1;
      only &= !scalar;
      for (const Value* out : n->outputs()) {
        // An update value may be read by other update chains only (a half shadow's cast of
        // the new weight, passes/half_weight_shadows.cc); anything else is read where it is.
        bool update = variable_of.count(out) != 0;
        auto r = readers.find(out);
        if (r == readers.end()) {
          only &= update;
        } else {
          for (const Node* reader : r->second) only &= serves_updates.count(reader) != 0;
        }
        for (const Value* o : graph.outputs()) only &= o != out;
      }
      if (only) serves_updates.insert(n);
    }
    // Anchors in program order: after the inputs' producers (a moved producer: its anchor,
    // sorted before by its original position) and after the variable's other readers.
    std::unordered_map<const Node*, int64_t> anchor_of;
    std::vector<std::tuple<int64_t, int, int64_t, Node*>> order;
    bool changed = false;
    for (const auto& up : nodes) {
      Node* n = up.get();
      const int64_t here = pos[n];
      if (!serves_updates.count(n)) {
        order.emplace_back(here, 0, here, n);
        continue;
      }
      int64_t anchor = 0;
      for (const Value* in : n->inputs()) {
        const Node* p = in->producer();
        if (p == nullptr) continue;
        anchor = std::max(anchor, serves_updates.count(p) ? anchor_of.at(p) : pos.at(p));
      }
      for (const Value* out : n->outputs()) {
        auto v = variable_of.find(out);
        if (v == variable_of.end()) continue;
        auto r = readers.find(v->second);
        if (r == readers.end()) continue;
        // Readers inside update chains (weight decay reads the weight) move with them;
        // should one run after the write, lowering copies the update at the end of the
        // step instead of writing it in place: the numbers never depend on this order.
        for (const Node* reader : r->second) {
          if (reader != n && !serves_updates.count(reader)) {
            anchor = std::max(anchor, pos.at(reader));
          }
        }
      }
      anchor_of[n] = anchor;
      order.emplace_back(anchor, 1, here, n);
    }
    // A chain's earlier nodes wait with its last one (the variable's writer), so that the
    // chain stays contiguous: fusion makes it one pass, written in place into the variable.
    for (auto it = nodes.rbegin(); it != nodes.rend(); ++it) {
      const Node* n = it->get();
      if (!serves_updates.count(n)) continue;
      int64_t latest = -1;
      for (const Value* out : n->outputs()) {
        auto r = readers.find(out);
        if (r == readers.end()) continue;
        for (const Node* reader : r->second) {
          int64_t a = anchor_of.at(reader);
          latest = latest < 0 ? a : std::min(latest, a);
        }
      }
      if (latest >= 0) anchor_of[n] = std::max(anchor_of[n], latest);
    }
    for (auto& [anchor, moved, here, n] : order) {
      if (moved) anchor = anchor_of.at(n);
    }
    std::stable_sort(order.begin(), order.end());
    std::vector<Node*> schedule;
    for (size_t i = 0; i < order.size(); ++i) {
      schedule.push_back(std::get<3>(order[i]));
      changed |= schedule.back() != nodes[i].get();
    }
    if (!changed) return false;
    graph.SetNodeOrder(std::move(schedule));
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> CreateScheduleUpdatesPass() { return std::make_unique<ScheduleUpdatesPass>(); }

}  // namespace tg
