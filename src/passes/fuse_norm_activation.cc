// fuse-norm-activation: layer_norm -> activation (GELU, ReLU, SiLU, ...) becomes one
// layer_norm with the activation as its epilogue (attribute "activation"): the kernel
// applies it to each normalized row while the row is in cache, so the chain is one pass over
// memory instead of two (a transformer's pre-activation norm, the layer norm + GELU
// micro-benchmark).
//
// Conditions: the norm's y is read by the activation only and its mean / rstd by nothing
// (in training the backward reads all three, so training graphs keep both nodes); f32 / f64
// (a half norm is widened: the activation would skip the rounding between them); one
// device. Runs after autodiff, so the fused form needs no gradient.
#include "passes/epilogue_activation.h"
#include "passes/passes.h"
#include "passes/single_reader.h"

namespace tg {
namespace {

class FuseNormActivationPass : public Pass {
 public:
  std::string name() const override { return "fuse-norm-activation"; }

  bool Run(Graph& graph, PassContext&) override {
    const SingleReaders readers(graph);
    const std::vector<int> uses = graph.CountUses();
    bool changed = false;
    std::vector<std::pair<Node*, Node*>> fusions;  // (norm, activation)
    for (const auto& node : graph.nodes()) {
      Node* norm = node.get();
      if (norm->op() != "layer_norm") continue;
      const DType dt = norm->output(0)->type().dtype;
      if (dt != DType::kF32 && dt != DType::kF64) continue;
      if (HasAttr(norm->attrs(), "activation") &&
          GetString(norm->attrs(), "activation") != "none") {
        continue;
      }
      if (uses[norm->output(1)->id()] != 0 || uses[norm->output(2)->id()] != 0) continue;
      Node* act = readers.Of(norm->output(0));
      if (act == nullptr || act->placement() != norm->placement() ||
          EpilogueActivationOf(*act).empty() || act->output()->type() != norm->output(0)->type()) {
        continue;
      }
      fusions.emplace_back(norm, act);
    }
    for (auto [norm, act] : fusions) {
      norm->mutable_attrs()["activation"] = EpilogueActivationOf(*act);
      graph.ReplaceAllUsesWith(act->output(), norm->output(0));
      changed = true;
    }
    if (changed) {
      graph.RemoveNodesIf([&](const Node& n) {
        for (auto [norm, act] : fusions) {
          if (&n == act) return true;
        }
        return false;
      });
    }
    return changed;
  }
};

}  // namespace

std::unique_ptr<Pass> CreateFuseNormActivationPass() {
  return std::make_unique<FuseNormActivationPass>();
}

}  // namespace tg
