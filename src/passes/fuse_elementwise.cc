// fuse-elementwise: groups connected elementwise nodes (ops with block functions, not random)
// whose outputs share one shape, one compute dtype (f32 or f64; bool values allowed inside;
// f16 / bf16 values compute in f32)
// and one placement into fused_elementwise nodes, so a chain of them becomes one pass over
// memory. Values used outside a group become outputs of its fused node.
//
// Schedule safety: groups grow along the schedule and the fused node takes the place of the
// group's first member. A node joins a group only when each of its producers is in the group
// or scheduled before the group's first member, so every fused node's inputs are computed
// before it and every outside user of its outputs comes after it. Groups of one stay unfused.
// A node that only shares an input with a group (a sibling) joins it only when the group
// ends close before it in the schedule: far siblings are other phases of the step (a cast
// recomputed for the backward), and fusing them would keep their results alive in between.
// The same holds for a far consumer of a group's value that is also read elsewhere.
#include <algorithm>
#include <memory>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include "ops/builder.h"
#include "passes/optimizer_step.h"
#include "passes/passes.h"
#include "support/error.h"

namespace tg {
namespace {

struct Key {
  Shape shape;
  std::optional<DType> dtype;  // unset: only bool values (fits any compute dtype)
  int placement = 0;
  // Work only the optimizer step needs (passes/optimizer_step.h) stays apart from the work
  // of every micro-batch, so that the runtime can skip it.
  bool optimizer_step_only = false;
};

// The node's fusion key, or nullopt when the node cannot be fused.
std::optional<Key> FusionKey(const Node& n, const OpRegistry& registry,
                             const std::unordered_set<const Node*>& step_only) {
  if (n.op() == "fused_elementwise" || n.outputs().size() != 1) return std::nullopt;
  const OpDef* def = registry.Find(n.op());
  if (def == nullptr || !def->elementwise || def->traits.random) return std::nullopt;
  if (!def->elementwise->f32 || !def->elementwise->f64) return std::nullopt;
  Key key{n.output(0)->type().shape, std::nullopt, n.placement(), step_only.count(&n) > 0};
  // The compute dtype: f16 / bf16 values compute in f32 (stored in their format, each op's
  // result rounded to it), so they join f32 groups.
  auto visit = [&](const TensorType& t) {
    if (t.dtype == DType::kBool) return true;
    DType compute = ArithmeticDType(t.dtype);
    if (compute != DType::kF32 && compute != DType::kF64) return false;
    if (key.dtype && *key.dtype != compute) return false;
    key.dtype = compute;
    return true;
  };
  if (!visit(n.output(0)->type())) return std::nullopt;
  for (Value* in : n.inputs()) {
    if (!visit(in->type())) return std::nullopt;
    if (in->type().shape.size() > key.shape.size()) return std::nullopt;
    const size_t rank = in->type().shape.size(), lead = key.shape.size() - rank;
    for (size_t i = 0; i < rank; ++i) {
      int64_t d = in->type().shape[i];
      if (d != 1 && d != key.shape[lead + i]) return std::nullopt;
    }
  }
  return key;
}

struct Group {
  Key key;
  int start = 0;  // schedule position of the first member
  int last = 0;   // schedule position of the last member
  std::vector<Node*> members;
};

// How far back (in schedule positions) a group that only shares an input with a node may
// end for the node to join it.
constexpr int kSiblingWindow = 32;

bool Compatible(const Key& g, const Key& n) {
  return g.shape == n.shape && g.placement == n.placement &&
         g.optimizer_step_only == n.optimizer_step_only &&
         (!g.dtype || !n.dtype || *g.dtype == *n.dtype);
}

using Positions = std::unordered_map<const Node*, int>;
using GroupOf = std::unordered_map<const Node*, int>;

// Whether `n` may join group `c`: each producer of its inputs is in the group or is
// scheduled before the group's first member.
bool CanJoin(const Node& n, int c, const std::vector<Group>& groups, const GroupOf& group_of,
             const Positions& pos) {
  for (Value* in : n.inputs()) {
    Node* p = in->producer();
    if (p == nullptr) continue;
    auto it = group_of.find(p);
    if (it != group_of.end() && it->second == c) continue;
    if (pos.at(p) >= groups[c].start) return false;
  }
  return true;
}

// Whether groups ia and ib may become one group starting at the earlier of their starts:
// every producer outside both groups must come before that start.
bool CanMerge(int ia, int ib, const std::vector<Group>& groups, const GroupOf& group_of,
              const Positions& pos) {
  int start = std::min(groups[ia].start, groups[ib].start);
  for (int id : {ia, ib}) {
    for (const Node* m : groups[id].members) {
      for (Value* in : m->inputs()) {
        Node* p = in->producer();
        if (p == nullptr) continue;
        auto it = group_of.find(p);
        bool inside = it != group_of.end() && (it->second == ia || it->second == ib);
        if (!inside && pos.at(p) >= start) return false;
      }
    }
  }
  return true;
}

class FuseElementwisePass : public Pass {
 public:
  std::string name() const override { return "fuse-elementwise"; }

