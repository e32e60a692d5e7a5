// move-casts: mixed precision leaves half <-> f32 casts on either side of the ops that only
// move data. A half matmul's result is widened, then reshaped back to [B, S, N] and permuted
// into attention heads; the next matmul's operand is expanded and reshaped in f32, then
// rounded to half. This pass moves each widening cast (half -> f32) below the reshape /
// permute / slice that is its only reader, and each rounding cast (f32 -> half) above the
// reshape / permute / expand that only it reads (a reshape whatever else reads it), and removes a widening cast's rounding back
// to the same half dtype (exact: every half value is an f32). Data movement then moves half
// values (half the bytes), the round trips through f32 disappear, and a cast that ends next
// to an elementwise op (the residual add after a projection, the GELU before one) fuses into
// its kernel. Values are unchanged: a cast commutes with ops that only move elements. Casts
// do not move the other way (a rounding cast above a slice would round the whole input, a
// widening cast below an expand would widen every copy).
#include <unordered_set>

#include "passes/half_exactness.h"
#include "passes/passes.h"
#include "passes/single_reader.h"

namespace tg {
namespace {

bool OneOf(const std::string& op, std::initializer_list<const char*> ops) {
  for (const char* o : ops) {
    if (op == o) return true;
  }
  return false;
}

bool IsCast(const Node& n, bool (*from)(DType), bool (*to)(DType)) {
  return n.op() == "cast" && n.inputs().size() == 1 && from(n.input(0)->type().dtype) &&
         to(n.output()->type().dtype);
}
bool IsF32(DType d) { return d == DType::kF32; }
bool Widens(const Node& n) { return IsCast(n, HalfExactness::IsHalf, IsF32); }
bool Rounds(const Node& n) { return IsCast(n, IsF32, HalfExactness::IsHalf); }

// One input, moves elements, on `n`'s device.
bool MovesDataNextTo(const Node* m, const Node& n, std::initializer_list<const char*> ops) {
  return m != nullptr && m->inputs().size() == 1 && m->outputs().size() == 1 &&
         m->placement() == n.placement() && OneOf(m->op(), ops);
}

// `op(x)` with `like`'s attributes, source and placement, of `type`, before `before`.
Value* Copy(Graph& graph, const Node& like, const std::string& op, Value* x, TensorType type,
            const Node* before) {
  Node* c = graph.AddNode(op, {x}, {std::move(type)}, like.attrs(), before);
  c->set_source(like.source());
  c->set_placement(like.placement());
  return c->output();
}

class MoveCastsPass : public Pass {
 public:
  std::string name() const override { return "move-casts"; }

  bool Run(Graph& graph, PassContext&) override {
    bool changed = false;
    // Each round moves every cast one op; a chain of k moves takes k rounds.
    for (int round = 0; round < 64; ++round) {
      const SingleReaders readers(graph);
      std::unordered_set<const Node*> replaced;
      std::vector<Node*> nodes;  // collected first: AddNode reorders nodes()
      for (const auto& n : graph.nodes()) nodes.push_back(n.get());
      for (Node* n : nodes) {
        if (replaced.count(n)) continue;
        if (Widens(*n)) {
          Value* half = n->input(0);
          Node* m = readers.Of(n->output());
          if (MovesDataNextTo(m, *n, {"reshape", "permute", "slice"}) && !replaced.count(m)) {
            // move(cast(x)) -> cast(move(x))
            TensorType moved = m->output()->type();
            moved.dtype = half->type().dtype;
            Value* y = Copy(graph, *m, m->op(), half, moved, m);
            graph.ReplaceAllUsesWith(m->output(), Copy(graph, *n, "cast", y, m->output()->type(), m));
            replaced.insert({n, m});
            changed = true;
            continue;
          }
          for (Node* r : readers.All(n->output())) {  // cast(cast(x, f32), half) -> x
            if (Rounds(*r) && r->output()->type().dtype == half->type().dtype &&
                r->placement() == n->placement() && !replaced.count(r)) {
              graph.ReplaceAllUsesWith(r->output(), half);
              replaced.insert(r);
              changed = true;
            }
          }
        } else if (Rounds(*n)) {
          Node* m = n->input(0)->producer();
          // A reshape read by others too is copied (a view: free); a permute or expand only
          // moves when the cast is its one reader (a copy would cost what the cast does).
          if (MovesDataNextTo(m, *n, {"reshape", "permute", "expand"}) && !replaced.count(m) &&
              (readers.Of(m->output()) == n || m->op() == "reshape")) {
            // cast(move(x)) -> move(cast(x))
            Value* x = m->input(0);
            TensorType rounded = x->type();
            rounded.dtype = n->output()->type().dtype;
            Value* c = Copy(graph, *n, "cast", x, rounded, m);
            graph.ReplaceAllUsesWith(n->output(), Copy(graph, *m, m->op(), c, n->output()->type(), n));
            replaced.insert({n, m});
            changed = true;
          }
        }
      }
      if (replaced.empty()) break;
      RemoveUnused(graph, replaced);  // so that the next round sees single readers again
    }
    return changed;
  }

 private:
  // Removes the nodes of `candidates` nothing uses any more (a chain: until none is left).
  static void RemoveUnused(Graph& graph, const std::unordered_set<const Node*>& candidates) {
    for (bool removed = true; removed;) {
      const std::vector<int> uses = graph.CountUses();
      removed = false;
      graph.RemoveNodesIf([&](const Node& n) {
        if (!candidates.count(&n)) return false;
        for (const Value* v : n.outputs()) {
          if (uses[v->id()] != 0) return false;
        }
        removed = true;
        return true;
      });
    }
  }
};

}  // namespace

std::unique_ptr<Pass> CreateMoveCastsPass() { return std::make_unique<MoveCastsPass>(); }

}  // namespace tg
