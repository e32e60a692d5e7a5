// fold-exact-casts: half-precision models are captured widened (an op on f16 / bf16 values
// reads them cast up to f32 and rounds its result back: torch's per-op rounding), so a chain
// of ops that only move, select or negate values (a linear layer's weight transpose, reshapes,
// slices, relu, max-pool, ...) rounds values that are already exact in the half dtype:
// cast(cast(y, f16), f32) is y itself when every element of the f32 value y is representable
// in f16. This pass replaces such round trips by y, bit for bit the same numbers. What it
// removes: a rounding kernel and a copy per round trip, and, since the widened weight is no
// longer hidden behind casts, the transpose that fold-transpose then folds into the matmul.
//
// Exactness is tracked per value and half dtype (passes/half_exactness.h). Runs before CSE and
// fusion (it looks at plain cast nodes).
#include "passes/half_exactness.h"
#include "passes/passes.h"

namespace tg {
namespace {

class FoldExactCastsPass : public Pass {
 public:
  std::string name() const override { return "fold-exact-casts"; }

  bool Run(Graph& graph, PassContext&) override {
    HalfExactness exactness;
    bool changed = false;
    for (const auto& up : graph.nodes()) {
      Node& n = *up;
      if (n.op() == "cast" && n.inputs().size() == 1 && n.outputs().size() == 1) {
        // cast(cast(y, h), f32) -> y, when y is f32 and exact in h.
        Value* out = n.output(0);
        const DType from = n.input(0)->type().dtype;
        Node* rounding = n.input(0)->producer();
        if (HalfExactness::IsHalf(from) && rounding != nullptr && rounding->op() == "cast" &&
            rounding->inputs().size() == 1) {
          Value* y = rounding->input(0);
          if (y->type().dtype == out->type().dtype && exactness.IsExactIn(y, from)) {
            graph.ReplaceAllUsesWith(out, y);
            changed = true;
            continue;
          }
        }
      }
      exactness.Visit(n);
    }
    return changed;
  }
};

}  // namespace

std::unique_ptr<Pass> CreateFoldExactCastsPass() {
  return std::make_unique<FoldExactCastsPass>();
}

}  // namespace tg
