// Fuse a convolution's epilogue: conv2d [-> add(bias per channel)] [-> batch_norm_inference]
// [-> add(residual of the same shape)] [-> relu / silu (or x * sigmoid(x)) / sigmoid / gelu /
// hardswish] becomes one `conv2d_epilogue` node, which
// oneDNN computes in its post-ops while the output block is in registers (the batch norm
// folded into a per-channel scale and shift), instead of the convolution writing its result
// and two more kernels reading it back. The conv-BN-activation block of every CNN in
// inference (ResNet, EfficientNet, MobileNet, RegNet) has this shape, and the last one of a
// residual block adds the skip connection before its activation (f32 / f64 only: a binary
// post-op reading the skip value while the output block is in registers).
//
// Conditions: each fused intermediate is read by the next node only (in training the
// backward reads them, so training graphs with batch statistics keep their nodes); the bias
// is [1, O, 1, 1] or [O, 1, 1]; f32 / f64; all nodes on one device. At least one of the three
// must be present. Runs after autodiff, so the fused op needs no gradient.
//
// Mixed precision (Precision.setMixedPrecision, torch.autocast): a half convolution of a
// rounded f32 weight whose result is widened, cast(conv2d(x, cast(w)), f32), followed by
// the same epilogue in f32, becomes the mixed conv2d_epilogue(x, w, ...): half x, the f32
// master weight and parameters, f32 result (ops/conv_epilogue.cc: the folded weight is
// rounded once; the convolution's result is no longer rounded to half before the epilogue).
#include <string>
#include <unordered_set>

#include "passes/epilogue_activation.h"
#include "passes/passes.h"
#include "passes/single_reader.h"

namespace tg {
namespace {

// `bias` adds one value per output channel of `out` [N, O, H, W]: [1, O, 1, 1] or [O, 1, 1].
bool IsChannelBias(const TensorType& bias, const TensorType& out) {
  if (bias.dtype != out.dtype || out.rank() != 4) return false;
  const int64_t o = out.shape[1];
  return bias.shape == Shape{1, o, 1, 1} || bias.shape == Shape{o, 1, 1};
}

// SiLU as captured from a decomposition: mul(v, sigmoid(v)) with v read by those two nodes
// only and the sigmoid by the mul only. Returns the mul, or null.
Node* SiluOf(const Value* v, const SingleReaders& readers) {
  const std::vector<Node*>& all = readers.All(v);
  if (readers.uses(v) != 2 || all.size() != 2) return nullptr;
  for (int i = 0; i < 2; ++i) {
    Node* sig = all[i];
    Node* mul = all[1 - i];
    if (sig->op() != "sigmoid" || mul->op() != "mul" || readers.Of(sig->output()) != mul) continue;
    const bool pair = (mul->input(0) == v && mul->input(1) == sig->output()) ||
                      (mul->input(1) == v && mul->input(0) == sig->output());
    if (pair && mul->output()->type() == v->type() && sig->placement() == mul->placement()) {
      return mul;
    }
  }
  return nullptr;
}

class FuseConvEpiloguePass : public Pass {
 public:
  std::string name() const override { return "fuse-conv-epilogue"; }

