// fold-exact-casts: half-precision models are captured widened (an op on f16 / bf16 values
// reads them cast up to f32 and rounds its result back: torch's per-op rounding), so a chain
// of ops that only move, select or negate values (a linear layer's weight transpose, reshapes,
// slices, relu, max-pool, ...) rounds values that are already exact in the half dtype:
// cast(cast(y, f16), f32) is y itself when every element of the f32 value y is representable
// in f16. This pass replaces such round trips by y, bit for bit the same numbers. What it
// removes: a rounding kernel and a copy per round trip, and, since the widened weight is no
// longer hidden behind casts, the transpose that fold-transpose then folds into the matmul.
//
// Exactness is tracked per value and half dtype: a half value cast up is exact in its dtype;
// an op from the list below is exact in a dtype when all its floating operands are (its
// results are operand elements, their negation or absolute value, or zero); anything else is
// not. Runs before CSE and fusion (it looks at plain cast nodes).
#include <unordered_map>
#include <unordered_set>

#include "passes/passes.h"

namespace tg {
namespace {

bool IsHalfType(DType d) { return d == DType::kF16 || d == DType::kBF16; }
bool IsFloatType(DType d) { return d == DType::kF32 || d == DType::kF64 || IsHalfType(d); }

// Bit of each half dtype in an exactness mask.
uint8_t HalfBit(DType d) {
  return d == DType::kF16 ? 1 : d == DType::kBF16 ? 2 : 0;
}

// Ops whose floating results hold only their floating operands' elements, negated or
// absolute values of them, or zeros (indices, masks and shapes may come from elsewhere).
const std::unordered_set<std::string>& ExactOps() {
  static const std::unordered_set<std::string> ops = {
      "reshape", "permute", "expand", "slice", "slice_backward", "cat", "gather",
      "index_select", "embedding", "copy", "checkpoint", "stage_copy", "broadcast",
      "all_gather", "neg", "abs", "relu", "maximum", "minimum", "where", "amax",
      "max_pool2d", "threshold_backward", "topk"};
  return ops;
}

class FoldExactCastsPass : public Pass {
 public:
  std::string name() const override { return "fold-exact-casts"; }

  bool Run(Graph& graph, PassContext&) override {
    std::unordered_map<const Value*, uint8_t> exact;  // f32/f64 value -> half dtypes it fits
    auto mask_of = [&](const Value* v) -> uint8_t {
      if (IsHalfType(v->type().dtype)) return HalfBit(v->type().dtype);
      auto it = exact.find(v);
      return it == exact.end() ? 0 : it->second;
    };
    bool changed = false;
    for (const auto& up : graph.nodes()) {
      Node& n = *up;
      if (n.op() == "cast" && n.inputs().size() == 1 && n.outputs().size() == 1) {
        Value* in = n.input(0);
        Value* out = n.output(0);
        const DType from = in->type().dtype, to = out->type().dtype;
        // cast(cast(y, h), f32) -> y, when y is f32 and exact in h.
        Node* rounding = in->producer();
        if (IsHalfType(from) && rounding != nullptr && rounding->op() == "cast" &&
            rounding->inputs().size() == 1) {
          Value* y = rounding->input(0);
          if (y->type().dtype == to && (mask_of(y) & HalfBit(from)) != 0) {
            graph.ReplaceAllUsesWith(out, y);
            changed = true;
            continue;
          }
        }
        // Casts between f32 and f64 keep exactness; a half value cast up is exact in its dtype.
        if (IsFloatType(to) && !IsHalfType(to) && IsFloatType(from)) {
          if (uint8_t m = mask_of(in)) exact[out] = m;
        }
        continue;
      }
      if (!ExactOps().count(n.op())) continue;
      uint8_t mask = 0xff;
      bool any_float = false;
      for (const Value* in : n.inputs()) {
        if (!IsFloatType(in->type().dtype)) continue;
        any_float = true;
        mask &= mask_of(in);
      }
      if (!any_float || mask == 0) continue;
      for (const Value* out : n.outputs()) {
        if (IsFloatType(out->type().dtype) && !IsHalfType(out->type().dtype)) exact[out] = mask;
      }
    }
    return changed;
  }
};

}  // namespace

std::unique_ptr<Pass> CreateFoldExactCastsPass() {
  return std::make_unique<FoldExactCastsPass>();
}

}  // namespace tg
