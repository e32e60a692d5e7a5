// Hand activations between convolutions in oneDNN's channel-blocked layout: where a
// conv2d_epilogue's output is read by exactly one node, another conv2d_epilogue taking it as
// its input (ResNet's 1x1 -> 3x3 -> 1x1 bottleneck, EfficientNet's expand -> depthwise), the
// producer writes nChw8c (nChw16c with AVX-512) and the consumer reads it as it is, instead
// of a reorder to NCHW after one and back before the other. The value keeps its logical type
// [N, C, H, W]; only these two kernels see its bytes (a graph output, a second reader or
// another device keeps NCHW). Channels must be divisible by 16 so that either block size
// pads nothing and the buffer the memory plan gives it is the right size.
//
// Mixed precision hands activations over through a cast: conv2d_epilogue (f32 result) ->
// cast to bf16 / f16 -> mixed conv2d_epilogue (half x). The cast is elementwise, so it
// converts the blocked bytes as they are; with the cast as the value's only reader and the
// mixed convolution as the cast's, the pair is blocked the same way.
//
// Runs last among the inference passes that create conv2d_epilogue nodes; conv2d nodes with
// no epilogue keep NCHW.
#include "passes/passes.h"
#include "passes/single_reader.h"

namespace tg {
namespace {

bool IsBlockable(const Node& n) {
  return n.op() == "conv2d_epilogue" && n.output()->type().dtype == DType::kF32;
}

class BlockConvLayoutPass : public Pass {
 public:
  std::string name() const override { return "block-conv-layout"; }

  bool Run(Graph& graph, PassContext&) override {
    const SingleReaders readers(graph);
    bool changed = false;
    for (const auto& node : graph.nodes()) {
      if (!IsBlockable(*node) || GetBool(node->attrs(), "dst_blocked")) continue;
      Value* v = node->output();
      Node* reader = readers.Of(v);
      if (reader != nullptr && reader->op() == "cast" && IsHalf(reader->output()->type().dtype) &&
          reader->placement() == node->placement()) {
        v = reader->output();  // the half copy the mixed convolution reads
        reader = readers.Of(v);
      }
      if (reader == nullptr || !IsBlockable(*reader) || reader->input(0) != v ||
          reader->placement() != node->placement() || v->type().shape[1] % 16 != 0) {
        continue;
      }
      node->mutable_attrs()["dst_blocked"] = true;
      reader->mutable_attrs()["src_blocked"] = true;
      changed = true;
    }
    return changed;
  }
};

}  // namespace

std::unique_ptr<Pass> CreateBlockConvLayoutPass() {
  return std::make_unique<BlockConvLayoutPass>();
}

}  // namespace tg