  bool Run(Graph& graph, PassContext& ctx) override {
    std::vector<Group> groups = FormGroups(graph, *ctx.registry);
    bool changed = false;
    for (Group& g : groups) {
      if (g.members.size() >= 2) changed |= Fuse(graph, g);
    }
    return changed;
  }

 private:
  static std::vector<Group> FormGroups(const Graph& graph, const OpRegistry& registry) {
    std::vector<Group> groups;
    Positions pos;
    GroupOf group_of;
    std::unordered_map<int, std::vector<int>> consumer_groups;  // value id -> groups using it
    std::vector<int> merged_into;  // per group: the group it was merged into, or -1
    const std::unordered_set<const Node*> step_only = OptimizerStepOnlyNodes(graph);
    const std::vector<int> uses = graph.CountUses();
    int i = 0;
    for (const auto& up : graph.nodes()) {
      Node* n = up.get();
      pos[n] = i++;
      std::optional<Key> key = FusionKey(*n, registry, step_only);
      if (!key) continue;
      // Candidates: groups producing an input first, then groups sharing a (non-constant) input.
      std::vector<int> candidates;
      for (Value* in : n->inputs()) {
        auto it = in->producer() ? group_of.find(in->producer()) : group_of.end();
        if (it == group_of.end()) continue;
        // A consumer far down the schedule joins its producer's group only when it is the
        // value's one reader. Otherwise joining hoists it there and its result stays alive
        // beside the value, which is still read later: a weight decay term w * wd pulled into
        // the forward's cast of a large embedding kept a second copy of it for the whole step.
        if (pos[n] - groups[it->second].last <= kSiblingWindow || uses[in->id()] == 1) {
          candidates.push_back(it->second);
        }
      }
      for (Value* in : n->inputs()) {
        if (in->kind() == ValueKind::kConstant) continue;
        auto it = consumer_groups.find(in->id());
        if (it == consumer_groups.end()) continue;
        for (int c : it->second) {
          // A sibling far back in the schedule is left alone: joining it would hoist this
          // node there (the fused node takes its first member's place), keeping its result
          // alive all the way, e.g. a recomputed cast pulled back into the forward pass.
          if (pos[n] - groups[c].last <= kSiblingWindow) candidates.push_back(c);
        }
      }
      // A group id may have been merged into another; resolve to the live one.
      auto live = [&](int c) {
        while (merged_into[c] >= 0) c = merged_into[c];
        return c;
      };
      for (int& c : candidates) c = live(c);
      int chosen = -1;
      for (int c : candidates) {
        if (Compatible(groups[c].key, *key) && CanJoin(*n, c, groups, group_of, pos)) {
          chosen = c;
          break;
        }
      }
      if (chosen < 0) {
        chosen = static_cast<int>(groups.size());
        groups.push_back(Group{*key, pos[n], pos[n], {}});
        merged_into.push_back(-1);
      }
      Group& g = groups[chosen];
      if (!g.key.dtype) g.key.dtype = key->dtype;
      g.members.push_back(n);
      g.last = pos[n];
      group_of[n] = chosen;
      for (Value* in : n->inputs()) {
        std::vector<int>& cg = consumer_groups[in->id()];
        if (cg.empty() || cg.back() != chosen) cg.push_back(chosen);
      }
      // The node may connect its group with other candidate groups (e.g. an optimizer update
      // that reads both the decayed gradient and the momentum buffer's chain): merge them
      // when the union is still schedule-safe, so the whole update is one pass.
      for (int c : candidates) {
        c = live(c);
        chosen = live(chosen);
        if (c == chosen || !Compatible(groups[c].key, groups[chosen].key)) continue;
        if (!CanMerge(chosen, c, groups, group_of, pos)) continue;
        Group& into = groups[chosen];
        Group& from = groups[c];
        for (Node* m : from.members) group_of[m] = chosen;
        into.members.insert(into.members.end(), from.members.begin(), from.members.end());
        std::sort(into.members.begin(), into.members.end(),
                  [&](Node* a, Node* b) { return pos.at(a) < pos.at(b); });
        into.start = std::min(into.start, from.start);
        into.last = std::max(into.last, from.last);
        if (!into.key.dtype) into.key.dtype = from.key.dtype;
        from.members.clear();
        merged_into[c] = chosen;
      }
    }
    return groups;
  }

