// Fold transposes into matmul: a matmul reads either operand transposed for free (it only
// changes the strides oneDNN is given), so a `permute` that swaps the last two axes and
// feeds a matmul is folded into the matmul's transpose_a / transpose_b flag, and a permute
// of a matmul's result is folded by (A B)^T = B^T A^T, also through the casts a half model
// puts between them (round to half, widen). Linear layers (x @ w.t()) and their
// grad rules (g @ w, x^T @ g then ^T) produce these in every model; unfolded, each one is a
// full strided copy of a weight or an activation per step. DCE removes the orphaned permutes.
#include <unordered_map>

#include "passes/passes.h"

namespace tg {
namespace {

// True when `n` is a permute that swaps the last two axes and keeps the others in place.
bool IsLastTwoSwap(const Node* n) {
  if (n == nullptr || n->op() != "permute") return false;
  std::vector<int64_t> perm = GetInts(n->attrs(), "perm");
  int64_t rank = static_cast<int64_t>(perm.size());
  if (rank < 2) return false;
  for (int64_t i = 0; i < rank - 2; ++i) {
    if (perm[i] != i && perm[i] != i - rank) return false;
  }
  auto axis = [rank](int64_t a) { return a < 0 ? a + rank : a; };
  return axis(perm[rank - 2]) == rank - 1 && axis(perm[rank - 1]) == rank - 2;
}

bool Flag(const Node& n, const char* name) { return GetBool(n.attrs(), name); }

class FoldTransposePass : public Pass {
 public:
  std::string name() const override { return "fold-transpose"; }

  bool Run(Graph& graph, PassContext&) override {
    bool changed = false;
    // Operands: matmul(permute(x)) -> matmul(x) with the operand's flag toggled; also
    // matmul(cast(permute(x))) -> matmul(cast(x)) (mixed precision's half cast of a transposed
    // f32 weight: the cast is elementwise, so it commutes with the transpose; one new cast
    // per cast node, shared by every matmul reading it).
    std::vector<Node*> matmuls;  // collected first: AddNode below reorders nodes()
    for (const auto& node : graph.nodes()) {
      if (node->op() == "matmul") matmuls.push_back(node.get());
    }
    std::unordered_map<const Node*, Value*> untransposed_casts;
    for (Node* mm : matmuls) {
      Node& n = *mm;
      const char* flags[2] = {"transpose_a", "transpose_b"};
      for (size_t i = 0; i < 2; ++i) {
        Node* p = n.input(i)->producer();
        Value* operand = nullptr;
        if (IsLastTwoSwap(p)) {
          operand = p->input(0);
        } else if (p != nullptr && p->op() == "cast" && p->inputs().size() == 1 &&
                   IsLastTwoSwap(p->input(0)->producer())) {
          Value*& cast = untransposed_casts[p];
          if (cast == nullptr) {
            Value* x = p->input(0)->producer()->input(0);
            TensorType t = x->type();
            t.dtype = p->output()->type().dtype;
            Node* c = graph.AddNode("cast", {x}, {t}, p->attrs(), p);
            c->set_source(p->source());
            c->set_placement(p->placement());
            cast = c->output();
          }
          operand = cast;
        }
        if (operand == nullptr) continue;
        n.set_input(i, operand);
        n.mutable_attrs()[flags[i]] = !Flag(n, flags[i]);
        changed = true;
      }
    }
    // Results: permute(matmul(a, b, ta, tb)) -> matmul(b, a, !tb, !ta) when the permute is
    // the matmul's only user (through single-use casts: permute(cast(mm)) -> cast(mm^T)).
    // Batch dims are kept in place by the swap, so broadcasting holds.
    std::vector<int> uses = graph.CountUses();
    std::vector<Node*> permutes;  // collected first: AddNode below reorders nodes()
    for (const auto& node : graph.nodes()) {
      if (IsLastTwoSwap(node.get())) permutes.push_back(node.get());
    }
    for (Node* p : permutes) {
      Node& perm = *p;
      // The matmul, possibly behind casts (a half model rounds the product, then widens it:
      // casts are elementwise, so they commute with the transpose).
      std::vector<Node*> casts;
      Value* v = perm.input(0);
      while (v->producer() != nullptr && v->producer()->op() == "cast" && uses[v->id()] == 1) {
        casts.push_back(v->producer());
        v = v->producer()->input(0);
      }
      Node* mm = v->producer();
      if (mm == nullptr || mm->op() != "matmul" || uses[v->id()] != 1) continue;
      bool ta = Flag(*mm, "transpose_a"), tb = Flag(*mm, "transpose_b");
      TensorType swapped_type = v->type();
      swapped_type.shape = perm.output()->type().shape;
      AttrMap attrs = mm->attrs();  // hints such as set_available_memory's stay
      attrs["transpose_a"] = !tb;
      attrs["transpose_b"] = !ta;
      Node* swapped = graph.AddNode("matmul", {mm->input(1), mm->input(0)}, {swapped_type},
                                    attrs, &perm);
      swapped->set_source(mm->source());
      swapped->set_placement(mm->placement());
      Value* result = swapped->output();
      for (auto it = casts.rbegin(); it != casts.rend(); ++it) {  // the casts, in their order
        TensorType t = (*it)->output(0)->type();
        t.shape = perm.output()->type().shape;
        Node* cast = graph.AddNode("cast", {result}, {t}, (*it)->attrs(), &perm);
        cast->set_source((*it)->source());
        cast->set_placement((*it)->placement());
        result = cast->output();
      }
      graph.ReplaceAllUsesWith(perm.output(), result);
      changed = true;
    }
    return changed;
  }
};

}  // namespace

std::unique_ptr<Pass> CreateFoldTransposePass() { return std::make_unique<FoldTransposePass>(); }

}  // namespace tg
