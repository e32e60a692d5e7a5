#include "passes/half_exactness.h"

#include <string>
#include <unordered_set>

namespace tg {
namespace {

bool IsFloatType(DType d) { return d == DType::kF32 || d == DType::kF64 || HalfExactness::IsHalf(d); }

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

}  // namespace

uint8_t HalfExactness::Bit(DType d) {
  return d == DType::kF16 ? 1 : d == DType::kBF16 ? 2 : 0;
}

uint8_t HalfExactness::MaskOf(const Value* v) const {
  if (IsHalf(v->type().dtype)) return Bit(v->type().dtype);
  auto it = exact_.find(v);
  return it == exact_.end() ? 0 : it->second;
}

void HalfExactness::Visit(const Node& n) {
  if (n.op() == "cast" && n.inputs().size() == 1 && n.outputs().size() == 1) {
    // Casts between f32 and f64 keep exactness; a half value cast up is exact in its dtype.
    const DType from = n.input(0)->type().dtype, to = n.output(0)->type().dtype;
    if (IsFloatType(to) && !IsHalf(to) && IsFloatType(from)) {
      if (uint8_t m = MaskOf(n.input(0))) exact_[n.output(0)] = m;
    }
    return;
  }
  if (!ExactOps().count(n.op())) return;
  uint8_t mask = 0xff;
  bool any_float = false;
  for (const Value* in : n.inputs()) {
    if (!IsFloatType(in->type().dtype)) continue;
    any_float = true;
    mask &= MaskOf(in);
  }
  if (!any_float || mask == 0) return;
  for (const Value* out : n.outputs()) {
    if (IsFloatType(out->type().dtype) && !IsHalf(out->type().dtype)) exact_[out] = mask;
  }
}

}  // namespace tg