  // Replaces the group's members by one fused_elementwise node placed at the first member.
  static bool Fuse(Graph& graph, const Group& group) {
    std::unordered_set<const Node*> members(group.members.begin(), group.members.end());
    std::vector<int> uses = graph.CountUses();
    std::unordered_map<int, int> internal_uses;
    std::vector<Value*> ext_inputs;
    std::unordered_set<int> seen;
    for (Node* n : group.members) {
      for (Value* in : n->inputs()) {
        ++internal_uses[in->id()];
        bool internal = in->producer() != nullptr && members.count(in->producer());
        if (!internal && seen.insert(in->id()).second) ext_inputs.push_back(in);
      }
    }
    std::vector<Value*> escaping;
    for (Node* n : group.members) {
      Value* v = n->output(0);
      if (uses[v->id()] > internal_uses[v->id()]) escaping.push_back(v);
    }
    if (escaping.empty()) return false;  // dead group: leave it to DCE

    auto body = std::make_shared<Graph>("fused");
    std::unordered_map<const Value*, Value*> map;
    for (Value* v : ext_inputs) map[v] = body->AddInput(v->name(), v->type());
    for (Node* n : group.members) {
      std::vector<Value*> ins;
      for (Value* in : n->inputs()) ins.push_back(map.at(in));
      Node* bn = body->AddNode(n->op(), std::move(ins), {n->output(0)->type()}, n->attrs());
      body->RenameValue(bn->output(0), n->output(0)->name());
      map[n->output(0)] = bn->output(0);
    }
    std::vector<TensorType> out_types;
    for (Value* v : escaping) {
      body->AddOutput(map.at(v));
      out_types.push_back(v->type());
    }
    Node* first = group.members.front();
    Node* fused = graph.AddNode("fused_elementwise", ext_inputs, out_types,
                                {{"body", std::shared_ptr<const Graph>(body)}}, first);
    fused->set_placement(first->placement());
    fused->set_source(first->source());
    for (size_t i = 0; i < escaping.size(); ++i) {
      Value* old = escaping[i];
      graph.ReplaceAllUsesWith(old, fused->output(i));
      std::string name = old->name();
      graph.RenameValue(old, name + ".unfused");
      graph.RenameValue(fused->output(i), name);
    }
    graph.RemoveNodesIf([&](const Node& n) { return members.count(&n) != 0; });
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> CreateFuseElementwisePass() {
  return std::make_unique<FuseElementwisePass>();
}

}  // namespace tg
