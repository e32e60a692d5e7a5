// Fuse a matmul's epilogue: matmul -> add(bias over the last dim) [-> reshape] [-> relu /
// gelu] becomes one `matmul_epilogue` node (then the reshape), which oneDNN computes with its
// bias argument and an eltwise post-op while the output tile is still in registers, instead
// of a matmul writing its result and an elementwise kernel reading it back. Every Linear layer (x @ w.t() + b, then usually an
// activation) has this shape.
//
// Conditions: the matmul result and the biased sum are read by the next node only (a graph
// output, a variable update or a second reader keeps them, e.g. GELU's backward reads its
// input, so in training the GELU stays unfused and only the bias is taken); the bias has the
// output's last dim and broadcasts over everything else; f32 / f64 (a half matmul, from the
// mixed-precision pass, stays as it is); all nodes on one device. Runs after autodiff, so the
// fused op needs no gradient.
#include "passes/epilogue_activation.h"
#include "passes/passes.h"
#include "passes/single_reader.h"

namespace tg {
namespace {

// `bias` broadcasts along the last dim of `out` only: shape [..., 1, N] or [N].
bool IsBiasFor(const TensorType& bias, const TensorType& out) {
  if (bias.dtype != out.dtype || bias.rank() == 0 || bias.rank() > out.rank()) return false;
  if (bias.shape.back() != out.shape.back()) return false;
  for (size_t i = 0; i + 1 < bias.shape.size(); ++i) {
    if (bias.shape[i] != 1) return false;
  }
  return true;
}

// The activation `n` applies, as matmul_epilogue names it ("" when it is none it can take:
// oneDNN's matmul post-ops here are relu and the two GELUs).
std::string ActivationOf(const Node& n) {
  const std::string act = EpilogueActivationOf(n);
  return act == "relu" || act == "gelu" || act == "gelu_tanh" ? act : "";
}

class FuseMatmulEpiloguePass : public Pass {
 public:
  std::string name() const override { return "fuse-matmul-epilogue"; }

  bool Run(Graph& graph, PassContext&) override {
    const SingleReaders readers(graph);
    std::vector<Node*> matmuls;  // collected first: AddNode below reorders nodes()
    for (const auto& node : graph.nodes()) {
      const DType dt = node->op() == "matmul" ? node->output()->type().dtype : DType::kBool;
      if (dt == DType::kF32 || dt == DType::kF64) matmuls.push_back(node.get());
    }
    bool changed = false;
    for (Node* mm : matmuls) {
      Node* add = readers.Of(mm->output());
      if (add == nullptr || add->op() != "add" || add->placement() != mm->placement() ||
          !(add->output()->type() == mm->output()->type())) {
        continue;
      }
      Value* bias = add->input(0) == mm->output() ? add->input(1) : add->input(0);
      if (bias == mm->output() || !IsBiasFor(bias->type(), mm->output()->type())) continue;
      Node* last = add;
      std::string activation = "none";
      Node* act = readers.Of(add->output());
      // A Linear layer on a [B, S, K] input is captured as a 2-D matmul whose biased result
      // is reshaped back to [B, S, N] before the activation (Hugging Face's feed-forward
      // blocks): the activation is fused through that reshape, which then reshapes the fused
      // result instead.
      Node* view = nullptr;
      if (act != nullptr && act->op() == "reshape" && act->placement() == mm->placement()) {
        view = act;
        act = readers.Of(view->output());
      }
      if (act != nullptr && act->placement() == mm->placement() && !ActivationOf(*act).empty() &&
          act->input(0) == (view != nullptr ? view : add)->output()) {
        activation = ActivationOf(*act);
        last = act;
      } else {
        view = nullptr;
      }
      const int64_t n = mm->output()->type().shape.back();
      if (bias->type().rank() != 1) {  // [1, ..., 1, N] -> [N]: a view
        Node* flat = graph.AddNode("reshape", {bias}, {{bias->type().dtype, {n}}},
                                   {{"shape", std::vector<int64_t>{n}}}, add);
        flat->set_placement(mm->placement());
        flat->set_source(add->source());
        bias = flat->output();
      }
      AttrMap attrs = mm->attrs();
      attrs["activation"] = activation;
      Node* fused = graph.AddNode("matmul_epilogue", {mm->input(0), mm->input(1), bias},
                                  {add->output()->type()}, attrs, add);
      fused->set_source(mm->source());
      fused->set_placement(mm->placement());
      Value* result = fused->output();
      if (view != nullptr) {
        Node* reshaped = graph.AddNode("reshape", {result}, {last->output()->type()},
                                       view->attrs(), last);
        reshaped->set_source(view->source());
        reshaped->set_placement(view->placement());
        result = reshaped->output();
      }
      graph.ReplaceAllUsesWith(last->output(), result);
      changed = true;
    }
    return changed;
  }
};

}  // namespace

std::unique_ptr<Pass> CreateFuseMatmulEpiloguePass() {
  return std::make_unique<FuseMatmulEpiloguePass>();
}

}  // namespace tg
