// narrow-half-dense: a half-precision model is captured widened (the front end's per-op
// rounding), so a matmul or convolution on f16 / bf16 values is an f32 node reading its
// operands cast up from the half dtype h, whose f32 result is only rounded back to h. Such a
// node becomes the same op on the h values with an h result: by the IR's half semantics
// (ops/half_widening.h) that is the same computation — operands widened exactly, f32 sums,
// one rounding of the result — but now one node the kernel library can run natively (oneDNN's
// bf16 matmul / convolution where the CPU has bf16 instructions) instead of f32 kernels
// between casts. Where no native kernel exists the registry widens the node, bit for bit what
// the casts computed.
//
// Conditions: the target runs the half dtype natively (PassContext::NativeHalfDense; else
// widen-half-dense makes such nodes f32 between casts); the op has a native half kernel
// (the epilogue fusions have already run, so a Linear layer's bias and activation are part
// of its matmul_epilogue, rounded once as torch does);
// every reader of the f32 result is a cast to one half dtype h (no graph output, variable
// update or other reader); every operand is cast(h -> f32) of an h value or an f32 value
// exact in h (passes/half_exactness.h: a widened value only moved or selected since, e.g.
// a relu's output after fold-exact-casts removed its round trip), then rounded to h here,
// which changes no element. Runs after
// autodiff: the gradients of a widened dense op (the backward matmuls and convolutions between
// the casts' gradients) have the same shape, so forward and backward narrow alike.
#include <string>
#include <vector>

#include "ops/registry.h"
#include "passes/half_casts.h"
#include "passes/half_exactness.h"
#include "passes/passes.h"
#include "passes/single_reader.h"

namespace tg {
namespace {

// Ops worth narrowing: HasNativeHalfKernel (half_casts.h). Narrowing any other op would be
// as correct and gain nothing.

class NarrowHalfDensePass : public Pass {
 public:
  std::string name() const override { return "narrow-half-dense"; }

  bool Run(Graph& graph, PassContext& ctx) override {
    const SingleReaders readers(graph);
    HalfExactness exactness;
    std::vector<Node*> candidates;  // collected first: AddNode below reorders nodes()
    for (const auto& node : graph.nodes()) {
      exactness.Visit(*node);
      if (HasNativeHalfKernel(node->op()) && node->outputs().size() == 1 &&
          node->output()->type().dtype == DType::kF32) {
        candidates.push_back(node.get());
      }
    }
    bool changed = false;
    for (Node* n : candidates) {
      const DType half = RoundedTo(n->output(), *n, readers);
      if (half == DType::kF32 || !ctx.NativeHalfDense(half)) continue;  // see widen-half-dense
      bool ok = true;
      for (const Value* in : n->inputs()) {
        ok = ok && (HalfSource(in, half, *n) != nullptr || exactness.IsExactIn(in, half));
      }
      if (!ok) continue;
      // Operands: the half value a cast widened, or an exact f32 value rounded (exactly) to
      // half: a value that only moved or was selected after its widening (relu, reshape).
      std::vector<Value*> half_inputs;
      for (Value* in : n->inputs()) {
        Value* src = HalfSource(in, half, *n);
        if (src == nullptr) {
          TensorType t = in->type();
          t.dtype = half;
          Node* cast = graph.AddNode("cast", {in}, {t}, {{"dtype", half}}, n);
          cast->set_placement(n->placement());
          cast->set_source(n->source());
          src = cast->output();
        }
        half_inputs.push_back(src);
      }
      TensorType type = n->output()->type();
      type.dtype = half;
      Node* narrow = graph.AddNode(n->op(), half_inputs, {type}, n->attrs(), n);
      narrow->set_placement(n->placement());
      narrow->set_source(n->source());
      for (Node* r : readers.All(n->output())) {
        graph.ReplaceAllUsesWith(r->output(), narrow->output());
      }
      changed = true;
    }
    return changed;
  }
};

}  // namespace

std::unique_ptr<Pass> CreateNarrowHalfDensePass() {
  return std::make_unique<NarrowHalfDensePass>();
}

}  // namespace tg
