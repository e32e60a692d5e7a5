// widen-half-dense: on a target without native kernels for a half dtype h (bf16 on CPUs
// without AVX512_BF16 / AMX, f16 on every CPU here), a matmul or convolution on h values
// runs widened anyway: its kernel converts the operands into f32 scratch, runs the f32
// kernel and rounds the result (ops/half_widening.h). This pass writes that computation into
// the graph: cast(h -> f32) of each operand, the op in f32, cast(f32 -> h) of the result.
// The numbers are the same (the widening is exact, the result rounded once), and now the f32
// op is what the later passes and the kernel library see: its blocked layouts
// (block-conv-layout), and the casts are elementwise ops that fuse-elementwise merges with
// their neighbours, so a mixed-precision graph's round trips f32 -> h -> f32 become one
// rounding inside the fused kernels around each dense op instead of conversions inside it.
// The inverse of narrow-half-dense, which acts where the target is native.
//
// Measured (AMD EPYC, AVX2 without bf16 instructions, 2 threads, bench/mixed_precision.py's
// workloads; see docs/ARCHITECTURE.md): bf16 training was 0.76x / 0.79x / 0.84x of fp32 for
// ResNet-50 / EfficientNet-B0 / BERT-Base with the dense ops widened inside their kernels
// (NCHW, no blocked layouts).
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ops/half_widening.h"
#include "passes/half_casts.h"
#include "passes/passes.h"

namespace tg {
namespace {

// The one half dtype of every floating input and output of `n` (ops/half_widening.h); none
// when another floating dtype is among them (a mixed-precision conv2d_epilogue's f32 master
// weight: left as it is).
std::optional<DType> HalfOf(const Node& n) {
  std::vector<TensorType> types;
  for (const Value* v : n.inputs()) types.push_back(v->type());
  for (const Value* v : n.outputs()) types.push_back(v->type());
  return UniformHalf(types);
}

class WidenHalfDensePass : public Pass {
 public:
  std::string name() const override { return "widen-half-dense"; }

  bool Run(Graph& graph, PassContext& ctx) override {
    std::vector<Node*> candidates;  // collected first: AddNode below reorders nodes()
    for (const auto& node : graph.nodes()) {
      if (!HasNativeHalfKernel(node->op())) continue;
      const std::optional<DType> half = HalfOf(*node);
      if (half && !ctx.NativeHalfDense(*half)) candidates.push_back(node.get());
    }
    // One widening per half value and device, before its first widened reader (candidates
    // are in program order): a weight read by the forward and backward convolutions is cast
    // once a step.
    std::map<std::pair<const Value*, int>, Value*> widened;
    for (Node* n : candidates) {
      std::vector<Value*> inputs;
      for (Value* in : n->inputs()) {
        if (!IsHalf(in->type().dtype)) {
          inputs.push_back(in);
          continue;
        }
        Value*& wide = widened[{in, n->placement()}];
        if (wide == nullptr) wide = AddCastOf(graph, in, DType::kF32, n, *n)->output();
        inputs.push_back(wide);
      }
      std::vector<TensorType> types;
      for (const Value* out : n->outputs()) {
        TensorType t = out->type();
        if (IsHalf(t.dtype)) t.dtype = DType::kF32;
        types.push_back(t);
      }
      Node* wide = graph.AddNode(n->op(), inputs, types, n->attrs(), n);
      wide->set_placement(n->placement());
      wide->set_source(n->source());
      for (size_t i = 0; i < n->outputs().size(); ++i) {
        Value* out = n->output(i);
        Value* result = wide->output(i);
        if (IsHalf(out->type().dtype)) {
          result = AddCastOf(graph, result, out->type().dtype, n, *n)->output();
        }
        graph.ReplaceAllUsesWith(out, result);
      }
    }
    return !candidates.empty();
  }
};

}  // namespace

std::unique_ptr<Pass> CreateWidenHalfDensePass() {
  return std::make_unique<WidenHalfDensePass>();
}

}  // namespace tg
