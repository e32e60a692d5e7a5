// half-weight-shadows: a variable read in half precision (`cast(%w){dtype = bf16}`: the f32
// master weight of a mixed-precision matmul or convolution) gets a half shadow variable that
// its readers read instead (ir/graph.h: VariableShadow). Where the variable is updated, the
// shadow is updated with the cast of the same new value, placed right after it so that
// fusion puts the rounding in the optimizer's update kernel (one more output of a pass over
// memory it makes anyway); where it is not (a frozen layer), the shadow stays as the host
// wrote it. Either way the step no longer reads 4 bytes and writes 2 per weight element to
// cast every weight before its first use: the standard mixed-precision recipe's "half copy
// of the master weights", kept where the weights live. The runtime recasts a shadow whenever
// the host writes its source (Executable::WriteVariable), so the numbers are those of casting
// on every step.
#include <map>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "passes/passes.h"

namespace tg {
namespace {

class HalfWeightShadowsPass : public Pass {
 public:
  std::string name() const override { return "half-weight-shadows"; }

  bool Run(Graph& graph, PassContext&) override {
    // Variables in the order their first cast comes (the shadows' order is the program's:
    // processes of one run must build the same variables), each with its casts by dtype.
    struct Casts {
      Value* variable;
      std::map<DType, std::vector<Node*>> by_dtype;
    };
    std::vector<Casts> casts;
    std::unordered_map<const Value*, size_t> index_of;
    for (const auto& n : graph.nodes()) {
      if (n->op() != "cast") continue;
      Value* v = n->input(0);
      const DType to = n->output()->type().dtype;
      if (v->kind() != ValueKind::kVariable || v->type().dtype != DType::kF32 || !IsHalf(to)) {
        continue;
      }
      auto [it, added] = index_of.emplace(v, casts.size());
      if (added) casts.push_back({v, {}});
      casts[it->second].by_dtype[to].push_back(n.get());
    }
    if (casts.empty()) return false;
    std::unordered_map<const Value*, VariableUpdate> update_of;  // copies: SetUpdate grows
    for (const VariableUpdate& u : graph.updates()) update_of[u.variable] = u;
    std::unordered_set<const Value*> shadowed;
    for (const VariableShadow& s : graph.shadows()) shadowed.insert(s.source);

    bool changed = false;
    for (auto& [variable, by_dtype] : casts) {  // (std::map: dtypes in a fixed order too)
      if (shadowed.count(variable)) continue;
      auto it = update_of.find(variable);
      const VariableUpdate* update = it == update_of.end() ? nullptr : &it->second;
      const Node* writer = update ? update->value->producer() : nullptr;
      if (update && writer == nullptr) continue;  // takes an input's value: nothing to fuse into
      for (auto& [dtype, readers] : by_dtype) {
        if (!SamePlacement(readers, writer)) continue;
        TensorType type = variable->type();
        type.dtype = dtype;
        const std::string name = variable->name() + "." + std::string(DTypeName(dtype));
        Value* shadow = graph.AddVariable(name, type, /*trainable=*/false);
        for (Node* c : readers) graph.ReplaceAllUsesWith(c->output(), shadow);
        if (update) AddShadowUpdate(graph, *update, *writer, shadow);
        graph.AddShadow(shadow, variable);
        changed = true;
      }
    }
    return changed;  // the replaced casts are dead: dce removes them
  }

 private:
  // Pipeline stages keep their variables: the shadow lives where its readers and the update
  // of its source are.
  static bool SamePlacement(const std::vector<Node*>& readers, const Node* writer) {
    const int p = readers.front()->placement();
    for (const Node* c : readers) {
      if (c->placement() != p) return false;
    }
    return writer == nullptr || writer->placement() == p;
  }

  // shadow' = cast(source'), right after the node that computes source'.
  static void AddShadowUpdate(Graph& graph, const VariableUpdate& update, const Node& writer,
                              Value* shadow) {
    const Node* next = nullptr;
    const auto& nodes = graph.nodes();
    for (size_t i = 0; i + 1 < nodes.size(); ++i) {
      if (nodes[i].get() == &writer) next = nodes[i + 1].get();
    }
    const DType dtype = shadow->type().dtype;
    Node* cast = graph.AddNode("cast", {update.value}, {shadow->type()}, {{"dtype", dtype}}, next);
    cast->set_placement(writer.placement());
    cast->set_source(writer.source());
    graph.SetUpdate(shadow, cast->output(), update.on_optimizer_step);
  }
};

}  // namespace

std::unique_ptr<Pass> CreateHalfWeightShadowsPass() {
  return std::make_unique<HalfWeightShadowsPass>();
}

}  // namespace tg
