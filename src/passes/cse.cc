// CSE: merges a node into an earlier one with the same op, the same inputs (after earlier
// merges), equal attributes (AttrEquals: nested graphs compare by printed text) and the same
// placement. Random and side-effecting ops are never merged, nor ops missing from the
// registry (their traits are unknown). The kept node is the first one; its names survive.
#include <unordered_map>
#include <unordered_set>

#include "ir/printer.h"
#include "passes/passes.h"

namespace tg {
namespace {

class CsePass : public Pass {
 public:
  std::string name() const override { return "cse"; }

  bool Run(Graph& graph, PassContext& ctx) override {
    const OpRegistry& registry = ctx.registry ? *ctx.registry : OpRegistry::Global();
    std::unordered_map<Value*, Value*> replace;
    std::unordered_map<std::string, std::vector<Node*>> buckets;
    std::unordered_set<const Node*> dead;
    for (const auto& up : graph.nodes()) {
      Node& n = *up;
      for (size_t i = 0; i < n.inputs().size(); ++i) {
        auto it = replace.find(n.input(i));
        if (it != replace.end()) n.set_input(i, it->second);
      }
      if (!Mergeable(n, registry)) continue;
      std::vector<Node*>& bucket = buckets[Key(n)];
      Node* same = nullptr;
      for (Node* c : bucket) {
        if (Same(*c, n)) {
          same = c;
          break;
        }
      }
      if (same == nullptr) {
        bucket.push_back(&n);
        continue;
      }
      for (size_t i = 0; i < n.outputs().size(); ++i) replace[n.output(i)] = same->output(i);
      dead.insert(&n);
    }
    if (dead.empty()) return false;
    for (Value*& v : graph.mutable_outputs()) {
      if (auto it = replace.find(v); it != replace.end()) v = it->second;
    }
    for (VariableUpdate& u : graph.mutable_updates()) {
      if (auto it = replace.find(u.value); it != replace.end()) u.value = it->second;
    }
    graph.RemoveNodesIf([&](const Node& n) { return dead.count(&n) != 0; });
    return true;
  }

 private:
  static bool Mergeable(const Node& n, const OpRegistry& registry) {
    const OpDef* def = registry.Find(n.op());
    return def != nullptr && !def->traits.random && !def->traits.side_effects &&
           !n.outputs().empty();
  }

  // A hash key: op, input ids, placement and the attribute names (values are compared by Same).
  static std::string Key(const Node& n) {
    std::string k = n.op();
    k += '(';
    for (Value* v : n.inputs()) {
      k += std::to_string(v->id());
      k += ',';
    }
    k += ")@";
    k += std::to_string(n.placement());
    for (const auto& [name, attr] : n.attrs()) {
      k += '|';
      k += name;
      if (KindOf(attr) == AttrKind::kGraph) continue;
      k += '=';
      k += PrintAttr(attr);
    }
    return k;
  }

  static bool Same(const Node& a, const Node& b) {
    if (a.op() != b.op() || a.inputs() != b.inputs() || a.placement() != b.placement() ||
        a.outputs().size() != b.outputs().size() || a.attrs().size() != b.attrs().size()) {
      return false;
    }
    for (size_t i = 0; i < a.outputs().size(); ++i) {
      if (a.output(i)->type() != b.output(i)->type()) return false;
    }
    auto ia = a.attrs().begin();
    for (auto ib = b.attrs().begin(); ib != b.attrs().end(); ++ia, ++ib) {
      if (ia->first != ib->first || !AttrEquals(ia->second, ib->second)) return false;
    }
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> CreateCsePass() { return std::make_unique<CsePass>(); }

}  // namespace tg
