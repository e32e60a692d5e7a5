// fold-norm-casts: mixed precision's casts around batch norm, folded into it. An f32 model
// trained in half runs its convolutions in half and its batch norms in f32 (statistics need
// it), so every batch norm read `cast(conv(...))` widened to f32 and its backward handed the
// convolution's backward `cast(dx)` rounded back: two copies of each activation per step and
// an f32 activation kept from the forward to the backward. Batch norm reads a half x itself
// (ops/norm.cc: a half x with f32 parameters, widened run by run in the kernel), and its
// backward writes dx in x's dtype, rounded once as the cast did: the same numbers, bit for
// bit. The backward folds only where every reader of dx is that rounding cast.
// Blocked batch norms (block-conv-layout) keep f32.
#include "passes/half_casts.h"
#include "passes/passes.h"

namespace tg {
namespace {

bool Blocked(const Node& n) {
  return GetFlag(n.attrs(), "blocked");
}

class FoldNormCastsPass : public Pass {
 public:
  std::string name() const override { return "fold-norm-casts"; }

  bool Run(Graph& graph, PassContext&) override {
    const SingleReaders readers(graph);
    bool changed = false;
    for (const auto& up : graph.nodes()) {
      Node& n = *up;
      if (Blocked(n)) continue;
      if (n.op() == "batch_norm_train" && n.input(1)->type().dtype == DType::kF32) {
        if (Value* half = HalfSource(n.input(0), n)) {
          n.set_input(0, half);
          changed = true;
        }
      } else if (n.op() == "batch_norm_backward" && n.input(0)->type().dtype == DType::kF32) {
        Value* half = HalfSource(n.input(1), n);
        Value* dx = n.output(0);
        if (half == nullptr || RoundedTo(dx, n, readers) != half->type().dtype) continue;
        n.set_input(1, half);
        TensorType t = dx->type();
        t.dtype = half->type().dtype;
        dx->set_type(t);
        for (Node* r : readers.All(dx)) graph.ReplaceAllUsesWith(r->output(), dx);
        changed = true;
      }
    }
    return changed;  // the casts left unread: dce removes them
  }
};

}  // namespace

std::unique_ptr<Pass> CreateFoldNormCastsPass() { return std::make_unique<FoldNormCastsPass>(); }

}  // namespace tg
