// Constant folding: a node whose inputs are all constants is evaluated at compile time with
// the CPU kernels (EvaluateNode) and its outputs become constants that keep the outputs'
// names. Skipped: ops missing from the registry, random and side-effecting ops, results of
// more than kMaxFoldElements elements, and `full` nodes larger than kMaxFullElements (a big
// fill is cheaper to run than to store). Constants left unused are dropped.
#include <unordered_map>
#include <unordered_set>

#include "ops/evaluate.h"
#include "passes/passes.h"
#include "support/error.h"

namespace tg {
namespace {

constexpr int64_t kMaxFoldElements = int64_t{1} << 20;
constexpr int64_t kMaxFullElements = 1024;

class ConstantFoldPass : public Pass {
 public:
  std::string name() const override { return "constant-fold"; }

  bool Run(Graph& graph, PassContext& ctx) override {
    const OpRegistry& registry = ctx.registry ? *ctx.registry : OpRegistry::Global();
    std::unordered_map<Value*, Value*> replace;
    std::unordered_set<const Node*> folded;
    for (const auto& up : graph.nodes()) {
      Node& n = *up;
      for (size_t i = 0; i < n.inputs().size(); ++i) {
        auto it = replace.find(n.input(i));
        if (it != replace.end()) n.set_input(i, it->second);
      }
      if (!Foldable(n, registry)) continue;
      std::vector<const HostTensor*> inputs;
      for (Value* v : n.inputs()) inputs.push_back(&v->constant());
      std::vector<HostTensor> results;
      try {
        results = Evaluate(n, inputs, registry);
      } catch (Error& e) {
        e.AddContext("constant-folding node " + n.Describe());
        throw;
      }
      for (size_t i = 0; i < n.outputs().size(); ++i) {
        Value* out = n.output(i);
        std::string name = out->name();
        graph.RenameValue(out, name + ".folded");
        Value* c = graph.AddConstant(std::move(results[i]), name);
        replace[out] = c;
      }
      folded.insert(&n);
    }
    if (folded.empty()) return false;
    for (Value*& v : graph.mutable_outputs()) {
      if (auto it = replace.find(v); it != replace.end()) v = it->second;
    }
    for (VariableUpdate& u : graph.mutable_updates()) {
      if (auto it = replace.find(u.value); it != replace.end()) u.value = it->second;
    }
    graph.RemoveNodesIf([&](const Node& n) { return folded.count(&n) != 0; });
    graph.RemoveUnusedConstants();
    return true;
  }

 private:
  // EvaluateNode uses the global registry; a pass run with another registry (tests) runs
  // that registry's CPU kernel the same way.
  static std::vector<HostTensor> Evaluate(const Node& n,
                                          const std::vector<const HostTensor*>& inputs,
                                          const OpRegistry& registry) {
    if (&registry == &OpRegistry::Global()) return EvaluateNode(n, inputs, DeviceKind::kCpu);
    Kernel kernel = registry.Get(n.op()).KernelFor(DeviceKind::kCpu)(n);
    std::vector<HostTensor> outputs;
    for (Value* out : n.outputs()) outputs.emplace_back(out->type());
    std::vector<const void*> in_ptrs;
    for (const HostTensor* t : inputs) in_ptrs.push_back(t->data());
    std::vector<void*> out_ptrs;
    for (HostTensor& t : outputs) out_ptrs.push_back(t.data());
    RunContext run_ctx;
    kernel(KernelArgs{in_ptrs.data(), out_ptrs.data(), &run_ctx});
    return outputs;
  }

  static bool Foldable(const Node& n, const OpRegistry& registry) {
    const OpDef* def = registry.Find(n.op());
    if (def == nullptr || def->traits.random || def->traits.side_effects) return false;
    if (n.outputs().empty()) return false;
    for (Value* v : n.inputs()) {
      if (v->kind() != ValueKind::kConstant) return false;
    }
    for (Value* v : n.outputs()) {
      int64_t numel = v->type().numel();
      if (numel > kMaxFoldElements) return false;
      if (n.op() == "full" && numel > kMaxFullElements) return false;
    }
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> CreateConstantFoldPass() { return std::make_unique<ConstantFoldPass>(); }

}  // namespace tg