  bool Run(Graph& graph, PassContext&) override {
    const SingleReaders readers(graph);
    std::vector<Node*> convs;  // collected first: AddNode below reorders nodes()
    for (const auto& node : graph.nodes()) {
      const DType dt = node->op() == "conv2d" ? node->output()->type().dtype : DType::kBool;
      if (dt == DType::kF32 || dt == DType::kF64 || IsHalf(dt)) convs.push_back(node.get());
    }
    bool changed = false;
    // Nodes already fused into an epilogue: a residual add reads two convolutions' results
    // and belongs to the first one's epilogue (the second keeps its own batch norm).
    std::unordered_set<const Node*> fused_nodes;
    for (Node* conv : convs) {
      auto next = [&](Node* n) -> Node* {  // the sole reader, on the same device, unfused
        Node* r = readers.Of(n->output());
        return r != nullptr && r->placement() == conv->placement() && !fused_nodes.count(r)
                   ? r
                   : nullptr;
      };
      // A half convolution fuses only as mixed precision's widened result (`start`: the
      // cast to f32) of a rounded f32 weight (`weight`: the master copy).
      Node* start = conv;
      Value* weight = conv->input(1);
      if (IsHalf(conv->output()->type().dtype)) {
        Node* widen = next(conv);
        const Node* round = conv->input(1)->producer();
        if (widen == nullptr || widen->op() != "cast" ||
            widen->output()->type().dtype != DType::kF32 || round == nullptr ||
            round->op() != "cast" || round->input(0)->type().dtype != DType::kF32) {
          continue;
        }
        start = widen;
        weight = round->input(0);
      }
      const TensorType& type = start->output()->type();
      Node* last = start;
      Value* bias = nullptr;
      Node* bn = nullptr;
      std::string activation = "none";
      std::vector<Node*> chain;  // the nodes fused after the convolution
      Node* r = next(last);
      if (r != nullptr && r->op() == "add" && r->output()->type() == type) {
        Value* other = r->input(0) == last->output() ? r->input(1) : r->input(0);
        if (other != last->output() && IsChannelBias(other->type(), type)) {
          bias = other;
          last = r;
          chain.push_back(r);
          r = next(last);
        }
      }
      if (r != nullptr && r->op() == "batch_norm_inference" && r->input(0) == last->output()) {
        bn = r;
        last = r;
        chain.push_back(r);
        r = next(last);
      }
      Value* residual = nullptr;
      if (r != nullptr && r->op() == "add" && start == conv && r->output()->type() == type) {
        Value* other = r->input(0) == last->output() ? r->input(1) : r->input(0);
        if (other != last->output() && other->type() == type) {
          residual = other;
          last = r;
          chain.push_back(r);
          r = next(last);
        }
      }
      if (r != nullptr && !EpilogueActivationOf(*r).empty()) {
        activation = EpilogueActivationOf(*r);
        last = r;
        chain.push_back(r);
      } else if (Node* silu = SiluOf(last->output(), readers);
                 silu != nullptr && silu->placement() == conv->placement()) {
        activation = "silu";
        last = silu;
        chain.push_back(silu);
      }
      if (last == start) continue;
      std::vector<Value*> inputs = {conv->input(0), weight};
      if (bias != nullptr) {  // [1, O, 1, 1] -> [O]: a view
        const int64_t o = type.shape[1];
        Node* flat = graph.AddNode("reshape", {bias}, {{type.dtype, {o}}},
                                   {{"shape", std::vector<int64_t>{o}}}, last);
        flat->set_placement(conv->placement());
        flat->set_source(conv->source());
        inputs.push_back(flat->output());
      }
      if (bn != nullptr) {
        for (int i = 1; i < 5; ++i) inputs.push_back(bn->input(i));
      }
      if (residual != nullptr) inputs.push_back(residual);
      AttrMap attrs = conv->attrs();
      attrs["bias"] = bias != nullptr;
      attrs["batch_norm"] = bn != nullptr;
      attrs["eps"] = bn != nullptr ? GetFloat(bn->attrs(), "eps") : 1e-5;
      attrs["activation"] = activation;
      attrs["residual"] = residual != nullptr;
      attrs["src_blocked"] = false;  // NCHW; block-conv-layout may change it
      attrs["dst_blocked"] = false;
      Node* fused = graph.AddNode("conv2d_epilogue", inputs, {last->output()->type()}, attrs,
                                  last);
      fused->set_source(conv->source());
      fused->set_placement(conv->placement());
      graph.ReplaceAllUsesWith(last->output(), fused->output());
      fused_nodes.insert(chain.begin(), chain.end());
      changed = true;
    }
    return changed;
  }
};

}  // namespace

std::unique_ptr<Pass> CreateFuseConvEpiloguePass() {
  return std::make_unique<FuseConvEpiloguePass>();
}

}  // namespace tg
